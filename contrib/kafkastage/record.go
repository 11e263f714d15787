package kafkastage

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Record is the payload that travels a pipeline from a [Source] to a
// [Sink]. A transform may change its fields and emit it on; it must emit
// each input record exactly once (the record itself, changed or not), as
// the record remembers the input offset it commits.
//
// A Record read by a [Source] remembers its place in its partition: the
// offset is committed once the record has been produced by a [Sink], or
// written to the dead-letter topic by [DeadLetters], and every record
// before it in the same partition too. A Record read by a Source made
// with [WithCommitOnCheckpoint] remembers nothing (its offset commits with
// a checkpoint): it may be absorbed, split or dropped, and a transform may
// make new ones.
type Record struct {
	// Topic, Partition and Offset say where the record was read. A [Sink]
	// produces to its own topic and ignores them.
	Topic     string
	Partition int32
	Offset    int64
	// Key and Headers are produced by a [Sink] as they are.
	Key     []byte
	Headers []kgo.RecordHeader
	// Value is the record's body.
	Value []byte
	// Timestamp is the record's timestamp.
	Timestamp time.Time

	t *ticket // the input offset to commit; nil if no Source read it
}

// size is the record's size as a Sink counts it.
func (r *Record) size() int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// Outcomes of a ticket.
const (
	open uint32 = iota
	finished
	released
)

// ticket settles one input offset, once: finished (committable) when its
// record was produced or dead-lettered, released when the pipeline
// stopped before processing it (the offset then stays uncommitted, and so
// do the later ones of its partition: the next owner reads them again).
//
// A ticket is also the Context of the record a Sink produces from it
// (context.Background otherwise), so that the produce promise, one method
// value for all records, finds it without a closure per record.
type ticket struct {
	context.Context
	p       *partition
	offset  int64
	epoch   int32
	state   atomic.Uint32
	in      *kgo.Record // the fetched record: the first Sink to claim it produces it
	claimed atomic.Bool
}

// claim hands the fetched record to one Sink, once, to produce it again
// (a record emitted twice, against the contract, gets a new one).
func (t *ticket) claim() *kgo.Record {
	if t.in != nil && t.claimed.CompareAndSwap(false, true) {
		return t.in
	}
	return nil
}

// finish marks the offset done; the partition commits the contiguous run
// of done offsets from its start.
func (t *ticket) finish() {
	if t.state.CompareAndSwap(open, finished) {
		t.p.advance()
		t.p.src.settle()
	}
}

// release gives the offset up without committing it.
func (t *ticket) release() {
	if t.state.CompareAndSwap(open, released) {
		t.p.src.stats.released.Add(1)
		t.p.src.spoiled.Store(true)
		t.p.src.settle()
	}
}

// partition tracks the offsets of one assigned partition that were
// emitted and not yet committed, in offset order.
type partition struct {
	src   *Source
	topic string
	id    int32

	mu      sync.Mutex
	pending []*ticket       // emitted, in offset order; the front is the oldest
	revoked bool            // the partition was revoked: its tickets commit nothing
	mark    kgo.EpochOffset // the next offset to commit, once dirty
	dirty   bool            // mark moved since the Source last marked it
}

// advance pops the done tickets at the front and moves the partition's
// mark past the last of them; the Source hands the marks to the client
// (see Source.markCommits), all at once.
func (p *partition) advance() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.revoked {
		return
	}
	n := 0
	for n < len(p.pending) && p.pending[n].state.Load() == finished {
		n++
	}
	if n == 0 {
		return
	}
	last := p.pending[n-1]
	clear(p.pending[:n])
	p.pending = p.pending[n:]
	if p.src.tx != nil {
		return // the transaction commits the offsets, and counts them
	}
	p.src.stats.committable.Add(uint64(n))
	p.mark, p.dirty = kgo.EpochOffset{Epoch: last.epoch, Offset: last.offset + 1}, true
}

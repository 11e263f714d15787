package kafkastage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stagefsm/stagefsm/stage"
)

// Timings of the Source.
const (
	// pollWait is how long Next waits for records when none is buffered.
	pollWait = 50 * time.Millisecond
	// probeEvery is how often an idle Source checks that a broker answers.
	probeEvery = 250 * time.Millisecond
	// probeTimeout bounds one check.
	probeTimeout = time.Second
	// settleWait bounds how long a revocation, and Close, wait for the
	// records emitted from a partition to be produced or dead-lettered.
	settleWait = 10 * time.Second
	// commitTimeout bounds the synchronous commit of a revocation or Close.
	commitTimeout = 5 * time.Second
)

var (
	_ stage.Source[*Record] = (*Source)(nil)
	_ stage.Opener          = (*Source)(nil)
	_ io.Closer             = (*Source)(nil)
)

// Source is a [stage.Source] of [*Record] that is a member of a Kafka
// consumer group. Several workers — separate pipelines, in one process or
// many — may each run a Source of the same group: Kafka spreads the
// partitions among them.
//
// Records of one partition are emitted in offset order. An offset is
// committed only once its record, and every record before it in its
// partition, has been produced by a [Sink] or written to the dead-letter
// topic by [DeadLetters] (which the pipeline must use): the delivery is at
// least once, and nothing read is lost.
//
// When the group takes partitions from this member (another member
// joined, or this one is leaving), the revocation waits — up to 10s — for
// the records already emitted from them to be produced or dead-lettered,
// then commits their offsets before the partitions move: the next owner
// starts where this one stopped. A partition assigned starts at its
// committed offset. A member that dies without leaving commits nothing
// more; its partitions move after the group's session timeout and are read
// again from their committed offsets.
//
// Brokers that do not answer are ridden out for up to [WithMaxOutage];
// beyond that Next fails the stage with an error wrapping
// [ErrUnavailable].
//
// A Source made with [WithCommitOnCheckpoint] and [WithPartitions] reads
// a fixed set of partitions and commits them with the checkpoints of its
// pipeline instead (see [Source.Position] and the package doc,
// "Checkpoints"): its records carry no offset to commit, so a transform
// may absorb, split or drop them.
//
// A Source made by [ExactlyOnce.Source] commits in transactions instead
// (see [ExactlyOnce]): a revocation does not wait, the open transaction is
// aborted and its batch read again by the partitions' next owner.
//
// A Source serves one pipeline, once, and owns its client. Its methods
// are called by the stage (see [stage.Source]); [Source.Stats] may be
// called at any time.
type Source struct {
	kopts  []kgo.Opt
	group  string
	topics []string
	o      sourceOptions
	stats  sourceCounters

	client *kgo.Client

	// Checkpoint mode (see WithCommitOnCheckpoint): nil otherwise.
	ck *checkpointed

	// Exactly-once mode (see ExactlyOnce): nil tx otherwise.
	tx      *ExactlyOnce
	sess    *kgo.GroupTransactSession
	spoiled atomic.Bool // a record of the open transaction was released

	// Owned by the stage: Open, Next and Close.
	used      bool
	txOpen    bool // a transaction holds the emitted batch
	txFresh   bool // the batch was emitted by the last call: let the stage send it
	txRecords int  // records of the open transaction
	opened    bool
	lastProbe time.Time
	downSince time.Time
	lastErr   error

	mu    sync.Mutex
	parts map[topicPartition]*partition

	outstanding atomic.Int64  // exactly-once mode: emitted and not settled
	settled     chan struct{} // poked at each settlement while someone waits
	waiters     atomic.Int32  // waitSettled calls under way (exactly-once mode always pokes)
}

type topicPartition struct {
	topic string
	id    int32
}

// NewSource returns a [Source] that joins the consumer group group and
// consumes topics, with a client made from kopts (which must name the
// seed brokers, [kgo.SeedBrokers]). The Source adds the options that make
// it a group member committing only what was delivered: do not pass
// [kgo.ConsumerGroup], [kgo.ConsumeTopics], commit or rebalance-callback
// options yourself.
func NewSource(kopts []kgo.Opt, group string, topics []string, opts ...SourceOption) *Source {
	return &Source{kopts: kopts, group: group, topics: topics, o: newSourceOptions(opts)}
}

// Open creates the client and joins the group. It returns an error for a
// missing group or topic name or options the client refuses, and
// [ErrAlreadyOpened] when called twice; the pipeline then does not start.
// A Source made with [WithCommitOnCheckpoint] does not join the group: it
// reads the group's committed offsets, where its partitions start unless
// [Source.Resume] moves them (a partition without one starts at its
// beginning), and fails when they cannot be read within [WithMaxOutage]
// (wrapping [ErrUnavailable]), and with an error wrapping [ErrPosition]
// for options that do not make a checkpoint mode (see
// [WithCommitOnCheckpoint]).
func (s *Source) Open(ctx context.Context) error {
	if s.used {
		return ErrAlreadyOpened
	}
	s.used = true
	if s.group == "" || len(s.topics) == 0 {
		return errors.New("kafkastage: NewSource needs a group and at least one topic")
	}
	s.parts = make(map[topicPartition]*partition)
	s.settled = make(chan struct{}, 1)
	switch ck, fixed := s.o.commitOnCheckpoint, s.o.partitions != nil; {
	case (ck || fixed) && s.tx != nil:
		return fmt.Errorf("%w: group %s: an ExactlyOnce Source commits in transactions, not on checkpoints", ErrPosition, s.group)
	case ck && len(s.o.partitions) == 0:
		return fmt.Errorf("%w: group %s: WithCommitOnCheckpoint needs WithPartitions: a rebalance would move a partition away from the state that saw its input",
			ErrPosition, s.group)
	case fixed && !ck:
		return fmt.Errorf("%w: group %s: WithPartitions needs WithCommitOnCheckpoint(true)", ErrPosition, s.group)
	case ck:
		if err := s.openCheckpointed(ctx); err != nil {
			return err
		}
		s.lastProbe = time.Now()
		s.opened = true
		return nil
	}
	if s.tx != nil {
		return s.openSession()
	}
	kopts := append(append([]kgo.Opt(nil), s.kopts...),
		kgo.ConsumerGroup(s.group),
		kgo.ConsumeTopics(s.topics...),
		kgo.AutoCommitMarks(),
		kgo.OnPartitionsRevoked(s.revoked),
		kgo.OnPartitionsLost(s.lost),
	)
	client, err := kgo.NewClient(kopts...)
	if err != nil {
		return fmt.Errorf("kafkastage: source client: %w", err)
	}
	s.client = client
	s.lastProbe = time.Now()
	s.opened = true
	return nil
}

// Next emits the records that have arrived, up to [WithMaxPoll], waiting
// up to 50ms when none has. It returns an error wrapping [ErrUnavailable],
// made with [stage.Fatal], when no broker has answered for longer than
// [WithMaxOutage].
func (s *Source) Next(ctx context.Context, emit func(*Record)) error {
	if !s.opened {
		return stage.Fatal(errors.New("kafkastage: Source.Next outside Open and Close"))
	}
	if s.ck != nil {
		return s.nextCheckpointed(ctx, emit)
	}
	if s.tx != nil {
		return s.nextInTransaction(ctx, emit)
	}
	fs, err := s.poll(ctx, s.client)
	if err != nil {
		return err
	}
	s.markCommits()
	n := s.emitAll(fs, emit)
	if n > 0 {
		s.downSince = time.Time{}
		return nil
	}
	return s.check(ctx)
}

// emitAll emits the records of fs, partition by partition, and returns
// how many.
func (s *Source) emitAll(fs kgo.Fetches, emit func(*Record)) int {
	n := 0
	fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if len(ftp.Records) == 0 {
			return
		}
		p := s.partition(ftp.Topic, ftp.Partition)
		// One allocation for the partition's records, not one per record.
		es := make([]envelope, len(ftp.Records))
		p.mu.Lock()
		for i, r := range ftp.Records {
			e := &es[i]
			e.t.Context, e.t.p, e.t.offset, e.t.epoch, e.t.in = context.Background(), p, r.Offset, r.LeaderEpoch, r
			e.r = Record{
				Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
				Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp,
				t: &e.t,
			}
			p.pending = append(p.pending, &e.t)
		}
		p.mu.Unlock()
		if s.tx != nil {
			s.outstanding.Add(int64(len(es)))
		}
		s.stats.received.Add(uint64(len(es)))
		n += len(es)
		for i := range es {
			emit(&es[i].r)
		}
	})
	return n
}

// markCommits hands the client the partitions' marks that moved, in one
// call.
func (s *Source) markCommits() {
	var marks map[string]map[int32]kgo.EpochOffset
	s.mu.Lock()
	for k, p := range s.parts {
		p.mu.Lock()
		if p.dirty && !p.revoked {
			p.dirty = false
			if marks == nil {
				marks = make(map[string]map[int32]kgo.EpochOffset)
			}
			if marks[k.topic] == nil {
				marks[k.topic] = make(map[int32]kgo.EpochOffset)
			}
			marks[k.topic][k.id] = p.mark
		}
		p.mu.Unlock()
	}
	s.mu.Unlock()
	if marks != nil {
		s.client.MarkCommitOffsets(marks)
	}
}

// envelope holds a Record and its ticket; emitAll allocates those of a
// fetched partition in one slice.
type envelope struct {
	r Record
	t ticket
}

func (s *Source) partition(topic string, id int32) *partition {
	k := topicPartition{topic, id}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.parts[k]
	if p == nil {
		p = &partition{src: s, topic: topic, id: id}
		s.parts[k] = p
	}
	return p
}

// check probes the brokers every probeEvery while the source is idle, and
// fails once none has answered for longer than the outage budget.
func (s *Source) check(ctx context.Context) error {
	now := time.Now()
	if now.Sub(s.lastProbe) < probeEvery {
		return nil
	}
	s.lastProbe = now
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	err := s.client.Ping(pctx)
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err == nil {
		s.downSince = time.Time{}
		return nil
	}
	s.lastErr = err
	if s.downSince.IsZero() {
		s.downSince = now
	}
	if d := time.Since(s.downSince); d >= s.o.maxOutage {
		return stage.Fatal(s.unavailable(fmt.Sprintf("no broker answered for %v", d.Round(time.Millisecond))))
	}
	return nil
}

func (s *Source) unavailable(why string) error {
	if s.lastErr == nil {
		return fmt.Errorf("%w: group %s: %s", ErrUnavailable, s.group, why)
	}
	return fmt.Errorf("%w: group %s: %s: %w", ErrUnavailable, s.group, why, s.lastErr)
}

// settle counts one settled record (in exactly-once mode) and wakes a
// waiting revocation, Close or transaction end.
func (s *Source) settle() {
	if s.tx == nil {
		if s.waiters.Load() == 0 {
			return // a waiter checks the tickets after it registers
		}
	} else {
		s.outstanding.Add(-1)
	}
	select {
	case s.settled <- struct{}{}:
	default:
	}
}

// revoked runs in the client's group goroutine before partitions leave
// this member: it waits for their emitted records to settle, commits, and
// forgets them.
func (s *Source) revoked(ctx context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.waitSettled(ctx, lost)
	s.markCommits()
	cctx, cancel := context.WithTimeout(ctx, commitTimeout)
	if err := s.client.CommitMarkedOffsets(cctx); err != nil {
		s.stats.commitErrors.Add(1)
	}
	cancel()
	s.forget(lost)
}

// lost runs when partitions were taken without a revocation (the session
// expired): nothing of them may be committed any more.
func (s *Source) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.forget(lost)
}

func (s *Source) forget(parts map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for topic, ids := range parts {
		for _, id := range ids {
			k := topicPartition{topic, id}
			if p := s.parts[k]; p != nil {
				p.mu.Lock()
				p.revoked = true
				p.mu.Unlock()
				delete(s.parts, k)
			}
		}
	}
}

// waitSettled waits, up to settleWait, until no record emitted from parts
// (all partitions when parts is nil) is still open.
func (s *Source) waitSettled(ctx context.Context, parts map[string][]int32) {
	s.waiters.Add(1)
	defer s.waiters.Add(-1)
	timer := time.NewTimer(settleWait)
	defer timer.Stop()
	for !s.quiet(parts) {
		select {
		case <-s.settled:
		case <-time.After(10 * time.Millisecond): // a settlement of another waiter's poke
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// quiet reports whether every ticket of parts is settled.
func (s *Source) quiet(parts map[string][]int32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, p := range s.parts {
		if parts != nil && !contains(parts[k.topic], k.id) {
			continue
		}
		p.mu.Lock()
		for _, t := range p.pending {
			if t.state.Load() == open {
				p.mu.Unlock()
				return false
			}
		}
		p.mu.Unlock()
	}
	return true
}

func contains(ids []int32, id int32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// Close waits, up to 10s, for the records already emitted to be produced or
// dead-lettered, commits their offsets (in exactly-once mode: commits the
// open transaction, or aborts it if a record was not delivered), leaves
// the group and closes the client. Records still open then stay uncommitted, and the group's next
// owner of their partitions reads them again. Calling Close again, or on a
// Source never opened, does nothing. It returns nil.
func (s *Source) Close() error {
	if !s.opened {
		return nil
	}
	s.opened = false
	if s.ck != nil {
		s.closeCheckpointed()
		return nil
	}
	if s.tx != nil {
		s.closeSession()
		return nil
	}
	s.waitSettled(context.Background(), nil)
	s.markCommits()
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	if err := s.client.CommitMarkedOffsets(ctx); err != nil {
		s.stats.commitErrors.Add(1)
	}
	cancel()
	s.client.Close()
	return nil
}

// SourceStats counts what a [Source] did with its records.
type SourceStats struct {
	// Received counts the records emitted into the pipeline.
	Received uint64
	// Committable counts the records whose offsets were marked for commit
	// (produced or dead-lettered, and every earlier one of the partition);
	// for a Source made with [WithCommitOnCheckpoint], the offsets its
	// commits moved the group's offsets by.
	Committable uint64
	// Released counts the records given up unprocessed (the pipeline
	// stopped): their offsets stay uncommitted.
	Released uint64
	// CommitErrors counts the synchronous commits that failed (with
	// [WithCommitOnCheckpoint], the checkpoints' commits).
	CommitErrors uint64
	// Aborted counts, in exactly-once mode (see [ExactlyOnce]), the
	// records whose transaction was aborted: they are read again, and
	// their outputs are invisible to read_committed readers.
	Aborted uint64
}

type sourceCounters struct {
	received, committable, released, commitErrors, aborted atomic.Uint64
}

// Stats returns a snapshot of the source's counts. It is safe to call at
// any time.
func (s *Source) Stats() SourceStats {
	c := &s.stats
	return SourceStats{Received: c.received.Load(), Committable: c.committable.Load(),
		Released: c.released.Load(), CommitErrors: c.commitErrors.Load(), Aborted: c.aborted.Load()}
}

// poll fetches up to WithMaxPoll records from c (the Source's client or
// its transactional session), waiting at most pollWait for the first. It
// returns ctx's error once ctx is done, and a fatal error when the client
// is closed. A fetch error other than the wait's end is kept for check.
func (s *Source) poll(ctx context.Context, c interface {
	PollRecords(context.Context, int) kgo.Fetches
}) (kgo.Fetches, error) {
	pctx, cancel := context.WithTimeout(ctx, pollWait)
	fs := c.PollRecords(pctx, s.o.maxPoll)
	cancel()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if fs.IsClientClosed() {
		return nil, stage.Fatal(s.unavailable("the client is closed"))
	}
	fs.EachError(func(_ string, _ int32, err error) {
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			s.lastErr = err
		}
	})
	return fs, nil
}

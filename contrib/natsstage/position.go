package natsstage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stagefsm/stagefsm/stage"
)

// ErrPosition is matched (with [errors.Is]) by the error of
// [Source.Position], [Source.Resume] and [Source.Commit] when the Source
// cannot serve a checkpoint: it was made without [WithAckOnCommit], or the
// position is not one of this source's consumer (it does not decode, or
// names another stream or consumer).
var ErrPosition = errors.New("natsstage: no checkpoint position")

var (
	_ stage.Resumable = (*Source)(nil)
	_ stage.Committer = (*Source)(nil)
)

// held is a message emitted and not yet acknowledged, in a Source made
// with WithAckOnCommit: it is acknowledged once a checkpoint that covers
// it is stored.
type held struct {
	seq uint64
	t   *ticket
}

// dup is a redelivery of a message emitted and not yet covered: it is
// acknowledged with the checkpoint that covers the message.
type dup struct {
	seq uint64
	msg jetstream.Msg
}

// maxPositionSeqs bounds the sequences a position may list, so that a
// position that is not one of ours cannot make Resume allocate without
// bound.
const maxPositionSeqs = 1 << 24

// commitState is the checkpoint part of a Source, owned by the stage's
// goroutine (Next, Position, Resume, Commit and Close).
//
// JetStream delivers a consumer's messages in stream order, except for
// redeliveries: after a worker died, its successor gets the messages that
// were never delivered at once, and those the dead worker held only after
// the consumer's AckWait. So a position is not one sequence but a set: a
// floor, up to which every message is covered (by a stored checkpoint, or
// acknowledged and never delivered again), and the sequences above it that
// the source emitted. The floor follows the consumer's acknowledgement
// floor, which JetStream computes over the consumer's own messages (a
// filtered consumer's sequences have gaps), so the set stays as small as
// what is not yet acknowledged.
type commitState struct {
	floor   uint64   // every sequence up to floor is covered
	emitted []uint64 // sorted: the sequences above floor emitted, or covered by the checkpoint resumed from
	covered []uint64 // sorted: those of emitted that the latest checkpoint committed (or resumed from) covers
	held    []held   // emitted, not acknowledged
	dups    []dup    // redeliveries of messages emitted and not yet covered
}

func contains(set []uint64, seq uint64) bool {
	_, ok := slices.BinarySearch(set, seq)
	return ok
}

// admit decides, in a Source made with WithAckOnCommit, what to do with
// a message of stream sequence seq: it reports whether to emit it. A
// message a stored checkpoint covers (a redelivery after a crash, or
// after an AckWait) is acknowledged and skipped; one emitted before and
// not yet covered is kept, to be acknowledged with the checkpoint that
// will cover it.
func (s *Source) admit(jm jetstream.Msg, seq uint64) bool {
	c := &s.ck
	if seq <= c.floor || contains(c.covered, seq) {
		s.stats.skipped.Add(1)
		s.settled(&s.stats.acked, jm.Ack())
		return false
	}
	i, found := slices.BinarySearch(c.emitted, seq)
	if found {
		s.stats.skipped.Add(1)
		c.dups = append(c.dups, dup{seq: seq, msg: jm})
		return false
	}
	c.emitted = slices.Insert(c.emitted, i, seq)
	return true
}

// Position returns the Source's position: which messages of its consumer
// it has emitted — those up to a floor (all of them acknowledged, or
// covered by the checkpoint the Source resumed from) and the stream
// sequences above the floor — encoded with the stream's and the
// consumer's names. The Source emits each sequence once, so the position
// says exactly which input a checkpoint's state has seen, even when
// redeliveries come out of stream order. It returns an error wrapping
// [ErrPosition] when the Source was made without [WithAckOnCommit]: its
// messages are then acknowledged as they are published, which a
// checkpoint cannot follow. See [stage.Resumable].
func (s *Source) Position() ([]byte, error) {
	if !s.o.ackOnCommit {
		return nil, fmt.Errorf("%w: consumer %s/%s: the Source needs WithAckOnCommit(true) in a checkpointing pipeline",
			ErrPosition, s.stream, s.consumer)
	}
	return s.encodePosition(s.ck.floor, s.ck.emitted), nil
}

// Resume makes the Source go on after pos, a [Source.Position] of an
// earlier run on the same consumer (by this worker or another): every
// message redelivered that pos covers is covered by the state the
// pipeline restored, so it is acknowledged and skipped (counted in
// [SourceStats].Skipped), never emitted again; every other message is
// emitted, also one that the earlier run received and did not emit. It
// returns an error wrapping [ErrPosition] for a Source made without
// [WithAckOnCommit] and for a position of another stream or consumer. See
// [stage.Resumable].
func (s *Source) Resume(ctx context.Context, pos []byte) error {
	floor, seqs, err := s.decodePosition(pos)
	if err != nil {
		return err
	}
	c := &s.ck
	c.floor = max(c.floor, floor)
	c.covered = seqs
	for _, seq := range seqs {
		if i, found := slices.BinarySearch(c.emitted, seq); !found {
			c.emitted = slices.Insert(c.emitted, i, seq)
		}
	}
	return nil
}

// Commit acknowledges every message the Source emitted that pos covers,
// pos being a [Source.Position] that a stored checkpoint holds, and the
// redeliveries of those messages that JetStream sent meanwhile; from then
// on a redelivery that pos covers is acknowledged and skipped. A message
// that the pipeline dead-lettered meanwhile is not acknowledged again. An
// acknowledgement that cannot be sent is counted in
// [SourceStats].SettleErrors (JetStream redelivers the message, and the
// Source or its successor skips it). Commit then asks JetStream for the
// consumer's acknowledgement floor, to keep the next positions short; if
// that fails, the next Commit asks again. It returns an error wrapping
// [ErrPosition] for a Source made without [WithAckOnCommit] and for a
// position of another stream or consumer. See [stage.Committer].
func (s *Source) Commit(ctx context.Context, pos []byte) error {
	floor, seqs, err := s.decodePosition(pos)
	if err != nil {
		return err
	}
	c := &s.ck
	c.floor = max(c.floor, floor)
	c.covered = seqs
	covers := func(seq uint64) bool { return seq <= c.floor || contains(c.covered, seq) }
	kept := c.held[:0]
	for _, h := range c.held {
		if !covers(h.seq) {
			kept = append(kept, h)
			continue
		}
		if h.t.state.CompareAndSwap(open, acked) {
			s.settled(&s.stats.acked, h.t.msg.Ack())
		}
	}
	clear(c.held[len(kept):])
	c.held = kept
	keptDups := c.dups[:0]
	for _, d := range c.dups {
		if !covers(d.seq) {
			keptDups = append(keptDups, d)
			continue
		}
		_ = d.msg.Ack() // a second delivery of a message acknowledged above
	}
	clear(c.dups[len(keptDups):])
	c.dups = keptDups

	if s.cons == nil {
		return nil
	}
	info, err := s.cons.Info(ctx)
	if err != nil || info.AckFloor.Stream <= c.floor {
		return nil // the floor only keeps positions short: the next Commit asks again
	}
	c.floor = info.AckFloor.Stream
	c.emitted = above(c.emitted, c.floor)
	c.covered = above(c.covered, c.floor)
	return nil
}

// above returns the part of the sorted set that is above floor.
func above(set []uint64, floor uint64) []uint64 {
	i, found := slices.BinarySearch(set, floor)
	if found {
		i++
	}
	return append(set[:0], set[i:]...)
}

// releaseHeld hands the messages emitted and not covered by a checkpoint
// back to JetStream, as the Source closes: the pipeline stopped before a
// checkpoint covered them, so they must be processed again.
func (s *Source) releaseHeld() {
	for _, h := range s.ck.held {
		h.t.release()
	}
	for _, d := range s.ck.dups {
		_ = d.msg.Nak()
	}
	s.ck.held, s.ck.dups = nil, nil
}

// encodePosition encodes a position as "<stream>/<consumer>:<floor>"
// followed by the sequences above the floor, each as ",<delta>" from the
// previous one, or ",<delta>*<n>" for n of them at the same delta.
func (s *Source) encodePosition(floor uint64, seqs []uint64) []byte {
	b := make([]byte, 0, len(s.stream)+len(s.consumer)+22+4*len(seqs))
	b = append(b, s.stream...)
	b = append(b, '/')
	b = append(b, s.consumer...)
	b = append(b, ':')
	b = strconv.AppendUint(b, floor, 10)
	prev := floor
	for i := 0; i < len(seqs); {
		d := seqs[i] - prev
		n := 1
		for i+n < len(seqs) && seqs[i+n]-seqs[i+n-1] == d {
			n++
		}
		b = append(b, ',')
		b = strconv.AppendUint(b, d, 10)
		if n > 1 {
			b = append(b, '*')
			b = strconv.AppendUint(b, uint64(n), 10)
		}
		prev = seqs[i+n-1]
		i += n
	}
	return b
}

// decodePosition decodes what encodePosition encoded, checking that it is
// a position of this Source's consumer.
func (s *Source) decodePosition(pos []byte) (floor uint64, seqs []uint64, err error) {
	if !s.o.ackOnCommit {
		return 0, nil, fmt.Errorf("%w: consumer %s/%s: the Source needs WithAckOnCommit(true) in a checkpointing pipeline",
			ErrPosition, s.stream, s.consumer)
	}
	bad := func() (uint64, []uint64, error) {
		return 0, nil, fmt.Errorf("%w: %.60q is not a position of consumer %s/%s", ErrPosition, pos, s.stream, s.consumer)
	}
	p, ok := strings.CutPrefix(string(pos), s.stream+"/"+s.consumer+":")
	if !ok {
		return bad()
	}
	parts := strings.Split(p, ",")
	floor, err = strconv.ParseUint(parts[0], 10, 64)
	if err != nil {
		return bad()
	}
	prev := floor
	for _, part := range parts[1:] {
		ds, ns, run := strings.Cut(part, "*")
		d, err1 := strconv.ParseUint(ds, 10, 64)
		n, err2 := uint64(1), error(nil)
		if run {
			n, err2 = strconv.ParseUint(ns, 10, 64)
		}
		if err1 != nil || err2 != nil || d == 0 || n == 0 || n > maxPositionSeqs-uint64(len(seqs)) ||
			d > (math.MaxUint64-prev)/n {
			return bad()
		}
		for range n {
			prev += d
			seqs = append(seqs, prev)
		}
	}
	return floor, seqs, nil
}

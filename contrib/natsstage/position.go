package natsstage

import (
	"context"
	"errors"
	"fmt"
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

// commitState is the checkpoint part of a Source, owned by the stage's
// goroutine (Next, Position, Resume, Commit and Close).
type commitState struct {
	high      uint64          // the highest stream sequence emitted (or resumed from)
	committed uint64          // the position a stored checkpoint covers
	held      []held          // emitted, not acknowledged; in stream order
	dups      []jetstream.Msg // redeliveries of held messages, acknowledged with them
}

// admit decides, in a Source made with WithAckOnCommit, what to do with
// a message of stream sequence seq: it reports whether to emit it. A
// message a stored checkpoint covers (a redelivery after a crash, or
// after an AckWait) is acknowledged and skipped; one emitted before and
// not yet covered is kept, to be acknowledged with the checkpoint that
// will cover it.
func (s *Source) admit(jm jetstream.Msg, seq uint64) bool {
	c := &s.ck
	switch {
	case seq <= c.committed:
		s.stats.skipped.Add(1)
		s.settled(&s.stats.acked, jm.Ack())
		return false
	case seq <= c.high:
		s.stats.skipped.Add(1)
		c.dups = append(c.dups, jm)
		return false
	}
	c.high = seq
	return true
}

// Position returns the stream sequence of the last message the Source
// emitted — or the position it resumed from, when it has emitted nothing
// since — encoded with the stream's and the consumer's names. Its
// messages are emitted in stream order, each sequence once, so the
// position says exactly which input a checkpoint's state has seen. It
// returns an error wrapping [ErrPosition] when the Source was made without
// [WithAckOnCommit]: its messages are then acknowledged as they are
// published, which a checkpoint cannot follow. See [stage.Resumable].
func (s *Source) Position() ([]byte, error) {
	if !s.o.ackOnCommit {
		return nil, fmt.Errorf("%w: consumer %s/%s: the Source needs WithAckOnCommit(true) in a checkpointing pipeline",
			ErrPosition, s.stream, s.consumer)
	}
	return s.encodePosition(s.ck.high), nil
}

// Resume makes the Source go on after pos, a [Source.Position] of an
// earlier run on the same consumer (by this worker or another): every
// message redelivered with a stream sequence up to pos is covered by the
// state the pipeline restored, so it is acknowledged and skipped (counted
// in [SourceStats].Skipped), never emitted again. It returns an error
// wrapping [ErrPosition] for a Source made without [WithAckOnCommit] and
// for a position of another stream or consumer. See [stage.Resumable].
func (s *Source) Resume(_ context.Context, pos []byte) error {
	seq, err := s.decodePosition(pos)
	if err != nil {
		return err
	}
	s.ck.high = max(s.ck.high, seq)
	s.ck.committed = max(s.ck.committed, seq)
	return nil
}

// Commit acknowledges every message the Source emitted with a stream
// sequence up to pos, a [Source.Position] that a stored checkpoint holds,
// and the redeliveries of those that JetStream sent meanwhile; from then
// on a redelivery up to pos is acknowledged and skipped. A message that
// the pipeline dead-lettered meanwhile is not acknowledged again. An
// acknowledgement that cannot be sent is counted in
// [SourceStats].SettleErrors (JetStream redelivers the message, and the
// Source or its successor skips it). It returns an error wrapping
// [ErrPosition] for a Source made without [WithAckOnCommit] and for a
// position of another stream or consumer. See [stage.Committer].
func (s *Source) Commit(_ context.Context, pos []byte) error {
	seq, err := s.decodePosition(pos)
	if err != nil {
		return err
	}
	c := &s.ck
	c.committed = max(c.committed, seq)
	n := 0
	for n < len(c.held) && c.held[n].seq <= c.committed {
		if t := c.held[n].t; t.state.CompareAndSwap(open, acked) {
			s.settled(&s.stats.acked, t.msg.Ack())
		}
		c.held[n] = held{}
		n++
	}
	c.held = c.held[n:]
	kept := c.dups[:0]
	for _, jm := range c.dups {
		if meta, err := jm.Metadata(); err == nil && meta.Sequence.Stream <= c.committed {
			_ = jm.Ack() // a second delivery of a message acknowledged above
			continue
		}
		kept = append(kept, jm)
	}
	clear(c.dups[len(kept):])
	c.dups = kept
	return nil
}

// releaseHeld hands the messages emitted and not covered by a checkpoint
// back to JetStream, as the Source closes: the pipeline stopped before a
// checkpoint covered them, so they must be processed again.
func (s *Source) releaseHeld() {
	for _, h := range s.ck.held {
		h.t.release()
	}
	for _, jm := range s.ck.dups {
		_ = jm.Nak()
	}
	s.ck.held, s.ck.dups = nil, nil
}

func (s *Source) encodePosition(seq uint64) []byte {
	b := make([]byte, 0, len(s.stream)+len(s.consumer)+22)
	b = append(b, s.stream...)
	b = append(b, '/')
	b = append(b, s.consumer...)
	b = append(b, ':')
	return strconv.AppendUint(b, seq, 10)
}

func (s *Source) decodePosition(pos []byte) (uint64, error) {
	if !s.o.ackOnCommit {
		return 0, fmt.Errorf("%w: consumer %s/%s: the Source needs WithAckOnCommit(true) in a checkpointing pipeline",
			ErrPosition, s.stream, s.consumer)
	}
	p := string(pos)
	i := strings.LastIndexByte(p, ':')
	if i < 0 || p[:i] != s.stream+"/"+s.consumer {
		return 0, fmt.Errorf("%w: %q is not a position of consumer %s/%s", ErrPosition, p, s.stream, s.consumer)
	}
	seq, err := strconv.ParseUint(p[i+1:], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %q is not a position of consumer %s/%s", ErrPosition, p, s.stream, s.consumer)
	}
	return seq, nil
}

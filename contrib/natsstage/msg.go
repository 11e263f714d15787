package natsstage

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stagefsm/stagefsm/stage"
)

// Msg is the payload that travels a pipeline from a [Source] to a [Sink].
// A transform may change its fields and emit it on, or emit new messages
// through [Transform].
//
// A Msg read by a [Source] remembers the JetStream message it came from:
// that message is acknowledged once the Msg (and every Msg a [Transform]
// derived from it) has been published by a [Sink], and negatively
// acknowledged or terminated when the pipeline dead-letters it (see
// [DeadLetter]).
type Msg struct {
	// Subject is the subject the message was published on. A [Sink]
	// publishes to its own subject and ignores it.
	Subject string
	// Header holds the message's headers. A [Sink] forwards them, except
	// JetStream's own (names starting with "Nats-"), and sets Nats-Msg-Id
	// to ID.
	Header nats.Header
	// Data is the message body.
	Data []byte
	// ID identifies the message for JetStream's de-duplication: a [Sink]
	// publishes it as the Nats-Msg-Id header, and the output stream stores
	// one message per ID within its duplicates window. A [Source] sets it
	// to "<stream>:<stream sequence>", which every delivery of the same
	// stored message shares, so a redelivered message that is processed
	// again is not stored again.
	ID string
	// Delivered is how many times JetStream has delivered the message to
	// the consumer (the NumDelivered metadata): 1 the first time, more for
	// a redelivery. 0 for a Msg that no [Source] read.
	Delivered uint64

	t *ticket // the JetStream message to settle; nil if no Source read it
}

// Redelivered reports whether JetStream had delivered the message before:
// a worker took it and did not acknowledge it (it failed, was stopped, or
// ran past the consumer's AckWait).
func (m *Msg) Redelivered() bool { return m.Delivered > 1 }

// Outcomes of a ticket.
const (
	open uint32 = iota
	acked
	released
	retried
	terminated
)

// ticket settles one JetStream message, once: acknowledged when every Msg
// that carries it has been published (refs reaches 0), or released,
// retried or terminated when the pipeline dead-letters one of them.
type ticket struct {
	msg       jetstream.Msg
	src       *Source
	delivered uint64
	refs      atomic.Int32
	state     atomic.Uint32
}

// done ends one reference; the last acknowledges the message, unless the
// source acknowledges on commit (see WithAckOnCommit).
func (t *ticket) done() {
	if t.refs.Add(-1) == 0 && !t.src.o.ackOnCommit && t.state.CompareAndSwap(open, acked) {
		t.src.settled(&t.src.stats.acked, t.msg.Ack())
	}
}

// release hands the message back to JetStream for an immediate
// redelivery: it was not processed (the pipeline stopped or a stage
// failed).
func (t *ticket) release() {
	if t.state.CompareAndSwap(open, released) {
		t.src.settled(&t.src.stats.released, t.msg.Nak())
	}
}

// reject settles a message a handler rejected with cause: retried later or
// terminated, per the source's [WithRetry] (always terminated for a source
// that acknowledges on commit). It reports whether JetStream will deliver
// the message again.
func (t *ticket) reject(cause error) bool {
	o := &t.src.o
	if t.delivered <= o.retries && !o.ackOnCommit {
		if t.state.CompareAndSwap(open, retried) {
			t.src.settled(&t.src.stats.retried, t.msg.NakWithDelay(o.retryDelay))
		}
	} else if t.state.CompareAndSwap(open, terminated) {
		reason := "rejected"
		if cause != nil {
			reason = cause.Error()
		}
		t.src.settled(&t.src.stats.terminated, t.msg.TermWithReason(reason))
	}
	return t.state.Load() != terminated
}

// DeadLetter returns the dead-letter function for a pipeline whose items
// are [*Msg] from a [Source]; pass it to [stage.WithDeadLetter]. Without it
// a dead-lettered message is never settled, and JetStream redelivers it
// after the consumer's AckWait, again and again.
//
// For each dead letter that carries a [*Msg] read by a [Source]:
//   - an item that was not processed — the pipeline was aborted
//     ([stage.ErrAborted]), a stage failed ([stage.ErrFailed], or an
//     error made with [stage.Fatal], such as [ErrUnavailable]) or its
//     context ended — is negatively acknowledged: JetStream redelivers it
//     at once, to any worker. It is not a dead letter; next does not see
//     it.
//   - an item a handler rejected is retried or terminated per the
//     source's [WithRetry]; next sees it only when it is terminated.
//
// Every other dead letter (a source's bad record, a [*Msg] no source read)
// goes to next. next may be nil. The returned function is safe for
// concurrent use (a [stage.Pipeline] serializes its calls anyway).
func DeadLetter(next func(stage.Item[any])) func(stage.Item[any]) {
	return func(it stage.Item[any]) {
		if m, ok := it.Payload.(*Msg); ok && m != nil && m.t != nil {
			if interrupted(it.Err) {
				m.t.release()
				return
			}
			if m.t.reject(it.Err) {
				return
			}
		}
		if next != nil {
			next(it)
		}
	}
}

var interruptions = []error{stage.ErrAborted, stage.ErrFailed, stage.ErrFatal,
	context.Canceled, context.DeadlineExceeded, ErrUnavailable}

// interrupted reports whether err says that the item was not processed,
// rather than rejected by a handler.
func interrupted(err error) bool {
	for _, target := range interruptions {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

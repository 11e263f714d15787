package natsstage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stagefsm/stagefsm/stage"
)

// Backoff between two publishes of a message that failed for a transient
// reason.
const (
	retryBackoffMin = 10 * time.Millisecond
	retryBackoffMax = 500 * time.Millisecond
)

var (
	_ stage.Sink[*Msg] = (*Sink)(nil)
	_ stage.Opener     = (*Sink)(nil)
	_ stage.Flusher    = (*Sink)(nil)
	_ io.Closer        = (*Sink)(nil)
)

// errStopped ends the wait for a publish when the sink closes.
var errStopped = errors.New("natsstage: sink closed")

// Sink is a [stage.Sink] of [*Msg] that publishes each message to a
// JetStream subject with its ID as the Nats-Msg-Id header, so the stream
// stores a message processed twice (redelivered after a worker failed) only
// once: at-least-once delivery upstream becomes effectively-once output,
// within the stream's duplicates window.
//
// Publishing is asynchronous: Consume publishes and returns, and a goroutine
// of the Sink waits for JetStream's acknowledgements, in order, up to
// [WithMaxInFlight] messages behind. When a message is stored (or found to
// be a duplicate), the input message it came from is acknowledged (see
// [Source]). A stage counts an item delivered once it is published; Flush,
// at the end of input, waits until every one is acknowledged.
//
// A publish that fails for a transient reason — a reconnection, no answer
// within [WithPublishTimeout], JetStream temporarily unavailable — is
// retried with the same message id, with backoff, for up to
// [WithMaxOutage]; after that, or when the connection is closed for good,
// the stage fails with an error wrapping [ErrUnavailable]. A publish that
// JetStream refuses for good (a client error, such as a message over the
// size limit) fails the stage with that error. Either way the pipeline
// reports it (see [stage.Pipeline.Wait]), and the inputs of the messages
// still unconfirmed are handed back to JetStream for redelivery.
//
// A Sink serves one pipeline, once. Its methods are called by the stage
// (see [stage.Sink]); [Sink.Stats] may be called at any time.
type Sink struct {
	js      jetstream.JetStream
	subject string
	o       sinkOptions
	stats   sinkCounters

	// Owned by the stage: Open, Consume, Flush and Close.
	used   bool
	closed bool
	queue  chan *pending
	stop   chan struct{}
	exited chan struct{}

	// Owned by the sink's goroutine.
	lastOK time.Time // the last acknowledgement, or Open

	mu  sync.Mutex
	err error // why the sink failed, set by its goroutine
}

// pending is a message published and not yet acknowledged, or a Flush
// marker when flushed is not nil.
type pending struct {
	m       *Msg
	out     *nats.Msg
	f       jetstream.PubAckFuture // nil when err is set
	err     error                  // the publish call failed
	sent    time.Time
	flushed chan struct{}
}

// NewSink returns a [Sink] that publishes to subject through js. A stream
// must store subject when the pipeline starts; [Sink.Open] checks it.
func NewSink(js jetstream.JetStream, subject string, opts ...SinkOption) *Sink {
	return &Sink{js: js, subject: subject, o: newSinkOptions(opts)}
}

// Open checks that a stream stores the sink's subject and starts the
// goroutine that waits for acknowledgements. It returns an error when no
// stream stores the subject or JetStream cannot be reached (the pipeline
// then does not start), and [ErrAlreadyOpened] when called twice.
func (s *Sink) Open(ctx context.Context) error {
	if s.used {
		return ErrAlreadyOpened
	}
	s.used = true
	switch {
	case s.js == nil:
		return errors.New("natsstage: NewSink was given a nil JetStream")
	case s.subject == "":
		return errors.New("natsstage: NewSink was given an empty subject")
	}
	if _, err := s.js.StreamNameBySubject(ctx, s.subject); err != nil {
		return fmt.Errorf("natsstage: no stream for subject %q: %w", s.subject, err)
	}
	s.queue = make(chan *pending, s.o.maxInFlight)
	s.stop = make(chan struct{})
	s.exited = make(chan struct{})
	s.lastOK = time.Now()
	go s.run()
	return nil
}

// Consume publishes m, asynchronously. It returns an error wrapping
// [ErrInvalidMsg] (non-fatal: m is dead-lettered) for a nil m or one
// without an ID, and an error made with [stage.Fatal] once the sink has
// failed (see [Sink]). It waits while [WithMaxInFlight] messages are
// unconfirmed, or until ctx is done.
func (s *Sink) Consume(ctx context.Context, m *Msg) error {
	switch {
	case s.queue == nil || s.closed:
		return stage.Fatal(errors.New("natsstage: Sink.Consume outside Open and Close"))
	case m == nil:
		return fmt.Errorf("%w: nil *Msg", ErrInvalidMsg)
	case m.ID == "":
		return fmt.Errorf("%w: message on %q has no ID", ErrInvalidMsg, m.Subject)
	}
	if err := s.failure(); err != nil {
		return stage.Fatal(err)
	}
	p := &pending{m: m, out: s.natsMsg(m)}
	s.publish(p)
	select {
	case s.queue <- p:
		return nil
	case <-s.exited:
		return stage.Fatal(s.failure())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// natsMsg builds the message to publish: m's data and headers (without
// JetStream's own) and m.ID as the message id.
func (s *Sink) natsMsg(m *Msg) *nats.Msg {
	h := make(nats.Header, len(m.Header)+1)
	for k, v := range m.Header {
		if len(k) >= 5 && strings.EqualFold(k[:5], "Nats-") {
			continue
		}
		h[k] = v
	}
	h[jetstream.MsgIDHeader] = []string{m.ID}
	return &nats.Msg{Subject: s.subject, Header: h, Data: m.Data}
}

func (s *Sink) publish(p *pending) {
	p.f, p.err = s.js.PublishMsgAsync(p.out)
	p.sent = time.Now()
}

// Flush waits until every message published is acknowledged by JetStream
// (and its input acknowledged in turn). It returns the sink's failure, if
// it failed, or ctx.Err().
func (s *Sink) Flush(ctx context.Context) error {
	if s.queue == nil || s.closed {
		return errors.New("natsstage: Sink.Flush outside Open and Close")
	}
	mark := &pending{flushed: make(chan struct{})}
	select {
	case s.queue <- mark:
	case <-s.exited:
		return s.failure()
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-mark.flushed:
		return s.failure()
	case <-s.exited:
		return s.failure()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the sink's goroutine and hands the inputs of the messages
// still unconfirmed back to JetStream for redelivery (their output, if it
// was stored, is then dropped as a duplicate). Calling it again, or on a
// Sink never opened, does nothing.
func (s *Sink) Close() error {
	if s.queue == nil || s.closed {
		return nil
	}
	s.closed = true
	close(s.stop)
	<-s.exited
	return nil
}

// run waits for the acknowledgement of each message, in order.
func (s *Sink) run() {
	defer close(s.exited)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case p := <-s.queue:
			s.settle(p, timer)
		case <-s.stop:
			for {
				select {
				case p := <-s.queue:
					s.abandon(p)
				default:
					return
				}
			}
		}
	}
}

func (s *Sink) settle(p *pending, timer *time.Timer) {
	if p.flushed != nil {
		close(p.flushed)
		return
	}
	if s.failure() != nil {
		s.abandon(p)
		return
	}
	if err := s.deliver(p, timer); err != nil {
		if !errors.Is(err, errStopped) {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
		}
		s.abandon(p)
	}
}

// abandon gives up on a message whose publish is unconfirmed: its input
// goes back to JetStream.
func (s *Sink) abandon(p *pending) {
	if p.flushed != nil {
		close(p.flushed)
		return
	}
	s.stats.unconfirmed.Add(1)
	if p.m.t != nil {
		p.m.t.release()
	}
}

// deliver waits until p is stored, publishing it again after a transient
// failure, and acknowledges its input. It fails when the outage budget is
// spent, on a permanent error, or with errStopped when the sink closes.
//
// The outage is counted from the later of the last acknowledgement and the
// first publish of p: JetStream was answering until then.
func (s *Sink) deliver(p *pending, timer *time.Timer) error {
	since := p.sent
	if s.lastOK.After(since) {
		since = s.lastOK
	}
	backoff := retryBackoffMin
	for {
		err := p.err
		if err == nil {
			var ack *jetstream.PubAck
			if ack, err = s.wait(p, since, timer); err == nil {
				s.lastOK = time.Now()
				s.stats.published.Add(1)
				if ack.Duplicate {
					s.stats.duplicates.Add(1)
				}
				if p.m.t != nil {
					p.m.t.done()
				}
				return nil
			}
			if errors.Is(err, errStopped) {
				return err
			}
		}
		if errors.Is(err, nats.ErrConnectionClosed) {
			return fmt.Errorf("%w: publish to %q: %w", ErrUnavailable, s.subject, err)
		}
		if permanent(err) {
			return fmt.Errorf("natsstage: publish %s to %q: %w", p.m.ID, s.subject, err)
		}
		if d := time.Since(since); d >= s.o.maxOutage {
			return fmt.Errorf("%w: publish to %q failing for %v: %w", ErrUnavailable, s.subject, d.Round(time.Millisecond), err)
		}
		timer.Reset(backoff)
		select {
		case <-timer.C:
		case <-s.stop:
			timer.Stop()
			return errStopped
		}
		backoff = min(2*backoff, retryBackoffMax)
		s.stats.republished.Add(1)
		s.publish(p)
	}
}

var errPublishTimeout = errors.New("natsstage: no acknowledgement in time")

// wait waits for p's acknowledgement, until the publish timeout, or the
// end of the outage budget counted from since, or until the sink closes.
func (s *Sink) wait(p *pending, since time.Time, timer *time.Timer) (*jetstream.PubAck, error) {
	deadline := p.sent.Add(s.o.publishTimeout)
	if end := since.Add(s.o.maxOutage); end.Before(deadline) {
		deadline = end
	}
	timer.Reset(max(time.Until(deadline), 0))
	defer timer.Stop()
	select {
	case ack := <-p.f.Ok():
		return ack, nil
	case err := <-p.f.Err():
		return nil, err
	case <-timer.C:
		return nil, errPublishTimeout
	case <-s.stop:
		return nil, errStopped
	}
}

// permanent reports whether JetStream refused a publish for good: a
// client error (4xx), or a message the client cannot send.
func permanent(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code < 500
	}
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject) ||
		errors.Is(err, nats.ErrHeadersNotSupported)
}

func (s *Sink) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil && s.exited != nil {
		select {
		case <-s.exited:
			return errStopped
		default:
		}
	}
	return s.err
}

// SinkStats counts what a [Sink] did.
type SinkStats struct {
	// Published counts the messages JetStream acknowledged, and Duplicates
	// those of them it had stored before (the same ID: a redelivered input
	// processed again).
	Published, Duplicates uint64
	// Republished counts the publishes repeated after a transient failure.
	Republished uint64
	// Unconfirmed counts the messages given up without an acknowledgement
	// (the sink failed or closed first); their inputs went back to
	// JetStream.
	Unconfirmed uint64
}

type sinkCounters struct {
	published, duplicates, republished, unconfirmed atomic.Uint64
}

// Stats returns a snapshot of the sink's counts. It is safe to call at any
// time.
func (s *Sink) Stats() SinkStats {
	c := &s.stats
	return SinkStats{Published: c.published.Load(), Duplicates: c.duplicates.Load(),
		Republished: c.republished.Load(), Unconfirmed: c.unconfirmed.Load()}
}

package natsstage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stagefsm/stagefsm/stage"
)

// Timings of the Source.
const (
	// pollWait is how long Next waits for a message when the source has
	// nothing and holds nothing; it bounds how late a drain request is seen.
	pollWait = 50 * time.Millisecond
	// fetchWait is how long one pull request waits on the server for
	// messages: an idle source sends one request per fetchWait, and Close
	// waits up to fetchWait for the request under way to end.
	fetchWait = 250 * time.Millisecond
	// The request that checks JetStream after an error waits this long at
	// most, and at least the minimum even when the outage budget is spent.
	probeTimeout    = time.Second
	minProbeTimeout = 10 * time.Millisecond
)

// errNoAnswer is the cause of an outage whose probe got no answer in time.
var errNoAnswer = errors.New("natsstage: no answer from JetStream")

var (
	_ stage.Source[*Msg] = (*Source)(nil)
	_ stage.Opener       = (*Source)(nil)
	_ io.Closer          = (*Source)(nil)
)

// Source is a [stage.Source] of [*Msg] that reads a durable JetStream pull
// consumer. Several workers — separate pipelines, in one process or many —
// may each run a Source on the same consumer: JetStream spreads the
// messages among them, and redelivers to the others what a stopped or
// crashed worker did not acknowledge.
//
// A message is acknowledged only once a [Sink] has published it (and every
// message derived from it with [Transform]), or settled as the pipeline
// dead-letters it (see [DeadLetter], which the pipeline must use): the
// delivery is at least once, and a [Sink]'s message ids make the output
// effectively once.
//
// The Source prefetches messages (see [WithPrefetch]) from a goroutine of
// its own, one pull request at a time. Next emits what has arrived without
// blocking; when nothing has, and the stage holds nothing, it waits briefly
// (50ms) for a message, so an idle source costs little and a drain request
// is seen quickly. Messages prefetched but not emitted when the Source
// closes — including those of the pull request under way, which Close lets
// end (250ms at most) rather than cut short — are handed back to JetStream
// (negatively acknowledged) for immediate redelivery.
//
// In a pipeline that checkpoints ([stage.WithCheckpoint]), make the Source
// with [WithAckOnCommit]: it is then a [stage.Resumable] and a
// [stage.Committer] whose position is a stream sequence, and it
// acknowledges a message only once a stored checkpoint covers it (see
// [Source.Position]). The consumer must then be read by that one Source at
// a time (one consumer per partition, say), and its AckWait must outlast
// the checkpoint interval.
//
// Connection loss and a server restart are ridden out for up to
// [WithMaxOutage] (the client reconnects and the consumer resumes);
// beyond that, or when the connection is closed for good, Next fails the
// stage with an error wrapping [ErrUnavailable].
//
// A Source serves one pipeline, once. Its methods are called by the stage
// (see [stage.Source]); [Source.Stats] may be called at any time.
type Source struct {
	js       jetstream.JetStream
	stream   string
	consumer string
	o        sourceOptions
	stats    sourceCounters

	// Owned by the stage: Open, Next and Close.
	used      bool
	opened    bool
	cons      jetstream.Consumer
	msgs      chan jetstream.Msg // prefetched messages, filled by pull
	stop      chan struct{}      // closed by Close: pull gives back what it holds
	pulled    chan struct{}      // closed when pull has returned
	timer     *time.Timer
	idle      bool
	downSince time.Time
	ck        commitState // WithAckOnCommit: see position.go

	// Written by pull, and by Next when a probe fails.
	suspect atomic.Bool
	errMu   sync.Mutex
	lastErr error
}

// NewSource returns a [Source] that reads the durable pull consumer named
// consumer on stream through js. The consumer must exist when the pipeline
// starts and acknowledge explicitly; [Source.Open] checks it.
func NewSource(js jetstream.JetStream, stream, consumer string, opts ...SourceOption) *Source {
	return &Source{js: js, stream: stream, consumer: consumer, o: newSourceOptions(opts)}
}

// Open looks the consumer up, checks that it is a pull consumer with
// explicit acknowledgements (and room for [WithRetry]'s redeliveries under
// its MaxDeliver), and starts receiving messages. It returns an error
// wrapping [ErrUnsupportedConsumer] for a consumer it cannot serve,
// [ErrAlreadyOpened] when called twice, and the client's error when the consumer
// cannot be reached; the pipeline then does not start.
func (s *Source) Open(ctx context.Context) error {
	if s.used {
		return ErrAlreadyOpened
	}
	s.used = true
	if s.js == nil {
		return errors.New("natsstage: NewSource was given a nil JetStream")
	}
	cons, err := s.js.Consumer(ctx, s.stream, s.consumer)
	if err != nil {
		if errors.Is(err, jetstream.ErrNotPullConsumer) {
			err = fmt.Errorf("%w: %w", ErrUnsupportedConsumer, err)
		}
		return fmt.Errorf("natsstage: consumer %s/%s: %w", s.stream, s.consumer, err)
	}
	cfg := cons.CachedInfo().Config
	if cfg.AckPolicy != jetstream.AckExplicitPolicy {
		return fmt.Errorf("%w: consumer %s/%s has ack policy %v, want %v",
			ErrUnsupportedConsumer, s.stream, s.consumer, cfg.AckPolicy, jetstream.AckExplicitPolicy)
	}
	if cfg.MaxDeliver > 0 && uint64(cfg.MaxDeliver) <= s.o.retries {
		return fmt.Errorf("%w: consumer %s/%s delivers a message at most %d times, too few for %d retries",
			ErrUnsupportedConsumer, s.stream, s.consumer, cfg.MaxDeliver, s.o.retries)
	}
	s.cons = cons
	s.msgs = make(chan jetstream.Msg, s.o.prefetch)
	s.stop = make(chan struct{})
	s.pulled = make(chan struct{})
	s.timer = time.NewTimer(pollWait)
	s.timer.Stop()
	s.opened = true
	go s.pull()
	return nil
}

// pull fills s.msgs with one pull request (Fetch) after another until the
// source closes or the connection is closed for good. It does not use the
// client's continuous Consume: in nats.go v1.55.0 a pull request can be
// skipped there, leaving the consumer idle until the heartbeat check
// (twice the heartbeat, 30 seconds by default) notices. One request at a
// time, made here, has no such gap.
//
// A request is never cut short, not even when the source closes: the
// client drops the messages of a cancelled request that are still on
// their way, and JetStream would redeliver them only after the consumer's
// AckWait. Each request ends by itself instead — with its batch, or when
// the server expires it after fetchWait (or the client gives up a second
// later, when the server is unreachable) — and hold hands back to
// JetStream what it brings once the source is closing.
func (s *Source) pull() {
	defer close(s.pulled)
	backoff := retryBackoffMin
	for !s.stopping() {
		batch, err := s.cons.Fetch(s.o.prefetch, jetstream.FetchMaxWait(fetchWait))
		if err == nil {
			for m := range batch.Messages() {
				s.hold(m)
			}
			err = batch.Error()
		}
		switch {
		case s.stopping():
			return
		case err == nil:
			backoff = retryBackoffMin // the request ended or expired
			continue
		case errors.Is(err, nats.ErrConnectionClosed):
			s.noteErr(err)
			return
		}
		s.noteErr(err)
		select {
		case <-time.After(backoff):
		case <-s.stop:
			return
		}
		backoff = min(2*backoff, retryBackoffMax)
	}
}

// stopping reports whether the source is closing.
func (s *Source) stopping() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// hold passes a message to Next, or gives it back to JetStream if the
// source is closing. A message given back while the request is still
// open is redelivered after fetchWait, not at once: JetStream would
// otherwise send it straight back into that same request, again and
// again, each time counting one more delivery towards the consumer's
// MaxDeliver.
func (s *Source) hold(m jetstream.Msg) {
	select {
	case s.msgs <- m:
	case <-s.stop:
		s.settled(&s.stats.released, m.NakWithDelay(fetchWait)) // never emitted: back to JetStream
	}
}

// noteErr records an error of a pull request: the source checks JetStream
// before it waits again.
func (s *Source) noteErr(err error) {
	s.errMu.Lock()
	s.lastErr = err
	s.errMu.Unlock()
	s.suspect.Store(true)
}

// Next emits the messages that have arrived. When none has, it returns at
// once if the previous call emitted some (so that the stage sends what it
// holds), and otherwise waits up to 50ms for one. It returns an error
// wrapping [ErrUnavailable], made with [stage.Fatal], when JetStream has
// been unreachable longer than [WithMaxOutage] or the connection is
// closed; a message whose metadata cannot be read is terminated and
// reported as a non-fatal error (an error item).
func (s *Source) Next(ctx context.Context, emit func(*Msg)) error {
	if !s.opened {
		return stage.Fatal(errors.New("natsstage: Source.Next outside Open and Close"))
	}
	n, err := s.take(emit)
	if n > 0 || err != nil {
		s.idle = false
		return err
	}
	if !s.idle {
		s.idle = true
		return nil
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	s.timer.Reset(pollWait)
	defer s.timer.Stop()
	select {
	case m := <-s.msgs:
		s.idle = false
		if err := s.emit(m, emit); err != nil {
			return err
		}
		_, err := s.take(emit)
		return err
	case <-s.pulled:
		return stage.Fatal(s.unavailable("the connection is closed"))
	case <-ctx.Done():
		return ctx.Err()
	case <-s.timer.C:
		return nil
	}
}

// take emits, without waiting, the messages that have arrived.
func (s *Source) take(emit func(*Msg)) (int, error) {
	n := len(s.msgs)
	for i := range n {
		if err := s.emit(<-s.msgs, emit); err != nil {
			return i, err
		}
	}
	return n, nil
}

// envelope allocates a Msg and its ticket at once.
type envelope struct {
	m Msg
	t ticket
}

func (s *Source) emit(jm jetstream.Msg, emit func(*Msg)) error {
	meta, err := jm.Metadata()
	if err != nil {
		s.settled(&s.stats.terminated, jm.TermWithReason("natsstage: no metadata"))
		return fmt.Errorf("natsstage: message on %s: %w", jm.Subject(), err)
	}
	if s.o.ackOnCommit && !s.admit(jm, meta.Sequence.Stream) {
		return nil
	}
	e := &envelope{}
	e.t.msg, e.t.src, e.t.delivered = jm, s, meta.NumDelivered
	e.t.refs.Store(1)
	if s.o.ackOnCommit {
		s.ck.held = append(s.ck.held, held{seq: meta.Sequence.Stream, t: &e.t})
	}
	e.m = Msg{
		Subject:   jm.Subject(),
		Header:    jm.Headers(),
		Data:      jm.Data(),
		ID:        meta.Stream + ":" + strconv.FormatUint(meta.Sequence.Stream, 10),
		Delivered: meta.NumDelivered,
		t:         &e.t,
	}
	s.stats.received.Add(1)
	if meta.NumDelivered > 1 {
		s.stats.redelivered.Add(1)
	}
	emit(&e.m)
	return nil
}

// check decides whether JetStream is reachable, after a disconnection or an
// error from the consume loop, and fails once it has not been for longer
// than the outage budget.
func (s *Source) check(ctx context.Context) error {
	nc := s.js.Conn()
	switch nc.Status() {
	case nats.CLOSED:
		return stage.Fatal(s.unavailable("the connection is closed"))
	case nats.CONNECTED:
		if !s.suspect.Load() {
			s.downSince = time.Time{}
			return nil
		}
		// The probe gets at most what is left of the outage budget.
		left := s.o.maxOutage
		if !s.downSince.IsZero() {
			left -= time.Since(s.downSince)
		}
		pctx, cancel := context.WithTimeout(ctx, max(min(left, probeTimeout), minProbeTimeout))
		_, err := s.cons.Info(pctx)
		cancel()
		if err == nil {
			s.suspect.Store(false)
			s.downSince = time.Time{}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = errNoAnswer // the probe's own deadline, not the stage's
		}
		s.noteErr(err)
	}
	now := time.Now()
	if s.downSince.IsZero() {
		s.downSince = now
	}
	if d := now.Sub(s.downSince); d >= s.o.maxOutage {
		return stage.Fatal(s.unavailable(fmt.Sprintf("unreachable for %v", d.Round(time.Millisecond))))
	}
	return nil
}

// unavailable returns an error wrapping ErrUnavailable and the last error
// a pull request met.
func (s *Source) unavailable(why string) error {
	s.errMu.Lock()
	last := s.lastErr
	s.errMu.Unlock()
	if last == nil {
		return fmt.Errorf("%w: consumer %s/%s: %s", ErrUnavailable, s.stream, s.consumer, why)
	}
	return fmt.Errorf("%w: consumer %s/%s: %s: %w", ErrUnavailable, s.stream, s.consumer, why, last)
}

// Close stops the source's goroutine and hands every message received but
// not emitted back to JetStream for immediate redelivery: those prefetched,
// and those the pull request under way brings until it ends (redelivered
// after 250ms, so that they do not come back into that request). Close waits
// for that request to end by itself (it is not cancelled, so that none of
// its messages is lost on the way): up to 250ms, a second more when
// JetStream is unreachable. Messages already emitted are settled by the
// pipeline, not here — but for those of a Source made with
// [WithAckOnCommit] that no stored checkpoint covers, which are handed back
// for immediate redelivery. Calling Close again, or on a Source never opened,
// does nothing. It returns nil.
func (s *Source) Close() error {
	if !s.opened {
		return nil
	}
	s.opened = false
	close(s.stop)
	<-s.pulled
	for range len(s.msgs) {
		s.settled(&s.stats.released, (<-s.msgs).Nak())
	}
	if s.o.ackOnCommit {
		s.releaseHeld()
	}
	return nil
}

// settled counts one settlement of a message, or the error that prevented
// it (JetStream then redelivers the message after AckWait).
func (s *Source) settled(c *atomic.Uint64, err error) {
	if err != nil {
		s.stats.settleErrors.Add(1)
		return
	}
	c.Add(1)
}

// SourceStats counts what a [Source] did with its messages.
type SourceStats struct {
	// Received counts the messages emitted into the pipeline, and
	// Redelivered those of them that JetStream had delivered before.
	Received, Redelivered uint64
	// Acked counts the messages acknowledged after they were published
	// (or dropped by a [Transform]) — with [WithAckOnCommit], once a
	// stored checkpoint covered them; Released those handed back for
	// immediate redelivery without being processed (prefetched but not
	// emitted when the source closed, or in flight when the pipeline
	// stopped or a stage failed); Retried those handed back for a delayed
	// redelivery and Terminated those given up, per [WithRetry].
	Acked, Released, Retried, Terminated uint64
	// SettleErrors counts the acknowledgements that could not be sent (the
	// connection was down); JetStream redelivers those messages after the
	// consumer's AckWait.
	SettleErrors uint64
	// Skipped counts, for a Source made with [WithAckOnCommit], the
	// redeliveries not emitted because the Source had emitted the message
	// before: covered by a checkpoint (after [Source.Resume] or
	// [Source.Commit]; acknowledged, and counted in Acked too), or
	// awaiting the checkpoint that will cover it.
	Skipped uint64
}

type sourceCounters struct {
	received, redelivered, acked, released, retried, terminated, settleErrors, skipped atomic.Uint64
}

// Stats returns a snapshot of the source's counts. It is safe to call at
// any time.
func (s *Source) Stats() SourceStats {
	c := &s.stats
	return SourceStats{
		Received: c.received.Load(), Redelivered: c.redelivered.Load(),
		Acked: c.acked.Load(), Released: c.released.Load(), Retried: c.retried.Load(),
		Terminated: c.terminated.Load(), SettleErrors: c.settleErrors.Load(),
		Skipped: c.skipped.Load(),
	}
}

package stage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/stagefsm/stagefsm"
)

// Chain is a source followed by zero or more transforms, whose last stage
// emits items of type T: the straight line, the simplest [Graph]. Build one
// with [From] and [Then], and finish it into a [Pipeline] with [To].
//
// A Chain only describes stages: each [To] builds a new Graph from it, so a
// Chain may be finished more than once, and the pipelines then share the
// handlers (which must then be safe for concurrent use).
type Chain[T any] struct {
	add func(g *Graph) *Stream[T]
}

// From starts a [Chain] with the source stage name, which runs src.
// Problems (a nil src, an empty or duplicate name) are reported by
// [Pipeline.Start].
func From[T any](name string, src Source[T]) *Chain[T] {
	return &Chain[T]{add: func(g *Graph) *Stream[T] { return Read(g, name, src) }}
}

// Then appends the transform stage name, which runs t on the items of c.
// Problems (a nil c or t, an empty or duplicate name) are reported by
// [Pipeline.Start].
func Then[I, O any](c *Chain[I], name string, t Transform[I, O]) *Chain[O] {
	return &Chain[O]{add: func(g *Graph) *Stream[O] { return Apply(chainStream(g, c), name, t) }}
}

// chainStream adds c's stages to g and returns c's output.
func chainStream[T any](g *Graph, c *Chain[T]) *Stream[T] {
	if c == nil || c.add == nil {
		g.misuse("nil Chain")
		return nil
	}
	return c.add(g)
}

// To finishes c with the sink stage name, which runs s, and returns the
// [Pipeline], built and ready to start. Problems in the chain (nil handlers,
// empty or duplicate stage names) are reported by [Pipeline.Start].
func To[T any](c *Chain[T], name string, s Sink[T], opts ...Option) *Pipeline {
	g := NewGraph(opts...)
	out := chainStream(g, c)
	if out == nil {
		u := g.unit(name, kindSink, kindSink.String(), s == nil)
		in := newEdge[T](&g.p.opts)
		close(in.ch)
		u.core = newSinkCore(u, s, in)
	} else {
		Write(out, name, s)
	}
	p, err := g.Build()
	if err != nil {
		p = g.p
		p.err = err
	}
	return p
}

// Pipeline is a graph of stages wired by bounded channels of batches, each
// stage a supervised FSM (see the package doc). Build one with a [Graph],
// or with [From], [Then] and [To] for a straight line; run it with [Pipeline.Start]; end it with
// [Pipeline.Drain] or [Pipeline.Abort], or let the source reach end of
// input; [Pipeline.Wait] returns how it ended.
//
// All methods are safe for concurrent use. A Pipeline runs once.
type Pipeline struct {
	opts   options
	err    error   // a construction problem, reported by Start
	units  []*unit // in the order they were added: every stage after the ones it reads
	byName map[string]*unit
	graph  *Graph        // what it was built from, for its Mermaid picture
	ck     *checkpointer // nil unless WithCheckpoint
	done   chan struct{}
	result error // set before done is closed
	// runCtx is the stages' context, for the goroutines the pipeline runs
	// beside their loops (see unit.bg). Set by Start before any stage runs.
	runCtx context.Context

	mu        sync.Mutex
	started   bool
	aborted   bool
	drainReq  bool
	gunFired  bool
	running   bool // every stage got through its gates: items may flow
	cancel    context.CancelCauseFunc
	journalEr error

	dlqMu sync.Mutex // serializes the dead-letter writer
}

// Start runs the pipeline: it starts every stage (each in its own
// goroutine, under [stagefsm.Start]) and takes them through the start-up
// gates with control events: Initialize (each handler's Open hook), then,
// once every stage has opened, Ready, then the source's Start once every
// other stage is running. Start returns when the source has been started,
// with nil; the pipeline then runs until [Pipeline.Wait] reports its end.
//
// If a stage fails to open, no item flows: every other stage fails with
// [ErrStartupAborted] (its own Close hook runs if it had opened), and Start
// waits for all of them and returns the same error as Wait. Start returns
// the construction problems of [From], [Then] and [To] at once, and
// [ErrAlreadyStarted] when called again.
//
// ctx bounds the pipeline's whole life: when it is done, the pipeline is
// aborted (see [Pipeline.Abort]).
func (p *Pipeline) Start(ctx context.Context) error {
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		return ErrAlreadyStarted
	}
	p.started = true
	if p.err != nil {
		p.result = p.err
		close(p.done)
		p.mu.Unlock()
		return p.err
	}
	if p.ck != nil {
		if err := p.ck.restore(ctx); err != nil {
			p.result = err
			close(p.done)
			p.mu.Unlock()
			return err
		}
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	p.cancel, p.runCtx = cancel, runCtx
	if p.aborted {
		cancel(ErrAborted)
	}
	p.mu.Unlock()

	for _, u := range p.units {
		opts := []stagefsm.Option{stagefsm.WithLogger(p.opts.logger), stagefsm.WithObserver(u.observer())}
		if u.policy != nil {
			opts = append(opts, stagefsm.WithRestart(*u.policy, reincarnate))
		} else {
			opts = append(opts, stagefsm.WithControlCapacity(controlCapacity))
		}
		u.st = stagefsm.Start(runCtx, supervisor{u}, State{}, u, opts...)
	}
	if p.ck != nil {
		go p.ck.run(runCtx)
	}
	go p.supervise(runCtx)

	if err := p.gates(runCtx); err != nil {
		for _, u := range p.units {
			_ = u.st.TrySend(event{kind: evError, err: ErrStartupAborted})
		}
		<-p.done
		return p.result
	}
	p.mu.Lock()
	p.gunFired = true
	drain := p.drainReq
	p.mu.Unlock()
	if drain {
		p.Drain()
	}
	return nil
}

// controlCapacity is the size of the control queue of a stage without a
// restart policy. Such a stage is sent at most three control events that
// matter — Initialize, then Ready, then Start (the source) or Error (a
// start-up that failed) — each after the previous one was taken, except
// that Error may follow a Ready not yet taken; the rest are BeginDrain
// requests to the source, of which one is enough (Drain ignores a full
// queue). The default of 16 would cost every stage 288 bytes more for the
// whole of its life. A stage with a restart policy keeps the default: its
// restart queues up to four gate events at once (see
// unit.restartScheduled), next to drain requests that may arrive meanwhile.
const controlCapacity = 4

// gates takes every stage through Initialize and Ready and fires the
// source. It returns an error when a stage did not get through.
func (p *Pipeline) gates(ctx context.Context) error {
	for _, u := range p.units {
		_ = u.st.TrySend(event{kind: evInitialize}) // an empty queue has room; a dead stage shows below
	}
	var errs []error
	for _, u := range p.units {
		select {
		case err := <-u.openDone:
			if err != nil {
				errs = append(errs, &Error{Stage: u.name, Err: err})
			}
		case <-u.st.Done():
			err := u.st.Wait(ctx) // done: returns at once; e.g. a restart policy the core rejects
			if err == nil {
				err = errStoppedAtStart
			}
			errs = append(errs, &Error{Stage: u.name, Err: err})
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, u := range p.units {
		_ = u.st.TrySend(event{kind: evReady})
	}
	// Downstream first, so that the source starts only once every other
	// stage is running.
	for i := len(p.units) - 1; i >= 0; i-- {
		u := p.units[i]
		want := Running
		switch u.kind {
		case kindSource:
			want = WaitingForGun
		case kindJoin:
			want = Hydrating // it waits there for its reference input (a live join goes on to Running at once)
		}
		if _, err := u.st.WaitState(ctx, func(s State) bool {
			return s.Kind == want || (want == Hydrating && s.Kind == Running)
		}); err != nil {
			return &Error{Stage: u.name, Err: err}
		}
	}
	p.mu.Lock()
	p.running = true
	p.mu.Unlock()
	for _, u := range p.sources() {
		if err := u.st.TrySend(event{kind: evStart}); err != nil {
			return &Error{Stage: u.name, Err: err}
		}
	}
	return nil
}

// sources returns the source stages, in graph order.
func (p *Pipeline) sources() []*unit {
	var out []*unit
	for _, u := range p.units {
		if u.kind == kindSource {
			out = append(out, u)
		}
	}
	return out
}

// Mermaid returns the pipeline's graph as a Mermaid flowchart (see
// [Graph.Mermaid]).
func (p *Pipeline) Mermaid() string {
	if p.graph == nil {
		return ""
	}
	return p.graph.Mermaid()
}

var errStoppedAtStart = errors.New("stage: stopped before it opened")

// reincarnate is the context factory of a stage with a restart policy: the
// next incarnation runs with the same unit, which the OnRestarted callback
// resets (see unit.restarted).
func reincarnate(_ context.Context, u *unit) (*unit, error) { return u, nil }

// flowing reports whether every stage got through the start-up gates, so
// that items may flow: only then is a failure restarted.
func (p *Pipeline) flowing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running
}

// drainRequested reports whether Drain was called.
func (p *Pipeline) drainRequested() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.drainReq
}

// Drain asks the pipeline to finish gracefully: the source stops producing
// (between two calls of its Next), sends what it holds and forwards end of
// input; every other stage then drains what reaches it, in order, and the
// pipeline ends as if the source had reached end of input. Items in flight
// are delivered, not lost. Drain does not wait (see [Pipeline.Wait]); it is
// idempotent, and a request made before the source started is honoured as
// soon as it starts.
func (p *Pipeline) Drain() {
	p.mu.Lock()
	p.drainReq = true
	fire := p.gunFired
	p.mu.Unlock()
	if fire {
		for _, u := range p.sources() {
			_ = u.st.TrySend(event{kind: evBeginDrain}) // full or done: a drain is already under way
		}
	}
}

// Abort stops every stage at once by cancelling their context. No stage
// writes its own completion entry; the pipeline journals each unfinished
// stage as aborted. The items in flight (in the channels and in the
// stages' hands) are dead-lettered with [ErrAborted], so the counts still
// balance, and then the Close hook of every handler that opened and was
// not closed yet is called, from the pipeline's goroutine once the stage's
// own goroutine has ended (a Close error or panic is reported by
// [Pipeline.Wait] as a [*Error]). Abort does not wait; it is
// idempotent.
func (p *Pipeline) Abort() { p.abort(ErrAborted) }

func (p *Pipeline) abort(cause error) {
	p.mu.Lock()
	p.aborted = true
	cancel := p.cancel
	p.mu.Unlock()
	if cancel != nil {
		cancel(cause)
	}
}

// Done returns a channel that is closed when the pipeline has ended: every
// stage has finished, every item is accounted for, and the pipeline's
// completion entry is journaled.
func (p *Pipeline) Done() <-chan struct{} { return p.done }

// Wait waits for the pipeline to end and returns nil when every stage
// drained. Otherwise it returns an error that joins a [*Error] for each
// stage that failed, an error wrapping [ErrAborted] (and the context's
// cause) when the pipeline was aborted, and the journal's errors. It
// returns [ErrNotStarted] for a pipeline never started, and ctx.Err() if ctx
// is done first (the pipeline keeps running). It may be called any number
// of times and returns the same result.
func (p *Pipeline) Wait(ctx context.Context) error {
	p.mu.Lock()
	started := p.started
	p.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	select {
	case <-p.done:
		return p.result
	case <-ctx.Done():
		return ctx.Err()
	}
}

// supervise waits for every stage to finish, accounts for what is left,
// journals the outcome and closes done.
func (p *Pipeline) supervise(ctx context.Context) {
	errs := make([]error, len(p.units))
	for i, u := range p.units {
		errs[i] = u.st.Wait(context.Background())
		// The stage's goroutine has ended, and with it every callback that
		// starts a goroutine for it; those end at end of input, or when
		// the pipeline is aborted.
		u.bg.Wait()
		// Make sure its downstream sees end of input whatever way it ended.
		u.end(ctx, false)
		u.core.closeOutput()
	}
	aborted := ctx.Err() != nil
	var failures []error
	if ck := p.ck; ck != nil {
		if aborted {
			ck.halt()
		} else if err := ck.finish(ctx); err != nil {
			failures = append(failures, err)
		}
	}
	if aborted {
		cause := context.Cause(ctx)
		if errors.Is(cause, ErrAborted) {
			failures = append(failures, cause)
		} else {
			failures = append(failures, fmt.Errorf("%w: %w", ErrAborted, cause))
		}
	}
	for i, u := range p.units {
		u.core.sweep(ErrAborted)
		// A stage stopped by an abort ran no Cleanup: its handler still
		// holds what Open acquired (connections, subscriptions, files).
		if err := safeCall(u.closeHandler); err != nil {
			failures = append(failures, &Error{Stage: u.name, Err: err})
		}
		final := u.st.State()
		switch {
		case errs[i] != nil && aborted && isCancel(errs[i]):
			// Stopped by the abort: no completion of its own.
		case errs[i] != nil && errors.Is(context.Cause(ctx), errs[i]):
			// The failure that aborted the pipeline: reported as the cause.
		case errs[i] != nil:
			failures = append(failures, &Error{Stage: u.name, Err: errs[i]})
		case final.Kind == Failed && errors.Is(final.Reason, ErrStartupAborted):
			// A consequence of another stage's failure to open, which is
			// reported instead.
		case final.Kind == Failed:
			failures = append(failures, &Error{Stage: u.name, Err: u.reason(final.Reason)})
		}
		if !u.completed {
			outcome, reason := OutcomeAborted, "aborted"
			if errs[i] != nil && !isCancel(errs[i]) {
				outcome, reason = OutcomeFailed, errs[i].Error()
			}
			counts := u.stats.load()
			p.journal(Entry{Time: time.Now(), Stage: u.name, Kind: EntryCompleted,
				Outcome: outcome, Reason: reason, Counts: &counts})
		}
	}
	st := p.Stats()
	total := Counts{Emitted: st.Emitted, Delivered: st.Delivered, DeadLettered: st.DeadLettered, Dropped: st.Dropped}
	e := Entry{Time: time.Now(), Kind: EntryCompleted, Outcome: OutcomeDrained, Counts: &total}
	switch {
	case aborted:
		e.Outcome, e.Reason = OutcomeAborted, errors.Join(failures...).Error()
	case len(failures) > 0:
		e.Outcome, e.Reason = OutcomeFailed, errors.Join(failures...).Error()
	}
	p.journal(e)
	p.mu.Lock()
	if p.journalEr != nil {
		failures = append(failures, p.journalEr)
	}
	p.mu.Unlock()
	p.result = errors.Join(failures...)
	p.cancel(nil)
	close(p.done)
}

func isCancel(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// stageFailed applies the failure policy when u fails: the source is asked
// to drain, so that upstream stops and every other stage drains what it has
// (the failed stage dead-letters what reaches it).
func (p *Pipeline) stageFailed(u *unit) {
	if u.kind != kindSource {
		p.Drain()
	}
}

// journal appends e to the journal, if any, keeping the first error.
func (p *Pipeline) journal(e Entry) {
	j := p.opts.journal
	if j == nil {
		return
	}
	e.Pipeline = p.opts.name
	if err := j.Append(e); err != nil {
		p.mu.Lock()
		if p.journalEr == nil {
			p.journalEr = err
		}
		p.mu.Unlock()
	}
}

// countDeadLetter attributes a dead letter to the stage where it failed.
func (p *Pipeline) countDeadLetter(at *unit, err error) {
	var ie *ItemError
	if errors.As(err, &ie) {
		if u, ok := p.byName[ie.Stage]; ok {
			at = u
		}
	}
	at.stats.deadLettered.Add(1)
	at.stats.causes[causeOf(err)].Add(1)
}

func (p *Pipeline) writeDeadLetter(it Item[any]) {
	p.dlqMu.Lock()
	defer p.dlqMu.Unlock()
	p.opts.deadLetter(it)
}

// Stats returns a snapshot of the pipeline's counts and of each stage's
// state and timeline, in pipeline order. It may be called at any time,
// also while the pipeline runs (counts then move in steps of a batch).
func (p *Pipeline) Stats() PipelineStats {
	var st PipelineStats
	st.Stages = make([]Stats, len(p.units))
	// Ended items are read before emitted ones (see counters), so that
	// InFlight is never negative.
	for i, u := range p.units {
		st.Stages[i].Counts.Delivered = u.stats.delivered.Load()
		st.Stages[i].Counts.DeadLettered = u.stats.deadLettered.Load()
		st.Stages[i].Counts.Dropped = u.stats.dropped.Load()
	}
	for i, u := range p.units {
		s := &st.Stages[i]
		s.Name, s.Kind = u.name, u.label
		s.Counts.In = u.stats.in.Load()
		s.Counts.Out = u.stats.out.Load()
		s.Counts.Emitted = u.stats.emitted.Load()
		s.Restarts = int(u.restarts.Load())
		if j, ok := u.core.(interface{ unmatchedCount() uint64 }); ok {
			s.Unmatched = j.unmatchedCount()
		}
		if u.depth != nil {
			s.Queued = u.depth()
		}
		if u.lat != nil {
			s.Latency = u.lat.load()
		}
		for c := range u.stats.causes {
			if n := u.stats.causes[c].Load(); n > 0 {
				if s.DeadLetterCauses == nil {
					s.DeadLetterCauses = make(map[string]uint64)
				}
				s.DeadLetterCauses[causeNames[c]] = n
			}
		}
		if ks, ok := u.core.(keyedStater); ok {
			s.Keys, s.Timeouts = ks.keyedStats()
		}
		u.mu.Lock()
		s.State = u.state
		s.Timeline = append([]Step(nil), u.timeline...)
		u.mu.Unlock()
		st.Emitted += s.Counts.Emitted
		st.Delivered += s.Counts.Delivered
		st.DeadLettered += s.Counts.DeadLettered
		st.Dropped += s.Counts.Dropped
	}
	st.InFlight = st.Emitted - st.Delivered - st.DeadLettered - st.Dropped
	if p.ck != nil {
		p.ck.stats(&st)
	}
	return st
}

package stage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stagefsm/stagefsm"
)

// kind is the role of a stage in its pipeline.
type kind uint8

const (
	kindSource kind = iota
	kindTransform
	kindSink
	kindJoin
)

func (k kind) String() string {
	switch k {
	case kindSource:
		return "source"
	case kindTransform:
		return "transform"
	case kindSink:
		return "sink"
	case kindJoin:
		return "join"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// core is the typed half of a stage: what differs between sources,
// transforms and sinks and between item types. Every method but sweep is
// called from the stage's loop goroutine; sweep is called by the pipeline
// after that goroutine has ended.
type core interface {
	// open runs the handler's Open hook (the Open action).
	open(ctx context.Context) error
	// running and draining are the dispatch of Running and Draining.
	running(ctx context.Context) (stagefsm.Directive[event], error)
	draining(ctx context.Context) (stagefsm.Directive[event], error)
	// finish is the DrainHandler action: a transform's Drain hook and the
	// sending of its outputs, a sink's Flush hook.
	finish(ctx context.Context) error
	// closeOutput forwards end of input downstream; idempotent.
	closeOutput()
	// sweepHeld dead-letters what the stage holds — the rest of the input
	// batch it was processing, the outputs it has not sent, the input
	// batches parked for it — with cause unless an item already failed.
	sweepHeld(cause error)
	// park prepares the restart of a failed stage: the item whose handler
	// failed is dead-lettered with its error, the rest of its input batch
	// is parked for the next incarnation, and the outputs not sent yet are
	// kept for it to send.
	park()
	// shed waits for one batch on the stage's input and, when parkable,
	// parks it for the next incarnation while there is room (what a full
	// input channel holds); otherwise it dead-letters it with cause. It reports done at end of input (at once for a source, which
	// has none) and when stop is closed (nil: never), and returns ctx.Err()
	// if ctx is done first. It may run on a goroutine other than the loop's
	// while the loop does not touch the core (a failed stage waiting to
	// restart, or that has ended).
	shed(ctx context.Context, stop <-chan struct{}, cause error, parkable bool) (done bool, err error)
	// sweep dead-letters, without waiting, what the stage holds and what is
	// queued on its input, with cause unless an item already failed.
	sweep(cause error)
	// handler is the user's handler, for the Close hook.
	handler() any
}

// hydrator is the core of a stage with a Hydrating state: a [Join] in
// finite reference mode.
type hydrator interface {
	hydrating(ctx context.Context) (stagefsm.Directive[event], error)
}

// unit is a stage's context (the C of its machine): what every stage kind
// shares. The loop goroutine owns it while the stage runs; mu guards the
// fields that Stats reads concurrently.
type unit struct {
	p     *Pipeline
	name  string
	kind  kind   // which FSM the stage runs
	label string // its kind in Stats: source, transform, broadcast, join...
	core  core
	st    *stagefsm.Stage[State, event]
	stats counters
	depth func() int // batches queued on the input; nil for a source
	lat   *latency   // nil unless WithLatency

	policy   *stagefsm.RestartPolicy // nil: the stage is not restarted
	openDone chan error              // receives the first Open action's result
	closeErr error                   // the Close hook's error in a stage that had failed

	// Per incarnation: reset when the stage restarts.
	opened   bool  // the Open hook succeeded (or there is none)
	closed   bool  // the Close hook was called
	final    State // the state that dispatched Terminate
	drained  bool  // the stage entered Drained: a failure from now on is final
	deferred bool  // the stage failed and its restart policy decides the rest
	runErr   error // the loop's error, under a restart policy

	completed bool // the completion entry was written

	// While a failed stage waits to restart, a goroutine sheds its input;
	// closing shedStop stops it, shedDone is closed when it has ended.
	shedStop chan struct{}
	shedDone <-chan struct{}
	// bg counts the goroutines the pipeline runs for the stage beside its
	// loop; Pipeline.supervise waits for them after the loop has ended.
	bg       sync.WaitGroup
	restarts atomic.Int64

	// In a checkpointing pipeline (see [WithCheckpoint]):
	resumePos []byte                 // the position a source or sink resumes from, once
	commitPos atomic.Pointer[[]byte] // a source's position a stored checkpoint covers, to commit
	ended     atomic.Bool            // the stage closed its output (a sink: drained or failed)
	cutID     uint64                 // the cut whose barriers the stage is counting
	cutSeen   int                    // barriers of cutID received
	// drainedCut: the stage was restored from a checkpoint taken after it
	// drained; newInput: it has taken an input batch since it started.
	// Such a stage does not run its drain again unless it has new input:
	// its outputs at drain are already written.
	drainedCut, newInput bool

	mu       sync.Mutex
	state    State
	timeline []Step
}

// stateKind returns the stage's current state kind, as Stats sees it.
func (u *unit) stateKind() StateKind {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.state.Kind
}

// onBarrier counts a barrier of cut id received on one of the stage's
// inputs. With the barrier of every open input, the stage has taken every
// item sent before the cut: it captures its part and passes the barrier on.
func (u *unit) onBarrier(ctx context.Context, id uint64) error {
	if id < u.cutID {
		return nil // a cut given up
	}
	if id > u.cutID {
		u.cutID, u.cutSeen = id, 0
	}
	u.cutSeen++
	c := u.core.(cutter)
	if u.cutSeen < c.writers() {
		return nil
	}
	part, err := c.capture(ctx)
	if u.drainedCut && u.newInput {
		part.Delete = append(part.Delete, drainedKey) // it will drain again
	}
	u.p.ck.delivered(u, id, part, err)
	return c.forward(ctx, id)
}

// drainAgain reports whether the stage's drain hook runs: not in a stage
// restored from a checkpoint taken after it drained, with no new input.
func (u *unit) drainAgain() bool { return !u.drainedCut || u.newInput }

// end marks the stage's output closed; in a checkpointing pipeline a stage
// that drained (capture) first hands over its last part.
func (u *unit) end(ctx context.Context, capture bool) {
	if ck := u.p.ck; ck != nil && capture && !u.ended.Load() {
		part, err := u.core.(cutter).capture(ctx)
		if part.Set == nil {
			part.Set = make(map[string][]byte)
		}
		part.Set[drainedKey] = []byte{1}
		ck.ended(u, part, err)
	}
	u.ended.Store(true)
}

// resume moves a source or a sink to the position of the checkpoint the
// pipeline resumed from, after its Open hook.
func (u *unit) resume(ctx context.Context) error {
	pos := u.resumePos
	u.resumePos = nil
	if pos == nil {
		return nil
	}
	r, ok := u.core.handler().(Resumable)
	if !ok {
		return nil
	}
	if err := r.Resume(ctx, pos); err != nil {
		return fmt.Errorf("%w: resuming from the checkpoint's position: %w", ErrCheckpoint, err)
	}
	return nil
}

func newUnit(p *Pipeline, name string, k kind) *unit {
	now := time.Now()
	return &unit{
		p:        p,
		name:     name,
		kind:     k,
		openDone: make(chan error, 1),
		timeline: []Step{{State: State{}, At: now}},
	}
}

// record is the observer of every committed transition: it updates the
// state and the timeline that Stats reads and journals the change.
func (u *unit) record(from State, e event, to State) {
	now := time.Now()
	if to.Kind == Drained {
		u.drained = true
	}
	u.mu.Lock()
	u.state = to
	if to.Kind != from.Kind {
		u.timeline = append(u.timeline, Step{State: to, At: now})
	}
	u.mu.Unlock()
	u.p.journal(Entry{Time: now, Stage: u.name, Kind: EntryTransition,
		From: from.Kind.String(), Event: e.String(), To: to.String()})
}

func (u *unit) observer() stagefsm.Observer[State, event] {
	obs := stagefsm.Observer[State, event]{
		OnTransition: func(from State, e event, to State, _ int) { u.record(from, e, to) },
		OnFailure:    func(from State, e event, to State, _ error) { u.record(from, e, to) },
		OnExit: func(_ State, err error) {
			if err == nil || isCancel(err) {
				return
			}
			if u.policy != nil {
				u.runErr = err // the policy decides: see restartScheduled and gaveUp
				return
			}
			// The loop itself failed (a failure it could not route): the
			// stage's channels are no longer served, so nothing can drain.
			u.p.abort(&Error{Stage: u.name, Err: err})
		},
	}
	if u.policy != nil {
		obs.OnRestartScheduled = u.restartScheduled
		obs.OnRestarted = u.restarted
		obs.OnGaveUp = u.gaveUp
	}
	return obs
}

// deferFailure reports, as the stage enters Failed, whether its restart
// policy decides what the failure means: the stage has a policy, the
// pipeline has started (a failure to start aborts the start), and the
// stage has not drained (its input has ended: nothing is left to redo).
func (u *unit) deferFailure() bool {
	u.deferred = u.policy != nil && !u.drained && u.p.flowing()
	return u.deferred
}

// restartScheduled is the OnRestartScheduled callback of a stage with a
// restart policy, called on its goroutine after a failed incarnation ended
// (its control queue just emptied). It prepares the next incarnation: the
// gate events it will need, the rest of the failed batch parked for it,
// and a goroutine that takes its input (parking it while there is room)
// until it runs.
func (u *unit) restartScheduled(n int, _ time.Duration, cause error) {
	if u.drained || !u.p.flowing() {
		// A loop error before the start or after the drain: not restarted.
		// Asking the stage to finish ends the backoff; gaveUp follows.
		u.st.CloseControl()
		return
	}
	reason := cause
	if u.deferred && u.final.Reason != nil {
		reason = u.final.Reason // the failure itself, without the restart's wrapping
	}
	gates := []event{{kind: evInitialize}, {kind: evReady}}
	if u.kind == kindSource {
		gates = append(gates, event{kind: evStart})
		if u.p.drainRequested() {
			gates = append(gates, event{kind: evBeginDrain})
		}
	}
	for _, e := range gates {
		if err := u.st.TrySend(e); err != nil {
			// The queue was just emptied and holds 16: unreachable, but a
			// stage whose gates cannot open must not restart and hang.
			u.st.CloseControl()
			return
		}
	}
	u.core.park()
	u.startShedding(fmt.Errorf("%w: %w", ErrRestarted, reason))
	u.p.journal(Entry{Time: time.Now(), Stage: u.name, Kind: EntryRestart, Restart: n, Reason: reasonText(reason)})
}

// restarted is the OnRestarted callback: the next incarnation is about to
// run, in Created. It stops the shedding and resets what belongs to one
// incarnation.
func (u *unit) restarted(int) {
	u.stopShedding()
	u.opened, u.closed, u.final, u.drained, u.deferred, u.runErr = false, false, State{}, false, false, nil
	u.restarts.Add(1)
	u.mu.Lock()
	u.state = State{}
	u.timeline = append(u.timeline, Step{State: State{}, At: time.Now()})
	u.mu.Unlock()
}

// gaveUp is the OnGaveUp callback: the policy does not restart the stage,
// whose goroutine is ending with err. A stage that ended Failed now fails
// as it would have without a policy; a stage whose loop failed aborts the
// pipeline.
func (u *unit) gaveUp(err error) {
	u.stopShedding()
	if u.runErr != nil || !u.deferred {
		u.p.abort(&Error{Stage: u.name, Err: err})
		return
	}
	u.core.sweepHeld(ErrFailed)
	u.end(context.Background(), false)
	u.core.closeOutput()
	u.p.stageFailed(u)
	u.goShed(ErrFailed, nil, false) // what the Failed dispatch does without a policy
}

// startShedding starts taking what reaches the stage's input while it
// waits to restart: parked for the next incarnation while there is room,
// dead-lettered with cause beyond.
func (u *unit) startShedding(cause error) {
	u.shedStop = make(chan struct{})
	u.shedDone = u.goShed(cause, u.shedStop, true)
}

// goShed starts a goroutine that takes what reaches the stage's input —
// parking it if parkable and there is room, else dead-lettering it with
// cause — until its end, until stop is closed (nil: never) or the pipeline
// is aborted. The channel it returns is closed when the goroutine ends;
// Pipeline.supervise waits for it through u.bg.
func (u *unit) goShed(cause error, stop <-chan struct{}, parkable bool) <-chan struct{} {
	done := make(chan struct{})
	u.bg.Add(1)
	go func() {
		defer u.bg.Done()
		defer close(done)
		for {
			ended, err := u.core.shed(u.p.runCtx, stop, cause, parkable)
			if ended || err != nil {
				return
			}
		}
	}()
	return done
}

// stopShedding stops the goroutine startShedding started, if any, and
// waits for it: the core is the loop's again.
func (u *unit) stopShedding() {
	if u.shedStop == nil {
		return
	}
	close(u.shedStop)
	<-u.shedDone
	u.shedStop, u.shedDone = nil, nil
}

// action is a side effect of a stage's machine. The lists the machine
// returns are static, so a transition allocates nothing.
type action uint8

const (
	actOpen         action = iota + 1 // the Open hook; reports to the pipeline's start gate
	actDrainHandler                   // Drain (transform) or Flush (sink)
	actForwardEOF                     // close the output channel
	actCleanup                        // the Close hook, once, if opened
	actSendFailure                    // close the output, tell the pipeline (unless a restart policy decides)
)

var actionNames = [...]string{"", "Open", "DrainHandler", "ForwardEOF", "Cleanup", "SendFailure"}

func (a action) String() string {
	if int(a) < len(actionNames) && a != 0 {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Execute runs the action for the stage u. A panic in a hook is recovered
// by the supervision loop and routed like an error.
func (a action) Execute(ctx context.Context, u *unit) error {
	switch a {
	case actOpen:
		err := safeCall(func() error {
			if err := u.core.open(ctx); err != nil {
				return err
			}
			return u.resume(ctx)
		})
		u.opened = err == nil
		select {
		case u.openDone <- err:
		default:
		}
		return err
	case actDrainHandler:
		if err := u.core.finish(ctx); err != nil {
			return err
		}
		if u.kind == kindSink {
			u.end(ctx, true)
		}
		return nil
	case actForwardEOF:
		u.end(ctx, true)
		u.core.closeOutput()
		return nil
	case actCleanup:
		if u.kind == kindSource && u.p.ck != nil && u.state.Kind == Drained {
			return nil // closed by the pipeline after the final checkpoint's commit
		}
		return u.closeHandler()
	case actSendFailure:
		if u.deferFailure() {
			return nil // the output stays open and nothing drains: see restartScheduled
		}
		u.end(ctx, false)
		u.core.closeOutput()
		u.p.stageFailed(u)
		return nil
	default:
		return fmt.Errorf("stage %s: unknown action %v", u.name, a)
	}
}

// reason is why the stage failed: r, its state's reason, and the error of
// its Close hook if that failed too.
func (u *unit) reason(r error) error {
	if u.closeErr == nil {
		return r
	}
	return fmt.Errorf("%w (and Close: %w)", r, u.closeErr)
}

// closeHandler calls the handler's Close hook if the stage opened and has
// not closed it yet. It is the Cleanup action, and the pipeline calls it
// for a stage whose loop ended without Cleanup (an abort), once that loop
// has ended.
//
// In a stage that has failed already (the observer recorded Failed before
// the actions run) the failure's reason stands: a Close that fails then is
// not routed — as the failure of a failure action it would end the stage's
// loop and abort the whole pipeline — but reported with the reason (see
// unit.reason).
func (u *unit) closeHandler() error {
	if !u.opened || u.closed {
		return nil
	}
	u.closed = true
	c, ok := u.core.handler().(io.Closer)
	switch {
	case !ok:
		return nil
	case u.state.Kind != Failed:
		return c.Close()
	}
	u.closeErr = safeCall(c.Close)
	return nil
}

// supervisor is the [stagefsm.HandlerSupervised] of every stage. Its
// dispatch delegates the typed work to the unit's core.
type supervisor struct{ u *unit }

var (
	_ stagefsm.HandlerSupervised[State, event, *unit, action] = supervisor{}
	_ stagefsm.Controlled[State, event]                       = supervisor{}
	_ stagefsm.Stoppable[event]                               = supervisor{}
	_ stagefsm.Failable[State]                                = supervisor{}
)

// errGate is the dispatch failure of a gate state, which only a control
// event opens: the stage was run without a control plane.
var errGate = errors.New("stage: a gate state was dispatched: stages run under stagefsm.Start, which takes control events")

func (s supervisor) BuildStateMachine(initial State) (stagefsm.Machine[State, event, *unit, action], error) {
	return newMachine(s.u.kind, initial)
}

func (s supervisor) Name() string                        { return s.u.p.opts.name + "/" + s.u.name }
func (s supervisor) EventForActionError(err error) event { return event{kind: evError, err: err} }
func (s supervisor) StopEvent() event                    { return event{kind: evBeginDrain} }

func (s supervisor) DispatchState(ctx context.Context, st State, u *unit) (stagefsm.Directive[event], error) {
	switch st.Kind {
	case Running:
		return u.core.running(ctx)
	case Draining:
		return u.core.draining(ctx)
	case Hydrating:
		if h, ok := u.core.(hydrator); ok {
			return h.hydrating(ctx)
		}
		return stagefsm.Directive[event]{}, fmt.Errorf("stage %s: Hydrating dispatched in a stage that does not hydrate", u.name)
	case Failed:
		if !u.deferred {
			u.core.sweepHeld(ErrFailed)
			done, err := u.core.shed(ctx, nil, ErrFailed, false)
			if err != nil || !done {
				return stagefsm.Continue[event](), err
			}
		}
		// A deferred failure ends the incarnation at once: the restart
		// policy decides what happens to the items (see restartScheduled).
		u.final = st
		return stagefsm.Terminate[event](), nil
	case Drained:
		u.final = st
		return stagefsm.Terminate[event](), nil
	default:
		return stagefsm.Directive[event]{}, fmt.Errorf("%w (state %s)", errGate, st)
	}
}

// ControlMode makes the states before Running gates that wait for a
// control event, polls in Running and Draining, and ignores control events
// in the terminal states.
func (s supervisor) ControlMode(st State) stagefsm.ControlMode {
	switch st.Kind {
	case Created, Initialized, WaitingForGun:
		return stagefsm.ControlBlock
	case Running, Draining, Hydrating:
		return stagefsm.ControlPoll
	default:
		return stagefsm.ControlIgnore
	}
}

// ControlClosed fails a stage whose control queue closes before it started
// and drains a running one.
func (s supervisor) ControlClosed(st State) (event, bool) {
	switch st.Kind {
	case Created, Initialized, WaitingForGun:
		return event{kind: evError, err: ErrStartupAborted}, true
	case Running, Hydrating:
		return event{kind: evBeginDrain}, true
	default:
		return event{}, false
	}
}

// FailedState reports a stage that terminated in Failed with a failure its
// restart policy decides on: the stage is restarted (or the policy gives
// up). Without a policy Start never calls it.
func (s supervisor) FailedState(st State) bool { return st.Kind == Failed && s.u.deferred }

// WriteCompletionEvent journals how the stage ended, with its counts. An
// incarnation that failed under a restart policy has not ended the stage:
// it writes nothing (the pipeline journals the stage's end if the policy
// gives up).
func (s supervisor) WriteCompletionEvent(context.Context) error {
	u := s.u
	if u.deferred {
		return nil
	}
	u.completed = true
	e := Entry{Time: time.Now(), Pipeline: u.p.opts.name, Stage: u.name, Kind: EntryCompleted, Outcome: OutcomeDrained}
	if u.final.Kind == Failed {
		e.Outcome = OutcomeFailed
		e.Reason = reasonText(u.reason(u.final.Reason))
	}
	counts := u.stats.load()
	e.Counts = &counts
	if j := u.p.opts.journal; j != nil {
		return j.Append(e)
	}
	return nil
}

func reasonText(err error) string {
	if err == nil {
		return "unknown"
	}
	return err.Error()
}

// safeCall calls f, turning a panic into a returned error.
func safeCall(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = newPanicError(v)
		}
	}()
	return f()
}

// newPanicError makes the error of a recovered handler panic.
func newPanicError(v any) error {
	return &stagefsm.PanicError{Value: v, Stack: debug.Stack()}
}

// deadLetter hands an item to the pipeline's dead-letter path. An item that
// has not failed yet fails at u with cause.
func deadLetter[T any](u *unit, it Item[T], cause error) {
	if it.Err == nil {
		it.Err = &ItemError{Stage: u.name, Err: cause}
	}
	u.p.countDeadLetter(u, it.Err)
	if u.p.opts.deadLetter != nil {
		u.p.writeDeadLetter(Item[any]{Payload: it.payload(), Err: it.Err, Origin: it.Origin, Seq: it.Seq})
	}
}

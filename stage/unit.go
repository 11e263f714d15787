package stage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"time"

	"github.com/stagefsm/stagefsm"
)

// kind is the role of a stage in its pipeline.
type kind uint8

const (
	kindSource kind = iota
	kindTransform
	kindSink
)

func (k kind) String() string { return [...]string{"source", "transform", "sink"}[k] }

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
	// failed is the dispatch of Failed: it dead-letters what the stage
	// holds and one batch of what still reaches its input; done reports
	// that the input has ended, so the stage can terminate.
	failed(ctx context.Context) (done bool, err error)
	// sweep dead-letters, without waiting, what the stage holds and what is
	// queued on its input, with cause unless an item already failed.
	sweep(cause error)
	// handler is the user's handler, for the Close hook.
	handler() any
}

// unit is a stage's context (the C of its machine): what every stage kind
// shares. The loop goroutine owns it while the stage runs; mu guards the
// fields that Stats reads concurrently.
type unit struct {
	p     *Pipeline
	name  string
	kind  kind
	core  core
	st    *stagefsm.Stage[State, event]
	stats counters

	opened   bool       // the Open hook succeeded (or there is none)
	closed   bool       // the Close hook was called
	openDone chan error // receives the Open action's result, once

	final     State // the state that dispatched Terminate
	completed bool  // the completion entry was written

	mu       sync.Mutex
	state    State
	timeline []Step
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
	return stagefsm.Observer[State, event]{
		OnTransition: func(from State, e event, to State, _ int) { u.record(from, e, to) },
		OnFailure:    func(from State, e event, to State, _ error) { u.record(from, e, to) },
		OnExit: func(_ State, err error) {
			if err != nil && !isCancel(err) {
				// The loop itself failed (a failure it could not route): the
				// stage's channels are no longer served, so nothing can drain.
				u.p.abort(&StageError{Stage: u.name, Err: err})
			}
		},
	}
}

// action is a side effect of a stage's machine. The lists the machine
// returns are static, so a transition allocates nothing.
type action uint8

const (
	actOpen         action = iota + 1 // the Open hook; reports to the pipeline's start gate
	actDrainHandler                   // Drain (transform) or Flush (sink)
	actForwardEOF                     // close the output channel
	actCleanup                        // the Close hook, once, if opened
	actSendFailure                    // close the output, tell the pipeline
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
		err := safeCall(func() error { return u.core.open(ctx) })
		u.opened = err == nil
		select {
		case u.openDone <- err:
		default:
		}
		return err
	case actDrainHandler:
		return u.core.finish(ctx)
	case actForwardEOF:
		u.core.closeOutput()
		return nil
	case actCleanup:
		return u.closeHandler()
	case actSendFailure:
		u.core.closeOutput()
		u.p.stageFailed(u)
		return nil
	default:
		return fmt.Errorf("stage %s: unknown action %v", u.name, a)
	}
}

// closeHandler calls the handler's Close hook if the stage opened and has
// not closed it yet. It is the Cleanup action, and the pipeline calls it
// for a stage whose loop ended without Cleanup (an abort), once that loop
// has ended.
func (u *unit) closeHandler() error {
	if !u.opened || u.closed {
		return nil
	}
	u.closed = true
	if c, ok := u.core.handler().(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// supervisor is the [stagefsm.HandlerSupervised] of every stage. Its
// dispatch delegates the typed work to the unit's core.
type supervisor struct{ u *unit }

var (
	_ stagefsm.HandlerSupervised[State, event, *unit, action] = supervisor{}
	_ stagefsm.Controlled[State, event]                       = supervisor{}
	_ stagefsm.Stoppable[event]                               = supervisor{}
)

// errGate is the dispatch failure of a gate state, which only a control
// event opens: the stage was run without a control plane.
var errGate = errors.New("stage: a gate state was dispatched: stages run under stagefsm.Start, which takes control events")

func (s supervisor) BuildStateMachine(initial State) (stagefsm.Machine[State, event, *unit, action], error) {
	return newMachine(s.u.kind, initial)
}

func (s supervisor) Name() string                        { return s.u.p.opts.name + "/" + s.u.name }
func (s supervisor) StageID() stagefsm.StageID           { return stagefsm.StageID(s.u.name) }
func (s supervisor) WriterID() stagefsm.WriterID         { return stagefsm.WriterID(s.u.p.opts.name) }
func (s supervisor) EventForActionError(err error) event { return event{kind: evError, err: err} }
func (s supervisor) StopEvent() event                    { return event{kind: evBeginDrain} }

func (s supervisor) DispatchState(ctx context.Context, st State, u *unit) (stagefsm.Directive[event], error) {
	switch st.Kind {
	case Running:
		return u.core.running(ctx)
	case Draining:
		return u.core.draining(ctx)
	case Failed:
		done, err := u.core.failed(ctx)
		if err != nil || !done {
			return stagefsm.Continue[event](), err
		}
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
	case Running, Draining:
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
	case Running:
		return event{kind: evBeginDrain}, true
	default:
		return event{}, false
	}
}

// WriteCompletionEvent journals how the stage ended, with its counts.
func (s supervisor) WriteCompletionEvent(context.Context) error {
	u := s.u
	u.completed = true
	e := Entry{Time: time.Now(), Pipeline: u.p.opts.name, Stage: u.name, Kind: EntryCompleted, Outcome: OutcomeDrained}
	if u.final.Kind == Failed {
		e.Outcome = OutcomeFailed
		e.Reason = reasonText(u.final.Reason)
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

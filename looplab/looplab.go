package looplab

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/looplab/fsm"

	"github.com/stagefsm/stagefsm"
)

// Config says how [FromFSM] maps between a stage's typed states,
// events and actions and a github.com/looplab/fsm (v1.0.3) state machine,
// whose states and events are strings. The adapter calls these functions
// from [stagefsm.Run]'s goroutine, one at a time; none of them may call the looplab
// FSM.
type Config[S, E, C, A any] struct {
	// Event returns the looplab event name for a typed event; it must be
	// pure. Handle calls it once per event. It may be nil only when E is
	// string: the event is then its own name.
	Event func(event E) string

	// State maps a looplab state name to S; it must be pure. The adapter
	// remembers the last name it mapped, so a stage that stays in one
	// state calls State once. It may be nil only when S is string: S is
	// then looplab's state name.
	State func(name string) S

	// Actions returns the actions [stagefsm.Run] executes after looplab has taken a
	// transition (from and to are equal for a self transition, which
	// looplab reports as NoTransitionError). c is the stage context Handle
	// received. It is not called when the event is rejected. Nil means no
	// transition has actions. Returning the same preallocated slice on
	// every call is fine (see [stagefsm.Machine]).
	Actions func(from S, event E, to S, c C) []A
}

// FromFSM returns a [stagefsm.Machine] that drives the looplab/fsm machine f, so
// that a team with an existing *fsm.FSM can run it under [stagefsm.Run]: Handle feeds
// the event named cfg.Event(event) to f and returns cfg.Actions for the
// transition looplab took; State returns cfg.State(f.Current()). f keeps
// running its own callbacks (before_, leave_, enter_, after_) exactly as
// looplab defines them.
//
// FromFSM returns an error, and no machine, when f is nil, or when
// cfg.Event is nil and E is not string, or cfg.State is nil and S is not
// string.
//
// # Ownership
//
// The machine owns f while [stagefsm.Run] drives it: nothing else may call f.Event,
// f.Transition or f.SetState until Run returns (reading f, e.g. f.Current
// or fsm.VisualizeWithType, is fine). Build one FSM per Run, in
// BuildStateMachine. Like every [stagefsm.Machine], the returned one is meant for
// one Run: its methods must not be called concurrently.
//
// # Outcomes of Handle
//
// Handle smooths over the sharp edges of looplab v1.0.3:
//
//   - A transition looplab takes, including a self transition (src = dst,
//     which looplab reports as NoTransitionError), is a success: the new
//     state is committed and cfg.Actions gives the actions.
//   - An event f does not accept in the current state, or does not know at
//     all (looplab's InvalidEventError, UnknownEventError), is an error that
//     matches [stagefsm.ErrUnhandledEvent] with [errors.Is], names the state and the
//     event, and wraps looplab's error (errors.As finds it). The state is
//     unchanged. To have f ignore an event in a state, declare a self
//     transition for it.
//   - A before_ or leave_ callback that calls e.Cancel vetoes the event:
//     the error wraps looplab's CanceledError and the callback's error, and
//     the state is unchanged. It is not [stagefsm.ErrUnhandledEvent].
//   - A callback that sets e.Err without cancelling does not stop looplab:
//     the transition is committed, then the error is reported. Handle
//     returns it wrapped, and State reports the new state; this is the one
//     case where Handle fails after the state changed, because looplab
//     cannot undo a transition. Report failures from actions instead.
//   - An f left stuck in an unfinished transition by code outside the
//     adapter (see Panics) gives an error wrapping looplab's
//     InTransitionError.
//
// # Contexts
//
// In looplab v1.0.3, an Event whose context is done before the transition
// completes leaves the FSM in transition forever: every later event fails
// with InTransitionError. Handle therefore never gives looplab a context
// that can be cancelled. When ctx is already done, Handle returns an error
// matching ctx.Err() and leaves f untouched (so [stagefsm.Run] sees cancellation);
// otherwise looplab and its callbacks receive ctx without its cancellation
// (as by [context.WithoutCancel]): they see ctx's values, and a
// cancellation that arrives while they run does not interrupt the
// transition. Callbacks must therefore not block waiting for ctx to be
// done. To avoid an allocation per event, the machine keeps the last
// cancellable ctx it received and its uncancellable view until a Handle
// with another ctx.
//
// # Panics
//
// A panic in a looplab callback propagates out of Handle to [stagefsm.Run], which
// recovers it and returns an error wrapping a [*stagefsm.PanicError] (unless
// [stagefsm.WithRecoverPanics] is false). looplab releases its locks, but a panic in
// a leave_ callback leaves f in transition for good: do not reuse f.
//
// # Callbacks: what not to do
//
//   - Do not call f.Can or f.Cannot from a before_ or leave_ callback:
//     looplab v1.0.3 holds the FSM's event lock while they run and Can
//     takes it again, so the call deadlocks and Run never returns. Decide
//     from the callback's *fsm.Event (Event, Src, Dst) instead.
//   - Asynchronous transitions are not supported as such: when a leave_
//     callback calls e.Async, Handle completes the transition at once with
//     f.Transition, so the state is committed when Handle returns, as
//     [stagefsm.Machine] requires, and the enter_ and after_ callbacks run. In those
//     callbacks looplab still holds the event lock, so calling f.Event,
//     f.Can or f.Transition from them deadlocks. Waiting belongs in
//     DispatchState: return [stagefsm.Idle] until the stage may move on.
//   - A callback that calls f.Event chains transitions inside one Handle;
//     cfg.Actions then sees the state before the first and after the last.
//     Return the next event from DispatchState instead.
//
// # Cost
//
// Per event, the adapter allocates nothing beyond what looplab's Event and
// cfg's functions allocate, except once for each new cancellable ctx (and
// on every event for a cancellable ctx whose type is not a pointer, which
// the standard library never makes). Errors allocate.
//
// The program in examples/looplab runs a stage over a looplab FSM and
// prints its Mermaid diagram.
func FromFSM[S, E, C, A any](f *fsm.FSM, cfg Config[S, E, C, A]) (stagefsm.Machine[S, E, C, A], error) {
	if f == nil {
		return nil, errors.New("looplab: FromFSM: nil *fsm.FSM")
	}
	m := &looplabMachine[S, E, C, A]{f: f, eventName: cfg.Event, stateOf: cfg.State, actions: cfg.Actions}
	if m.eventName == nil {
		// The identity, when E is string; a func(string) string asserted
		// to func(E) string succeeds exactly then.
		name, ok := any(func(e string) string { return e }).(func(E) string)
		if !ok {
			return nil, fmt.Errorf("looplab: FromFSM: Config.Event is nil and the event type %v is not string", reflect.TypeFor[E]())
		}
		m.eventName = name
	}
	if m.stateOf == nil {
		state, ok := any(func(s string) string { return s }).(func(string) S)
		if !ok {
			return nil, fmt.Errorf("looplab: FromFSM: Config.State is nil and the state type %v is not string", reflect.TypeFor[S]())
		}
		m.stateOf = state
	}
	return m, nil
}

// looplabMachine is the Machine FromFSM returns.
type looplabMachine[S, E, C, A any] struct {
	f         *fsm.FSM
	eventName func(E) string
	stateOf   func(string) S
	actions   func(from S, event E, to S, c C) []A

	// The last state name mapped, and its S.
	name   string
	state  S
	mapped bool

	// The last cancellable context Handle received (always of a pointer
	// type, so comparing it cannot panic) and its uncancellable view.
	parent   context.Context
	detached context.Context
}

func (m *looplabMachine[S, E, C, A]) State() S { return m.mapState(m.f.Current()) }

func (m *looplabMachine[S, E, C, A]) Handle(ctx context.Context, event E, c C) ([]A, error) {
	if ctx == nil {
		return nil, errors.New("looplab: machine: Handle called with a nil context")
	}
	name := m.eventName(event)
	fromName := m.f.Current()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("looplab: event %q not fed in state %q: %w", name, fromName, err)
	}
	from := m.mapState(fromName)

	switch err := m.f.Event(m.detach(ctx), name).(type) {
	case nil:
	case fsm.NoTransitionError: // a self transition
		if err.Err != nil {
			return nil, fmt.Errorf("looplab: event %q in state %q: a callback reported an error: %w", name, fromName, err)
		}
	case fsm.AsyncError:
		if terr := m.f.Transition(); terr != nil {
			return nil, fmt.Errorf("looplab: event %q in state %q: completing the asynchronous transition: %w (started: %w)", name, fromName, terr, err)
		}
		if err.Err != nil {
			return nil, fmt.Errorf("looplab: event %q from state %q to %q: a callback reported an error after the transition: %w",
				name, fromName, m.f.Current(), err)
		}
	case fsm.InvalidEventError, fsm.UnknownEventError:
		return nil, fmt.Errorf("%w %q in looplab state %q: %w", stagefsm.ErrUnhandledEvent, name, fromName, err)
	case fsm.CanceledError:
		return nil, fmt.Errorf("looplab: event %q in state %q cancelled by a callback: %w", name, fromName, err)
	case fsm.InTransitionError:
		return nil, fmt.Errorf("looplab: event %q in state %q: the FSM is stuck in an unfinished transition (a leave_ callback panicked, or the FSM was driven outside Run): %w",
			name, fromName, err)
	default: // InternalError, or a callback's e.Err after the transition
		return nil, fmt.Errorf("looplab: event %q from state %q to %q: %w", name, fromName, m.f.Current(), err)
	}

	to := m.mapState(m.f.Current())
	if m.actions == nil {
		return nil, nil
	}
	return m.actions(from, event, to, c), nil
}

// mapState returns the S of a looplab state name, from the one-entry cache
// when it is the last name mapped.
func (m *looplabMachine[S, E, C, A]) mapState(name string) S {
	if !m.mapped || name != m.name {
		m.name, m.state, m.mapped = name, m.stateOf(name), true
	}
	return m.state
}

// detach returns a context with ctx's values that is never cancelled: ctx
// itself when it cannot be cancelled, else its cached uncancellable view.
func (m *looplabMachine[S, E, C, A]) detach(ctx context.Context) context.Context {
	if ctx.Done() == nil {
		return ctx
	}
	if ctx == m.parent {
		return m.detached
	}
	d := context.WithoutCancel(ctx)
	if reflect.TypeOf(ctx).Kind() == reflect.Pointer {
		m.parent, m.detached = ctx, d
	}
	return d
}

package stagefsm

import "fmt"

// This file holds what a supervisor may implement beyond the contract of
// [HandlerSupervised] (handler.go): [Run] and [Start] find these optional
// interfaces with a type assertion.

// Controlled is an optional interface of a [HandlerSupervised] that takes
// control events through a [Stage]. The loop detects it with a type
// assertion; a supervisor without it polls in every state ([ControlPoll])
// and maps a closed control queue to no event.
//
// The loop calls both methods from its own goroutine. ControlMode is called
// once each time a state is entered (at start and after every transition
// the machine commits) and must depend only on the state. ControlClosed is
// called when a state that polls or blocks finds the control queue closed
// (see [Stage.CloseControl]) and empty: it returns the event the closure
// means in that state (for example BeginDrain), or ok = false for none. It
// is asked at most once per state entered, and once an event was returned
// it is never asked again: a closure is delivered at most once. A panic in
// either method ends Run with an error wrapping a [*PanicError].
//
// DispatchState never sees the control queue: a control event reaches the
// machine as a transition the loop feeds, like a dispatch's [Transition].
// As for any normal event, a machine that rejects a control event ends Run
// with an error, so a machine should accept (or explicitly ignore) every
// control event in every state that polls or blocks.
type Controlled[S, E any] interface {
	ControlMode(state S) ControlMode
	ControlClosed(state S) (event E, ok bool)
}

// ControlMode says how the loop treats control events (sent through a
// [Stage]) while the machine is in a given state. The zero value is
// [ControlPoll].
type ControlMode uint8

const (
	// ControlPoll takes at most one queued control event at the top of each
	// iteration, in FIFO order, and feeds it to the machine as if dispatch
	// had returned [Transition] of it; DispatchState is not called in that
	// iteration. With the queue empty the iteration dispatches as usual, and
	// an [Idle] wait ends as soon as a control event arrives. Events are
	// taken between dispatches only: a DispatchState that blocks delays
	// them until it returns, so a polling state should return Idle rather
	// than block for long.
	ControlPoll ControlMode = iota
	// ControlBlock waits for a control event before doing anything: the
	// state is a gate (for example Created, waiting for Initialize).
	// DispatchState is never called in it. The wait ends when an event
	// arrives (it is taken at once), when the context is done, or when the
	// state's timeout falls due (see [Timed]).
	ControlBlock
	// ControlIgnore leaves control events queued: the state is dispatched
	// as if there were no control plane (typically a terminal state). The
	// events stay in the queue, in order, for a later state that polls or
	// blocks.
	ControlIgnore
)

// String returns "Poll", "Block", "Ignore", or "ControlMode(n)" for an
// unknown value.
func (m ControlMode) String() string {
	switch m {
	case ControlPoll:
		return "Poll"
	case ControlBlock:
		return "Block"
	case ControlIgnore:
		return "Ignore"
	default:
		return fmt.Sprintf("ControlMode(%d)", uint8(m))
	}
}

// Stoppable is an optional interface of a [HandlerSupervised] that has a
// graceful stop event (typically BeginDrain). [Stage.Stop] sends StopEvent's
// result as a control event and waits for the stage to finish. StopEvent is
// called once, by [Start].
type Stoppable[E any] interface {
	StopEvent() E
}

// Failable is an optional interface of a [HandlerSupervised] whose machine
// can terminate in a state that means failure (typically Failed, reached by
// a routed failure): a stage started with [WithRestart] is restarted when
// Run returns nil in a state for which FailedState returns true, as when
// Run returns an error. Without it, only Run's errors cause restarts.
//
// FailedState is called once per incarnation that ended without error,
// with its final state, from the stage's goroutine. A panic in it ends the
// supervised stage with an error wrapping a [*PanicError], without restart.
type Failable[S any] interface {
	FailedState(state S) bool
}

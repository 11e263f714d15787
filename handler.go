package stagefsm

import "context"

// HandlerSupervised is a stage whose states are driven by a user handler. It
// is what [Run] consumes. A supervisor may also implement the optional
// interfaces [Controlled], [Stoppable] and [Failable] (supervisor.go).
//
// # Calling contract
//
// Run calls every method from its own goroutine, one call at a time, so an
// implementation needs no lock for Run's sake (it needs one only for state
// it shares with other goroutines). Many Runs may execute at once on
// different supervisors.
//
//   - Name is called once when Run starts, before BuildStateMachine, for
//     logs and error messages. A panic in it ends Run with an error.
//   - BuildStateMachine is called exactly once, first, from Run's
//     goroutine. An error (or a nil machine) ends Run before anything else
//     happens; a panic ends Run with an error wrapping a [*PanicError].
//     Under [WithRestart], each incarnation is a Run. It returns the
//     [Machine] interface rather than a concrete type so that Run can infer
//     every type argument from its arguments.
//   - DispatchState is called once per loop iteration with the machine's
//     current state and the stage context c. It reads input, calls the
//     user's handler and returns a [Directive]. It may block, and should
//     return once ctx is done; an error returned while ctx is done is
//     cancellation. Any other error, and a panic, become a failure event (see
//     EventForActionError). It must not call the machine: it influences the
//     FSM only through the directive it returns.
//   - EventForActionError turns a failure into the event that is fed back
//     through the machine. Its argument is a [*DispatchError] or an
//     [*ActionError] wrapping the cause; match with [errors.As]. A panic here
//     ends Run with an error.
//   - WriteCompletionEvent is called exactly once, when dispatch returns
//     [Terminate], and never otherwise. Its error is Run's result. A panic
//     here ends Run with an error.
type HandlerSupervised[S, E, C any, A Action[C]] interface {
	Name() string
	BuildStateMachine(initial S) (Machine[S, E, C, A], error)
	DispatchState(ctx context.Context, state S, c C) (Directive[E], error)
	WriteCompletionEvent(ctx context.Context) error
	EventForActionError(err error) E
}

// RunIfNotError passes an item whose status is error through unchanged, else
// returns next(item). Stages use it so that items which already failed
// upstream flow on to the sink or a dead-letter writer instead of being
// processed again or dropped.
func RunIfNotError[T interface{ IsError() bool }](item T, next func(T) []T) []T {
	if item.IsError() {
		return []T{item}
	}
	return next(item)
}

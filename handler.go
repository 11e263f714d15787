package stagefsm

import "context"

// HandlerSupervised is a stage whose states are driven by a user handler. It
// is what [Run] consumes.
//
// # Calling contract
//
// Run calls every method from its own goroutine, one call at a time, so an
// implementation needs no lock for Run's sake (it needs one only for state
// it shares with other goroutines). Many Runs may execute at once on
// different supervisors.
//
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
//   - StageID and WriterID are called once when Run starts, and only when
//     its logger is enabled, to identify the stage's log lines. A panic in
//     either ends Run with an error.
type HandlerSupervised[S, E, C any, A Action[C]] interface {
	Supervisor[S, E, C, A]
	DispatchState(ctx context.Context, state S, c C) (Directive[E], error)
	WriterID() WriterID
	StageID() StageID
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

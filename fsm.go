package stagefsm

import (
	"context"
	"time"
)

// Action is a side effect the machine asks for. [Run] executes the actions
// that [Machine.Handle] returns, in order, from its own goroutine, passing
// the stage context c. The first action that returns an error (or panics)
// stops the list: the remaining actions are skipped and the failure is routed
// back through the machine as an [*ActionError]. An action returned for a
// routed failure is not routed again when it fails: Run returns an error
// wrapping its error (a double fault).
//
// Execute may block; it should return promptly once ctx is done. An error
// returned while ctx is done is treated as cancellation, not as a failure.
type Action[C any] interface {
	Execute(ctx context.Context, c C) error
}

// Machine is the state machine [Run] drives. It holds the current state and
// computes transitions; it never executes actions.
//
// Handle feeds one event: it computes the next state, commits it, and
// returns the actions to run, without running them. On error the state must
// be unchanged and no actions are returned. [Run] reads State after every
// Handle and may cache it in between, which is sound because only Run calls
// Handle (the single-gateway rule).
//
// Run calls both methods from its own goroutine, one call at a time, so an
// implementation needs no lock for Run's sake. A panic in either ends Run
// with an error wrapping a [*PanicError].
//
// Run does not keep the returned slice after it has executed its actions, so
// a machine may return the same preallocated slice on every call.
type Machine[S, E, C, A any] interface {
	State() S
	Handle(ctx context.Context, event E, c C) ([]A, error)
}

// Timed is an optional interface of a [Machine] whose states can time out.
//
// Timeout reports the deadline armed for the current state and the event to
// feed when it passes; ok is false when no timeout is armed. A machine arms
// the deadline when it enters a state and disarms it when it leaves, so
// Timeout changes only across calls to Handle.
//
// [Run] calls Timeout after every Handle. When the deadline passes, Run feeds
// the event to Handle as if dispatch had returned [Transition] of it. The
// deadline is honoured while the stage idles (the idle wait is cut short)
// and while dispatch blocks: dispatch then receives a context that is done at
// the deadline, and an error it returns only because of that deadline is not
// a failure — the timeout event is fed instead.
type Timed[E any] interface {
	Timeout() (deadline time.Time, event E, ok bool)
}

package stagefsm

import (
	"errors"
	"fmt"
)

// The sentinel errors of the package, to match with [errors.Is].
var (
	// The loop.

	// ErrFailureLoop is wrapped by the error [Run] returns when more consecutive
	// loop iterations ended in a routed failure than [WithMaxConsecutiveFailures]
	// allows. The returned error also wraps the failure that was not routed.
	ErrFailureLoop = errors.New("stagefsm: too many consecutive failures")

	// ErrZeroDirective is the cause [Run] routes as a dispatch failure when
	// [HandlerSupervised.DispatchState] returns the zero [Directive] with a nil
	// error.
	ErrZeroDirective = errors.New("stagefsm: dispatch returned the zero Directive")

	// ErrUnhandledEvent is matched (with [errors.Is]) by the error a [Machine]
	// returns from Handle when the current state has no transition for the
	// event. The machines this module ships (package mealy, the looplab/fsm
	// adapter) return errors that wrap it and name the state and the event;
	// other implementations should do the same so that callers can branch on
	// one notion of "unhandled".
	ErrUnhandledEvent = errors.New("stagefsm: unhandled event")

	// Restarts (see [WithRestart]).

	// ErrRestartIntensity is wrapped by the error a stage started with
	// [WithRestart] ends with when it failed again after
	// [RestartPolicy.MaxRestarts] restarts within [RestartPolicy.Period]. The
	// error also wraps the failure that was not restarted.
	ErrRestartIntensity = errors.New("stagefsm: restart intensity exceeded")

	// ErrPermanent marks a failure that restarting cannot cure (bad
	// configuration, a corrupt input): a stage started with [WithRestart] is not
	// restarted after a failure that wraps it, and ends with that failure. Wrap
	// it with [Permanent] or fmt.Errorf's %w, anywhere in the failure's chain (a
	// DispatchState or action error, a completion writer error, a context
	// factory error). Failures are retryable unless they wrap ErrPermanent (or,
	// with [RestartPolicy.PanicIsPermanent], a [*PanicError]).
	ErrPermanent = errors.New("stagefsm: permanent failure")

	// ErrFailedState is wrapped by the failure of an incarnation of a stage
	// started with [WithRestart] that terminated without error in a state its
	// supervisor reports as failed (see [Failable]). The failure also wraps the
	// last failure the incarnation routed through its machine, if any.
	ErrFailedState = errors.New("stagefsm: stage terminated in a failed state")

	// The control plane (see [Start]).

	// ErrStageDone is returned by [Stage.Send] and [Stage.TrySend] once the
	// stage has finished (its Run has returned), and wrapped by the error of
	// [Stage.WaitState] when the stage finished in a state that does not match.
	ErrStageDone = errors.New("stagefsm: stage is done")

	// ErrControlFull is returned by [Stage.TrySend] when the control queue holds
	// as many events as its capacity (see [WithControlCapacity]). The event was
	// not queued; retry, or use [Stage.Send], which waits for room.
	ErrControlFull = errors.New("stagefsm: control queue is full")

	// ErrControlClosed is returned by [Stage.Send] and [Stage.TrySend] after
	// [Stage.CloseControl]. [Run] returns an error wrapping it when a state whose
	// mode is [ControlBlock] finds the queue closed and empty, the supervisor
	// maps the closure to no event, and no state timeout is armed: the stage
	// could never leave that state.
	ErrControlClosed = errors.New("stagefsm: control queue is closed")

	// ErrNoStopEvent is returned by [Stage.Stop] when the supervisor does not
	// implement [Stoppable], so there is no graceful stop event to send. Use
	// [Stage.Send] with the stage's own event, or [Stage.Abort].
	ErrNoStopEvent = errors.New("stagefsm: supervisor has no stop event (implement Stoppable)")
)

// PanicError is a panic recovered where [Run] calls user code. Value is what
// was passed to panic and Stack the goroutine's stack at the panic.
//
// A panic in DispatchState or in an action's Execute is routed through the
// machine like an error (wrapped in a [*DispatchError] or [*ActionError]); a
// panic anywhere else ends Run with an error wrapping the PanicError.
type PanicError struct {
	Value any
	Stack []byte
}

// Error returns "panic: " followed by the panic value. The stack is not
// included; read Stack for it.
func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Unwrap returns Value when it is an error, so that errors.Is and errors.As
// see through a panic(err); otherwise nil.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// DispatchError is a failure of [HandlerSupervised.DispatchState] in State
// (the state's String method when it has one, else its %v form). [Run]
// passes it to EventForActionError.
type DispatchError struct {
	State string
	Err   error
}

// Error returns "dispatch in state <State>: " followed by Err's message.
func (e *DispatchError) Error() string {
	return fmt.Sprintf("dispatch in state %s: %v", e.State, e.Err)
}

// Unwrap returns Err.
func (e *DispatchError) Unwrap() error { return e.Err }

// ActionError is a failure of the action at Index in the list the machine
// returned. Action is that action; Skipped holds the actions after it, which
// were not executed, so the machine can compensate for them. [Run] passes it
// to EventForActionError, from the state the transition entered.
type ActionError struct {
	Index   int
	Action  any
	Skipped []any
	Err     error
}

// Error names the action, its index and how many actions were skipped,
// followed by Err's message.
func (e *ActionError) Error() string {
	return fmt.Sprintf("action %d (%v) failed, %d skipped: %v", e.Index, e.Action, len(e.Skipped), e.Err)
}

// Unwrap returns Err.
func (e *ActionError) Unwrap() error { return e.Err }

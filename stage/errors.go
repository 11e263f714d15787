package stage

import (
	"errors"
	"fmt"
)

// ErrFatal is matched (with [errors.Is]) by every error made with [Fatal].
var ErrFatal = errors.New("stage: fatal handler error")

// ErrFailed is the cause of the dead letters a failed stage leaves: the
// items it held and the items that reached its input after it failed. The
// [*ItemError] names the failed stage.
var ErrFailed = errors.New("stage: stage failed")

// ErrRestarted is the cause of the dead letters a stage leaves when
// it fails and is restarted (see [WithRestart]): the items that reached its
// input while it waited to restart, beyond what could be parked for its
// next incarnation. The error also wraps the failure (errors.Is sees both),
// and the [*ItemError] names the restarted stage.
var ErrRestarted = errors.New("stage: stage restarting")

// ErrAborted is the cause of the dead letters an aborted pipeline leaves
// (see [Pipeline.Abort]): the items in the stages' hands and in the
// channels between them when the stages stopped.
var ErrAborted = errors.New("stage: pipeline aborted")

// ErrStartupAborted is the reason a stage fails with when another stage of
// its pipeline failed to start (its Open hook failed), so the pipeline never
// ran.
var ErrStartupAborted = errors.New("stage: startup aborted")

// ErrAlreadyStarted is returned by [Pipeline.Start] when the pipeline was
// started before. A Pipeline runs once.
var ErrAlreadyStarted = errors.New("stage: pipeline already started")

// ErrNotStarted is returned by [Pipeline.Wait] for a pipeline that was never
// started.
var ErrNotStarted = errors.New("stage: pipeline not started")

// Fatal marks err as fatal: returned by a handler, it fails the stage instead
// of failing one item. The result wraps err (errors.Is and errors.As see
// through it) and matches [ErrFatal]. Fatal(nil) is nil.
func Fatal(err error) error {
	if err == nil {
		return nil
	}
	return &fatalError{err: err}
}

type fatalError struct{ err error }

func (e *fatalError) Error() string        { return "fatal: " + e.err.Error() }
func (e *fatalError) Unwrap() error        { return e.err }
func (e *fatalError) Is(target error) bool { return target == ErrFatal }

// ItemError is the cause carried by an error item: the stage where the item
// failed and why. Err wraps the handler's error, a
// [*github.com/stagefsm/stagefsm.PanicError] for a handler panic,
// [ErrFailed], [ErrRestarted] or [ErrAborted].
type ItemError struct {
	Stage string
	Err   error

	// carried is the item's payload once it crossed a stage that changes
	// the item type, boxed for its dead letter. It lives here, not in
	// Item, to keep every ok item smaller.
	carried any
}

// Error returns "stage <Stage>: " followed by Err's message.
func (e *ItemError) Error() string { return fmt.Sprintf("stage %s: %v", e.Stage, e.Err) }

// Unwrap returns Err.
func (e *ItemError) Unwrap() error { return e.Err }

// Error is how a stage ended when it did not drain: [Pipeline.Wait]
// returns it (joined with the others when several stages failed). Err is
// the failure reason: a fatal handler error, a hook's error, a
// [*github.com/stagefsm/stagefsm.PanicError] from a hook, [ErrStartupAborted],
// or the error of the stage's supervision loop — for a stage under
// [WithRestart] whose policy gave up, an error wrapping
// [github.com/stagefsm/stagefsm.ErrRestartIntensity] or
// [github.com/stagefsm/stagefsm.ErrPermanent], and the last failure.
type Error struct {
	Stage string
	Err   error
}

// Error returns "stage <Stage> failed: " followed by Err's message.
func (e *Error) Error() string { return fmt.Sprintf("stage %s failed: %v", e.Stage, e.Err) }

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

package stagefsm

import (
	"errors"
	"fmt"
	"runtime/debug"
	"time"
)

// Observer receives typed callbacks from [Run] for what the loop commits, so
// that metrics or tracing can be added to a stage without forking it. Set it
// with [WithObserver]; a nil field is not called. Observer is a struct of
// functions (like net/http/httptrace's ClientTrace) so that an observer sets
// only the callbacks it needs. WithObserver copies it: changing the fields
// afterwards has no effect on a Run.
//
// # Calling contract
//
// Run calls every callback from its own goroutine, synchronously, one at a
// time, in the order the events happen, so a callback needs no lock for
// Run's sake — but it runs inside the loop: it must be fast and must not
// block (hand the data to another goroutine if there is real work to do).
// A callback must not call the stage's [Stage] methods that wait (Wait,
// Stop, WaitState, Send). A panic in a callback ends Run with an error
// wrapping a [*PanicError] (or, with [WithRecoverPanics](false), propagates).
//
// For one Run the calls are, in order: any number of OnTransition and
// OnFailure (each after the machine committed the state change and before
// the actions run), then at most one OnComplete, then exactly one OnExit —
// also when Run returns an error, and when the machine could not be built.
//
// Under [WithRestart] each incarnation of the stage is one Run with the
// calls above. After an incarnation's OnExit come, when its failure is
// restarted, OnRestartScheduled and then (once the backoff has passed and
// the new context was made) OnRestarted, before the next incarnation's
// calls; when it is not restarted, OnGaveUp. These three are called from
// the stage's goroutine too, and a panic in them ends the stage with an
// error wrapping a [*PanicError]. Without WithRestart they are never
// called.
//
// # Cost
//
// With no observer the loop makes no call and no allocation for it: each
// hook site is one nil check.
type Observer[S, E any] struct {
	// OnTransition is called after the machine committed a normal event —
	// from a dispatch's [Transition], a control event, or a state timeout —
	// with the state before, the event, the state after, and the number of
	// actions the machine returned (not yet executed).
	OnTransition func(from S, event E, to S, actions int)

	// OnFailure is called after the machine committed a routed failure:
	// cause is the [*DispatchError] or [*ActionError] that was routed, event
	// the one EventForActionError made of it, from and to the states around
	// the commit. A failure the machine rejects is not committed and is
	// reported only through OnExit.
	OnFailure func(from S, event E, to S, cause error)

	// OnComplete is called after WriteCompletionEvent returned, with the
	// state that terminated and the writer's error (nil on success).
	OnComplete func(state S, err error)

	// OnExit is called last, just before Run returns, with the final state
	// and Run's result (nil on success). When BuildStateMachine failed the
	// state is the initial one given to Run.
	OnExit func(state S, err error)

	// OnRestartScheduled is called when a failure will be restarted (see
	// [WithRestart]): restart is its number (1 for the stage's first
	// restart; a restart whose context factory failed is scheduled again
	// with the same number), delay the backoff before it, cause the failure
	// (or the factory's error). The control
	// queue has just been emptied: events sent from now on (with
	// [Stage.TrySend], which never waits) go to the next incarnation, so
	// this is where a stage whose initial state is a gate is sent its gate
	// event again.
	OnRestartScheduled func(restart int, delay time.Duration, cause error)

	// OnRestarted is called when a restarted incarnation is about to run,
	// with its number (2 for the first restart), after its context was made
	// and the initial state published, before its machine is built.
	OnRestarted func(incarnation int)

	// OnGaveUp is called when a failure ends a stage started with
	// [WithRestart] without a restart, with the stage's result: the failure
	// itself when it is permanent or the stage was asked to finish, an error
	// wrapping [ErrRestartIntensity] and the failure when restarts were too
	// frequent. It is not called when the stage succeeds or is cancelled.
	OnGaveUp func(err error)
}

// The loop's hook sites. Each is reached only when l.obs is not nil, and
// recovers a panic of the callback (unless panics are not to be recovered)
// into an error that ends Run.

func (l *loop[S, E, C, A]) onTransition(from S, event E, actions int) (err error) {
	if l.opts.recoverPanics {
		defer l.recoverObserver("OnTransition", &err)
	}
	if f := l.obs.OnTransition; f != nil {
		f(from, event, l.state, actions)
	}
	return nil
}

func (l *loop[S, E, C, A]) onFailure(from S, event E, cause error) (err error) {
	if l.opts.recoverPanics {
		defer l.recoverObserver("OnFailure", &err)
	}
	if f := l.obs.OnFailure; f != nil {
		f(from, event, l.state, cause)
	}
	return nil
}

func (l *loop[S, E, C, A]) onComplete(result error) (err error) {
	if l.opts.recoverPanics {
		defer l.recoverObserver("OnComplete", &err)
	}
	if f := l.obs.OnComplete; f != nil {
		f(l.state, result)
	}
	return nil
}

// onExit calls OnExit with Run's result and returns the result Run then
// returns: result itself, joined with the callback's panic if any.
func (l *loop[S, E, C, A]) onExit(result error) error {
	if err := l.callOnExit(result); err != nil {
		return errors.Join(result, err)
	}
	return result
}

func (l *loop[S, E, C, A]) callOnExit(result error) (err error) {
	if l.opts.recoverPanics {
		defer l.recoverObserver("OnExit", &err)
	}
	if f := l.obs.OnExit; f != nil {
		f(l.state, result)
	}
	return nil
}

// recoverObserver, deferred, turns a panic of an observer callback into the
// error that ends Run.
func (l *loop[S, E, C, A]) recoverObserver(callback string, err *error) {
	if v := recover(); v != nil {
		*err = fmt.Errorf("stagefsm: %s: observer %s in state %s: %w",
			l.name, callback, stateName[S]{l.state}, &PanicError{Value: v, Stack: debug.Stack()})
	}
}

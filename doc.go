// Package stagefsm runs handler-supervised FSM stages: each stage of a
// stream-processing application is a finite state machine, and a
// supervision loop, [Run], drives it.
//
// # The pieces
//
// A [Machine] holds the stage's current state; its Handle method computes
// the next state for an event, commits it and returns the actions to run,
// without running them. A [HandlerSupervised] supervisor says what each
// state does: its DispatchState reads input, calls the user's handler and
// returns a [Directive] — [Continue], [Idle], [Transition] or [Terminate].
// [Run] is the only caller of Handle and of the actions' Execute (the
// single-gateway rule), so a machine and its actions need no locks.
//
// # Failures are events
//
// Every error from dispatch or from an action, and every panic there, is
// turned into an event by the supervisor's EventForActionError and fed back
// through the machine, which decides what it means — typically a move to a
// Failed state whose actions report the failure and clean up. The error the
// supervisor receives is a [*DispatchError] or an [*ActionError] wrapping the
// cause (a [*PanicError] for a panic). Only failures that cannot be routed —
// the machine rejecting an event, a failure action failing, too many
// failures in a row ([ErrFailureLoop]) — end Run with an error.
//
// # Cancellation
//
// Every call takes a [context.Context]. When it is done, Run returns
// promptly with an error matching ctx.Err(), routes nothing and writes no
// completion event. A graceful stop is an event the machine handles, not a
// cancellation.
//
// # State timeouts
//
// A machine that implements [Timed] can arm a deadline per state; Run fires
// its event on time, also while the stage idles or while dispatch blocks.
//
// # Options
//
// [WithLogger], [WithIdleBackoff], [WithMaxConsecutiveFailures] and
// [WithRecoverPanics] configure Run. With no options Run logs nothing,
// waits 1ms to 10ms between idle dispatches, gives up after 100 failures in
// a row and recovers panics.
package stagefsm

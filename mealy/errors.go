package mealy

import (
	"errors"

	"github.com/stagefsm/stagefsm"
)

// ErrUnhandledEvent is matched by the error [Machine.Handle] returns when the
// current state has no transition for the event and the definition keeps the
// default unhandled-event policy (see [Builder.IgnoreUnhandled] and
// [Builder.OnUnhandled]). The error names the state and the event. It is the
// same value as [stagefsm.ErrUnhandledEvent], so callers branch on one notion
// of "unhandled" whatever machine they run.
var ErrUnhandledEvent = stagefsm.ErrUnhandledEvent

// ErrUndeclaredState is matched by an error of [Builder.Build] when a
// transition, a timeout or a setting names a state that is not declared
// (only once any state is declared with [Builder.State]); by an error of
// [Definition.New] when the initial state is unknown to the definition; and
// by an error of [Machine.Handle] when a [TransitionSpec.Choose] handler
// returns a state that is not among the targets it declared.
var ErrUndeclaredState = errors.New("mealy: undeclared state")

// ErrDuplicate is matched by an error of [Builder.Build] when something is
// declared twice: a transition for the same state and event, an any-state
// transition for the same event, a state's timeout, a transition's target,
// the initial state, the failure event, the unhandled-event policy, or two
// states whose names print alike.
var ErrDuplicate = errors.New("mealy: declared twice")

// ErrInvalidDeclaration is matched by an error of [Builder.Build] for a
// declaration that cannot work: a nil key function, handler or hook, a
// transition with no target, a Choose with no declared targets, a timeout
// that is not positive or whose event the state does not handle by leaving
// or re-entering it, a terminal state with a transition to another state on
// an event other than the failure event.
var ErrInvalidDeclaration = errors.New("mealy: invalid declaration")

// ErrNoWayOut is matched by an error of [Builder.Build] (for the state given
// to [Builder.Initial], and under [Builder.Strict] for every non-terminal
// state) and of [Definition.New] when a state has no transition to another
// state, so a machine in it could never leave it.
var ErrNoWayOut = errors.New("mealy: state has no way out")

// ErrFailureNotHandled is matched by an error of [Builder.Build] under
// [Builder.Strict] when a non-terminal state has no transition for the
// failure event (see [Builder.FailureEvent]): a failure routed there would
// end stagefsm.Run with an error instead of being handled by the FSM.
var ErrFailureNotHandled = errors.New("mealy: failure event not handled")

// ErrUnreachable is matched by an error of [Builder.Build] under
// [Builder.Strict] for each state that no sequence of transitions from the
// initial state reaches.
var ErrUnreachable = errors.New("mealy: unreachable state")

// ErrNoTerminal is matched by an error of [Builder.Build] under
// [Builder.Strict] when no terminal state is declared (see
// [StateSpec.Terminal]) or none is reachable from the initial state.
var ErrNoTerminal = errors.New("mealy: no reachable terminal state")

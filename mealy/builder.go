package mealy

import (
	"context"
	"fmt"
	"time"
)

// Builder declares a Mealy machine: its states, transitions, hooks, timeouts
// and checks. Create one with [New], declare, then call [Builder.Build],
// which validates everything at once and returns an immutable [Definition].
//
// The type parameters are the stage's state S, event E, context C and action
// A (as in [stagefsm.Machine]), and the keys SK and EK that route states and
// events: every declaration names states by SK and events by EK, and a
// state or event value is routed by the key that New's key functions return
// for it, never by its payload.
//
// Declaration methods never fail and never panic: a problem is recorded and
// reported by Build. A Builder is not safe for concurrent use; Build may be
// called more than once, each call seeing the declarations made so far.
type Builder[S, E, C any, A fmt.Stringer, SK, EK comparable] struct {
	stateKey func(S) SK
	eventKey func(E) EK

	states     []*StateSpec[S, E, C, A, SK, EK] // in declaration order
	stateByKey map[SK]*StateSpec[S, E, C, A, SK, EK]
	trans      []*TransitionSpec[S, E, C, A, SK, EK]

	initial    SK
	initialSet int
	failure    EK
	failureSet int
	strict     bool

	policy    policy
	policySet int
	hook      func(ctx context.Context, s S, e E, c C) error
}

// policy is what Handle does with an event the current state does not
// handle.
type policy uint8

const (
	policyError policy = iota
	policyIgnore
	policyHook
)

// New returns an empty [Builder]. stateKey returns the variant of a state
// and eventKey the variant of an event; they are called for every Handle, so
// they should be cheap and must be pure (same key for the same value). Keys
// print in errors and diagrams with their String method when they have one,
// else with %v.
//
// S, E, C and A must be given; SK and EK are inferred:
//
//	b := mealy.New[State, Event, *Ctx, Action](State.Kind, Event.Kind)
//
// For a plain enum state, the key function is the identity.
// A nil key function is reported by Build.
func New[S, E, C any, A fmt.Stringer, SK, EK comparable](stateKey func(S) SK, eventKey func(E) EK) *Builder[S, E, C, A, SK, EK] {
	return &Builder[S, E, C, A, SK, EK]{
		stateKey:   stateKey,
		eventKey:   eventKey,
		stateByKey: make(map[SK]*StateSpec[S, E, C, A, SK, EK]),
	}
}

// State declares the state with key k and returns its spec, on which entry
// and exit actions, a timeout and terminality are declared. Calling State
// again with the same key returns the same spec.
//
// Declaring states is optional, but once any state is declared, Build
// requires every state that a transition, a timeout or a setting names to be
// declared (and reports [ErrUndeclaredState] otherwise).
func (b *Builder[S, E, C, A, SK, EK]) State(k SK) *StateSpec[S, E, C, A, SK, EK] {
	if s, ok := b.stateByKey[k]; ok {
		return s
	}
	if b.stateByKey == nil { // a zero Builder: Build reports the missing key functions
		b.stateByKey = make(map[SK]*StateSpec[S, E, C, A, SK, EK])
	}
	s := &StateSpec[S, E, C, A, SK, EK]{key: k}
	b.states = append(b.states, s)
	b.stateByKey[k] = s
	return s
}

// On declares the transition of state from on event and returns its spec,
// which must then be given exactly one target: [TransitionSpec.To],
// [TransitionSpec.Stay] or [TransitionSpec.Choose]. Declaring the same state
// and event twice is reported by Build as [ErrDuplicate].
func (b *Builder[S, E, C, A, SK, EK]) On(from SK, event EK) *TransitionSpec[S, E, C, A, SK, EK] {
	t := &TransitionSpec[S, E, C, A, SK, EK]{from: from, event: event}
	b.trans = append(b.trans, t)
	return t
}

// OnAny declares a transition on event from every state that is not
// terminal (see [StateSpec.Terminal]) and not listed in except, and returns
// its spec, which must be given exactly one target as for [Builder.On]. A
// transition declared with On for the same state and event takes precedence
// over it. A terminal state that must handle the event declares its own
// transition with On. Declaring two any-state transitions for the same event
// is reported by Build as [ErrDuplicate].
//
// A static target ([TransitionSpec.To]) is entered from every such state;
// [TransitionSpec.Stay] keeps each state as it is.
func (b *Builder[S, E, C, A, SK, EK]) OnAny(event EK, except ...SK) *TransitionSpec[S, E, C, A, SK, EK] {
	t := &TransitionSpec[S, E, C, A, SK, EK]{any: true, except: except, event: event}
	b.trans = append(b.trans, t)
	return t
}

// Initial declares the state machines usually start in. It is drawn as the
// start of diagrams; Build checks that it has a way out ([ErrNoWayOut]) and,
// under [Builder.Strict], that every state is reachable from it. It does not
// restrict [Definition.New], which may start a machine in any state that has
// a way out or is terminal.
func (b *Builder[S, E, C, A, SK, EK]) Initial(k SK) {
	b.initial = k
	b.initialSet++
}

// FailureEvent declares which event is the failure event: the one the
// stage's EventForActionError returns. Diagrams mark its transitions as
// failure edges, and under [Builder.Strict] Build checks that every
// non-terminal state handles it.
func (b *Builder[S, E, C, A, SK, EK]) FailureEvent(k EK) {
	b.failure = k
	b.failureSet++
}

// Strict turns on the checks a careful team wants, all reported by Build:
// every non-terminal state handles the failure event
// ([ErrFailureNotHandled]; requires [Builder.FailureEvent]); every state is
// reachable from the initial state ([ErrUnreachable]; requires
// [Builder.Initial]); a terminal state exists and is reachable
// ([ErrNoTerminal]); and every non-terminal state has a way out, a
// transition to another state ([ErrNoWayOut]: a stage there could never
// end). Reachability follows static targets, the declared
// targets of [TransitionSpec.Choose] handlers and any-state transitions;
// timeouts are transitions like others.
func (b *Builder[S, E, C, A, SK, EK]) Strict() { b.strict = true }

// IgnoreUnhandled makes Handle ignore an event the current state does not
// handle: it returns no actions and a nil error, and the state, and its
// timeout, are unchanged.
//
// Default: Handle returns an error matching [ErrUnhandledEvent].
func (b *Builder[S, E, C, A, SK, EK]) IgnoreUnhandled() {
	b.policy = policyIgnore
	b.policySet++
}

// OnUnhandled makes Handle call hook for an event the current state does
// not handle, with the current state, the event and the context. A nil
// result ignores the event (no actions, state unchanged); an error is
// returned by Handle wrapped so that it matches both [ErrUnhandledEvent] and
// the hook's error. Setting both OnUnhandled and IgnoreUnhandled, or either
// twice, is reported by Build as [ErrDuplicate].
//
// Default: Handle returns an error matching [ErrUnhandledEvent].
func (b *Builder[S, E, C, A, SK, EK]) OnUnhandled(hook func(ctx context.Context, s S, e E, c C) error) {
	b.policy = policyHook
	b.hook = hook
	b.policySet++
}

// StateSpec is the declaration of one state, returned by [Builder.State].
// Its methods return the spec so that declarations chain.
type StateSpec[S, E, C any, A fmt.Stringer, SK, EK comparable] struct {
	key          SK
	entry, exit  []A
	timeout      time.Duration
	timeoutEvent E
	timeoutSet   int
	terminal     bool
}

// Entry appends actions that every transition entering the state returns
// after the exit actions of the state it leaves and before its own actions.
// A [TransitionSpec.Stay] does not enter; a [TransitionSpec.To] or
// [TransitionSpec.Choose] to the same state re-enters it. A machine created
// by [Definition.New] starts in its initial state without running its entry
// actions.
func (s *StateSpec[S, E, C, A, SK, EK]) Entry(actions ...A) *StateSpec[S, E, C, A, SK, EK] {
	s.entry = append(s.entry, actions...)
	return s
}

// Exit appends actions that every transition leaving the state returns
// first, before the entry actions of the state it enters. A
// [TransitionSpec.Stay] does not leave; a re-entering transition does.
func (s *StateSpec[S, E, C, A, SK, EK]) Exit(actions ...A) *StateSpec[S, E, C, A, SK, EK] {
	s.exit = append(s.exit, actions...)
	return s
}

// Timeout declares that the state times out d after it is entered, with
// event as the event to feed. The machine arms the deadline (time.Now()+d)
// whenever it enters the state — also when it is created in it and when a
// transition re-enters it — and disarms it when it leaves; a
// [TransitionSpec.Stay] keeps the deadline as it is. stagefsm.Run learns the
// deadline through [Machine.Timeout] and feeds event when it passes.
//
// Build requires d > 0 and requires the state to handle event with a
// transition that leaves or re-enters it (a Stay would leave a past deadline
// armed, firing again and again); otherwise it reports
// [ErrInvalidDeclaration]. A second Timeout is reported as [ErrDuplicate].
func (s *StateSpec[S, E, C, A, SK, EK]) Timeout(d time.Duration, event E) *StateSpec[S, E, C, A, SK, EK] {
	s.timeout, s.timeoutEvent = d, event
	s.timeoutSet++
	return s
}

// Terminal marks the state as terminal: the stage ends there, and diagrams
// draw it as an end. Any-state transitions ([Builder.OnAny]) do not apply to
// it. It may have no transition to another state, with one exception: on
// the failure event (see [Builder.FailureEvent]), because the actions of the
// transition that entered it run after it is entered, and their failure is
// routed from it (e.g. Drained -Error-> Failed when a cleanup fails).
// Self-transitions are allowed, e.g. an idempotent Failed -Error-> Failed.
func (s *StateSpec[S, E, C, A, SK, EK]) Terminal() *StateSpec[S, E, C, A, SK, EK] {
	s.terminal = true
	return s
}

// TransitionSpec is the declaration of one transition, returned by
// [Builder.On] and [Builder.OnAny]. It must be given exactly one target —
// [TransitionSpec.To], [TransitionSpec.Stay] or [TransitionSpec.Choose] —
// and may be given actions with [TransitionSpec.Do]. Its methods return the
// spec so that declarations chain.
//
// The actions Handle returns for a transition are, in order: the exit
// actions of the state left, the entry actions of the state entered, then
// the transition's own actions. A Stay neither leaves nor enters.
type TransitionSpec[S, E, C any, A fmt.Stringer, SK, EK comparable] struct {
	from    SK
	any     bool
	except  []SK
	event   EK
	kind    targetKind
	kindSet int
	target  S
	choose  func(ctx context.Context, s S, e E, c C) (S, error)
	targets []SK
	actions []A
}

// targetKind says how a transition picks the next state.
type targetKind uint8

const (
	targetNone   targetKind = iota
	targetTo                // a static state, entered (re-entered if the same)
	targetStay              // no change: no exit, no entry, timeout kept
	targetChoose            // chosen at run time among declared targets
)

// To makes target the next state. The state is entered even when it has the
// key of the current state: exit and entry actions run and its timeout is
// re-armed. Use [TransitionSpec.Stay] to remain without re-entering.
func (t *TransitionSpec[S, E, C, A, SK, EK]) To(target S) *TransitionSpec[S, E, C, A, SK, EK] {
	t.kind, t.target = targetTo, target
	t.kindSet++
	return t
}

// Stay keeps the current state, value and all: no exit or entry actions run
// and an armed timeout keeps its deadline. Only the transition's own
// actions are returned.
func (t *TransitionSpec[S, E, C, A, SK, EK]) Stay() *TransitionSpec[S, E, C, A, SK, EK] {
	t.kind = targetStay
	t.kindSet++
	return t
}

// Choose makes handler pick the next state at run time from the full typed
// current state, event and context; it may compute payloads (e.g. a
// Failed{Reason} from an Error{Err}). targets declares every key handler
// may return, so that Build can check the machine and diagrams can draw it;
// at least one is required.
//
// The returned state is entered as with [TransitionSpec.To], even when it
// has the current state's key. When handler returns an error, or a state
// whose key is not among targets (an error matching [ErrUndeclaredState]),
// Handle returns that error, the state is unchanged and no actions are
// returned. handler is called from Handle's goroutine; a panic propagates to
// the caller of Handle (stagefsm.Run recovers it).
func (t *TransitionSpec[S, E, C, A, SK, EK]) Choose(handler func(ctx context.Context, s S, e E, c C) (S, error), targets ...SK) *TransitionSpec[S, E, C, A, SK, EK] {
	t.kind, t.choose, t.targets = targetChoose, handler, targets
	t.kindSet++
	return t
}

// Do appends actions the transition returns after the exit and entry
// actions. Actions are named in diagrams by their String method.
func (t *TransitionSpec[S, E, C, A, SK, EK]) Do(actions ...A) *TransitionSpec[S, E, C, A, SK, EK] {
	t.actions = append(t.actions, actions...)
	return t
}

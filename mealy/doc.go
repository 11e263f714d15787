// Package mealy is a typed, validated Mealy machine for stagefsm stages:
// State × Event → Actions, State'. A [Machine] implements
// [stagefsm.Machine] and [stagefsm.Timed], so [stagefsm.Run] drives it and
// fires its state timeouts.
//
// # Declaring a machine
//
// [New] takes two key functions that say which variant a state or an event
// is; states and events may carry data (Failed{Reason}, Error{Err}), and
// routing looks at the key only. Declarations name states and events by key;
// handlers receive the full typed values:
//
//	b := mealy.New[State, Event, *Ctx, Action](State.Kind, Event.Kind)
//	b.Initial(Created)
//	b.FailureEvent(ErrorEvent)
//	b.State(Waiting).Timeout(5*time.Second, Event{Kind: Tick})
//	b.State(Failed).Terminal()
//	b.On(Created, Start).To(State{Kind: Waiting})
//	b.On(Waiting, Tick).To(State{Kind: Done}).Do(Flush)
//	b.OnAny(ErrorEvent).Choose(fail, Failed).Do(SendFailure, Cleanup)
//	def, err := b.Build()
//
// A transition goes to a static state ([TransitionSpec.To]), stays
// ([TransitionSpec.Stay]), or lets a handler choose the next state at run
// time among declared targets ([TransitionSpec.Choose]); the handler may
// fail, leaving the state unchanged. [Builder.OnAny]
// declares a transition for every non-terminal state.
//
// # Actions, hooks and stays
//
// A transition returns, in order, the exit actions of the state it leaves,
// the entry actions of the state it enters ([StateSpec.Exit],
// [StateSpec.Entry]) and its own actions ([TransitionSpec.Do]). A Stay is
// internal: no exit, no entry, and the state's timeout keeps its deadline. A
// To or Choose that lands on the current state re-enters it: exit and entry
// actions run and the timeout is re-armed. Actions are named in diagrams by
// their String method, which the type parameter A requires.
//
// # Unhandled events
//
// By default [Machine.Handle] returns an error matching [ErrUnhandledEvent]
// (the same value as [stagefsm.ErrUnhandledEvent]) that names the state and
// the event, and stagefsm.Run ends with it: a normal event the FSM rejects is
// a bug in its definition. [Builder.IgnoreUnhandled] and
// [Builder.OnUnhandled] change that per definition.
//
// # State timeouts
//
// [StateSpec.Timeout] gives a state a duration and the event to feed. The
// machine arms the deadline when it enters the state, disarms it when it
// leaves, and reports it through [Machine.Timeout]; stagefsm.Run feeds the
// event on time, also while the stage idles or while dispatch blocks.
//
// # Validation
//
// [Builder.Build] reports every problem at once, joined, each matching a
// sentinel error: duplicates, undeclared states, transitions without
// target, an initial state with no way out, and, under [Builder.Strict],
// an unhandled failure event, unreachable states and no reachable terminal
// state. Nothing panics on a bad definition.
//
// # Diagrams
//
// [Definition.Mermaid] and [Definition.DOT] draw the definition, sorted and
// deterministic, with action names, failure edges and an optional
// highlighted state.
//
// # Performance
//
// Handle finds the event's key (a short scan, or a map past eight keys) and
// the transition in a table, and copies a precomputed action list into a
// buffer the machine owns: with static actions it does not allocate. The
// returned slice is valid until the next Handle. A [Definition] is
// immutable and shared by its machines; each [Machine] is used by one
// goroutine, as stagefsm.Run does.
package mealy

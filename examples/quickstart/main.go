// Command quickstart runs one small supervised stage: it counts to a target,
// its handler fails once on the way, the FSM routes that failure to a
// Recovering state that times out back into Counting, and the stage writes
// its completion event. It prints the stage's state timeline.
//
// The FSM is a mealy machine; with -mermaid the command prints its Mermaid
// diagram instead of running.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
)

// State is the stage's FSM state.
type State int

const (
	Created State = iota
	Counting
	Recovering
	Done
	Failed
)

var stateNames = [...]string{"Created", "Counting", "Recovering", "Done", "Failed"}

// String returns the state's name, or "State(n)" for an unknown value.
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Event is fed to the FSM.
type Event struct {
	Kind Kind
	Err  error // for Error
}

// Kind is the variant of an Event: the FSM routes events by it.
type Kind int

const (
	Start Kind = iota
	Finished
	Error
	Resume
)

var kindNames = [...]string{"Start", "Finished", "Error", "Resume"}

// String returns the kind's name, or "Kind(n)" for an unknown value.
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// String returns the event's kind, with the error of an Error event:
// "Error(reason)".
func (e Event) String() string {
	if e.Err != nil {
		return e.Kind.String() + "(" + e.Err.Error() + ")"
	}
	return e.Kind.String()
}

// Counter is the stage context: it owns the user's handler state.
type Counter struct {
	N, Target int
	FailAt    int // the handler fails once when N reaches FailAt
	failed    bool
	retries   int
	timeline  []State
}

// Action is a named side effect the FSM asks for; the name shows in
// diagrams.
type Action struct {
	Name string
	Run  func(ctx context.Context, c *Counter) error
}

// Execute runs the action.
func (a Action) Execute(ctx context.Context, c *Counter) error { return a.Run(ctx, c) }

func (a Action) String() string { return a.Name }

var logRecovery = Action{"logRecovery", func(_ context.Context, c *Counter) error { c.retries++; return nil }}

// recoveryPause is how long the stage stays in Recovering: a state timeout.
const recoveryPause = 10 * time.Millisecond

// definition declares the FSM once; every run creates a machine from it.
func definition() (*mealy.Definition[State, Event, *Counter, Action], error) {
	b := mealy.New[State, Event, *Counter, Action](
		func(s State) State { return s },
		func(e Event) Kind { return e.Kind },
	)
	b.Initial(Created)
	b.FailureEvent(Error)
	b.Strict() // every non-terminal state handles Error; all states reachable

	b.State(Created)
	b.State(Counting)
	b.State(Recovering).Entry(logRecovery).Timeout(recoveryPause, Event{Kind: Resume})
	b.State(Done).Terminal()
	b.State(Failed).Terminal()

	b.On(Created, Start).To(Counting)
	b.On(Counting, Finished).To(Done)
	b.On(Counting, Error).Choose(recoverOnce, Recovering, Failed)
	b.On(Recovering, Resume).To(Counting)
	b.OnAny(Error).To(Failed) // Created, Recovering
	b.On(Failed, Error).Stay()
	return b.Build()
}

// recoverOnce sends the first failure to Recovering and any later one to
// Failed.
func recoverOnce(_ context.Context, _ State, _ Event, c *Counter) (State, error) {
	if c.retries == 0 {
		return Recovering, nil
	}
	return Failed, nil
}

// stage is the supervisor: it says what each state does.
type stage struct {
	def *mealy.Definition[State, Event, *Counter, Action]
}

func (stage) Name() string                        { return "counter" }
func (stage) EventForActionError(err error) Event { return Event{Kind: Error, Err: err} }

func (s stage) BuildStateMachine(initial State) (stagefsm.Machine[State, Event, *Counter, Action], error) {
	return s.def.New(initial)
}

func (stage) DispatchState(_ context.Context, s State, c *Counter) (stagefsm.Directive[Event], error) {
	if c.timeline[len(c.timeline)-1] != s {
		c.timeline = append(c.timeline, s)
	}
	switch s {
	case Created:
		return stagefsm.Transition(Event{Kind: Start}), nil
	case Counting:
		if c.N == c.FailAt && !c.failed {
			c.failed = true
			return stagefsm.Directive[Event]{}, errors.New("flaky handler")
		}
		if c.N == c.Target {
			return stagefsm.Transition(Event{Kind: Finished}), nil
		}
		c.N++
		return stagefsm.Continue[Event](), nil
	case Recovering:
		return stagefsm.Idle[Event](), nil // until the state times out
	default: // Done, Failed
		return stagefsm.Terminate[Event](), nil
	}
}

func (stage) WriteCompletionEvent(context.Context) error {
	fmt.Println("completion event written")
	return nil
}

func main() {
	target := flag.Int("n", 5, "count to `N`")
	failAt := flag.Int("fail-at", 3, "the handler fails once when the count reaches `K` (-1: never)")
	diagram := flag.Bool("mermaid", false, "print the FSM as a Mermaid diagram and exit")
	flag.Parse()

	def, err := definition()
	if err != nil {
		fmt.Fprintln(os.Stderr, "invalid FSM:", err)
		os.Exit(1)
	}
	if *diagram {
		fmt.Print(def.Mermaid())
		return
	}

	c := &Counter{Target: *target, FailAt: *failAt, timeline: []State{Created}}
	err = stagefsm.Run(context.Background(), stage{def: def}, Created, c)
	fmt.Printf("counted to %d with %d recovery; timeline: %v\n", c.N, c.retries, c.timeline)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stage failed:", err)
		os.Exit(1)
	}
}

// Command quickstart runs one small supervised stage: it counts to a target,
// its handler fails once on the way, the FSM routes that failure to a
// Recovering state and back, and the stage writes its completion event.
// It prints the stage's state timeline.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/stagefsm/stagefsm"
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

func (s State) String() string {
	return [...]string{"Created", "Counting", "Recovering", "Done", "Failed"}[s]
}

// Event is fed to the FSM.
type Event struct {
	Kind Kind
	Err  error // for Error
}

// Kind is the variant of an Event.
type Kind int

const (
	Start Kind = iota
	Finished
	Error
	Resume
)

func (e Event) String() string {
	name := [...]string{"Start", "Finished", "Error", "Resume"}[e.Kind]
	if e.Err != nil {
		return name + "(" + e.Err.Error() + ")"
	}
	return name
}

// Counter is the stage context: it owns the user's handler state.
type Counter struct {
	N, Target int
	FailAt    int // the handler fails once when N reaches FailAt
	failed    bool
	retries   int
	timeline  []State
}

// Action is the side effect the FSM asks for.
type Action func(ctx context.Context, c *Counter) error

// Execute runs the action.
func (a Action) Execute(ctx context.Context, c *Counter) error { return a(ctx, c) }

func logRecovery(_ context.Context, c *Counter) error { c.retries++; return nil }

// machine is a hand-written FSM: a switch over state and event.
type machine struct{ state State }

func (m *machine) State() State { return m.state }

func (m *machine) Handle(_ context.Context, e Event, c *Counter) ([]Action, error) {
	var next State
	var actions []Action
	switch {
	case m.state == Created && e.Kind == Start:
		next = Counting
	case m.state == Counting && e.Kind == Finished:
		next = Done
	case m.state == Counting && e.Kind == Error && c.retries == 0:
		next, actions = Recovering, []Action{logRecovery}
	case m.state == Recovering && e.Kind == Resume:
		next = Counting
	case e.Kind == Error && m.state != Done:
		next = Failed
	default:
		return nil, fmt.Errorf("no transition for %v in state %v", e, m.state)
	}
	m.state = next
	c.timeline = append(c.timeline, next)
	return actions, nil
}

// stage is the supervisor: it says what each state does.
type stage struct{}

func (stage) Name() string                        { return "counter" }
func (stage) StageID() stagefsm.StageID           { return "quickstart" }
func (stage) WriterID() stagefsm.WriterID         { return "quickstart-writer" }
func (stage) EventForActionError(err error) Event { return Event{Kind: Error, Err: err} }

func (stage) BuildStateMachine(initial State) (stagefsm.Machine[State, Event, *Counter, Action], error) {
	return &machine{state: initial}, nil
}

func (stage) DispatchState(_ context.Context, s State, c *Counter) (stagefsm.Directive[Event], error) {
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
		return stagefsm.Transition(Event{Kind: Resume}), nil
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
	flag.Parse()

	c := &Counter{Target: *target, FailAt: *failAt, timeline: []State{Created}}
	err := stagefsm.Run(context.Background(), stage{}, Created, c)
	fmt.Printf("counted to %d with %d recovery; timeline: %v\n", c.N, c.retries, c.timeline)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stage failed:", err)
		os.Exit(1)
	}
}

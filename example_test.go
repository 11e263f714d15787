package stagefsm_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/stagefsm/stagefsm"
)

// The examples share one small stage: a greeter that reads names from a
// channel and greets each, drains when the channel closes, and fails on an
// empty name.

// Phase is the greeter's FSM state.
type Phase int

const (
	Starting Phase = iota
	Greeting
	Drained
	Failed
)

func (p Phase) String() string {
	return [...]string{"Starting", "Greeting", "Drained", "Failed"}[p]
}

// Signal is an event of the greeter's FSM.
type Signal struct {
	Kind string // "start", "drain" or "error"
	Err  error  // the failure, for "error"
}

// Greeter is the stage context: the input and what the stage did.
type Greeter struct {
	In      <-chan string
	Greeted int
	Outcome string // set by the FSM's actions
}

// Step is an action of the greeter's FSM.
type Step func(ctx context.Context, g *Greeter) error

// Execute runs the step.
func (s Step) Execute(ctx context.Context, g *Greeter) error { return s(ctx, g) }

// greeterFSM holds the current phase; Handle is a switch over phase and
// signal that commits the next phase and returns the actions.
type greeterFSM struct{ phase Phase }

func (m *greeterFSM) State() Phase { return m.phase }

func (m *greeterFSM) Handle(_ context.Context, s Signal, _ *Greeter) ([]Step, error) {
	switch {
	case m.phase == Starting && s.Kind == "start":
		m.phase = Greeting
		return nil, nil
	case m.phase == Greeting && s.Kind == "drain":
		m.phase = Drained
		return []Step{func(_ context.Context, g *Greeter) error {
			g.Outcome = fmt.Sprintf("drained after %d names", g.Greeted)
			return nil
		}}, nil
	case s.Kind == "error" && m.phase != Drained:
		m.phase = Failed
		return []Step{func(_ context.Context, g *Greeter) error {
			var de *stagefsm.DispatchError
			if errors.As(s.Err, &de) {
				g.Outcome = fmt.Sprintf("failed in %s: %v", de.State, de.Err)
			}
			return nil
		}}, nil
	}
	return nil, fmt.Errorf("%w: %s in %v", stagefsm.ErrUnhandledEvent, s.Kind, m.phase)
}

// greeterStage is the supervisor: what each phase does.
type greeterStage struct{ g *Greeter }

func (greeterStage) Name() string                         { return "greeter" }
func (greeterStage) EventForActionError(err error) Signal { return Signal{Kind: "error", Err: err} }

func (greeterStage) BuildStateMachine(initial Phase) (stagefsm.Machine[Phase, Signal, *Greeter, Step], error) {
	return &greeterFSM{phase: initial}, nil
}

func (greeterStage) DispatchState(ctx context.Context, p Phase, g *Greeter) (stagefsm.Directive[Signal], error) {
	switch p {
	case Starting:
		return stagefsm.Transition(Signal{Kind: "start"}), nil
	case Greeting:
		select {
		case <-ctx.Done():
			return stagefsm.Directive[Signal]{}, ctx.Err()
		case name, ok := <-g.In:
			if !ok {
				return stagefsm.Transition(Signal{Kind: "drain"}), nil
			}
			if name == "" {
				return stagefsm.Directive[Signal]{}, errors.New("empty name")
			}
			fmt.Println("hello,", name)
			g.Greeted++
			return stagefsm.Continue[Signal](), nil
		}
	default: // Drained, Failed
		return stagefsm.Terminate[Signal](), nil
	}
}

func (s greeterStage) WriteCompletionEvent(context.Context) error {
	fmt.Println("completion:", s.g.Outcome)
	return nil
}

// feed returns a closed channel holding names.
func feed(names ...string) <-chan string {
	in := make(chan string, len(names))
	for _, n := range names {
		in <- n
	}
	close(in)
	return in
}

// A whole stage: the greeter greets every name, drains when its input
// closes, and writes its completion event.
func Example() {
	g := &Greeter{In: feed("Ada", "Grace")}

	err := stagefsm.Run(context.Background(), greeterStage{g}, Starting, g)

	fmt.Println("Run returned", err)
	// Output:
	// hello, Ada
	// hello, Grace
	// completion: drained after 2 names
	// Run returned <nil>
}

// A handler error is not returned by Run: it becomes an event that the FSM
// handles, here by moving to Failed and recording why. Failed dispatches
// Terminate, so the completion event is still written.
func Example_failurePath() {
	g := &Greeter{In: feed("Ada", "", "Grace")}

	err := stagefsm.Run(context.Background(), greeterStage{g}, Starting, g)

	fmt.Println("Run returned", err)
	// Output:
	// hello, Ada
	// completion: failed in Greeting: empty name
	// Run returned <nil>
}

// Cancelling the context stops the stage promptly, even while dispatch
// waits for input: the error dispatch returns because of it is not a
// failure, and no completion event is written.
func Example_cancellation() {
	in := make(chan string)
	g := &Greeter{In: in}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		in <- "Ada" // received by the stage,
		cancel()    // then the stage is cancelled while it waits for more
	}()

	err := stagefsm.Run(ctx, greeterStage{g}, Starting, g)

	fmt.Println("canceled:", errors.Is(err, context.Canceled))
	fmt.Printf("greeted %d, outcome %q\n", g.Greeted, g.Outcome)
	// Output:
	// hello, Ada
	// canceled: true
	// greeted 1, outcome ""
}

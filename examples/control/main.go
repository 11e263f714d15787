// Command control runs one stage in the background and drives it through
// its handle, the way a pipeline drives its stages: it starts the stage
// (which waits at its Created gate), initializes it with a control event,
// watches its state stream, lets it work, and stops it gracefully with its
// drain event. It prints every state change the stage commits.
//
// The stage's FSM follows the reference transform:
//
//	Created  -Initialize->    Initialized [Allocate]
//	Initialized -Ready->      Running
//	Running  -BeginDrain->    Draining
//	Draining -DrainComplete-> Drained [Flush, Cleanup] (after the pending items)
//	any state but Drained -Error-> Failed [ReportFailure, Cleanup]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/stagefsm/stagefsm"
)

// State is the stage's FSM state.
type State int

const (
	Created State = iota
	Initialized
	Running
	Draining
	Drained
	Failed
)

var stateNames = [...]string{"Created", "Initialized", "Running", "Draining", "Drained", "Failed"}

// String returns the state's name, or "State(n)" for an unknown value.
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Event is fed to the FSM. Initialize and BeginDrain come from the control
// plane; Ready and DrainComplete from dispatch; Error from a failure.
type Event struct {
	Kind Kind
	Err  error // for Error
}

// Kind is the variant of an Event.
type Kind int

const (
	Initialize Kind = iota
	Ready
	BeginDrain
	DrainComplete
	Error
)

var kindNames = [...]string{"Initialize", "Ready", "BeginDrain", "DrainComplete", "Error"}

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
	name := e.Kind.String()
	if e.Err != nil {
		return name + "(" + e.Err.Error() + ")"
	}
	return name
}

// Work is the stage context: it owns the handler's state.
type Work struct {
	Items     int // items still to produce
	Produced  int
	allocated bool
	flushed   bool
}

// Action is a side effect the FSM asks for.
type Action func(ctx context.Context, w *Work) error

// Execute runs the action.
func (a Action) Execute(ctx context.Context, w *Work) error { return a(ctx, w) }

func allocate(_ context.Context, w *Work) error { w.allocated = true; return nil }
func flush(_ context.Context, w *Work) error    { w.flushed = true; return nil }
func cleanup(_ context.Context, w *Work) error  { w.allocated = false; return nil }
func report(_ context.Context, w *Work) error   { return nil }

type machine struct{ state State }

func (m *machine) State() State { return m.state }

func (m *machine) Handle(_ context.Context, e Event, _ *Work) ([]Action, error) {
	switch {
	case m.state == Created && e.Kind == Initialize:
		m.state = Initialized
		return []Action{allocate}, nil
	case m.state == Initialized && e.Kind == Ready:
		m.state = Running
	case m.state == Running && e.Kind == BeginDrain:
		m.state = Draining
	case m.state == Draining && e.Kind == DrainComplete:
		m.state = Drained
		return []Action{flush, cleanup}, nil
	case e.Kind == Error && m.state != Drained:
		m.state = Failed
		return []Action{report, cleanup}, nil
	default:
		return nil, fmt.Errorf("%w: %v in state %v", stagefsm.ErrUnhandledEvent, e, m.state)
	}
	return nil, nil
}

// stage is the supervisor. It declares its control policy (Controlled)
// and its graceful stop (Stoppable); its DispatchState never sees the
// control queue.
type stage struct{}

func (stage) Name() string                        { return "producer" }
func (stage) EventForActionError(err error) Event { return Event{Kind: Error, Err: err} }
func (stage) StopEvent() Event                    { return Event{Kind: BeginDrain} }

func (stage) BuildStateMachine(initial State) (stagefsm.Machine[State, Event, *Work, Action], error) {
	return &machine{state: initial}, nil
}

func (stage) DispatchState(_ context.Context, s State, w *Work) (stagefsm.Directive[Event], error) {
	switch s {
	case Initialized:
		if !w.allocated {
			return stagefsm.Directive[Event]{}, errors.New("resources not allocated")
		}
		return stagefsm.Transition(Event{Kind: Ready}), nil
	case Running:
		if w.Items == 0 {
			return stagefsm.Idle[Event](), nil // wait for more work, or a control event
		}
		w.Items--
		w.Produced++
		return stagefsm.Continue[Event](), nil
	case Draining:
		if w.Items > 0 { // finish the pending work before draining completes
			w.Items--
			w.Produced++
			return stagefsm.Continue[Event](), nil
		}
		return stagefsm.Transition(Event{Kind: DrainComplete}), nil
	default: // Drained, Failed (Created blocks and is never dispatched)
		return stagefsm.Terminate[Event](), nil
	}
}

func (stage) ControlMode(s State) stagefsm.ControlMode {
	switch s {
	case Created:
		return stagefsm.ControlBlock // a gate: nothing happens before Initialize
	case Drained, Failed:
		return stagefsm.ControlIgnore
	default:
		return stagefsm.ControlPoll
	}
}

// ControlClosed: if the controller goes away, a gated stage fails and a
// working one drains.
func (stage) ControlClosed(s State) (Event, bool) {
	if s == Created {
		return Event{Kind: Error, Err: errors.New("control closed before Initialize")}, true
	}
	return Event{Kind: BeginDrain}, true
}

func (stage) WriteCompletionEvent(context.Context) error { return nil }

func main() {
	items := flag.Int("items", 5, "produce `N` items before draining")
	closeControl := flag.Bool("close-control", false, "end by closing the control queue instead of Stop (the stage maps that to BeginDrain)")
	timeout := flag.Duration("timeout", 5*time.Second, "give up after `D`")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	w := &Work{Items: *items}
	st := stagefsm.Start(ctx, stage{}, Created, w)

	// Watch the state stream from another goroutine; it ends when the stage
	// does. The buffer is large enough for this stage's few changes, and a
	// jump in Seq would show a drop.
	watched := make(chan struct{})
	changes := st.Changes(ctx, 16)
	go func() {
		defer close(watched)
		for c := range changes {
			fmt.Printf("  #%d %v -%v-> %v\n", c.Seq, c.From, c.Event, c.To)
		}
	}()

	fmt.Println("started in", st.State())
	if err := st.Send(ctx, Event{Kind: Initialize}); err != nil {
		fail(st, "initialize", err)
	}
	if _, err := st.WaitState(ctx, func(s State) bool { return s == Running }); err != nil {
		fail(st, "wait for Running", err)
	}
	// Stop sends BeginDrain; the stage takes it at its next iteration and
	// drains: it produces what is left, then flushes and cleans up.
	if *closeControl {
		st.CloseControl()
		if err := st.Wait(ctx); err != nil {
			fail(st, "wait", err)
		}
	} else if err := st.Stop(ctx); err != nil {
		fail(st, "stop", err)
	}
	<-watched
	fmt.Printf("stopped in %v: %d items produced, flushed: %t, resources released: %t\n",
		st.State(), w.Produced, w.flushed, !w.allocated)
}

func fail(st *stagefsm.Stage[State, Event], what string, err error) {
	st.Abort()
	fmt.Fprintf(os.Stderr, "%s: %v (stage: %v)\n", what, err, st.Wait(context.Background()))
	os.Exit(1)
}

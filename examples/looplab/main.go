// Command looplab runs a stage whose FSM is an existing looplab/fsm machine
// (github.com/looplab/fsm), plugged into stagefsm.Run with
// looplab.FromFSM. The stage sums a batch of numbers; with -fail it
// meets a bad item, and the looplab FSM routes that failure to "failed".
// The program prints the FSM's Mermaid diagram (looplab's own
// fsm.VisualizeWithType), then the state timeline, the actions and how the
// stage ended.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/looplab/fsm"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/looplab"
)

// newFSM is the team's existing looplab FSM, callbacks included: the
// enter_state callback keeps working under Run.
func newFSM(s *Summer) *fsm.FSM {
	return fsm.NewFSM("created", fsm.Events{
		{Name: "start", Src: []string{"created"}, Dst: "running"},
		{Name: "eof", Src: []string{"running"}, Dst: "drained"},
		{Name: "error", Src: []string{"created", "running"}, Dst: "failed"},
		{Name: "error", Src: []string{"failed"}, Dst: "failed"}, // idempotent
	}, fsm.Callbacks{
		"enter_state": func(_ context.Context, e *fsm.Event) { s.timeline = append(s.timeline, e.Dst) },
	})
}

// Event is the stage's typed event; Err is set for Error.
type Event struct {
	Kind string // a looplab event name
	Err  error
}

// Summer is the stage context: it owns the handler's state.
type Summer struct {
	items    []string
	next     int
	sum      int
	outcome  string
	timeline []string
	log      []string
}

// Action is a side effect the FSM asks for.
type Action struct {
	Name string
	Run  func(ctx context.Context, s *Summer) error
}

// Execute runs the action and records its name.
func (a Action) Execute(ctx context.Context, s *Summer) error {
	s.log = append(s.log, a.Name)
	return a.Run(ctx, s)
}

func (a Action) String() string { return a.Name }

var (
	publishSum = Action{"PublishSum", func(_ context.Context, s *Summer) error {
		s.outcome = "drained, sum " + strconv.Itoa(s.sum)
		return nil
	}}
	reportFailure = Action{"ReportFailure", func(context.Context, *Summer) error { return nil }}
	cleanup       = Action{"Cleanup", func(context.Context, *Summer) error { return nil }}

	drainedActions = []Action{publishSum, cleanup}
	failedActions  = []Action{reportFailure, cleanup}
)

// stage is the supervisor: it says what each state does. It carries the
// looplab FSM, built with the stage context its callbacks close over.
type stage struct{ f *fsm.FSM }

func (stage) Name() string { return "summer" }

func (stage) EventForActionError(err error) Event { return Event{Kind: "error", Err: err} }

func (stage) WriteCompletionEvent(context.Context) error { return nil }

func (st stage) BuildStateMachine(initial string) (stagefsm.Machine[string, Event, *Summer, Action], error) {
	if st.f.Current() != initial {
		return nil, fmt.Errorf("looplab FSM is in %q, not the initial state %q", st.f.Current(), initial)
	}
	return looplab.FromFSM(st.f, looplab.Config[string, Event, *Summer, Action]{
		Event: func(e Event) string { return e.Kind },
		// State is nil: S is looplab's state name.
		Actions: func(_ string, e Event, to string, s *Summer) []Action {
			switch to {
			case "drained":
				return drainedActions
			case "failed":
				if e.Err != nil {
					s.outcome = "failed: " + e.Err.Error()
				}
				return failedActions
			}
			return nil
		},
	})
}

func (stage) DispatchState(_ context.Context, state string, s *Summer) (stagefsm.Directive[Event], error) {
	switch state {
	case "created":
		return stagefsm.Transition(Event{Kind: "start"}), nil
	case "running":
		if s.next == len(s.items) {
			return stagefsm.Transition(Event{Kind: "eof"}), nil
		}
		item := s.items[s.next]
		s.next++
		n, err := strconv.Atoi(item)
		if err != nil {
			return stagefsm.Directive[Event]{}, fmt.Errorf("item %d: %w", s.next, errBadItem)
		}
		s.sum += n
		return stagefsm.Continue[Event](), nil
	default: // drained, failed
		return stagefsm.Terminate[Event](), nil
	}
}

var errBadItem = errors.New("not a number")

// run prints the diagram, runs the stage over items and prints its story.
func run(ctx context.Context, w io.Writer, items []string) error {
	s := &Summer{items: items, timeline: []string{"created"}}
	f := newFSM(s)
	diagram, err := fsm.VisualizeWithType(f, fsm.MERMAID)
	if err != nil {
		return err
	}
	fmt.Fprint(w, diagram)

	err = stagefsm.Run(ctx, stage{f: f}, "created", s)
	fmt.Fprintln(w, "timeline:", strings.Join(s.timeline, " -> "))
	fmt.Fprintln(w, "actions:", strings.Join(s.log, ", "))
	fmt.Fprintln(w, "outcome:", s.outcome)
	return err
}

func main() {
	fail := flag.Bool("fail", false, "feed the stage a bad item")
	flag.Parse()
	items := []string{"1", "2", "3", "4"}
	if *fail {
		items = []string{"1", "two", "3"}
	}
	if err := run(context.Background(), os.Stdout, items); err != nil {
		fmt.Fprintln(os.Stderr, "stage failed:", err)
		os.Exit(1)
	}
}

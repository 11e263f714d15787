package stagefsmtest_test

import (
	"context"
	"fmt"
	"time"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

// The stage the tests and examples drive: a hand-written machine over a
// small lifecycle,
//
//	Created  -Start->  Running  [Open]
//	Running  -Wait->   Waiting           (Waiting times out, see timedMachine)
//	Waiting  -Expire-> Running  [Retry]
//	Running  -Finish-> Done     [Flush, Close]
//	Created|Running|Waiting -Error-> Failed [Report, Close]
//	Failed   -Error->  Failed            (idempotent)
//
// Any other event is unhandled; Running -Finish- is rejected while Ctx.Busy.

// State is the stage's state.
type State int

const (
	Created State = iota
	Running
	Waiting
	Done
	Failed
)

func (s State) String() string {
	switch s {
	case Created:
		return "Created"
	case Running:
		return "Running"
	case Waiting:
		return "Waiting"
	case Done:
		return "Done"
	case Failed:
		return "Failed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Kind is the variant of an Event.
type Kind int

const (
	Start Kind = iota
	Wait
	Expire
	Finish
	Error
)

func (k Kind) String() string { return [...]string{"Start", "Wait", "Expire", "Finish", "Error"}[k] }

// Event is fed to the machine; Err is set for Error.
type Event struct {
	Kind Kind
	Err  error
}

func (e Event) String() string {
	name := e.Kind.String()
	if e.Err != nil {
		return name + "(" + e.Err.Error() + ")"
	}
	return name
}

// Ctx is the stage context. Busy makes Running refuse Finish.
type Ctx struct{ Busy bool }

// Act is the action type of the machine: a recording action.
type Act = stagefsmtest.Action[*Ctx]

// acts are the machine's actions; a test replaces one to inject a fault.
type acts struct{ Open, Retry, Flush, Close, Report Act }

func newActs(rec *stagefsmtest.Recorder[State, Event]) acts {
	return acts{
		Open:   stagefsmtest.NewAction[*Ctx](rec, "Open"),
		Retry:  stagefsmtest.NewAction[*Ctx](rec, "Retry"),
		Flush:  stagefsmtest.NewAction[*Ctx](rec, "Flush"),
		Close:  stagefsmtest.NewAction[*Ctx](rec, "Close"),
		Report: stagefsmtest.NewAction[*Ctx](rec, "Report"),
	}
}

var errBusy = fmt.Errorf("busy")

type machine struct {
	state State
	acts  acts
}

func (m *machine) State() State { return m.state }

func (m *machine) Handle(_ context.Context, e Event, c *Ctx) ([]Act, error) {
	next, actions, err := m.next(e, c)
	if err != nil {
		return nil, err
	}
	m.state = next
	return actions, nil
}

func (m *machine) next(e Event, c *Ctx) (State, []Act, error) {
	switch {
	case m.state == Created && e.Kind == Start:
		return Running, []Act{m.acts.Open}, nil
	case m.state == Running && e.Kind == Wait:
		return Waiting, nil, nil
	case m.state == Waiting && e.Kind == Expire:
		return Running, []Act{m.acts.Retry}, nil
	case m.state == Running && e.Kind == Finish:
		if c != nil && c.Busy {
			return m.state, nil, errBusy
		}
		return Done, []Act{m.acts.Flush, m.acts.Close}, nil
	case e.Kind == Error && m.state == Failed:
		return Failed, nil, nil
	case e.Kind == Error && m.state != Done:
		return Failed, []Act{m.acts.Report, m.acts.Close}, nil
	}
	return m.state, nil, fmt.Errorf("state %v, event %v: %w", m.state, e, stagefsm.ErrUnhandledEvent)
}

// timedMachine is machine with a timeout on Waiting: after timeout it feeds
// Expire.
type timedMachine struct {
	machine
	timeout  time.Duration
	deadline time.Time
}

func (m *timedMachine) Handle(ctx context.Context, e Event, c *Ctx) ([]Act, error) {
	before := m.state
	actions, err := m.machine.Handle(ctx, e, c)
	if err == nil && m.state == Waiting && before != Waiting {
		m.deadline = time.Now().Add(m.timeout)
	}
	return actions, err
}

func (m *timedMachine) Timeout() (time.Time, Event, bool) {
	return m.deadline, Event{Kind: Expire}, m.state == Waiting
}

// builder returns the BuildStateMachine function of a stage over machine.
func builder(a acts) func(State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
	return func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
		return &machine{state: initial, acts: a}, nil
	}
}

// timedBuilder is builder for timedMachine.
func timedBuilder(a acts, timeout time.Duration) func(State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
	return func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
		return &timedMachine{machine: machine{state: initial, acts: a}, timeout: timeout}, nil
	}
}

// failed is the stage's EventForActionError.
func failed(err error) Event { return Event{Kind: Error, Err: err} }

// Shorthands for directives and steps.
var (
	start     = stagefsm.Transition(Event{Kind: Start})
	wait      = stagefsm.Transition(Event{Kind: Wait})
	finish    = stagefsm.Transition(Event{Kind: Finish})
	cont      = stagefsm.Continue[Event]()
	idle      = stagefsm.Idle[Event]()
	terminate = stagefsm.Terminate[Event]()
)

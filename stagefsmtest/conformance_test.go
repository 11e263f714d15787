package stagefsmtest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/looplab/fsm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/looplab"
	"github.com/stagefsm/stagefsm/mealy"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

type spec = stagefsmtest.MachineSpec[State, Event, *Ctx, Act]
type mcase = stagefsmtest.MachineCase[State, Event, *Ctx]

// testMachineSpec describes the test machine; newM makes the machines.
func testMachineSpec(newM func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error)) spec {
	busy := func() *Ctx { return &Ctx{Busy: true} }
	return spec{
		New:     newM,
		Context: func() *Ctx { return &Ctx{} },
		Handled: []mcase{
			{From: Created, Event: Event{Kind: Start}, To: Running},
			{From: Running, Event: Event{Kind: Finish}, To: Done},
			{From: Running, Event: Event{Kind: Error}, To: Failed},
			{From: Failed, Event: Event{Kind: Error}, To: Failed},
		},
		Rejected:  []mcase{{From: Running, Event: Event{Kind: Finish}, Context: busy}},
		Unhandled: []mcase{{From: Done, Event: Event{Kind: Start}}},
	}
}

func newTestMachine(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
	return &machine{state: initial, acts: newActs(nil)}, nil
}

func TestTestMachineConformingMachine(t *testing.T) {
	stagefsmtest.TestMachine(t, testMachineSpec(newTestMachine))
	stagefsmtest.TestMachine(t, testMachineSpec(timedBuilder(newActs(nil), 0)))
}

// conformance runs TestMachine against a fake TB and returns its messages.
func conformance(s spec) []string {
	tb := &fakeTB{}
	tb.run(func(tb testing.TB) { stagefsmtest.TestMachine(tb, s) })
	return tb.messages()
}

// lateMachine commits a state only at the next Handle.
type lateMachine struct {
	machine
	pending *State
}

func (m *lateMachine) Handle(ctx context.Context, e Event, c *Ctx) ([]Act, error) {
	if m.pending != nil {
		m.state = *m.pending
	}
	shown := m.state
	actions, err := m.machine.Handle(ctx, e, c)
	if err == nil {
		next := m.state
		m.pending, m.state = &next, shown
	}
	return actions, err
}

func TestTestMachineLateCommit(t *testing.T) {
	s := testMachineSpec(func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
		return &lateMachine{machine: machine{state: initial}}, nil
	})
	s.Handled, s.Rejected, s.Unhandled = s.Handled[:1], nil, nil
	assert.Equal(t, []string{
		"stagefsmtest: machine conformance: Handled[0] Created --Start--> Running: State() = Created after Handle, want Running (the state must be committed before Handle returns its actions)",
	}, conformance(s))
}

// sloppyMachine breaks the rules for failed Handle calls: its unhandled
// error does not wrap ErrUnhandledEvent, and its rejection moves the state
// and returns actions.
type sloppyMachine struct{ machine }

func (m *sloppyMachine) Handle(ctx context.Context, e Event, c *Ctx) ([]Act, error) {
	actions, err := m.machine.Handle(ctx, e, c)
	switch {
	case errors.Is(err, stagefsm.ErrUnhandledEvent):
		return nil, errors.New("no transition")
	case errors.Is(err, errBusy):
		m.state = Failed
		return []Act{m.acts.Report}, err
	}
	return actions, err
}

func TestTestMachineFailedHandle(t *testing.T) {
	s := testMachineSpec(func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
		return &sloppyMachine{machine{state: initial, acts: newActs(nil)}}, nil
	})
	assert.Equal(t, []string{
		"stagefsmtest: machine conformance: Rejected[0] Running --Finish-->: Handle returned 1 actions with its error busy, want none",
		"stagefsmtest: machine conformance: Rejected[0] Running --Finish-->: State() = Failed after Handle, want Running (a Handle that fails must leave the state unchanged)",
		"stagefsmtest: machine conformance: Unhandled[0] Done --Start-->: error \"no transition\" does not match stagefsm.ErrUnhandledEvent (wrap it with %w)",
	}, conformance(s))
}

// bufferMachine returns its actions in one reused buffer.
type bufferMachine struct {
	machine
	buf []Act
}

func (m *bufferMachine) Handle(ctx context.Context, e Event, c *Ctx) ([]Act, error) {
	actions, err := m.machine.Handle(ctx, e, c)
	m.buf = append(m.buf[:0], actions...)
	if err != nil || len(actions) == 0 {
		return nil, err
	}
	return m.buf, nil
}

// staticMachine returns the same slice, its own, for every Start.
type staticMachine struct {
	machine
	table map[Kind][]Act
}

func (m *staticMachine) Handle(ctx context.Context, e Event, c *Ctx) ([]Act, error) {
	if _, err := m.machine.Handle(ctx, e, c); err != nil {
		return nil, err
	}
	return m.table[e.Kind], nil
}

func TestTestMachineRetainedActions(t *testing.T) {
	a := newActs(nil)
	buffered := testMachineSpec(func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
		return &bufferMachine{machine: machine{state: initial, acts: a}, buf: make([]Act, 0, 4)}, nil
	})
	buffered.Rejected, buffered.Unhandled = nil, nil
	assert.Equal(t, []string{
		"stagefsmtest: machine conformance: Handled[0] Created --Start--> Running: the next Handle (Finish) changed the actions this one returned: the machine reuses its slice; document it and set MachineSpec.RetainsActions",
	}, conformance(buffered))
	buffered.RetainsActions = true
	assert.Empty(t, conformance(buffered), "documented")

	table := map[Kind][]Act{Start: {a.Open}, Finish: {a.Flush, a.Close}, Error: {a.Report}}
	static := testMachineSpec(func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
		return &staticMachine{machine: machine{state: initial, acts: a}, table: table}, nil
	})
	static.Handled, static.Rejected, static.Unhandled = static.Handled[:1], nil, nil
	assert.Equal(t, []string{
		"stagefsmtest: machine conformance: Handled[0] Created --Start--> Running: modifying the returned actions changed what a new machine returns: the slice is the machine's own storage; document it and set MachineSpec.RetainsActions",
	}, conformance(static))
}

// wedgeMachine, like looplab/fsm fed a cancelled context, fails and then
// refuses everything.
type wedgeMachine struct {
	machine
	wedged bool
}

func (m *wedgeMachine) Handle(ctx context.Context, e Event, c *Ctx) ([]Act, error) {
	if m.wedged {
		return nil, errors.New("in transition")
	}
	if err := ctx.Err(); err != nil {
		m.wedged = true
		return nil, err
	}
	return m.machine.Handle(ctx, e, c)
}

func TestTestMachineWedgedByCancelledContext(t *testing.T) {
	s := testMachineSpec(func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
		return &wedgeMachine{machine: machine{state: initial}}, nil
	})
	s.Handled, s.Rejected, s.Unhandled = s.Handled[:1], nil, nil
	assert.Equal(t, []string{
		"stagefsmtest: machine conformance: Handled[0] Created --Start--> Running: after a Handle with a cancelled context failed (context canceled), the machine no longer handles the event: in transition",
	}, conformance(s))
}

// panicMachine panics on Finish, and its State panics in Done.
type panicMachine struct{ machine }

func (m *panicMachine) Handle(ctx context.Context, e Event, c *Ctx) ([]Act, error) {
	if e.Kind == Finish {
		panic("finish")
	}
	return m.machine.Handle(ctx, e, c)
}

func (m *panicMachine) State() State {
	if m.state == Done {
		panic("no state")
	}
	return m.state
}

func TestTestMachinePanics(t *testing.T) {
	s := testMachineSpec(func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
		return &panicMachine{machine{state: initial}}, nil
	})
	s.Handled = s.Handled[:2]
	s.Context = func() *Ctx { panic("no context") }
	s.Unhandled[0].Context = func() *Ctx { return nil }
	assert.Equal(t, []string{
		"stagefsmtest: machine conformance: Handled[0] Created --Start--> Running: Context: panic: no context",
		"stagefsmtest: machine conformance: Handled[1] Running --Finish--> Done: Context: panic: no context",
		"stagefsmtest: machine conformance: Rejected[0] Running --Finish-->: Handle panicked: finish",
		"stagefsmtest: machine conformance: Unhandled[0] Done --Start-->: State: panic: no state",
	}, conformance(s))
}

// unstableMachine's State alternates; it is also built in the wrong state.
type unstableMachine struct {
	machine
	reads int
}

func (m *unstableMachine) State() State {
	m.reads++
	if m.state == Running && m.reads%2 == 0 {
		return Waiting
	}
	return m.state
}

func TestTestMachineNew(t *testing.T) {
	errNew := errors.New("cannot build")
	s := testMachineSpec(func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
		switch initial {
		case Created:
			return nil, errNew
		case Running:
			return &unstableMachine{machine: machine{state: initial}}, nil
		case Failed:
			return nil, nil
		default:
			return &machine{state: Created}, nil
		}
	})
	s.Rejected = nil
	assert.Equal(t, []string{
		"stagefsmtest: machine conformance: Handled[0] Created --Start--> Running: New(Created): cannot build",
		"stagefsmtest: machine conformance: Handled[1] Running --Finish--> Done: State is not stable: Running, then Waiting",
		"stagefsmtest: machine conformance: Handled[2] Running --Error--> Failed: State is not stable: Running, then Waiting",
		"stagefsmtest: machine conformance: Handled[3] Failed --Error--> Failed: New(Failed) returned a nil machine",
		"stagefsmtest: machine conformance: Unhandled[0] Done --Start-->: New(Done) returned a machine in state Created",
	}, conformance(s))
}

func TestTestMachineSpecErrors(t *testing.T) {
	assert.Equal(t, []string{"stagefsmtest: TestMachine: MachineSpec.New is nil"}, conformance(spec{}))
	assert.Equal(t, []string{"stagefsmtest: TestMachine: MachineSpec has no cases"}, conformance(spec{New: newTestMachine}))
}

// A handled event the machine refuses, and a refused event it handles.
func TestTestMachineWrongSpec(t *testing.T) {
	s := spec{
		New:       newTestMachine,
		Handled:   []mcase{{From: Done, Event: Event{Kind: Finish}, To: Done}},
		Rejected:  []mcase{{From: Created, Event: Event{Kind: Start}}},
		Unhandled: []mcase{{From: Running, Event: Event{Kind: Finish}, Context: func() *Ctx { return &Ctx{Busy: true} }}},
	}
	assert.Equal(t, []string{
		"stagefsmtest: machine conformance: Handled[0] Done --Finish--> Done: Handle returned error state Done, event Finish: stagefsm: unhandled event, want nil (the spec lists the event as handled)",
		"stagefsmtest: machine conformance: Rejected[0] Created --Start-->: Handle returned a nil error and 1 actions, want an error (the spec lists the event as refused)",
		"stagefsmtest: machine conformance: Unhandled[0] Running --Finish-->: error \"busy\" does not match stagefsm.ErrUnhandledEvent (wrap it with %w)",
	}, conformance(s))
}

// The machines this module ships conform. Both run the test machine's FSM;
// the cases are those of testMachineSpec plus each machine's own.

// mealyDefinition declares the test machine's FSM with mealy.
func mealyDefinition(t *testing.T, a acts) *mealy.Definition[State, Event, *Ctx, Act] {
	t.Helper()
	b := mealy.New[State, Event, *Ctx, Act](func(s State) State { return s }, func(e Event) Kind { return e.Kind })
	b.Initial(Created)
	b.FailureEvent(Error)
	b.State(Created)
	b.State(Running)
	b.State(Waiting).Timeout(time.Minute, Event{Kind: Expire})
	b.State(Done).Terminal()
	b.State(Failed).Terminal()
	b.On(Created, Start).To(Running).Do(a.Open)
	b.On(Running, Wait).To(Waiting)
	b.On(Waiting, Expire).To(Running).Do(a.Retry)
	b.On(Running, Finish).Choose(func(_ context.Context, _ State, _ Event, c *Ctx) (State, error) {
		if c != nil && c.Busy {
			return Running, errBusy
		}
		return Done, nil
	}, Done).Do(a.Flush, a.Close)
	b.OnAny(Error).To(Failed).Do(a.Report, a.Close)
	b.On(Failed, Error).Stay()
	def, err := b.Build()
	require.NoError(t, err)
	return def
}

func TestMealyConforms(t *testing.T) {
	def := mealyDefinition(t, newActs(nil))
	s := testMachineSpec(func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
		return def.New(initial)
	})
	s.Handled = append(s.Handled,
		mcase{From: Running, Event: Event{Kind: Wait}, To: Waiting},
		mcase{From: Waiting, Event: Event{Kind: Expire}, To: Running},
		mcase{From: Waiting, Event: Event{Kind: Error}, To: Failed},
	)
	s.Unhandled = append(s.Unhandled,
		mcase{From: Done, Event: Event{Kind: Error}},
		mcase{From: Created, Event: Event{Kind: Finish}},
	)
	s.RetainsActions = true // documented: Handle's slice is valid until the next Handle
	stagefsmtest.TestMachine(t, s)
}

// looplabMachine builds the test machine's FSM over looplab/fsm, through
// looplab.FromFSM. looplab callbacks cannot see the stage context, so
// the rejected event is Wait, which a before_ callback always vetoes.
func looplabMachine(a acts) func(State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
	names := map[string]State{}
	for s := Created; s <= Failed; s++ {
		names[s.String()] = s
	}
	kinds := [...]string{Start: "start", Wait: "wait", Expire: "expire", Finish: "finish", Error: "error"}
	return func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
		f := fsm.NewFSM(initial.String(), fsm.Events{
			{Name: "start", Src: []string{"Created"}, Dst: "Running"},
			{Name: "wait", Src: []string{"Running"}, Dst: "Waiting"},
			{Name: "expire", Src: []string{"Waiting"}, Dst: "Running"},
			{Name: "finish", Src: []string{"Running"}, Dst: "Done"},
			{Name: "error", Src: []string{"Created", "Running", "Waiting", "Failed"}, Dst: "Failed"},
		}, fsm.Callbacks{
			"before_wait": func(_ context.Context, e *fsm.Event) { e.Cancel(errBusy) },
		})
		return looplab.FromFSM(f, looplab.Config[State, Event, *Ctx, Act]{
			Event: func(e Event) string { return kinds[e.Kind] },
			State: func(name string) State { return names[name] },
			Actions: func(from State, e Event, _ State, _ *Ctx) []Act {
				switch {
				case e.Kind == Start:
					return []Act{a.Open}
				case e.Kind == Expire:
					return []Act{a.Retry}
				case e.Kind == Finish:
					return []Act{a.Flush, a.Close}
				case e.Kind == Error && from != Failed:
					return []Act{a.Report, a.Close}
				}
				return nil
			},
		})
	}
}

func TestLooplabAdapterConforms(t *testing.T) {
	s := testMachineSpec(looplabMachine(newActs(nil)))
	s.Handled = append(s.Handled, mcase{From: Waiting, Event: Event{Kind: Expire}, To: Running})
	s.Rejected = []mcase{{From: Running, Event: Event{Kind: Wait}}}
	s.Unhandled = append(s.Unhandled,
		mcase{From: Done, Event: Event{Kind: Error}},
		mcase{From: Created, Event: Event{Kind: Finish}},
	)
	stagefsmtest.TestMachine(t, s)
}

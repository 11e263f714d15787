package mealy_test

import (
	"context"
	"testing"
	"time"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
)

// The Run benchmarks measure one loop iteration: dispatch returns
// Transition(flip), the machine moves between two states and returns one
// action, which is executed. One Run performs every iteration — dispatch
// calls b.Loop and returns Terminate when it reports false — so building
// the machine is outside the timed region.
//
// Baseline: baselineLoop over flipMachine, a hand-written machine doing the
// least a machine can (a state toggle and a preallocated one-action slice).
// Rows: Run over mealy (the target), and the two halves swapped to show
// where time goes: baselineLoop over mealy, Run over flipMachine.

type flipState int

type flipEvent struct{ kind int }

type flipCtx struct{ n int }

type flipAction struct{ name string }

func (a *flipAction) Execute(_ context.Context, c *flipCtx) error { c.n++; return nil }

func (a *flipAction) String() string { return a.name }

const flip = 0

var theAction = &flipAction{name: "count"}

// flipDefinition is the mealy machine of the benchmarks: A <-> B on flip,
// one action per transition. With timed, A times out (re-armed on each
// entry).
func flipDefinition(tb testing.TB, timed bool) *mealy.Definition[flipState, flipEvent, *flipCtx, *flipAction] {
	b := mealy.New[flipState, flipEvent, *flipCtx, *flipAction](
		func(s flipState) flipState { return s },
		func(e flipEvent) int { return e.kind },
	)
	if timed {
		b.State(0).Timeout(time.Hour, flipEvent{kind: flip})
		b.State(1)
	}
	b.On(0, flip).To(1).Do(theAction)
	b.On(1, flip).To(0).Do(theAction)
	b.On(0, 1).Stay().Do(theAction)
	b.On(1, 2).Choose(func(_ context.Context, s flipState, _ flipEvent, _ *flipCtx) (flipState, error) { return s, nil }, 1)
	def, err := b.Build()
	if err != nil {
		tb.Fatal(err)
	}
	return def
}

// flipMachine is the hand-written machine of the baseline.
type flipMachine struct {
	state   flipState
	actions []*flipAction
}

func (m *flipMachine) State() flipState { return m.state }

func (m *flipMachine) Handle(_ context.Context, _ flipEvent, _ *flipCtx) ([]*flipAction, error) {
	m.state = 1 - m.state
	return m.actions, nil
}

// flipStage dispatches Transition(flip) while b.Loop reports true.
type flipStage struct {
	b     *testing.B
	build func() (stagefsm.Machine[flipState, flipEvent, *flipCtx, *flipAction], error)
}

func (*flipStage) Name() string                               { return "flip" }
func (*flipStage) EventForActionError(error) flipEvent        { return flipEvent{} }
func (*flipStage) WriteCompletionEvent(context.Context) error { return nil }

func (s *flipStage) BuildStateMachine(flipState) (stagefsm.Machine[flipState, flipEvent, *flipCtx, *flipAction], error) {
	return s.build()
}

var flipDirective = stagefsm.Transition(flipEvent{kind: flip})

func (s *flipStage) DispatchState(context.Context, flipState, *flipCtx) (stagefsm.Directive[flipEvent], error) {
	if !s.b.Loop() {
		return stagefsm.Terminate[flipEvent](), nil
	}
	return flipDirective, nil
}

// baselineLoop is what a user would write without the library: dispatch,
// feed the event, run the actions — no failure routing, recovery,
// cancellation, timeouts or logs. It takes the same interfaces as Run, so
// each call into user code is the same dynamic call; go:noinline keeps the
// compiler from devirtualising them.
//
//go:noinline
func baselineLoop[S, E, C any, A stagefsm.Action[C]](ctx context.Context, h stagefsm.HandlerSupervised[S, E, C, A], initial S, c C) error {
	m, err := h.BuildStateMachine(initial)
	if err != nil {
		return err
	}
	s := m.State()
	for {
		d, err := h.DispatchState(ctx, s, c)
		if err != nil {
			return err
		}
		e, ok := d.Event()
		if !ok {
			return h.WriteCompletionEvent(ctx) // the benchmark's only other directive
		}
		actions, err := m.Handle(ctx, e, c)
		if err != nil {
			return err
		}
		for _, a := range actions {
			if err := a.Execute(ctx, c); err != nil {
				return err
			}
		}
		s = m.State()
	}
}

func buildMealy(b *testing.B, timed bool) func() (stagefsm.Machine[flipState, flipEvent, *flipCtx, *flipAction], error) {
	def := flipDefinition(b, timed)
	return func() (stagefsm.Machine[flipState, flipEvent, *flipCtx, *flipAction], error) { return def.New(0) }
}

func buildFlip() (stagefsm.Machine[flipState, flipEvent, *flipCtx, *flipAction], error) {
	return &flipMachine{actions: []*flipAction{theAction}}, nil
}

type loopFunc func(context.Context, stagefsm.HandlerSupervised[flipState, flipEvent, *flipCtx, *flipAction], flipState, *flipCtx) error

func runLoop(ctx context.Context, h stagefsm.HandlerSupervised[flipState, flipEvent, *flipCtx, *flipAction], s flipState, c *flipCtx) error {
	return stagefsm.Run(ctx, h, s, c)
}

func benchLoop(b *testing.B, loop loopFunc, build func() (stagefsm.Machine[flipState, flipEvent, *flipCtx, *flipAction], error)) {
	b.ReportAllocs()
	c := &flipCtx{}
	if err := loop(context.Background(), &flipStage{b: b, build: build}, 0, c); err != nil {
		b.Fatal(err)
	}
	if c.n == 0 {
		b.Fatal("no action executed")
	}
}

// BenchmarkBaseline is the hand-rolled loop over the hand-written machine.
func BenchmarkBaseline(b *testing.B) { benchLoop(b, baselineLoop, buildFlip) }

// BenchmarkRunMealy is stagefsm.Run over a mealy machine: the target is at
// most 4× BenchmarkBaseline.
func BenchmarkRunMealy(b *testing.B) { benchLoop(b, runLoop, buildMealy(b, false)) }

// BenchmarkRunMealyTimed is BenchmarkRunMealy with a timeout re-armed on
// every other transition (Run re-derives its dispatch context each time).
func BenchmarkRunMealyTimed(b *testing.B) { benchLoop(b, runLoop, buildMealy(b, true)) }

// BenchmarkBaselineMealy is the hand-rolled loop over a mealy machine.
func BenchmarkBaselineMealy(b *testing.B) { benchLoop(b, baselineLoop, buildMealy(b, false)) }

// BenchmarkRunHandWritten is stagefsm.Run over the hand-written machine.
func BenchmarkRunHandWritten(b *testing.B) { benchLoop(b, runLoop, buildFlip) }

// BenchmarkHandle measures Machine.Handle alone, per kind of transition.
func BenchmarkHandle(b *testing.B) {
	for _, bc := range []struct {
		name  string
		timed bool
		event flipEvent
		from  flipState
	}{
		{"To", false, flipEvent{kind: flip}, 0},
		{"ToTimed", true, flipEvent{kind: flip}, 0},
		{"Stay", false, flipEvent{kind: 1}, 0},
		{"Choose", false, flipEvent{kind: 2}, 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m, err := flipDefinition(b, bc.timed).New(bc.from)
			if err != nil {
				b.Fatal(err)
			}
			ctx, c := context.Background(), &flipCtx{}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Handle(ctx, bc.event, c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

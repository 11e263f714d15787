package stagefsm_test

import (
	"context"
	"io"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/stagefsm/stagefsm"
)

// The benchmarks measure one iteration of Run's loop. One Run performs all
// the iterations: the fake dispatch calls b.Loop and returns Terminate once
// it reports false, so building the machine and the first and last lines
// of Run fall outside the timed region. The baseline is the same loop
// written by hand, making the same calls the same way (see handRolled).

type benchState int

type benchEvent struct{ n int }

type benchCtx struct{ executed int }

type benchAction struct{}

func (*benchAction) Execute(_ context.Context, c *benchCtx) error {
	c.executed++
	return nil
}

// benchMachine returns the same preallocated one-action slice on every
// Handle.
type benchMachine struct {
	state   benchState
	actions []*benchAction
}

func (m *benchMachine) State() benchState { return m.state }

func (m *benchMachine) Handle(_ context.Context, e benchEvent, _ *benchCtx) ([]*benchAction, error) {
	m.state = benchState(e.n)
	return m.actions, nil
}

// benchStage dispatches directive while b.Loop reports true, then
// Terminate.
type benchStage struct {
	b         *testing.B
	directive stagefsm.Directive[benchEvent]
}

func (*benchStage) Name() string                               { return "bench" }
func (*benchStage) EventForActionError(error) benchEvent       { return benchEvent{} }
func (*benchStage) WriteCompletionEvent(context.Context) error { return nil }

func (*benchStage) BuildStateMachine(initial benchState) (stagefsm.Machine[benchState, benchEvent, *benchCtx, *benchAction], error) {
	return &benchMachine{state: initial, actions: []*benchAction{{}}}, nil
}

func (s *benchStage) DispatchState(context.Context, benchState, *benchCtx) (stagefsm.Directive[benchEvent], error) {
	if !s.b.Loop() {
		return stagefsm.Terminate[benchEvent](), nil
	}
	return s.directive, nil
}

// handRolled is the baseline: the loop a user would write without the
// library, minus failure routing, panic recovery, cancellation handling,
// timeouts and logging. It is generic over the same type parameters as Run
// and takes the supervisor as the same interface, so every call into user
// code (dispatch, Handle, State, Execute) is the same kind of dynamic call
// as in Run; go:noinline keeps the compiler from devirtualising them.
//
//go:noinline
func handRolled[S any, E comparable, C any, A stagefsm.Action[C]](ctx context.Context, h stagefsm.HandlerSupervised[S, E, C, A], initial S, c C) error {
	m, err := h.BuildStateMachine(initial)
	if err != nil {
		return err
	}
	terminate := stagefsm.Terminate[E]()
	state := m.State()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, err := h.DispatchState(ctx, state, c)
		if err != nil {
			return err
		}
		if event, ok := d.Event(); ok {
			actions, err := m.Handle(ctx, event, c)
			if err != nil {
				return err
			}
			for _, a := range actions {
				if err := a.Execute(ctx, c); err != nil {
					return err
				}
			}
			state = m.State()
			continue
		}
		if d == terminate {
			return h.WriteCompletionEvent(ctx)
		}
		// Continue: dispatch again.
	}
}

// zapInfo is a production logger at Info writing JSON to io.Discard.
func zapInfo() *zap.Logger {
	return zap.New(zapcore.NewCore(
		zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(io.Discard),
		zap.InfoLevel,
	))
}

func benchRun(b *testing.B, d stagefsm.Directive[benchEvent], opts ...stagefsm.Option) {
	b.ReportAllocs()
	s, c := &benchStage{b: b, directive: d}, &benchCtx{}
	if err := stagefsm.Run(context.Background(), s, 0, c, opts...); err != nil {
		b.Fatal(err)
	}
}

func benchHandRolled(b *testing.B, d stagefsm.Directive[benchEvent]) {
	b.ReportAllocs()
	s, c := &benchStage{b: b, directive: d}, &benchCtx{}
	if err := handRolled(context.Background(), s, 0, c); err != nil {
		b.Fatal(err)
	}
}

var (
	transitionDirective = stagefsm.Transition(benchEvent{n: 1})
	continueDirective   = stagefsm.Continue[benchEvent]()
)

// BenchmarkRunTransition measures one Transition iteration of Run: dispatch,
// Handle returning one action, the action, with the Nop logger.
func BenchmarkRunTransition(b *testing.B) { benchRun(b, transitionDirective) }

// BenchmarkRunTransitionZapInfo is BenchmarkRunTransition with a production
// zap logger at Info level.
func BenchmarkRunTransitionZapInfo(b *testing.B) {
	benchRun(b, transitionDirective, stagefsm.WithLogger(zapInfo()))
}

// BenchmarkHandRolledTransition is the baseline of BenchmarkRunTransition.
func BenchmarkHandRolledTransition(b *testing.B) { benchHandRolled(b, transitionDirective) }

// BenchmarkRunContinue measures one Continue iteration of Run.
func BenchmarkRunContinue(b *testing.B) { benchRun(b, continueDirective) }

// BenchmarkRunContinueZapInfo is BenchmarkRunContinue with a production zap
// logger at Info level.
func BenchmarkRunContinueZapInfo(b *testing.B) {
	benchRun(b, continueDirective, stagefsm.WithLogger(zapInfo()))
}

// BenchmarkHandRolledContinue is the baseline of BenchmarkRunContinue.
func BenchmarkHandRolledContinue(b *testing.B) { benchHandRolled(b, continueDirective) }

package looplab_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/looplab/fsm"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/looplab"
)

// The benchmarks drive a two-state toggle, "a" -t-> "b" -t-> "a", so every
// event is a real transition. Compare rows of one run:
//
//	Handle/adapter        vs Handle/bare-Event          (target ≤ 1.25×, same allocs)
//	Handle/interleaved    reports that ratio from alternating batches
//	Handle/adapter-cancellable-ctx vs Handle/bare-Event-cancellable-ctx
//	Run/adapter           vs Run/hand-rolled            (per transition)
//	Run/interleaved       reports Run over the adapter against bare Events

type toggleState uint8

const (
	stateA toggleState = iota
	stateB
)

type toggleEvent uint8

const toggle toggleEvent = 0

var toggleNames = [...]string{toggle: "t"}

type toggleCtx struct{ n, target int }

type noop struct{}

func (noop) Execute(context.Context, *toggleCtx) error { return nil }

var noopActions = []noop{{}}

func newToggle() *fsm.FSM {
	return fsm.NewFSM("a", fsm.Events{
		{Name: "t", Src: []string{"a"}, Dst: "b"},
		{Name: "t", Src: []string{"b"}, Dst: "a"},
	}, nil)
}

func toggleConfig() looplab.Config[toggleState, toggleEvent, *toggleCtx, noop] {
	return looplab.Config[toggleState, toggleEvent, *toggleCtx, noop]{
		Event: func(e toggleEvent) string { return toggleNames[e] },
		State: func(name string) toggleState {
			if name == "b" {
				return stateB
			}
			return stateA
		},
		Actions: func(toggleState, toggleEvent, toggleState, *toggleCtx) []noop { return noopActions },
	}
}

func BenchmarkLooplabHandle(b *testing.B) {
	cancellable, cancel := context.WithCancel(context.Background())
	defer cancel()

	bare := func(ctx context.Context) func(b *testing.B) {
		return func(b *testing.B) {
			f := newToggle()
			b.ReportAllocs()
			for b.Loop() {
				if err := f.Event(ctx, "t"); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	adapter := func(ctx context.Context) func(b *testing.B) {
		return func(b *testing.B) {
			m, err := looplab.FromFSM(newToggle(), toggleConfig())
			if err != nil {
				b.Fatal(err)
			}
			c := &toggleCtx{}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Handle(ctx, toggle, c); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	// interleaved alternates batches of both on the same FSM shape and
	// keeps the fastest batch of each: the ratio it reports holds up on a
	// busy machine, where rows measured one after the other drift.
	b.Run("interleaved", func(b *testing.B) {
		const batch = 1000
		ctx := context.Background()
		f := newToggle()
		m, err := looplab.FromFSM(newToggle(), toggleConfig())
		if err != nil {
			b.Fatal(err)
		}
		c := &toggleCtx{}
		bestBare, bestAdapter := time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			for range batch {
				if err := f.Event(ctx, "t"); err != nil {
					b.Fatal(err)
				}
			}
			bestBare = min(bestBare, time.Since(start))
			start = time.Now()
			for range batch {
				if _, err := m.Handle(ctx, toggle, c); err != nil {
					b.Fatal(err)
				}
			}
			bestAdapter = min(bestAdapter, time.Since(start))
		}
		b.ReportMetric(float64(bestBare.Nanoseconds())/batch, "bare-ns/event")
		b.ReportMetric(float64(bestAdapter.Nanoseconds())/batch, "adapter-ns/event")
		b.ReportMetric(float64(bestAdapter)/float64(bestBare), "adapter/bare")
	})
	b.Run("bare-Event", bare(context.Background()))
	b.Run("adapter", adapter(context.Background()))
	b.Run("bare-Event-cancellable-ctx", bare(cancellable))
	b.Run("adapter-cancellable-ctx", adapter(cancellable))
}

// toggleStage runs target transitions, then terminates.
type toggleStage struct {
	build func(initial toggleState) (stagefsm.Machine[toggleState, toggleEvent, *toggleCtx, noop], error)
}

func (toggleStage) Name() string                               { return "toggle" }
func (toggleStage) WriteCompletionEvent(context.Context) error { return nil }
func (toggleStage) EventForActionError(error) toggleEvent      { return toggle }

func (s toggleStage) BuildStateMachine(initial toggleState) (stagefsm.Machine[toggleState, toggleEvent, *toggleCtx, noop], error) {
	return s.build(initial)
}

func (toggleStage) DispatchState(_ context.Context, _ toggleState, c *toggleCtx) (stagefsm.Directive[toggleEvent], error) {
	if c.n == c.target {
		return stagefsm.Terminate[toggleEvent](), nil
	}
	c.n++
	return stagefsm.Transition(toggle), nil
}

// handToggle is the hand-rolled baseline machine.
type handToggle struct{ state toggleState }

func (m *handToggle) State() toggleState { return m.state }

func (m *handToggle) Handle(context.Context, toggleEvent, *toggleCtx) ([]noop, error) {
	m.state ^= 1
	return noopActions, nil
}

func BenchmarkLooplabRun(b *testing.B) {
	const transitions = 1000
	handRolled := toggleStage{build: func(s toggleState) (stagefsm.Machine[toggleState, toggleEvent, *toggleCtx, noop], error) {
		return &handToggle{state: s}, nil
	}}
	adapter := toggleStage{build: func(toggleState) (stagefsm.Machine[toggleState, toggleEvent, *toggleCtx, noop], error) {
		return looplab.FromFSM(newToggle(), toggleConfig())
	}}
	run := func(b *testing.B, sup toggleStage) {
		if err := stagefsm.Run(b.Context(), sup, stateA, &toggleCtx{target: transitions}); err != nil {
			b.Fatal(err)
		}
	}

	for _, tc := range []struct {
		name string
		sup  toggleStage
	}{{"hand-rolled", handRolled}, {"adapter", adapter}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				run(b, tc.sup)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*transitions), "ns/transition")
		})
	}

	// interleaved alternates a Run over each machine and as many bare
	// looplab Events, keeping the fastest of each (see
	// BenchmarkLooplabHandle/interleaved).
	b.Run("interleaved", func(b *testing.B) {
		ctx := context.Background()
		f := newToggle()
		best := [3]time.Duration{math.MaxInt64, math.MaxInt64, math.MaxInt64}
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			for range transitions {
				if err := f.Event(ctx, "t"); err != nil {
					b.Fatal(err)
				}
			}
			best[0] = min(best[0], time.Since(start))
			start = time.Now()
			run(b, handRolled)
			best[1] = min(best[1], time.Since(start))
			start = time.Now()
			run(b, adapter)
			best[2] = min(best[2], time.Since(start))
		}
		perTransition := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / transitions }
		b.ReportMetric(perTransition(best[0]), "bare-Event-ns/transition")
		b.ReportMetric(perTransition(best[1]), "Run-hand-rolled-ns/transition")
		b.ReportMetric(perTransition(best[2]), "Run-adapter-ns/transition")
		b.ReportMetric(float64(best[2])/float64(best[0]), "Run-adapter/bare-Event")
	})
}

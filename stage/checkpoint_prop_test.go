package stage_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/stagefsm/stagefsm/checkpoint"
	"github.com/stagefsm/stagefsm/stage"
)

// TestCheckpointGraphProperties checks checkpoints on random graphs —
// merged sources, transforms that drop or double items, parallel stages in
// every order, broadcasts, routes, merges of branches (diamonds), keyed
// accumulators and aggregates — with random batch sizes and capacities: a
// run crashed after a checkpoint taken at random source positions, with
// outputs written past it, then resumed from the store, ends with each
// sink holding exactly the outputs of an uninterrupted run (as a multiset:
// merges and parallel stages in AnyOrder interleave).
func TestCheckpointGraphProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		plan := drawCkptPlan(rt)
		want := plan.run(t, nil, nil)
		dir := t.TempDir()
		d, err := checkpoint.OpenDir(dir)
		require.NoError(t, err)
		store := &breakable{Store: d}
		crashed := plan.run(t, store, func(p *stage.Pipeline, srcs []*replay[int]) {
			var held []<-chan struct{}
			for i, s := range srcs {
				held = append(held, s.holdAt(plan.holds[i]))
			}
			require.NoError(t, p.Start(t.Context()))
			for _, h := range held {
				<-h
			}
			n0 := p.Stats().Checkpoints
			require.Eventually(t, func() bool { return p.Stats().Checkpoints >= n0+2 }, 10*time.Second, time.Millisecond)
			store.broken.Store(true)
			held = held[:0]
			for i, s := range srcs {
				held = append(held, s.holdAt(plan.holds[i]+plan.more))
			}
			for _, h := range held {
				<-h
			}
			p.Abort()
			require.ErrorIs(t, p.Wait(t.Context()), stage.ErrAborted)
		})
		require.NoError(t, d.Close())
		d, err = checkpoint.OpenDir(dir)
		require.NoError(t, err)
		defer d.Close()
		plan.durable = crashed
		got := plan.run(t, d, nil)
		for i := range want {
			if !slices.Equal(sortedInts(want[i]), sortedInts(got[i])) {
				rt.Fatalf("sink %d: resumed %d outputs %v, want %d %v", i, len(got[i]), sortedInts(got[i]), len(want[i]), sortedInts(want[i]))
			}
		}
	})
}

func sortedInts(s []int) []int { s = slices.Clone(s); slices.Sort(s); return s }

// ckptPlan is a random graph of int stages.
type ckptPlan struct {
	batch, capacity int
	sources         [][]int
	gaps            []int
	holds           []int // where each source holds before the crash
	more            int   // items each source goes on with after the last checkpoint
	ops             []ckptOp
	durable         [][]int // the sinks' outputs the crash left, for the resumed run
}

type ckptOp struct {
	kind    string // "apply", "par", "bcast", "route", "merge", "acc", "agg"
	fn      int    // apply/par: 0 maps, 1 filters, 2 doubles, 3 maps slowly
	workers int
	order   stage.Order
}

func drawCkptPlan(t *rapid.T) *ckptPlan {
	p := &ckptPlan{
		batch:    rapid.IntRange(1, 16).Draw(t, "batch"),
		capacity: rapid.IntRange(1, 3).Draw(t, "capacity"),
		more:     rapid.IntRange(1, 10).Draw(t, "more"),
	}
	for s := range rapid.IntRange(1, 3).Draw(t, "sources") {
		n := rapid.IntRange(30, 150).Draw(t, "items")
		var items []int
		for i := range n {
			items = append(items, s*100_000+i)
		}
		p.sources = append(p.sources, items)
		p.gaps = append(p.gaps, rapid.IntRange(1, 9).Draw(t, "gap"))
		p.holds = append(p.holds, rapid.IntRange(1, n-p.more-1).Draw(t, "hold"))
	}
	live := len(p.sources)
	for range rapid.IntRange(0, 7).Draw(t, "steps") {
		kinds := []string{"apply", "par", "bcast", "route", "acc", "agg"}
		if live >= 2 {
			kinds = append(kinds, "merge", "merge")
		}
		op := ckptOp{kind: rapid.SampledFrom(kinds).Draw(t, "kind")}
		switch op.kind {
		case "apply":
			op.fn = rapid.IntRange(0, 3).Draw(t, "fn")
		case "par":
			op.fn = rapid.IntRange(0, 3).Draw(t, "fn")
			op.workers = rapid.IntRange(1, 3).Draw(t, "workers")
			op.order = rapid.SampledFrom([]stage.Order{stage.InputOrder, stage.AnyOrder, stage.KeyOrder}).Draw(t, "order")
		case "bcast", "route":
			live++
		case "merge":
			live--
		}
		p.ops = append(p.ops, op)
	}
	return p
}

func ckptFn(fn int) stage.Transform[int, int] {
	return stage.TransformFunc[int, int](func(_ context.Context, v int, emit func(int)) error {
		switch fn {
		case 0:
			emit(v*3 + 1)
		case 1:
			if v%5 != 0 {
				emit(v)
			}
		case 3:
			// Slow: what is in flight lags behind the other branches, so
			// that barriers and items of different writers cross at merges.
			time.Sleep(50 * time.Microsecond)
			emit(v*3 + 1)
		default:
			emit(v)
			emit(-v - 1)
		}
		return nil
	})
}

// run builds the plan's graph and runs it: to the end when drive is nil
// (checkpointing into store if not nil), else as drive says. It returns
// what each sink holds.
func (p *ckptPlan) run(t *testing.T, store checkpoint.Store, drive func(*stage.Pipeline, []*replay[int])) [][]int {
	t.Helper()
	opts := []stage.Option{stage.WithBatchSize(p.batch), stage.WithCapacity(p.capacity)}
	if store != nil {
		opts = append(opts, stage.WithCheckpoint(store, time.Millisecond))
	}
	g := stage.NewGraph(opts...)
	var live []*stage.Stream[int]
	var srcs []*replay[int]
	for i, items := range p.sources {
		gap := 0
		if drive != nil {
			gap = p.gaps[i]
		}
		s := newReplay(items, gap)
		srcs = append(srcs, s)
		live = append(live, stage.Read(g, fmt.Sprint("src", i), stage.Source[int](s)))
	}
	pop := func() *stage.Stream[int] { s := live[0]; live = live[1:]; return s }
	for i, op := range p.ops {
		name := fmt.Sprint(op.kind, i)
		switch op.kind {
		case "apply":
			live = append(live, stage.Apply(pop(), name, ckptFn(op.fn)))
		case "par":
			live = append(live, stage.ApplyParallel(pop(), name, ckptFn(op.fn),
				stage.Parallel[int]{Workers: op.workers, Order: op.order, Key: func(v int) uint64 { return uint64(v % 11) }}))
		case "bcast":
			live = append(live, stage.Broadcast(pop(), name, 2)...)
		case "route":
			live = append(live, stage.Route(pop(), name, 2, func(v int) int { return (v%2 + 2) % 2 })...)
		case "merge":
			a, b := pop(), pop()
			live = append(live, stage.Merge(name, a, b))
		case "acc":
			live = append(live, stage.KeyedAccumulate(pop(), name, stage.KeyedAccumulator[int, int, [2]int, int]{
				Key:  func(v int) int { return (v%7 + 7) % 7 },
				Fold: func(s *[2]int, v int) error { s[0] += v; s[1]++; return nil },
				Emit: func(k int, s [2]int, emit func(int)) error { emit(k*1_000_000_000 + s[0]*1000 + s[1]); return nil },
			}))
		case "agg":
			live = append(live, stage.Aggregate(pop(), name, func(s *int, v int) { *s += v }, func(s int, emit func(int)) { emit(s) }))
		}
	}
	var sinks []*tape[int]
	for i, s := range live {
		var durable []int
		if p.durable != nil {
			durable = p.durable[i]
		}
		k := newTape(durable)
		sinks = append(sinks, k)
		stage.Write(s, fmt.Sprint("sink", i), stage.Sink[int](k))
	}
	pipe, err := g.Build()
	require.NoError(t, err)
	if drive != nil {
		drive(pipe, srcs)
	} else {
		require.NoError(t, pipe.Start(t.Context()))
		require.NoError(t, pipe.Wait(t.Context()))
	}
	out := make([][]int, len(sinks))
	for i, k := range sinks {
		out[i] = k.items()
	}
	return out
}

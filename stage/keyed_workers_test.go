package stage_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
	"github.com/stagefsm/stagefsm/stage"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

// TestKeyedWorkersPerKeyOrder folds 40 items of each of 300 keys on 4
// workers: every window a key emits holds that key's items in input order,
// and every item is folded once.
func TestKeyedWorkersPerKeyOrder(t *testing.T) {
	const keys, per = 300, 40
	src := stagefsmtest.NewSource[sale]()
	for n := range per {
		for k := range keys {
			src.Emit(sale{fmt.Sprint("k", (k*7+n)%keys), n*keys + k})
		}
	}
	type window struct {
		shop string
		ns   []int
	}
	spec := stage.KeyedAccumulator[sale, string, []int, window]{
		Key: func(s sale) string { return s.Shop },
		Fold: func(ns *[]int, s sale) error {
			*ns = append(*ns, s.N)
			return nil
		},
		EmitWhen: func(_ string, ns []int) bool { return len(ns) == 8 },
		Emit: func(shop string, ns []int, emit func(window)) error {
			emit(window{shop, ns})
			return nil
		},
		Workers: 4,
	}
	sink := &collector[window]{}
	p := stage.To(stage.ThenKeyedAccumulate(stage.From("src", stage.Source[sale](src)), "acc", spec), "sink", sink,
		stage.WithBatchSize(64))
	require.NoError(t, run(t, p))
	st := assertBalanced(t, p, nil)
	got := sink.items()
	require.Len(t, got, keys*per/8)
	seen := map[int]bool{}
	for _, w := range got {
		assert.True(t, slices.IsSorted(w.ns), "key %s: %v out of order", w.shop, w.ns)
		for _, n := range w.ns {
			assert.False(t, seen[n])
			seen[n] = true
		}
	}
	assert.Len(t, seen, keys*per)
	assert.Equal(t, uint64(keys*per), st.Stages[1].Counts.Delivered)
	assert.Equal(t, 0, st.Stages[1].Keys)
}

// TestKeyedWorkersMachines runs the order machines on 3 workers: the same
// outputs as on one, each key's in order, failures isolated, stats summed.
func TestKeyedWorkersMachines(t *testing.T) {
	def := orderDef(t)
	var os []order
	for i := range 200 {
		id := fmt.Sprint("o", i)
		os = append(os, order{id, "add"})
		switch i % 4 {
		case 0:
			os = append(os, order{id, "pay"}, order{id, "close"})
		case 1:
			os = append(os, order{id, "bad"})
		case 2:
			os = append(os, order{id, "boom"})
		}
	}
	runWith := func(workers int) ([]string, stage.Stats, []stage.Item[any]) {
		spec := orderSpec(def)
		spec.Workers = workers
		sink := &collector[string]{}
		dl := &letters{}
		p := stage.To(stage.ThenKeyed(stage.From("src", stage.Source[order](orders(os...))), "keyed", spec), "sink", sink,
			stage.WithDeadLetter(dl.add), stage.WithBatchSize(16))
		require.NoError(t, run(t, p))
		st := assertBalanced(t, p, dl)
		return sink.items(), st.Stages[1], dl.items()
	}
	one, st1, dl1 := runWith(1)
	three, st3, dl3 := runWith(3)
	assert.ElementsMatch(t, one, three)
	assert.Len(t, dl3, len(dl1))
	assert.Len(t, dl3, 100, "the bad and boom orders")
	assert.Equal(t, st1.Counts, st3.Counts)
	assert.Equal(t, st1.Keys, st3.Keys)
	perKey := func(out []string) map[string][]string {
		m := map[string][]string{}
		for _, s := range out {
			id, what, _ := strings.Cut(s, ":")
			m[id] = append(m[id], what)
		}
		return m
	}
	assert.Equal(t, perKey(one), perKey(three), "each key's outputs in the same order")
	assert.Equal(t, []string{"added", "paid", "closed"}, perKey(three)["o0"])
}

func TestKeyedWorkersTimeouts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 500
		def := orderDef(t)
		src := stagefsmtest.NewSource[order]()
		for i := range n {
			src.Emit(order{fmt.Sprint("k", i), "add"})
		}
		src.Sleep(time.Second).Sleep(2 * time.Minute).Emit(order{"z", "pay"})
		spec := orderSpec(def)
		spec.Drain = nil
		spec.Workers = 4
		got, st, dl, _ := keyedRun(t, stage.Source[order](src), spec)
		assert.Empty(t, dl)
		assert.Len(t, got, 2*n+1, "added and abandoned for each key, paid for z")
		assert.Equal(t, uint64(n), st.Timeouts, "every timeout of every worker fired once")
		assert.Equal(t, 1, st.Keys)
	})
}

// intDef is a machine per int key: its one "add" emits and ends it.
func intDef(t testing.TB) *mealy.Definition[string, string, *stage.Scope[int, int], act] {
	t.Helper()
	id := func(s string) string { return s }
	b := mealy.New[string, string, *stage.Scope[int, int], act](id, id)
	b.Initial("open")
	b.State("open")
	b.State("done").Terminal()
	b.On("open", "add").To("done").Do("emit")
	def, err := b.Build()
	require.NoError(t, err)
	return def
}

// intSpec is a keyed stage on workers where each int is its own key, its
// action do.
func intSpec(t testing.TB, workers int, do func(ctx context.Context, key int, emit func(int)) error) stage.KeyedSpec[int, int, string, string, act, int] {
	def := intDef(t)
	return stage.KeyedSpec[int, int, string, string, act, int]{
		Key:   func(i int) int { return i },
		Event: func(int) string { return "add" },
		New: func(int) (stagefsm.Machine[string, string, *stage.Scope[int, int], act], error) {
			return def.New("open")
		},
		Act: func(ctx context.Context, _ act, _ string, s *stage.Scope[int, int]) error {
			return do(ctx, s.Key(), s.Emit)
		},
		Terminal: def.Terminal,
		Workers:  workers,
	}
}

// TestKeyedFatal fails a keyed stage, on one worker and on two, with a
// Fatal error of an action: the stage fails, the rest is dead-lettered.
func TestKeyedFatal(t *testing.T) {
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprint(workers), func(t *testing.T) { testKeyedFatal(t, workers) })
	}
}

func testKeyedFatal(t *testing.T, workers int) {
	spec := intSpec(t, workers, func(_ context.Context, key int, emit func(int)) error {
		if key == 300 {
			return stage.Fatal(errFatal)
		}
		emit(key)
		return nil
	})
	sink := &collector[int]{}
	dl := &letters{}
	p := stage.To(stage.ThenKeyed(stage.From("src", stage.Source[int](&numbers{n: 100_000})), "keyed", spec), "sink", sink,
		stage.WithBatchSize(32), stage.WithDeadLetter(dl.add))
	err := run(t, p)
	var se *stage.Error
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "keyed", se.Stage)
	assert.ErrorIs(t, err, errFatal)
	assert.ErrorIs(t, err, stage.ErrFatal)
	st := assertBalanced(t, p, dl)
	assert.Equal(t, stage.Failed, st.Stages[1].State.Kind)
	fatal := 0
	for _, it := range dl.items() {
		switch {
		case errors.Is(it.Err, errFatal):
			fatal++
			assert.Equal(t, 300, it.Payload)
		case errors.Is(it.Err, stage.ErrFailed):
		default:
			t.Errorf("unexpected dead letter %v", it)
		}
	}
	assert.Equal(t, 1, fatal)
	got := sink.items()
	assert.NotContains(t, got, 300)
	for _, v := range got {
		assert.LessOrEqual(t, v, 320, "nothing beyond the failed batch went on")
	}
}

// TestKeyedWorkersAbort aborts while every worker is stuck in an action:
// the batch they held and the outputs not sent are dead-lettered with
// ErrAborted, and no worker is left behind (goleak).
func TestKeyedWorkersAbort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spec := intSpec(t, 3, func(ctx context.Context, key int, emit func(int)) error {
			if key > 100 {
				<-ctx.Done()
				return ctx.Err()
			}
			emit(key)
			return nil
		})
		sink := &collector[int]{}
		dl := &letters{}
		p := stage.To(stage.ThenKeyed(stage.From("src", stage.Source[int](&numbers{n: -1})), "keyed", spec), "sink", sink,
			stage.WithBatchSize(10), stage.WithDeadLetter(dl.add))
		require.NoError(t, p.Start(context.Background()))
		synctest.Wait()
		p.Abort()
		assert.ErrorIs(t, p.Wait(context.Background()), stage.ErrAborted)
		st := assertBalanced(t, p, dl)
		got := sink.items()
		slices.Sort(got)
		assert.Equal(t, seq(1, 100, func(i int) int { return i }), got)
		var held []any
		for _, it := range dl.items() {
			assert.ErrorIs(t, it.Err, stage.ErrAborted)
			if v, ok := it.Payload.(int); ok && v > 100 && v <= 110 {
				held = append(held, v)
			}
		}
		assert.Len(t, held, 10, "the batch the workers held is dead-lettered")
		assert.NotZero(t, st.DeadLettered)
	})
}

func TestKeyedWorkersRestartRedoesTheRestOfTheBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var failed atomic.Bool
		spec := intSpec(t, 2, func(_ context.Context, key int, emit func(int)) error {
			if key == 13 && !failed.Swap(true) {
				return stage.Fatal(errFlaky)
			}
			emit(2 * key)
			return nil
		})
		sink := &collector[int]{}
		dl := &letters{}
		p := stage.To(stage.ThenKeyed(stage.From("src", stage.Source[int](&numbers{n: 40})), "keyed", spec), "sink", sink,
			stage.WithBatchSize(10), stage.WithDeadLetter(dl.add),
			stage.WithRestart("keyed", stagefsm.RestartPolicy{BackoffInitial: time.Millisecond}))
		require.NoError(t, run(t, p))
		st := assertBalanced(t, p, dl)
		assert.Equal(t, 1, st.Stages[1].Restarts)
		flaky, shed := byCause(t, dl)
		assert.Equal(t, []any{13}, flaky)
		assert.Empty(t, shed)
		want := slices.Delete(seq(1, 40, double), 12, 13)
		got := sink.items()
		slices.Sort(got)
		assert.Equal(t, want, got)
		assert.Equal(t, 0, st.Stages[1].Keys, "every key ended, 13's too: its failure removed it")
	})
}

func TestKeyedWorkersBadSpec(t *testing.T) {
	spec := intSpec(t, -2, nil)
	p := stage.To(stage.ThenKeyed(stage.From("src", stage.Source[int](upTo(3))), "keyed", spec), "sink", &collector[int]{})
	assert.ErrorIs(t, p.Start(context.Background()), stage.ErrKeyedSpec)
}

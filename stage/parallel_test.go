package stage_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stage"
)

// thenParallel is the one place the tests wire a parallel stage, so that
// the wiring can change (chain or graph) in one place.
func thenParallel[I, O any](c *stage.Chain[I], name string, t stage.Transform[I, O], par stage.Parallel[I]) *stage.Chain[O] {
	return stage.ThenParallel(c, name, t, par)
}

// parPipeline is src → par(t) → collector.
func parPipeline(src stage.Source[int], t stage.Transform[int, int], par stage.Parallel[int], sink stage.Sink[int], opts ...stage.Option) *stage.Pipeline {
	return stage.To(thenParallel(stage.From("src", src), "par", t, par), "sink", sink, opts...)
}

// jitter is a transform safe for concurrent use that emits f(in) after
// yielding a number of times that depends on in, so that workers finish
// their items out of step.
func jitter(f func(int) int) stage.TransformFunc[int, int] {
	return func(_ context.Context, in int, emit func(int)) error {
		for range in % 5 {
			runtime.Gosched()
		}
		emit(f(in))
		return nil
	}
}

func seq(from, to int, f func(int) int) []int {
	var s []int
	for i := from; i <= to; i++ {
		s = append(s, f(i))
	}
	return s
}

func TestParallelInputOrder(t *testing.T) {
	sink := &collector[int]{}
	dl := &letters{}
	p := parPipeline(&numbers{n: 3000}, jitter(double), stage.Parallel[int]{Workers: 4}, sink,
		stage.WithBatchSize(37), stage.WithDeadLetter(dl.add))
	require.NoError(t, run(t, p))
	st := assertBalanced(t, p, dl)
	assert.Equal(t, seq(1, 3000, double), sink.items(), "exact input order")
	assert.Equal(t, uint64(3000), st.Stages[1].Counts.Delivered)
	assert.Equal(t, uint64(3000), st.Stages[1].Counts.Emitted)
}

func TestParallelAnyOrder(t *testing.T) {
	sink := &collector[int]{}
	p := parPipeline(&numbers{n: 3000}, jitter(double), stage.Parallel[int]{Workers: 3, Order: stage.AnyOrder}, sink,
		stage.WithBatchSize(50))
	require.NoError(t, run(t, p))
	assertBalanced(t, p, nil)
	got := sink.items()
	slices.Sort(got)
	assert.Equal(t, seq(1, 3000, double), got, "the same multiset")
}

func TestParallelKeyOrder(t *testing.T) {
	sink := &collector[int]{}
	key := func(i int) uint64 { return uint64(i % 7) }
	p := parPipeline(&numbers{n: 3000}, jitter(func(i int) int { return i }),
		stage.Parallel[int]{Workers: 3, Order: stage.KeyOrder, Key: key}, sink, stage.WithBatchSize(64))
	require.NoError(t, run(t, p))
	assertBalanced(t, p, nil)
	got := sink.items()
	require.Len(t, got, 3000)
	perKey := map[uint64][]int{}
	for _, v := range got {
		perKey[key(v)] = append(perKey[key(v)], v)
	}
	for k, vs := range perKey {
		assert.True(t, slices.IsSorted(vs), "key %d keeps its input order", k)
		assert.Len(t, vs, 3000/7+boolInt(k != 0 && k <= 3000%7), "key %d", k)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestParallelRunsConcurrently proves that the workers run at once: each
// call waits until all of a batch's calls have started, which on fewer
// goroutines would deadlock (and synctest would report it).
func TestParallelRunsConcurrently(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const workers = 4
		var started sync.WaitGroup
		started.Add(workers)
		var max, now atomic.Int64
		tr := stage.TransformFunc[int, int](func(_ context.Context, in int, emit func(int)) error {
			n := now.Add(1)
			if n > max.Load() {
				max.Store(n)
			}
			if in <= workers {
				started.Done()
				started.Wait()
			}
			now.Add(-1)
			emit(in)
			return nil
		})
		sink := &collector[int]{}
		p := parPipeline(&numbers{n: 40}, tr, stage.Parallel[int]{Workers: workers}, sink, stage.WithBatchSize(workers))
		require.NoError(t, run(t, p))
		assertBalanced(t, p, nil)
		assert.Equal(t, seq(1, 40, func(i int) int { return i }), sink.items())
		assert.Equal(t, int64(workers), max.Load())
	})
}

func TestParallelItemFailuresAndPanics(t *testing.T) {
	for _, order := range []stage.Order{stage.InputOrder, stage.AnyOrder, stage.KeyOrder} {
		t.Run(order.String(), func(t *testing.T) {
			tr := stage.TransformFunc[int, int](func(_ context.Context, in int, emit func(int)) error {
				emit(-in) // discarded when the call fails
				switch {
				case in%10 == 0:
					return errBad
				case in%7 == 0:
					panic("seven")
				}
				emit(in)
				return nil
			})
			sink := &collector[int]{}
			dl := &letters{}
			par := stage.Parallel[int]{Workers: 3, Order: order, Key: func(i int) uint64 { return uint64(i) }}
			p := parPipeline(&numbers{n: 500, bad: func(i int) bool { return i%97 == 0 }}, tr, par, sink,
				stage.WithBatchSize(16), stage.WithDeadLetter(dl.add))
			require.NoError(t, run(t, p))
			st := assertBalanced(t, p, dl)

			var want []int
			var bad, panics, src int
			for i := 1; i <= 500; i++ {
				switch {
				case i%97 == 0:
					src++
				case i%10 == 0:
					bad++
				case i%7 == 0:
					panics++
				default:
					want = append(want, -i, i)
				}
			}
			got := sink.items()
			if order != stage.InputOrder {
				slices.Sort(got)
				slices.Sort(want)
			}
			assert.Equal(t, want, got)
			var gotBad, gotPanics, gotSrc int
			for _, it := range dl.items() {
				var ie *stage.ItemError
				require.ErrorAs(t, it.Err, &ie)
				var pe *stagefsm.PanicError
				switch {
				case errors.Is(it.Err, errBad) && ie.Stage == "src":
					gotSrc++
				case errors.Is(it.Err, errBad):
					assert.Equal(t, "par", ie.Stage)
					assert.Zero(t, it.Payload.(int)%10)
					gotBad++
				case errors.As(it.Err, &pe):
					assert.Equal(t, "par", ie.Stage)
					assert.Equal(t, "seven", pe.Value)
					gotPanics++
				default:
					t.Errorf("unexpected dead letter %v", it)
				}
			}
			assert.Equal(t, []int{src, bad, panics}, []int{gotSrc, gotBad, gotPanics})
			assert.Equal(t, uint64(bad+panics), st.Stages[1].Counts.DeadLettered)
		})
	}
}

func TestParallelFatal(t *testing.T) {
	for _, order := range []stage.Order{stage.InputOrder, stage.AnyOrder, stage.KeyOrder} {
		t.Run(order.String(), func(t *testing.T) {
			tr := stage.TransformFunc[int, int](func(_ context.Context, in int, emit func(int)) error {
				if in == 300 {
					return stage.Fatal(errFatal)
				}
				emit(in)
				return nil
			})
			sink := &collector[int]{}
			dl := &letters{}
			par := stage.Parallel[int]{Workers: 2, Order: order, Key: func(i int) uint64 { return uint64(i) }}
			p := parPipeline(&numbers{n: 100_000}, tr, par, sink, stage.WithBatchSize(32), stage.WithDeadLetter(dl.add))
			err := run(t, p)
			var se *stage.Error
			require.ErrorAs(t, err, &se)
			assert.Equal(t, "par", se.Stage)
			assert.ErrorIs(t, err, errFatal)
			assert.ErrorIs(t, err, stage.ErrFatal)

			st := assertBalanced(t, p, dl)
			assert.Equal(t, stage.Failed, st.Stages[1].State.Kind)
			assert.Equal(t, stage.Drained, st.Stages[2].State.Kind)
			var fatal int
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
			if order == stage.InputOrder {
				assert.Equal(t, got, seq(1, len(got), func(i int) int { return i }), "a prefix, in order")
			}
		})
	}
}

// TestParallelAbortSweepsWorkers aborts while every worker is inside a
// call: those items, the rest of the batch and the outputs not sent are
// dead-lettered with ErrAborted, and no worker is left behind (goleak).
func TestParallelAbortSweepsWorkers(t *testing.T) {
	for _, order := range []stage.Order{stage.InputOrder, stage.AnyOrder, stage.KeyOrder} {
		t.Run(order.String(), func(t *testing.T) { testParallelAbort(t, order) })
	}
}

func testParallelAbort(t *testing.T, order stage.Order) {
	synctest.Test(t, func(t *testing.T) {
		tr := stage.TransformFunc[int, int](func(ctx context.Context, in int, emit func(int)) error {
			if in > 100 {
				<-ctx.Done() // stuck until the abort
				return ctx.Err()
			}
			emit(in)
			return nil
		})
		sink := &collector[int]{}
		dl := &letters{}
		par := stage.Parallel[int]{Workers: 3, Order: order, Key: func(i int) uint64 { return uint64(i) }}
		p := parPipeline(&numbers{n: -1}, tr, par, sink, stage.WithBatchSize(10), stage.WithDeadLetter(dl.add))
		require.NoError(t, p.Start(context.Background()))
		synctest.Wait()
		p.Abort()
		assert.ErrorIs(t, p.Wait(context.Background()), stage.ErrAborted)
		st := assertBalanced(t, p, dl)
		got := sink.items()
		if order != stage.InputOrder {
			slices.Sort(got)
		}
		assert.Equal(t, seq(1, 100, func(i int) int { return i }), got)
		var held []any
		for _, it := range dl.items() {
			assert.ErrorIs(t, it.Err, stage.ErrAborted)
			if v := it.Payload.(int); v > 100 && v <= 110 {
				held = append(held, v)
			}
		}
		assert.Len(t, held, 10, "the batch the workers held is dead-lettered")
		assert.NotZero(t, st.DeadLettered)
	})
}

func TestParallelRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var failed atomic.Bool
		tr := stage.TransformFunc[int, int](func(_ context.Context, in int, emit func(int)) error {
			if in == 3 && !failed.Swap(true) {
				return stage.Fatal(errFlaky)
			}
			emit(2 * in)
			return nil
		})
		sink := &collector[int]{}
		dl := &letters{}
		p := parPipeline(paced(10, 10*time.Millisecond), tr, stage.Parallel[int]{Workers: 2}, sink,
			stage.WithRestart("par", stagefsm.RestartPolicy{BackoffInitial: 25 * time.Millisecond}), stage.WithDeadLetter(dl.add))
		require.NoError(t, run(t, p))
		st := assertBalanced(t, p, dl)
		assert.Equal(t, 1, st.Stages[1].Restarts)
		flaky, shed := byCause(t, dl)
		assert.Equal(t, []any{3}, flaky)
		assert.Empty(t, shed)
		assert.Equal(t, []int{2, 4, 8, 10, 12, 14, 16, 18, 20}, sink.items(), "items arriving during the backoff wait for the restart")
	})
}

func TestParallelBadConfig(t *testing.T) {
	tr := jitter(double)
	for name, par := range map[string]stage.Parallel[int]{
		"no workers":    {},
		"negative":      {Workers: -2},
		"keyed, no key": {Workers: 2, Order: stage.KeyOrder},
		"unknown order": {Workers: 2, Order: stage.Order(9)},
	} {
		t.Run(name, func(t *testing.T) {
			p := parPipeline(&numbers{n: 3}, tr, par, &collector[int]{})
			err := run(t, p)
			assert.ErrorIs(t, err, stage.ErrParallel)
			assert.Contains(t, err.Error(), `"par"`)
		})
	}
}

func TestParallelKeyPanic(t *testing.T) {
	sink := &collector[int]{}
	dl := &letters{}
	key := func(i int) uint64 {
		if i == 5 {
			panic("no key for 5")
		}
		return uint64(i)
	}
	p := parPipeline(&numbers{n: 10}, jitter(double), stage.Parallel[int]{Workers: 2, Order: stage.KeyOrder, Key: key}, sink,
		stage.WithDeadLetter(dl.add))
	require.NoError(t, run(t, p))
	assertBalanced(t, p, dl)
	got := sink.items()
	slices.Sort(got)
	assert.Equal(t, []int{2, 4, 6, 8, 12, 14, 16, 18, 20}, got)
	require.Len(t, dl.items(), 1)
	it := dl.items()[0]
	assert.Equal(t, 5, it.Payload)
	assert.ErrorIs(t, it.Err, stage.ErrKey)
	var pe *stagefsm.PanicError
	require.ErrorAs(t, it.Err, &pe)
	assert.Equal(t, "no key for 5", pe.Value)
}

// parSummer sums its inputs concurrently and emits the sum when drained.
type parSummer struct {
	sum     atomic.Int64
	drained atomic.Int64
}

func (s *parSummer) Process(_ context.Context, in int, emit func(int)) error {
	s.sum.Add(int64(in))
	emit(in)
	return nil
}

func (s *parSummer) Drain(_ context.Context, emit func(int)) error {
	s.drained.Add(1)
	emit(-int(s.sum.Load()))
	return nil
}

func TestParallelDrainAfterWorkers(t *testing.T) {
	s := &parSummer{}
	sink := &collector[int]{}
	p := parPipeline(&numbers{n: 1000}, stage.Transform[int, int](s), stage.Parallel[int]{Workers: 4}, sink)
	require.NoError(t, run(t, p))
	assertBalanced(t, p, nil)
	got := sink.items()
	require.Len(t, got, 1001)
	assert.Equal(t, -500500, got[1000], "Drain saw every worker's items")
	assert.Equal(t, int64(1), s.drained.Load())
}

// TestParallelRestartRedoesTheRestOfTheBatch fails a stage fatally in the
// middle of a batch in InputOrder: the other worker's share, although it
// may have run, is discarded and parked with the rest of the batch, and the
// restarted stage processes it again, so downstream sees every other item
// once, in input order (a handler in InputOrder may see an item twice).
func TestParallelRestartRedoesTheRestOfTheBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var failed atomic.Bool
		var calls atomic.Int64
		tr := stage.TransformFunc[int, int](func(_ context.Context, in int, emit func(int)) error {
			calls.Add(1)
			if in == 13 && !failed.Swap(true) {
				return stage.Fatal(errFlaky)
			}
			emit(2 * in)
			return nil
		})
		sink := &collector[int]{}
		dl := &letters{}
		p := parPipeline(&numbers{n: 40}, tr, stage.Parallel[int]{Workers: 2}, sink, stage.WithBatchSize(10),
			stage.WithRestart("par", stagefsm.RestartPolicy{BackoffInitial: time.Millisecond}), stage.WithDeadLetter(dl.add))
		require.NoError(t, run(t, p))
		st := assertBalanced(t, p, dl)
		assert.Equal(t, 1, st.Stages[1].Restarts)
		flaky, shed := byCause(t, dl)
		assert.Equal(t, []any{13}, flaky)
		assert.Empty(t, shed)
		want := seq(1, 40, double)
		want = slices.Delete(want, 12, 13)
		assert.Equal(t, want, sink.items())
		assert.GreaterOrEqual(t, calls.Load(), int64(40), "every item ran at least once")
	})
}

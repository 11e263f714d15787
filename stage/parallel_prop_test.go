package stage_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stage"
)

// TestParallelRandomFaults runs parallel stages with random workers,
// orders, batch sizes, capacities and fault schedules (non-fatal errors,
// panics, one Fatal error, with or without a restart policy): accounting
// always balances, every Wait returns, and what reaches the sink keeps the
// order's guarantee.
func TestParallelRandomFaults(t *testing.T) {
	for seed := range uint64(60) {
		r := rand.New(rand.NewPCG(seed, 7))
		order := stage.Order(r.IntN(3))
		workers, batch, capacity := 1+r.IntN(4), 1+r.IntN(20), 1+r.IntN(4)
		n := 50 + r.IntN(300)
		badEvery, panicEvery := 3+r.IntN(20), 3+r.IntN(20)
		fatalAt := -1
		if r.IntN(2) == 0 {
			fatalAt = 1 + r.IntN(n)
		}
		restart := r.IntN(2) == 0
		t.Run("", func(t *testing.T) {
			t.Logf("order %v workers %d batch %d capacity %d n %d bad %d panic %d fatal %d restart %v", order, workers, batch, capacity, n, badEvery, panicEvery, fatalAt, restart)
			synctest.Test(t, func(t *testing.T) {
				var fataled atomic.Bool
				tr := stage.TransformFunc[int, int](func(_ context.Context, in int, emit func(int)) error {
					emit(in)
					switch {
					case in == fatalAt && !fataled.Swap(true):
						return stage.Fatal(errFatal)
					case in%badEvery == 0:
						return errBad
					case in%panicEvery == 0:
						panic(in)
					}
					return nil
				})
				key := func(i int) uint64 { return uint64(i % 5) }
				opts := []stage.Option{stage.WithBatchSize(batch), stage.WithCapacity(capacity)}
				if restart {
					opts = append(opts, stage.WithRestart("par", stagefsm.RestartPolicy{BackoffInitial: time.Millisecond}))
				}
				dl := &letters{}
				sink := &collector[int]{}
				p := parPipeline(&numbers{n: n}, tr, stage.Parallel[int]{Workers: workers, Order: order, Key: key}, sink,
					append(opts, stage.WithDeadLetter(dl.add))...)
				err := run(t, p)
				if fatalAt < 0 || restart {
					require.NoError(t, err)
				} else {
					require.ErrorIs(t, err, errFatal)
				}
				assertBalanced(t, p, dl)
				got := sink.items()
				switch order {
				case stage.InputOrder:
					assert.True(t, slices.IsSorted(got), "input order: %v", got)
				case stage.KeyOrder:
					last := map[uint64]int{}
					for _, v := range got {
						assert.Greater(t, v, last[key(v)], "key order")
						last[key(v)] = v
					}
				}
				seen := map[int]bool{}
				for _, v := range got {
					assert.False(t, seen[v], "%d delivered twice", v)
					seen[v] = true
				}
				for _, it := range dl.items() {
					if v, ok := it.Payload.(int); ok {
						assert.False(t, seen[v] && !errors.Is(it.Err, stage.ErrFailed), "%d delivered and dead-lettered", v)
					}
				}
				// Without a Fatal error every ok item is delivered; with a
				// restart, those shed during the backoff (beyond what the
				// input holds) are dead-lettered with ErrRestarted instead.
				shed := map[int]bool{}
				for _, it := range dl.items() {
					if v, ok := it.Payload.(int); ok && errors.Is(it.Err, stage.ErrRestarted) {
						shed[v] = true
					}
				}
				if fatalAt < 0 || restart {
					for i := 1; i <= n; i++ {
						ok := i%badEvery != 0 && i%panicEvery != 0 && i != fatalAt
						assert.Equal(t, ok, seen[i] || (ok && shed[i]), "item %d", i)
					}
				}
			})
		})
	}
}

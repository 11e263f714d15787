package stage

import (
	"context"
	"io"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
)

// countingCore counts the dispatches of Running.
type countingCore struct {
	core
	n *atomic.Int64
}

func (c countingCore) running(ctx context.Context) (stagefsm.Directive[event], error) {
	c.n.Add(1)
	return c.core.running(ctx)
}

// idleStages is how many idle transforms TestIdleStagesBlock starts.
func idleStages() int {
	if raceEnabled {
		return 2000
	}
	return 10_000
}

// TestIdleStagesBlock starts a pipeline whose source waits for input and
// whose thousands of transforms therefore have nothing to do, lets an hour
// of (fake) time pass, and checks that no transform was dispatched again:
// an idle stage blocks on its input channel, it does not poll. It logs the
// memory each idle stage costs.
func TestIdleStagesBlock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := idleStages()
		release := make(chan struct{})
		src := SourceFunc[int](func(ctx context.Context, emit func(int)) error {
			select {
			case <-release:
				return io.EOF
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		c := From("src", Source[int](src))
		for i := range n {
			c = Then(c, "t"+strconv.Itoa(i), TransformFunc[int, int](func(_ context.Context, v int, emit func(int)) error {
				emit(v)
				return nil
			}))
		}
		var delivered atomic.Int64
		p := To(c, "sink", SinkFunc[int](func(context.Context, int) error { delivered.Add(1); return nil }))
		var dispatches atomic.Int64
		for _, u := range p.units {
			if u.kind == kindTransform {
				u.core = countingCore{core: u.core, n: &dispatches}
			}
		}

		before := memInUse()
		require.NoError(t, p.Start(context.Background()))
		synctest.Wait() // every goroutine of the bubble is blocked
		perStage := (memInUse() - before) / uint64(n+2)
		t.Logf("%d idle stages: %d bytes per stage (heap + stacks, after GC)", n+2, perStage)

		require.EqualValues(t, n, dispatches.Load(), "each transform is dispatched once and blocks")
		time.Sleep(time.Hour)
		synctest.Wait()
		assert.EqualValues(t, n, dispatches.Load(), "no idle transform was dispatched again in an hour")
		for _, s := range p.Stats().Stages[1:] {
			require.Equal(t, Running, s.State.Kind)
		}

		close(release)
		require.NoError(t, p.Wait(context.Background()))
		assert.Zero(t, delivered.Load())
		assert.EqualValues(t, n, dispatches.Load(), "the blocked dispatch itself sees end of input")
	})
}

// memInUse is the heap and stack memory in use after a collection.
func memInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

// TestQuietSourceIdles checks that a source whose Next emits nothing is
// called again after the loop's idle backoff, not in a hot loop, and that
// the items it emits later flow.
func TestQuietSourceIdles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var calls int
		src := SourceFunc[int](func(_ context.Context, emit func(int)) error {
			calls++
			switch {
			case time.Since(start) < time.Second:
				return nil // nothing yet
			case calls%2 == 0:
				emit(calls)
				return nil
			default:
				return io.EOF
			}
		})
		var got int
		p := To(From("src", Source[int](src)), "sink", SinkFunc[int](func(context.Context, int) error { got++; return nil }))
		require.NoError(t, p.Start(context.Background()))
		require.NoError(t, p.Wait(context.Background()))
		assert.Equal(t, 1, got)
		// 1s of 1ms..10ms backoff: about 100 calls, not millions.
		assert.Less(t, calls, 200)
		assert.Greater(t, calls, 50)
	})
}

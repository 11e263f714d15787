package stage_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stage"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

var errFlaky = errors.New("connection reset")

// restarts returns the restart entries of a journal for a stage.
func restarts(entries []stage.Entry, name string) []stage.Entry {
	var out []stage.Entry
	for _, e := range entries {
		if e.Kind == stage.EntryRestart && e.Stage == name {
			out = append(out, e)
		}
	}
	return out
}

// byCause splits dead letters into those that failed with errFlaky
// themselves and those shed with ErrRestarted, and checks that every
// dead letter is one of the two.
func byCause(t *testing.T, dl *letters) (flaky, shed []any) {
	t.Helper()
	for _, it := range dl.items() {
		switch {
		case errors.Is(it.Err, stage.ErrRestarted):
			assert.ErrorIs(t, it.Err, errFlaky, "a shed item carries the failure too")
			shed = append(shed, it.Payload)
		case errors.Is(it.Err, errFlaky):
			flaky = append(flaky, it.Payload)
		default:
			t.Errorf("unexpected dead letter %v", it)
		}
	}
	return flaky, shed
}

// TestSinkFailingKTimesIsRestartedKTimes runs a sink that fails fatally on
// three items under a restart policy: it is restarted three times after
// the exact backoffs, the pipeline drains, and every item is delivered but
// the three, which are dead-lettered with their error.
func TestSinkFailingKTimesIsRestartedKTimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := stagefsmtest.NewSink[int]().
			FailAt(3, stage.Fatal(errFlaky)).FailAt(8, stage.Fatal(errFlaky)).FailAt(14, stage.Fatal(errFlaky))
		dl := &letters{}
		j := &stage.MemoryJournal{}
		policy := stagefsm.RestartPolicy{BackoffInitial: 2 * time.Millisecond}
		p := stage.To(stage.Then(stage.From("src", paced(20, 10*time.Millisecond)), "double",
			stage.Transform[int, int](stagefsmtest.NewTransform(double))), "sink", sink,
			stage.WithRestart("sink", policy), stage.WithDeadLetter(dl.add), stage.WithJournal(j))
		start := time.Now()
		require.NoError(t, run(t, p), "restarted failures do not fail the pipeline")

		st := assertBalanced(t, p, dl)
		assert.Equal(t, 3, st.Stages[2].Restarts)
		assert.Zero(t, st.Stages[0].Restarts+st.Stages[1].Restarts)
		flaky, shed := byCause(t, dl)
		assert.Equal(t, []any{6, 16, 28}, flaky, "the items the sink failed on (doubled 3, 8, 14)")
		assert.Empty(t, shed, "items are 10ms apart, backoffs shorter: nothing reached the restarting sink")
		assert.Len(t, sink.Delivered(), 17)
		assert.Equal(t, []string{"Open", "Close", "Open", "Close", "Open", "Close", "Open", "Flush", "Close"}, sink.Lifecycle(),
			"each incarnation opens and closes the same handler; Flush once, at the end")

		// Item i reaches the sink at i×10ms (its batch goes out when the
		// sleeping call after it has emitted nothing): failures at 30, 80
		// and 140ms, restarts after backoffs of 2, 4 and 8ms.
		var failedAt, createdAt []time.Duration
		for _, s := range st.Stages[2].Timeline[1:] {
			switch s.State.Kind {
			case stage.Failed:
				failedAt = append(failedAt, s.At.Sub(start))
				assert.ErrorIs(t, s.State.Reason, errFlaky)
			case stage.Created:
				createdAt = append(createdAt, s.At.Sub(start))
			}
		}
		assert.Equal(t, []time.Duration{30 * time.Millisecond, 80 * time.Millisecond, 140 * time.Millisecond}, failedAt)
		assert.Equal(t, []time.Duration{32 * time.Millisecond, 84 * time.Millisecond, 148 * time.Millisecond}, createdAt)
		assert.Equal(t, stage.Drained, st.Stages[2].State.Kind)

		entries := j.Entries()
		r := restarts(entries, "sink")
		require.Len(t, r, 3)
		for i, e := range r {
			assert.Equal(t, i+1, e.Restart)
			assert.Contains(t, e.Reason, errFlaky.Error())
		}
		c := completions(entries)
		require.Len(t, c["sink"], 1, "one completion: the incarnations that failed wrote none")
		assert.Equal(t, stage.OutcomeDrained, c["sink"][0].Outcome)
		assert.Equal(t, stage.OutcomeDrained, c[""][0].Outcome)
		for _, e := range entries {
			assert.False(t, e.Stage == "src" && e.Event == "BeginDrain", "a restarted failure does not drain the pipeline")
		}
	})
}

// TestUpstreamNeverBlocksOnARestartingStage fails the sink on its fifth
// item with an hour of backoff: upstream goes on to the end of its input
// meanwhile. The rest of the failed batch and the next batch are parked
// for the restarted sink (room: what a full channel holds, 2 batches of
// 10), the batches beyond are dead-lettered with ErrRestarted, and the
// restarted sink delivers what was parked, in order, and drains.
func TestUpstreamNeverBlocksOnARestartingStage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := stagefsmtest.NewSource[int]()
		for i := 0; i < 100; i += 10 {
			src.Emit(i+1, i+2, i+3, i+4, i+5, i+6, i+7, i+8, i+9, i+10)
		}
		sink := stagefsmtest.NewSink[int]().FailAt(5, stage.Fatal(errFlaky))
		dl := &letters{}
		j := &stage.MemoryJournal{}
		p := stage.To(stage.From("src", stage.Source[int](src)), "sink", sink,
			stage.WithRestart("sink", stagefsm.RestartPolicy{BackoffInitial: time.Hour}),
			stage.WithBatchSize(10), stage.WithCapacity(2), stage.WithDeadLetter(dl.add), stage.WithJournal(j))
		start := time.Now()
		require.NoError(t, p.Start(context.Background()))

		synctest.Wait() // every goroutine is blocked: the sink waits out its backoff
		assert.Zero(t, time.Since(start), "no time has passed")
		st := p.Stats()
		assert.Equal(t, stage.Drained, st.Stages[0].State.Kind, "the source reached the end of its input, never blocked")
		assert.Equal(t, stage.Failed, st.Stages[1].State.Kind, "the sink waits to restart")
		assert.Len(t, restarts(j.Entries(), "sink"), 1, "the restart is scheduled")
		assert.Zero(t, st.Stages[1].Restarts, "not done yet")
		assert.EqualValues(t, 100, st.Emitted)
		assert.EqualValues(t, 15, st.InFlight, "parked: 6..10 and 11..20")

		require.NoError(t, p.Wait(context.Background()))
		assert.Equal(t, time.Hour, time.Since(start))
		st = assertBalanced(t, p, dl)
		assert.Equal(t, 1, st.Stages[1].Restarts)
		assert.Equal(t, stage.Drained, st.Stages[1].State.Kind, "the restarted sink saw end of input and drained")
		flaky, shed := byCause(t, dl)
		assert.Equal(t, []any{5}, flaky)
		assert.Len(t, shed, 80, "21..100: beyond the parking room")
		assert.Equal(t, []int{1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, sink.Delivered())
		assert.Equal(t, []string{"Open", "Close", "Open", "Flush", "Close"}, sink.Lifecycle())
	})
}

// TestItemsReachingARestartingStageAreParked fails a transform whose
// input is paced: the items that arrive during its backoff wait for the
// restarted transform, none is lost.
func TestItemsReachingARestartingStageAreParked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := stagefsmtest.NewTransform(double).FailAt(3, stage.Fatal(errFlaky))
		sink := stagefsmtest.NewSink[int]()
		dl := &letters{}
		p := stage.To(stage.Then(stage.From("src", paced(10, 10*time.Millisecond)), "double", stage.Transform[int, int](tr)), "sink", sink,
			stage.WithRestart("double", stagefsm.RestartPolicy{BackoffInitial: 25 * time.Millisecond}), stage.WithDeadLetter(dl.add))
		start := time.Now()
		require.NoError(t, run(t, p))

		st := assertBalanced(t, p, dl)
		assert.Equal(t, 1, st.Stages[1].Restarts)
		flaky, shed := byCause(t, dl)
		assert.Equal(t, []any{3}, flaky)
		assert.Empty(t, shed)
		assert.Equal(t, []int{2, 4, 8, 10, 12, 14, 16, 18, 20}, sink.Delivered(), "4 and 5 arrived during the backoff (30ms to 55ms)")
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
	})
}

// TestRestartIntensityExceeded runs a sink that always fails: after
// MaxRestarts restarts the policy gives up, the stage fails as without a
// policy (the source drains, the rest is dead-lettered with
// ErrFailed), and Wait reports ErrRestartIntensity with the cause.
func TestRestartIntensityExceeded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls int
		sink := stage.SinkFunc[int](func(context.Context, int) error {
			calls++
			return stage.Fatal(errFlaky)
		})
		dl := &letters{}
		j := &stage.MemoryJournal{}
		policy := stagefsm.RestartPolicy{MaxRestarts: 2, BackoffInitial: time.Millisecond}
		p := stage.To(stage.From("src", paced(1000, 10*time.Millisecond)), "sink", sink,
			stage.WithRestart("sink", policy), stage.WithDeadLetter(dl.add), stage.WithJournal(j))
		err := run(t, p)

		require.ErrorIs(t, err, stagefsm.ErrRestartIntensity)
		assert.ErrorIs(t, err, errFlaky, "the last failure")
		var se *stage.Error
		require.ErrorAs(t, err, &se)
		assert.Equal(t, "sink", se.Stage)
		st := assertBalanced(t, p, dl)
		assert.Equal(t, 2, st.Stages[1].Restarts)
		assert.Equal(t, 3, calls, "three failures, two restarts")
		assert.Equal(t, stage.Failed, st.Stages[1].State.Kind)
		assert.Equal(t, stage.Drained, st.Stages[0].State.Kind, "the source was asked to drain")
		assert.Less(t, st.Emitted, uint64(1000))
		assert.Zero(t, st.Delivered)
		var flaky, failed int
		for _, it := range dl.items() {
			switch {
			case errors.Is(it.Err, stage.ErrFailed):
				failed++
			case errors.Is(it.Err, errFlaky):
				flaky++
			}
		}
		assert.Equal(t, 3, flaky)
		assert.Equal(t, len(dl.items())-3, failed, "after giving up, as a failed stage")

		entries := j.Entries()
		assert.Len(t, restarts(entries, "sink"), 2)
		c := completions(entries)
		require.Len(t, c["sink"], 1)
		assert.Equal(t, stage.OutcomeFailed, c["sink"][0].Outcome)
		assert.Contains(t, c["sink"][0].Reason, stagefsm.ErrRestartIntensity.Error())
		assert.Equal(t, stage.OutcomeFailed, c[""][0].Outcome)
	})
}

// TestTransformAndSourceRestart restarts a transform and a source, each
// failing once: downstream never sees an early end of input, and only the
// item that failed is lost to the main path.
func TestTransformAndSourceRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := paced(10, 10*time.Millisecond)
		src.Fail(stage.Fatal(errFlaky)) // after the 10th item: the source fails, is reopened
		for i := 11; i <= 20; i++ {
			src.Emit(i).Sleep(10 * time.Millisecond)
		}
		tr := stagefsmtest.NewTransform(double).FailAt(5, stage.Fatal(errFlaky))
		sink := stagefsmtest.NewSink[int]()
		dl := &letters{}
		policy := stagefsm.RestartPolicy{BackoffInitial: time.Millisecond}
		p := stage.To(stage.Then(stage.From("src", stage.Source[int](src)), "double", stage.Transform[int, int](tr)), "sink", sink,
			stage.WithRestart("src", policy), stage.WithRestart("double", policy), stage.WithDeadLetter(dl.add))
		require.NoError(t, run(t, p))

		st := assertBalanced(t, p, dl)
		assert.Equal(t, []int{1, 1, 0}, []int{st.Stages[0].Restarts, st.Stages[1].Restarts, st.Stages[2].Restarts})
		flaky, shed := byCause(t, dl)
		assert.Equal(t, []any{5}, flaky)
		assert.Empty(t, shed)
		want := []int{2, 4, 6, 8, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40}
		assert.Equal(t, want, sink.Delivered())
		assert.Equal(t, []string{"Open", "Close", "Open", "Close"}, src.Lifecycle())
		assert.Equal(t, []string{"Open", "Close", "Open", "Drain", "Close"}, tr.Lifecycle())
		assert.Equal(t, []string{"Open", "Flush", "Close"}, sink.Lifecycle())
	})
}

// TestAbortWhileRestarting aborts the pipeline while the sink waits out
// its backoff: the backoff ends at once, nothing is lost.
func TestAbortWhileRestarting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := stagefsmtest.NewSink[int]().FailAt(2, stage.Fatal(errFlaky))
		dl := &letters{}
		j := &stage.MemoryJournal{}
		p := stage.To(stage.From("src", paced(1000, time.Millisecond)), "sink", sink,
			stage.WithRestart("sink", stagefsm.RestartPolicy{BackoffInitial: time.Hour}),
			stage.WithDeadLetter(dl.add), stage.WithJournal(j))
		start := time.Now()
		require.NoError(t, p.Start(context.Background()))
		time.Sleep(100 * time.Millisecond)
		p.Abort()
		err := p.Wait(context.Background())

		assert.ErrorIs(t, err, stage.ErrAborted)
		assert.Equal(t, 100*time.Millisecond, time.Since(start), "the abort ended the backoff")
		st := assertBalanced(t, p, dl)
		assert.Zero(t, st.Stages[1].Restarts)
		assert.Equal(t, []string{"Open", "Close"}, sink.Lifecycle())
		c := completions(j.Entries())
		for _, name := range []string{"src", "sink", ""} {
			require.Len(t, c[name], 1, name)
			assert.Equal(t, stage.OutcomeAborted, c[name][0].Outcome, name)
		}
	})
}

// TestFailuresThatAreNotRestarted checks the failures a policy does not
// restart: a failure to open at start, a failure once the stage drained, a
// permanent failure.
func TestFailuresThatAreNotRestarted(t *testing.T) {
	policy := stage.WithRestart("sink", stagefsm.RestartPolicy{BackoffInitial: time.Millisecond})

	t.Run("open at start", func(t *testing.T) {
		errOpen := errors.New("no database")
		sink := stagefsmtest.NewSink[int]().OpenFails(errOpen)
		p := stage.To(stage.From("src", paced(10, 0)), "sink", sink, policy)
		err := p.Start(context.Background())
		assert.ErrorIs(t, err, errOpen)
		st := assertBalanced(t, p, nil)
		assert.Zero(t, st.Stages[1].Restarts)
		assert.Equal(t, []string{"Open"}, sink.Lifecycle())
	})
	t.Run("close after drained", func(t *testing.T) {
		p := stage.To(stage.From("src", stage.Source[int](upTo(10))), "sink", closeFailing{stagefsmtest.NewSink[int]()}, policy)
		err := run(t, p)
		assert.ErrorIs(t, err, errBad)
		st := assertBalanced(t, p, nil)
		assert.Zero(t, st.Stages[1].Restarts)
		assert.Equal(t, stage.Failed, st.Stages[1].State.Kind)
	})
	t.Run("permanent", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sink := stagefsmtest.NewSink[int]().FailAt(2, stage.Fatal(stagefsm.Permanent(errFlaky)))
			dl := &letters{}
			p := stage.To(stage.From("src", paced(10, time.Millisecond)), "sink", sink, policy, stage.WithDeadLetter(dl.add))
			err := run(t, p)
			assert.ErrorIs(t, err, stagefsm.ErrPermanent)
			assert.ErrorIs(t, err, errFlaky)
			assert.NotErrorIs(t, err, stagefsm.ErrRestartIntensity)
			st := assertBalanced(t, p, dl)
			assert.Zero(t, st.Stages[1].Restarts)
			assert.Equal(t, []int{1}, sink.Delivered())
		})
	})
}

// TestWithRestartMisuse checks that Start reports a policy for a stage the
// pipeline does not have, and a policy the core rejects.
func TestWithRestartMisuse(t *testing.T) {
	sink := stage.SinkFunc[int](func(context.Context, int) error { return nil })

	p := stage.To(stage.From("src", &numbers{n: 1}), "sink", sink, stage.WithRestart("snik", stagefsm.RestartPolicy{}))
	assert.Error(t, p.Start(context.Background()))
	assert.Error(t, p.Wait(context.Background()))

	p = stage.To(stage.From("src", &numbers{n: 1}), "sink", sink, stage.WithRestart("sink", stagefsm.RestartPolicy{Period: -time.Second}))
	err := p.Start(context.Background())
	var se *stage.Error
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "sink", se.Stage)
	assertBalanced(t, p, nil)
}

// TestDrainWhileTheSourceRestarts asks the pipeline to drain while its
// source waits to restart: the source restarts, then drains at once.
func TestDrainWhileTheSourceRestarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := paced(4, 10*time.Millisecond).Fail(stage.Fatal(errFlaky)) // fails at 40ms
		for i := 5; i <= 100; i++ {
			src.Emit(i).Sleep(10 * time.Millisecond)
		}
		sink := stagefsmtest.NewSink[int]()
		p := stage.To(stage.From("src", stage.Source[int](src)), "sink", sink,
			stage.WithRestart("src", stagefsm.RestartPolicy{BackoffInitial: 100 * time.Millisecond}))
		start := time.Now()
		require.NoError(t, p.Start(context.Background()))
		time.Sleep(50 * time.Millisecond)
		p.Drain()
		require.NoError(t, p.Wait(context.Background()))

		assert.Equal(t, 140*time.Millisecond, time.Since(start), "drained as soon as it restarted")
		st := assertBalanced(t, p, nil)
		assert.Equal(t, 1, st.Stages[0].Restarts)
		assert.Equal(t, []int{1, 2, 3, 4}, sink.Delivered())
		assert.Equal(t, []string{"Open", "Close", "Open", "Close"}, src.Lifecycle())
		assert.Equal(t, []stage.StateKind{stage.Created, stage.Initialized, stage.WaitingForGun, stage.Running, stage.Failed,
			stage.Created, stage.Initialized, stage.WaitingForGun, stage.Running, stage.Draining, stage.Drained},
			kinds(st.Stages[0].Timeline))
	})
}

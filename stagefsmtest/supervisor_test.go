package stagefsmtest_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

var errBoom = errors.New("boom")

func TestSupervisorPerStateSteps(t *testing.T) {
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
		In(Created, stagefsmtest.Returns(start)).
		In(Running, stagefsmtest.Returns(cont).Times(2), stagefsmtest.Returns(finish)).
		In(Done, stagefsmtest.Returns(terminate))

	err := stagefsm.Run(t.Context(), sup, Created, &Ctx{})

	require.NoError(t, err)
	assert.Equal(t, []State{Created, Running, Running, Running, Done}, sup.States())
	assert.Equal(t, 5, sup.Calls())
	assert.Equal(t, 1, sup.Completions())
	assert.Empty(t, sup.Failures())
}

func TestSupervisorSequence(t *testing.T) {
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
		Script(stagefsmtest.Returns(start), stagefsmtest.Returns(cont)).
		Script(stagefsmtest.Returns(finish), stagefsmtest.Returns(terminate))

	require.NoError(t, stagefsm.Run(t.Context(), sup, Created, &Ctx{}))
	assert.Equal(t, []State{Created, Running, Running, Done}, sup.States())
}

// A state's own steps come first; once used up, the sequence answers.
func TestSupervisorStateStepsBeforeSequence(t *testing.T) {
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
		In(Running, stagefsmtest.Returns(cont)).
		In(Running, stagefsmtest.Returns(cont)). // appends to Running's steps
		Script(stagefsmtest.Returns(start), stagefsmtest.Returns(finish), stagefsmtest.Returns(terminate))

	require.NoError(t, stagefsm.Run(t.Context(), sup, Created, &Ctx{}))
	assert.Equal(t, []State{Created, Running, Running, Running, Done}, sup.States())
}

func TestSupervisorWhen(t *testing.T) {
	terminal := func(s State) bool { return s == Done || s == Failed }
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
		When(terminal, stagefsmtest.Returns(terminate).Forever()).
		When(nil, stagefsmtest.Returns(cont).Forever()). // accepts no state
		Script(stagefsmtest.Returns(start), stagefsmtest.Returns(finish))

	require.NoError(t, stagefsm.Run(t.Context(), sup, Created, &Ctx{}))
	assert.Equal(t, []State{Created, Running, Done}, sup.States())
}

func TestSupervisorFailsRoutesDispatchError(t *testing.T) {
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
		In(Created, stagefsmtest.Returns(start)).
		In(Running, stagefsmtest.Fails[Event](errBoom)).
		In(Failed, stagefsmtest.Returns(terminate))

	require.NoError(t, stagefsm.Run(t.Context(), sup, Created, &Ctx{}))

	failures := sup.Failures()
	require.Len(t, failures, 1)
	var de *stagefsm.DispatchError
	require.ErrorAs(t, failures[0], &de)
	assert.Equal(t, "Running", de.State)
	assert.ErrorIs(t, failures[0], errBoom)
	assert.Equal(t, []State{Created, Running, Failed}, sup.States())
}

func TestSupervisorPanicsRoutesPanicError(t *testing.T) {
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
		Script(stagefsmtest.Panics[Event]("kaboom"), stagefsmtest.Returns(terminate))

	require.NoError(t, stagefsm.Run(t.Context(), sup, Created, &Ctx{}))

	failures := sup.Failures()
	require.Len(t, failures, 1)
	var pe *stagefsm.PanicError
	require.ErrorAs(t, failures[0], &pe)
	assert.Equal(t, "kaboom", pe.Value)
}

// Fails(nil) and the zero Step return the zero directive: Run routes it.
func TestSupervisorZeroDirectiveSteps(t *testing.T) {
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
		In(Created, stagefsmtest.Fails[Event](nil)).
		In(Failed, stagefsmtest.Step[Event]{}, stagefsmtest.Returns(terminate))

	require.NoError(t, stagefsm.Run(t.Context(), sup, Created, &Ctx{}))

	failures := sup.Failures()
	require.Len(t, failures, 2)
	for _, f := range failures {
		assert.ErrorIs(t, f, stagefsm.ErrZeroDirective)
	}
}

func TestSupervisorBlocksUntilReleased(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
			Script(stagefsmtest.BlocksUntil(release, start), stagefsmtest.BlocksUntil(release, finish)).
			In(Done, stagefsmtest.Returns(terminate))
		errc := make(chan error, 1)
		go func() { errc <- stagefsm.Run(t.Context(), sup, Created, &Ctx{}) }()

		synctest.Wait()
		assert.Equal(t, []State{Created}, sup.States(), "blocked in the first dispatch")
		release <- struct{}{}
		synctest.Wait()
		assert.Equal(t, []State{Created, Running}, sup.States(), "blocked in the second dispatch")
		close(release)

		require.NoError(t, <-errc)
		assert.Equal(t, []State{Created, Running, Done}, sup.States())
	})
}

func TestSupervisorBlocksUntilCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
			Script(stagefsmtest.BlocksUntil(nil, start))
		errc := make(chan error, 1)
		go func() { errc <- stagefsm.Run(ctx, sup, Created, &Ctx{}) }()

		synctest.Wait()
		cancel()

		assert.ErrorIs(t, <-errc, context.Canceled)
		assert.Empty(t, sup.Failures(), "a cancellation is not a failure")
		assert.Zero(t, sup.Completions())
	})
}

// A dispatch that blocks in a state with a timeout is cut at the deadline,
// and the timeout event is fed.
func TestSupervisorBlocksUntilStateTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sup := stagefsmtest.NewSupervisor(t, timedBuilder(acts{}, 30*time.Second), failed).
			In(Running, stagefsmtest.Returns(wait), stagefsmtest.Returns(finish)).
			In(Waiting, stagefsmtest.BlocksUntil(nil, cont)).
			In(Done, stagefsmtest.Returns(terminate))
		start := time.Now()

		require.NoError(t, stagefsm.Run(t.Context(), sup, Running, &Ctx{}))

		assert.Equal(t, 30*time.Second, time.Since(start))
		assert.Equal(t, []State{Running, Waiting, Running, Done}, sup.States())
		assert.Empty(t, sup.Failures())
	})
}

// An idle stage waits its backoff in fake time: exactly, and at once.
func TestSupervisorIdleBackoffInstant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
			In(Running, stagefsmtest.Returns(idle).Times(5), stagefsmtest.Returns(finish)).
			In(Done, stagefsmtest.Returns(terminate))
		start := time.Now()

		require.NoError(t, stagefsm.Run(t.Context(), sup, Running, &Ctx{},
			stagefsm.WithIdleBackoff(time.Second, 4*time.Second)))

		assert.Equal(t, (1+2+4+4+4)*time.Second, time.Since(start))
	})
}

func TestSupervisorTimesZeroAndForever(t *testing.T) {
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
		In(Created, stagefsmtest.Returns(finish).Times(0), stagefsmtest.Returns(start)).
		In(Running, stagefsmtest.Returns(cont).Times(-1), stagefsmtest.Returns(finish)).
		In(Done, stagefsmtest.Returns(terminate).Forever())

	require.NoError(t, stagefsm.Run(t.Context(), sup, Created, &Ctx{}))
	require.NoError(t, stagefsm.Run(t.Context(), sup, Done, &Ctx{}), "Forever: used again")
	assert.Equal(t, []State{Created, Running, Done, Done}, sup.States())
}

func TestSupervisorStepAfterForeverReported(t *testing.T) {
	tb := &fakeTB{}
	sup := stagefsmtest.NewSupervisor(tb, builder(acts{}), failed).
		In(Done, stagefsmtest.Returns(terminate).Forever(), stagefsmtest.Returns(cont))

	require.NoError(t, stagefsm.Run(t.Context(), sup, Done, &Ctx{}))
	tb.cleanup()

	assert.Equal(t, []string{"stagefsmtest: Supervisor: 1 scripted step never used:\n\tIn(Done): Returns(Continue)"}, tb.messages())
}

func TestSupervisorCompleteWith(t *testing.T) {
	errWrite := errors.New("journal closed")
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
		Script(stagefsmtest.Returns(terminate)).
		CompleteWith(errWrite)

	err := stagefsm.Run(t.Context(), sup, Done, &Ctx{})

	assert.ErrorIs(t, err, errWrite)
	assert.Equal(t, 1, sup.Completions())
}

func TestSupervisorNilFunctions(t *testing.T) {
	t.Run("build", func(t *testing.T) {
		sup := stagefsmtest.NewSupervisor[State, Event, *Ctx, Act](t, nil, failed)
		err := stagefsm.Run(t.Context(), sup, Created, &Ctx{})
		assert.Error(t, err)
		assert.Zero(t, sup.Calls())
	})
	t.Run("failure", func(t *testing.T) {
		tb := &fakeTB{}
		sup := stagefsmtest.NewSupervisor(tb, builder(acts{}), nil).
			Script(stagefsmtest.Fails[Event](errBoom), stagefsmtest.Returns(terminate))
		// The zero Event is Start, which Created handles.
		require.NoError(t, stagefsm.Run(t.Context(), sup, Created, &Ctx{}))
		assert.Equal(t, []string{"stagefsmtest: Supervisor: failure routed with no failure function (NewSupervisor was given nil): dispatch in state Created: boom"}, tb.messages())
	})
	t.Run("nil t", func(t *testing.T) {
		sup := stagefsmtest.NewSupervisor(nil, builder(acts{}), failed).
			Script(stagefsmtest.Returns(terminate))
		require.NoError(t, stagefsm.Run(t.Context(), sup, Done, &Ctx{}))
		// Exhausted with no test to tell: the error still reaches Run.
		err := stagefsm.Run(t.Context(), sup, Done, &Ctx{}, stagefsm.WithMaxConsecutiveFailures(1))
		assert.ErrorIs(t, err, stagefsmtest.ErrScriptExhausted)
	})
}

// A script that runs out fails the test once and routes ErrScriptExhausted.
func TestSupervisorExhaustedFailsTest(t *testing.T) {
	tb := &fakeTB{}
	sup := stagefsmtest.NewSupervisor(tb, builder(acts{}), failed).
		Script(stagefsmtest.Returns(start))

	err := stagefsm.Run(t.Context(), sup, Created, &Ctx{}, stagefsm.WithMaxConsecutiveFailures(3))

	require.ErrorIs(t, err, stagefsm.ErrFailureLoop)
	assert.ErrorIs(t, err, stagefsmtest.ErrScriptExhausted)
	for _, f := range sup.Failures() {
		assert.ErrorIs(t, f, stagefsmtest.ErrScriptExhausted)
	}
	assert.Equal(t, []string{
		"stagefsmtest: Supervisor: dispatch 2 in state Running: no scripted step left (add one with In, When or Script)",
	}, tb.messages())
	assert.False(t, tb.stopped(), "Errorf, not Fatalf: it runs on Run's goroutine")
}

func TestSupervisorUnusedStepsFailTest(t *testing.T) {
	tb := &fakeTB{}
	sup := stagefsmtest.NewSupervisor(tb, builder(acts{}), failed).
		In(Created, stagefsmtest.Returns(start)).
		In(Running, stagefsmtest.Fails[Event](errBoom).Times(3), stagefsmtest.Returns(cont).Forever()).
		When(func(s State) bool { return s == Failed }, stagefsmtest.Returns(terminate)).
		Script(stagefsmtest.Panics[Event]("never"), stagefsmtest.BlocksUntil(nil, idle))

	require.NoError(t, stagefsm.Run(t.Context(), sup, Created, &Ctx{}))
	assert.Empty(t, tb.messages(), "reported when the test ends")
	tb.cleanup()

	assert.Equal(t, []string{"stagefsmtest: Supervisor: 3 scripted steps never used:\n" +
		"\tIn(Running): Fails(boom).Times(3) (2 of 3 uses left)\n" +
		"\tScript: Panics(never)\n" +
		"\tScript: BlocksUntil(release, Idle)"}, tb.messages())
}

func TestSupervisorAllStepsUsedReportsNothing(t *testing.T) {
	tb := &fakeTB{}
	sup := stagefsmtest.NewSupervisor(tb, builder(acts{}), failed).
		In(Created, stagefsmtest.Returns(start)).
		In(Running, stagefsmtest.Returns(cont).Times(2), stagefsmtest.Returns(finish)).
		In(Done, stagefsmtest.Returns(terminate).Forever())

	require.NoError(t, stagefsm.Run(t.Context(), sup, Created, &Ctx{}))
	tb.cleanup()

	assert.Empty(t, tb.messages())
}

func TestStepString(t *testing.T) {
	for _, tc := range []struct {
		step stagefsmtest.Step[Event]
		want string
	}{
		{stagefsmtest.Returns(start), "Returns(Transition(Start))"},
		{stagefsmtest.Returns(cont).Times(1), "Returns(Continue)"},
		{stagefsmtest.Fails[Event](errBoom).Times(2), "Fails(boom).Times(2)"},
		{stagefsmtest.Panics[Event](42).Forever(), "Panics(42).Forever()"},
		{stagefsmtest.BlocksUntil(nil, idle).Times(0), "BlocksUntil(release, Idle).Times(0)"},
		{stagefsmtest.Step[Event]{}, "Step{}"},
	} {
		assert.Equal(t, tc.want, tc.step.String())
	}
}

// The Supervisor may be inspected while Run runs (run with -race).
func TestSupervisorInspectWhileRunning(t *testing.T) {
	release := make(chan struct{})
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
		In(Created, stagefsmtest.Returns(start)).
		In(Running, stagefsmtest.Returns(cont).Times(100), stagefsmtest.BlocksUntil(release, finish)).
		In(Done, stagefsmtest.Returns(terminate))
	errc := make(chan error, 1)
	go func() { errc <- stagefsm.Run(t.Context(), sup, Created, &Ctx{}) }()

	for sup.Calls() < 102 {
		_ = sup.States()
		_ = sup.Failures()
		_ = sup.Completions()
		runtime.Gosched()
	}
	close(release)

	require.NoError(t, <-errc)
	assert.Equal(t, 103, sup.Calls())
}

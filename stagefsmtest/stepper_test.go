package stagefsmtest_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

func TestStepperWalksTheStage(t *testing.T) {
	var rec stagefsmtest.Recorder[State, Event]
	a := newActs(&rec)
	sup := stagefsmtest.NewSupervisor(t, builder(a), failed).
		In(Created, stagefsmtest.Returns(start)).
		In(Running, stagefsmtest.Returns(cont), stagefsmtest.Returns(finish)).
		In(Done, stagefsmtest.Returns(terminate))
	st := stagefsmtest.NewStepper(t.Context(), t, stagefsmtest.Record(&rec, sup), Created, &Ctx{})

	it, err := st.Step(t.Context())
	require.NoError(t, err)
	assert.Equal(t, stagefsmtest.Iteration[State, Event]{
		From: Created, Directive: start, To: Running,
		Transitions: []stagefsmtest.Transition[State, Event]{
			{From: Created, Event: Event{Kind: Start}, To: Running, Actions: []any{a.Open}},
		},
	}, it)
	stagefsmtest.RequireActions(t, &rec, "Open")
	assert.Equal(t, Running, st.State())
	assert.Equal(t, 1, sup.Calls(), "the next dispatch waits at the gate, not yet called")

	it, err = st.Step(t.Context())
	require.NoError(t, err)
	assert.Equal(t, stagefsmtest.Iteration[State, Event]{From: Running, Directive: cont, To: Running}, it)

	it, err = st.Step(t.Context())
	require.NoError(t, err)
	assert.Equal(t, Running, it.From)
	assert.Equal(t, finish, it.Directive)
	assert.Equal(t, Done, it.To)
	stagefsmtest.RequireActions(t, &rec, "Open", "Flush", "Close")

	it, err = st.Step(t.Context())
	require.NoError(t, err)
	assert.Equal(t, stagefsmtest.Iteration[State, Event]{
		From: Done, Directive: terminate, To: Done, Completed: true, Done: true,
	}, it)

	_, err = st.Step(t.Context())
	assert.ErrorIs(t, err, stagefsmtest.ErrRunReturned)
	assert.NoError(t, st.Close(), "Close returns Run's result")
	stagefsmtest.RequireTimeline(t, &rec, Created, Running, Done)
}

func TestStepperFailurePath(t *testing.T) {
	var rec stagefsmtest.Recorder[State, Event]
	a := newActs(&rec)
	sup := stagefsmtest.NewSupervisor(t, builder(a), failed).
		In(Running, stagefsmtest.Panics[Event]("bad item")).
		In(Failed, stagefsmtest.Returns(terminate))
	st := stagefsmtest.NewStepper(t.Context(), t, stagefsmtest.Record(&rec, sup), Running, &Ctx{})

	it, err := st.Step(t.Context())
	require.NoError(t, err)
	assert.Equal(t, Running, it.From)
	assert.Equal(t, Failed, it.To)
	assert.Zero(t, it.Directive, "dispatch panicked")
	assert.NoError(t, it.DispatchErr)
	require.Len(t, it.Failures, 1)
	var pe *stagefsm.PanicError
	require.ErrorAs(t, it.Failures[0].Err, &pe)
	assert.Equal(t, "bad item", pe.Value)
	require.Len(t, it.Transitions, 1)
	assert.Equal(t, it.Failures[0].Event, it.Transitions[0].Event)
	stagefsmtest.RequireActions(t, &rec, "Report", "Close")

	it, err = st.Step(t.Context())
	require.NoError(t, err)
	assert.True(t, it.Done)
	assert.True(t, it.Completed)
	assert.NoError(t, it.Err)
}

func TestStepperDispatchError(t *testing.T) {
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
		In(Running, stagefsmtest.Fails[Event](errBoom))
	st := stagefsmtest.NewStepper(t.Context(), t, sup, Running, &Ctx{})

	it, err := st.Step(t.Context())
	require.NoError(t, err)
	assert.ErrorIs(t, it.DispatchErr, errBoom)
	assert.Equal(t, Failed, it.To)
	assert.Equal(t, Failed, st.State())
}

// Run ends during a Step with an error: the Iteration says so.
func TestStepperRunError(t *testing.T) {
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
		In(Done, stagefsmtest.Returns(start)) // Done -Start- is unhandled: fatal
	st := stagefsmtest.NewStepper(t.Context(), t, sup, Done, &Ctx{})

	it, err := st.Step(t.Context())
	require.NoError(t, err)
	assert.True(t, it.Done)
	assert.ErrorIs(t, it.Err, stagefsm.ErrUnhandledEvent)
	require.Len(t, it.Transitions, 1)
	assert.ErrorIs(t, it.Transitions[0].Err, stagefsm.ErrUnhandledEvent)
	assert.ErrorIs(t, st.Close(), stagefsm.ErrUnhandledEvent)
}

func TestStepperBuildError(t *testing.T) {
	errBuild := errors.New("no machine")
	build := func(State) (stagefsm.Machine[State, Event, *Ctx, Act], error) { return nil, errBuild }
	st := stagefsmtest.NewStepper(t.Context(), t, stagefsmtest.NewSupervisor(t, build, failed), Created, &Ctx{})

	it, err := st.Step(t.Context())
	require.NoError(t, err)
	assert.Equal(t, stagefsmtest.Iteration[State, Event]{From: Created, To: Created, Done: true, Err: it.Err}, it)
	assert.ErrorIs(t, it.Err, errBuild)
}

// A Step whose context ends returns its error; the next Step reports the
// iteration that was under way instead of starting another.
func TestStepperStepContextDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
			In(Created, stagefsmtest.BlocksUntil(release, start)).
			In(Running, stagefsmtest.Returns(finish)).
			In(Done, stagefsmtest.Returns(terminate))
		st := stagefsmtest.NewStepper(t.Context(), t, sup, Created, &Ctx{})

		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, err := st.Step(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		close(release)

		it, err := st.Step(t.Context())
		require.NoError(t, err)
		assert.Equal(t, Created, it.From)
		assert.Equal(t, start, it.Directive)
		assert.Equal(t, Running, it.To)
		assert.Equal(t, 1, sup.Calls(), "no other dispatch let through")

		require.NoError(t, st.Finish(t.Context()))
	})
}

// A Step before the first dispatch can also time out (the machine is slow
// to build); the next Step goes on.
func TestStepperContextDoneBeforeFirstDispatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		build := func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
			time.Sleep(time.Hour)
			return &machine{state: initial}, nil
		}
		sup := stagefsmtest.NewSupervisor(t, build, failed).In(Done, stagefsmtest.Returns(terminate))
		st := stagefsmtest.NewStepper(t.Context(), t, sup, Done, &Ctx{})

		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, err := st.Step(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)

		it, err := st.Step(t.Context())
		require.NoError(t, err)
		assert.True(t, it.Done)
		assert.NoError(t, it.Err)
	})
}

// While the stage is held, time passes without a timeout firing; the next
// Step lets the dispatch through and the due timeout fires before the one
// after.
func TestStepperStateTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rec stagefsmtest.Recorder[State, Event]
		sup := stagefsmtest.NewSupervisor(t, timedBuilder(newActs(&rec), time.Minute), failed).
			In(Running, stagefsmtest.Returns(wait)).
			In(Waiting, stagefsmtest.Returns(idle).Forever())
		st := stagefsmtest.NewStepper(t.Context(), t, stagefsmtest.Record(&rec, sup), Running, &Ctx{})

		it, err := st.Step(t.Context())
		require.NoError(t, err)
		require.Equal(t, Waiting, it.To)

		time.Sleep(2 * time.Minute)
		synctest.Wait()
		assert.Equal(t, Waiting, st.State(), "held at the gate: nothing fires")

		it, err = st.Step(t.Context())
		require.NoError(t, err)
		assert.Equal(t, Waiting, it.From)
		assert.Equal(t, idle, it.Directive)
		assert.Equal(t, Running, it.To)
		require.Len(t, it.Transitions, 1)
		assert.Equal(t, Event{Kind: Expire}, it.Transitions[0].Event)
		stagefsmtest.RequireActions(t, &rec, "Retry")
	})
}

// An Idle directive: the Step returns after the idle wait, in fake time.
func TestStepperIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
			In(Running, stagefsmtest.Returns(idle).Forever())
		st := stagefsmtest.NewStepper(t.Context(), t, sup, Running, &Ctx{},
			stagefsm.WithIdleBackoff(time.Second, time.Hour))
		start := time.Now()

		for range 3 {
			it, err := st.Step(t.Context())
			require.NoError(t, err)
			assert.Equal(t, idle, it.Directive)
		}

		assert.Equal(t, (1+2+4)*time.Second, time.Since(start))
	})
}

// Close cancels Run where it waits; Close is idempotent; a Step waiting
// on another goroutine reports the end.
func TestStepperClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
			In(Running, stagefsmtest.BlocksUntil(nil, cont))
		st := stagefsmtest.NewStepper(t.Context(), t, sup, Running, &Ctx{})
		steps := make(chan stagefsmtest.Iteration[State, Event], 1)
		go func() {
			it, _ := st.Step(t.Context())
			steps <- it
		}()
		synctest.Wait()
		assert.Equal(t, 1, sup.Calls(), "dispatch let through, blocked")

		err := st.Close()
		assert.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, st.Close(), context.Canceled)

		it := <-steps
		assert.True(t, it.Done)
		assert.ErrorIs(t, it.Err, context.Canceled)
		assert.Empty(t, it.Failures)
	})
}

func TestStepperParentContextCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).In(Created, stagefsmtest.Returns(start))
	st := stagefsmtest.NewStepper(ctx, t, sup, Created, &Ctx{})
	_, err := st.Step(t.Context())
	require.NoError(t, err)

	cancel()
	it, err := st.Step(t.Context())

	require.NoError(t, err)
	assert.True(t, it.Done)
	assert.ErrorIs(t, it.Err, context.Canceled)
	assert.Equal(t, Running, it.From)
	assert.Equal(t, 1, sup.Calls(), "the held dispatch never ran")
}

func TestStepperFinish(t *testing.T) {
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
		In(Created, stagefsmtest.Returns(start)).
		In(Running, stagefsmtest.Returns(cont).Times(10), stagefsmtest.Returns(finish)).
		In(Done, stagefsmtest.Returns(terminate))
	st := stagefsmtest.NewStepper(t.Context(), t, sup, Created, &Ctx{})
	_, err := st.Step(t.Context())
	require.NoError(t, err)

	require.NoError(t, st.Finish(t.Context()))

	assert.Equal(t, Done, st.State())
	assert.Equal(t, 13, sup.Calls())
	_, err = st.Step(t.Context())
	assert.ErrorIs(t, err, stagefsmtest.ErrRunReturned)
	require.NoError(t, st.Finish(t.Context()), "again: Run's result")
}

func TestStepperFinishContextDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
			In(Done, stagefsmtest.BlocksUntil(release, terminate))
		st := stagefsmtest.NewStepper(t.Context(), t, sup, Done, &Ctx{})
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()

		assert.ErrorIs(t, st.Finish(ctx), context.DeadlineExceeded)
		close(release)
		assert.NoError(t, st.Finish(t.Context()))
	})
}

// t.Cleanup closes the Stepper: its goroutine ends with the test
// (goleak in TestMain checks it).
func TestStepperCleanup(t *testing.T) {
	tb := &fakeTB{}
	sup := stagefsmtest.NewSupervisor(nil, builder(acts{}), failed).
		In(Running, stagefsmtest.Returns(cont).Forever())
	st := stagefsmtest.NewStepper(context.Background(), tb, sup, Running, &Ctx{})
	_, err := st.Step(t.Context())
	require.NoError(t, err)

	tb.cleanup()

	_, err = st.Step(t.Context())
	require.NoError(t, err, "the first Step after Close reports the end")
	_, err = st.Step(t.Context())
	assert.ErrorIs(t, err, stagefsmtest.ErrRunReturned)
	assert.Empty(t, tb.messages())
}

func TestStepperNilArguments(t *testing.T) {
	var h stagefsm.HandlerSupervised[State, Event, *Ctx, Act]
	//lint:ignore SA1012 a nil context is the point of the test
	st := stagefsmtest.NewStepper(nil, nil, h, Created, &Ctx{})
	it, err := st.Step(t.Context())
	require.NoError(t, err)
	assert.True(t, it.Done)
	assert.Error(t, it.Err, "Run rejects a nil supervisor")
	assert.Error(t, st.Close())
}

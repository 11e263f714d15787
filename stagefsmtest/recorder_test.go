package stagefsmtest_test

import (
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

func TestRecordHappyPath(t *testing.T) {
	var rec stagefsmtest.Recorder[State, Event]
	a := newActs(&rec)
	sup := stagefsmtest.NewSupervisor(t, builder(a), failed).
		In(Created, stagefsmtest.Returns(start)).
		In(Running, stagefsmtest.Returns(cont), stagefsmtest.Returns(finish)).
		In(Done, stagefsmtest.Returns(terminate))

	require.NoError(t, stagefsm.Run(t.Context(), stagefsmtest.Record(&rec, sup), Created, &Ctx{}))

	assert.Equal(t, []State{Created, Running, Done}, rec.Timeline())
	assert.Equal(t, []stagefsmtest.ActionRecord{{Name: "Open"}, {Name: "Flush"}, {Name: "Close"}}, rec.Actions())
	assert.Equal(t, []error{nil}, rec.Completions())
	assert.Empty(t, rec.Failures())
	assert.Equal(t, []stagefsmtest.Transition[State, Event]{
		{From: Created, Event: Event{Kind: Start}, To: Running, Actions: []any{a.Open}},
		{From: Running, Event: Event{Kind: Finish}, To: Done, Actions: []any{a.Flush, a.Close}},
	}, rec.Transitions())
}

// A failing action is recorded with its error; the rest of its list is
// skipped; the failure is routed from the state the transition entered.
func TestRecordFailingAction(t *testing.T) {
	var rec stagefsmtest.Recorder[State, Event]
	a := newActs(&rec)
	a.Flush = a.Flush.Fails(errBoom)
	sup := stagefsmtest.NewSupervisor(t, builder(a), failed).
		In(Running, stagefsmtest.Returns(finish))

	// Done -Error- is unhandled: Run ends with an error naming both.
	err := stagefsm.Run(t.Context(), stagefsmtest.Record(&rec, sup), Running, &Ctx{})

	assert.ErrorIs(t, err, errBoom)
	assert.ErrorIs(t, err, stagefsm.ErrUnhandledEvent)
	assert.Equal(t, []stagefsmtest.ActionRecord{{Name: "Flush", Err: errBoom}}, rec.Actions(), "Close skipped")
	failures := rec.Failures()
	require.Len(t, failures, 1)
	var ae *stagefsm.ActionError
	require.ErrorAs(t, failures[0].Err, &ae)
	assert.Equal(t, 0, ae.Index)
	assert.Equal(t, []any{a.Close}, ae.Skipped)
	assert.Equal(t, Event{Kind: Error, Err: failures[0].Err}, failures[0].Event)
	assert.Equal(t, []State{Running, Done}, rec.Timeline())
	transitions := rec.Transitions()
	require.Len(t, transitions, 2)
	assert.ErrorIs(t, transitions[1].Err, stagefsm.ErrUnhandledEvent, "the rejected failure event is recorded")
	assert.Empty(t, rec.Completions())
}

func TestRecordPanickingAction(t *testing.T) {
	var rec stagefsmtest.Recorder[State, Event]
	a := newActs(&rec)
	a.Open = a.Open.Panics("open failed")
	sup := stagefsmtest.NewSupervisor(t, builder(a), failed).
		In(Created, stagefsmtest.Returns(start)).
		In(Failed, stagefsmtest.Returns(terminate))

	require.NoError(t, stagefsm.Run(t.Context(), stagefsmtest.Record(&rec, sup), Created, &Ctx{}))

	actions := rec.Actions()
	require.Len(t, actions, 3)
	assert.Equal(t, "Open", actions[0].Name)
	var pe *stagefsm.PanicError
	require.ErrorAs(t, actions[0].Err, &pe)
	assert.Equal(t, "open failed", pe.Value)
	assert.Equal(t, []stagefsmtest.ActionRecord{{Name: "Report"}, {Name: "Close"}}, actions[1:])
	assert.Equal(t, []State{Created, Running, Failed}, rec.Timeline())
}

// A self-transition adds nothing to the timeline but is a transition.
func TestRecordTimelineCollapsesRepeats(t *testing.T) {
	var rec stagefsmtest.Recorder[State, Event]
	sup := stagefsmtest.NewSupervisor(t, builder(newActs(&rec)), failed).
		In(Failed, stagefsmtest.Fails[Event](errBoom).Times(2), stagefsmtest.Returns(terminate))

	require.NoError(t, stagefsm.Run(t.Context(), stagefsmtest.Record(&rec, sup), Failed, &Ctx{}))

	assert.Equal(t, []State{Failed}, rec.Timeline())
	assert.Len(t, rec.Transitions(), 2)
	assert.Len(t, rec.Failures(), 2)
}

// Record keeps the machine's state timeout: it fires on time.
func TestRecordForwardsTimed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rec stagefsmtest.Recorder[State, Event]
		sup := stagefsmtest.NewSupervisor(t, timedBuilder(newActs(&rec), time.Minute), failed).
			In(Running, stagefsmtest.Returns(wait), stagefsmtest.Returns(finish)).
			In(Waiting, stagefsmtest.Returns(idle).Forever()).
			In(Done, stagefsmtest.Returns(terminate))
		start := time.Now()

		require.NoError(t, stagefsm.Run(t.Context(), stagefsmtest.Record(&rec, sup), Running, &Ctx{}))

		assert.Equal(t, time.Minute, time.Since(start))
		assert.Equal(t, []State{Running, Waiting, Running, Done}, rec.Timeline())
		stagefsmtest.RequireActions(t, &rec, "Retry", "Flush", "Close")
	})
}

func TestRecordNil(t *testing.T) {
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed)
	assert.Same(t, sup, stagefsmtest.Record(nil, sup), "a nil Recorder records nothing")

	var rec stagefsmtest.Recorder[State, Event]
	var h stagefsm.HandlerSupervised[State, Event, *Ctx, Act]
	assert.Error(t, stagefsm.Run(t.Context(), stagefsmtest.Record(&rec, h), Created, &Ctx{}))

	// A nil machine stays nil, so Run reports it.
	nilBuild := func(State) (stagefsm.Machine[State, Event, *Ctx, Act], error) { return nil, nil }
	err := stagefsm.Run(t.Context(), stagefsmtest.Record(&rec, stagefsmtest.NewSupervisor(t, nilBuild, failed)), Created, &Ctx{})
	assert.Error(t, err)
	errBuild := errors.New("no machine")
	badBuild := func(State) (stagefsm.Machine[State, Event, *Ctx, Act], error) { return nil, errBuild }
	err = stagefsm.Run(t.Context(), stagefsmtest.Record(&rec, stagefsmtest.NewSupervisor(t, badBuild, failed)), Created, &Ctx{})
	assert.ErrorIs(t, err, errBuild)
	assert.Empty(t, rec.Timeline())
}

func TestActionZeroAndString(t *testing.T) {
	var a Act
	assert.NoError(t, a.Execute(t.Context(), &Ctx{}))
	assert.Equal(t, "", a.String())

	b := stagefsmtest.NewAction[*Ctx, State, Event](nil, "Flush").Fails(errBoom)
	assert.ErrorIs(t, b.Execute(t.Context(), &Ctx{}), errBoom)
	assert.NoError(t, b.Fails(nil).Execute(t.Context(), &Ctx{}))
	assert.Equal(t, "Flush", b.String())
	assert.PanicsWithValue(t, 7, func() { _ = b.Panics(7).Execute(t.Context(), &Ctx{}) })
}

// The Recorder may be read while Run writes to it (run with -race).
func TestRecorderReadWhileRunning(t *testing.T) {
	var rec stagefsmtest.Recorder[State, Event]
	release := make(chan struct{})
	sup := stagefsmtest.NewSupervisor(t, builder(newActs(&rec)), failed).
		In(Created, stagefsmtest.Returns(start)).
		In(Running, stagefsmtest.Fails[Event](errBoom)).
		In(Failed, stagefsmtest.Fails[Event](errBoom).Times(50), stagefsmtest.BlocksUntil(release, terminate))
	errc := make(chan error, 1)
	go func() { errc <- stagefsm.Run(t.Context(), stagefsmtest.Record(&rec, sup), Created, &Ctx{}) }()

	for len(rec.Failures()) < 51 {
		_, _, _ = rec.Timeline(), rec.Transitions(), rec.Actions()
		_ = rec.Completions()
		runtime.Gosched()
	}
	close(release)

	require.NoError(t, <-errc)
	stagefsmtest.RequireCompletions(t, &rec, 1)
}

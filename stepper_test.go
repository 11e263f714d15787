package stagefsm_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

// These tests walk Run through its loop one iteration at a time with
// stagefsmtest.Stepper, over a mealy machine whose actions record into a
// stagefsmtest.Recorder:
//
//	Created -Start->  Running [Open]
//	Running -Wait->   Waiting          (Waiting times out after a minute: Expire)
//	Waiting -Expire-> Running [Retry]
//	Running -Finish-> Done    [Flush, Close]
//	any non-terminal -Error-> Failed [Report]; Failed -Error-> Failed

type stpState int

const (
	stpCreated stpState = iota
	stpRunning
	stpWaiting
	stpDone
	stpFailed
)

func (s stpState) String() string {
	return [...]string{"Created", "Running", "Waiting", "Done", "Failed"}[s]
}

type stpKind int

const (
	stpStart stpKind = iota
	stpWait
	stpExpire
	stpFinish
	stpError
)

func (k stpKind) String() string { return [...]string{"Start", "Wait", "Expire", "Finish", "Error"}[k] }

type stpEvent struct {
	kind stpKind
	err  error
}

func (e stpEvent) String() string { return e.kind.String() }

type stpCtx struct{}

type stpAct = stagefsmtest.Action[*stpCtx]

var (
	errStpBoom  = errors.New("boom")
	stpStartD   = stagefsm.Transition(stpEvent{kind: stpStart})
	stpWaitD    = stagefsm.Transition(stpEvent{kind: stpWait})
	stpFinishD  = stagefsm.Transition(stpEvent{kind: stpFinish})
	stpContinue = stagefsm.Continue[stpEvent]()
	stpIdle     = stagefsm.Idle[stpEvent]()
	stpStop     = stagefsm.Terminate[stpEvent]()
)

// stpStage returns the scripted supervisor of the stage and its recorder.
// flush is the Flush action (a test may make it fail).
func stpStage(t *testing.T, script func(rec *stagefsmtest.Recorder[stpState, stpEvent]) (flush stpAct)) (*stagefsmtest.Supervisor[stpState, stpEvent, *stpCtx, stpAct], *stagefsmtest.Recorder[stpState, stpEvent]) {
	t.Helper()
	rec := &stagefsmtest.Recorder[stpState, stpEvent]{}
	act := func(name string) stpAct { return stagefsmtest.NewAction[*stpCtx](rec, name) }
	flush := act("Flush")
	if script != nil {
		flush = script(rec)
	}
	b := mealy.New[stpState, stpEvent, *stpCtx, stpAct](func(s stpState) stpState { return s }, func(e stpEvent) stpKind { return e.kind })
	b.Initial(stpCreated)
	b.FailureEvent(stpError)
	for s := stpCreated; s <= stpFailed; s++ {
		b.State(s)
	}
	b.State(stpWaiting).Timeout(time.Minute, stpEvent{kind: stpExpire})
	b.State(stpDone).Terminal()
	b.State(stpFailed).Terminal()
	b.On(stpCreated, stpStart).To(stpRunning).Do(act("Open"))
	b.On(stpRunning, stpWait).To(stpWaiting)
	b.On(stpWaiting, stpExpire).To(stpRunning).Do(act("Retry"))
	b.On(stpRunning, stpFinish).To(stpDone).Do(flush, act("Close"))
	b.OnAny(stpError).To(stpFailed).Do(act("Report"))
	b.On(stpDone, stpError).To(stpFailed).Do(act("Report"))
	b.On(stpFailed, stpError).Stay()
	def, err := b.Build()
	require.NoError(t, err)
	build := func(initial stpState) (stagefsm.Machine[stpState, stpEvent, *stpCtx, stpAct], error) {
		return def.New(initial)
	}
	failure := func(err error) stpEvent { return stpEvent{kind: stpError, err: err} }
	return stagefsmtest.NewSupervisor(t, build, failure), rec
}

// stpStep takes one step and fails the test if it cannot.
func stpStep(t *testing.T, st *stagefsmtest.Stepper[stpState, stpEvent]) stagefsmtest.Iteration[stpState, stpEvent] {
	t.Helper()
	it, err := st.Step(t.Context())
	require.NoError(t, err)
	return it
}

// Continue dispatches again at once; each Idle waits the next backoff
// step; any other directive resets the sequence.
func TestStepIdleBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sup, _ := stpStage(t, nil)
		sup.In(stpRunning,
			stagefsmtest.Returns(stpIdle).Times(5),
			stagefsmtest.Returns(stpContinue),
			stagefsmtest.Returns(stpIdle))
		st := stagefsmtest.NewStepper(t.Context(), t, stagefsmtest.Record(&stagefsmtest.Recorder[stpState, stpEvent]{}, sup), stpRunning, &stpCtx{})

		var waits []time.Duration
		for range 7 {
			start := time.Now()
			stpStep(t, st)
			waits = append(waits, time.Since(start))
		}

		ms := time.Millisecond
		assert.Equal(t, []time.Duration{1 * ms, 2 * ms, 4 * ms, 8 * ms, 10 * ms, 0, 1 * ms}, waits)
	})
}

// An action failure is routed from the state the transition entered; the
// actions after it are skipped but named in the error.
func TestStepActionFailureRoutedFromEnteredState(t *testing.T) {
	sup, rec := stpStage(t, func(rec *stagefsmtest.Recorder[stpState, stpEvent]) stpAct {
		return stagefsmtest.NewAction[*stpCtx](rec, "Flush").Fails(errStpBoom)
	})
	sup.In(stpRunning, stagefsmtest.Returns(stpFinishD))
	st := stagefsmtest.NewStepper(t.Context(), t, stagefsmtest.Record(rec, sup), stpRunning, &stpCtx{})

	it := stpStep(t, st)

	require.Len(t, it.Transitions, 2)
	assert.Equal(t, stpDone, it.Transitions[0].To)
	assert.Equal(t, stpDone, it.Transitions[1].From, "routed from the entered state")
	assert.Equal(t, stpFailed, it.To)
	require.Len(t, it.Failures, 1)
	var ae *stagefsm.ActionError
	require.ErrorAs(t, it.Failures[0].Err, &ae)
	assert.Equal(t, 0, ae.Index)
	require.Len(t, ae.Skipped, 1)
	assert.Equal(t, "Close", ae.Skipped[0].(stpAct).String())
	assert.ErrorIs(t, ae, errStpBoom)
	stagefsmtest.RequireActions(t, rec, "Flush", "Report")
	stagefsmtest.RequireTimeline(t, rec, stpRunning, stpDone, stpFailed)
}

// Consecutive routed failures are counted; an iteration that routes none
// resets the count; past the limit Run returns ErrFailureLoop.
func TestStepFailureLoopGuard(t *testing.T) {
	sup, rec := stpStage(t, nil)
	sup.In(stpFailed,
		stagefsmtest.Fails[stpEvent](errStpBoom).Times(2),
		stagefsmtest.Returns(stpContinue),
		stagefsmtest.Fails[stpEvent](errStpBoom).Times(3))
	st := stagefsmtest.NewStepper(t.Context(), t, stagefsmtest.Record(rec, sup), stpFailed, &stpCtx{},
		stagefsm.WithMaxConsecutiveFailures(2))

	for i, routed := range []int{1, 1, 0, 1, 1} {
		it := stpStep(t, st)
		require.False(t, it.Done, "step %d", i)
		assert.Len(t, it.Failures, routed, "step %d", i)
	}
	it := stpStep(t, st)

	assert.True(t, it.Done)
	assert.ErrorIs(t, it.Err, stagefsm.ErrFailureLoop)
	assert.ErrorIs(t, it.Err, errStpBoom)
	assert.Empty(t, it.Failures, "the failure past the limit is not routed")
	stagefsmtest.RequireCompletions(t, rec, 0)
}

// A state timeout that falls due while the stage is held fires after the
// next dispatch, before the one after.
func TestStepStateTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sup, rec := stpStage(t, nil)
		sup.In(stpRunning, stagefsmtest.Returns(stpWaitD), stagefsmtest.Returns(stpFinishD)).
			In(stpWaiting, stagefsmtest.Returns(stpContinue).Forever()).
			In(stpDone, stagefsmtest.Returns(stpStop))
		st := stagefsmtest.NewStepper(t.Context(), t, stagefsmtest.Record(rec, sup), stpRunning, &stpCtx{})

		assert.Equal(t, stpWaiting, stpStep(t, st).To)
		assert.Equal(t, stpWaiting, stpStep(t, st).To, "Continue: not due yet")
		time.Sleep(time.Minute)

		it := stpStep(t, st)
		assert.Equal(t, stpContinue, it.Directive)
		require.Len(t, it.Transitions, 1)
		assert.Equal(t, stpEvent{kind: stpExpire}, it.Transitions[0].Event)
		assert.Equal(t, stpRunning, it.To)

		require.NoError(t, st.Finish(t.Context()))
		stagefsmtest.RequireTimeline(t, rec, stpRunning, stpWaiting, stpRunning, stpDone)
		stagefsmtest.RequireActions(t, rec, "Retry", "Flush", "Close")
		stagefsmtest.RequireCompletions(t, rec, 1)
	})
}

// The zero directive is routed as a failure wrapping ErrZeroDirective;
// Terminate writes the completion once and ends Run.
func TestStepZeroDirectiveThenTerminate(t *testing.T) {
	sup, rec := stpStage(t, nil)
	sup.In(stpCreated, stagefsmtest.Returns(stagefsm.Directive[stpEvent]{})).
		In(stpFailed, stagefsmtest.Returns(stpStop))
	st := stagefsmtest.NewStepper(t.Context(), t, stagefsmtest.Record(rec, sup), stpCreated, &stpCtx{})

	it := stpStep(t, st)
	require.Len(t, it.Failures, 1)
	assert.ErrorIs(t, it.Failures[0].Err, stagefsm.ErrZeroDirective)
	assert.Equal(t, stpFailed, it.To)

	it = stpStep(t, st)
	assert.True(t, it.Done)
	assert.True(t, it.Completed)
	assert.NoError(t, it.Err)
	stagefsmtest.RequireCompletions(t, rec, 1)
	stagefsmtest.RequireFailures(t, rec, stagefsm.ErrZeroDirective)
}

// Cancelling the stage's context ends Run with context.Canceled, routing
// nothing and writing no completion.
func TestStepCancelled(t *testing.T) {
	sup, rec := stpStage(t, nil)
	sup.In(stpCreated, stagefsmtest.Returns(stpStartD))
	st := stagefsmtest.NewStepper(t.Context(), t, stagefsmtest.Record(rec, sup), stpCreated, &stpCtx{})
	stpStep(t, st)

	err := st.Close()

	assert.ErrorIs(t, err, context.Canceled)
	stagefsmtest.RequireFailures(t, rec)
	stagefsmtest.RequireCompletions(t, rec, 0)
	stagefsmtest.RequireTimeline(t, rec, stpCreated, stpRunning)
}

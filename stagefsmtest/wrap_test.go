package stagefsmtest_test

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

// gated is a scripted supervisor with a control policy: Created blocks for
// a control event, Done and Failed ignore them, and its graceful stop event
// is Finish.
type gated struct {
	*stagefsmtest.Supervisor[State, Event, *Ctx, Act]
}

func (gated) ControlMode(s State) stagefsm.ControlMode {
	switch s {
	case Created:
		return stagefsm.ControlBlock
	case Done, Failed:
		return stagefsm.ControlIgnore
	}
	return stagefsm.ControlPoll
}

func (gated) ControlClosed(State) (Event, bool) { return Event{}, false }
func (gated) StopEvent() Event                  { return Event{Kind: Finish} }

// Record keeps Controlled and Stoppable: under Start, Created waits for
// the control event without a dispatch, and Stop sends the stop event.
func TestRecordForwardsControlInterfaces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rec stagefsmtest.Recorder[State, Event]
		sup := stagefsmtest.NewSupervisor(t, builder(newActs(&rec)), failed).
			In(Running, stagefsmtest.Returns(idle).Forever()).
			In(Done, stagefsmtest.Returns(terminate))
		h := stagefsmtest.Record(&rec, gated{sup})
		_, stoppable := h.(stagefsm.Stoppable[Event])
		require.True(t, stoppable)

		st := stagefsm.Start(t.Context(), h, Created, &Ctx{})
		synctest.Wait()
		assert.Zero(t, sup.Calls(), "Created blocks for a control event: no dispatch")
		require.NoError(t, st.Send(t.Context(), Event{Kind: Start}))
		_, err := st.WaitState(t.Context(), func(s State) bool { return s == Running })
		require.NoError(t, err)

		require.NoError(t, st.Stop(t.Context()))

		stagefsmtest.RequireTimeline(t, &rec, Created, Running, Done)
		stagefsmtest.RequireActions(t, &rec, "Open", "Flush", "Close")
		stagefsmtest.RequireCompletions(t, &rec, 1)
		assert.NotContains(t, sup.States(), Created)
	})
}

// Without Stoppable the wrapper has none either, so Stop reports it.
func TestRecordNotStoppable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rec stagefsmtest.Recorder[State, Event]
		sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
			In(Running, stagefsmtest.Returns(idle).Forever())
		h := stagefsmtest.Record(&rec, sup)
		_, stoppable := h.(stagefsm.Stoppable[Event])
		assert.False(t, stoppable)

		st := stagefsm.Start(t.Context(), h, Running, &Ctx{})
		assert.ErrorIs(t, st.Stop(t.Context()), stagefsm.ErrNoStopEvent)
		st.Abort()
		assert.ErrorIs(t, st.Wait(t.Context()), context.Canceled)
	})
}

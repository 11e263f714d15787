package stage

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
)

var (
	errBoom = errors.New("boom")
	every   = []StateKind{Created, Initialized, WaitingForGun, Running, Draining, Drained, Failed}
)

// step is one row of a stage FSM table.
type step struct {
	from    StateKind
	ev      eventKind
	to      StateKind
	actions []action
}

// The complete tables: every (state, event) pair not listed is rejected.
var tables = map[kind][]step{
	kindSource: {
		{Created, evInitialize, Initialized, []action{actOpen}},
		{Initialized, evReady, WaitingForGun, nil},
		{WaitingForGun, evStart, Running, nil},
		{Running, evCompleted, Draining, nil},
		{Draining, evCompleted, Drained, []action{actForwardEOF, actCleanup}},
	},
	kindTransform: {
		{Created, evInitialize, Initialized, []action{actOpen}},
		{Initialized, evReady, Running, nil},
		{Running, evReceivedEOF, Draining, nil},
		{Draining, evDrainComplete, Drained, []action{actDrainHandler, actForwardEOF, actCleanup}},
	},
	kindSink: {
		{Created, evInitialize, Initialized, []action{actOpen}},
		{Initialized, evReady, Running, nil},
		{Running, evReceivedEOF, Draining, nil},
		{Draining, evDrainComplete, Drained, []action{actDrainHandler, actCleanup}},
	},
}

func statesOf(k kind) []StateKind {
	if k == kindSource {
		return every
	}
	return []StateKind{Created, Initialized, Running, Draining, Drained, Failed}
}

// expected returns the row for (from, ev) in kind k's FSM, including the
// any-state rows (BeginDrain, Error), or ok=false if the event is rejected.
func expected(k kind, from StateKind, ev eventKind) (step, bool) {
	for _, s := range tables[k] {
		if s.from == from && s.ev == ev {
			return s, true
		}
	}
	switch {
	case ev == evError && from == Failed:
		return step{from, ev, Failed, nil}, true
	case ev == evError:
		return step{from, ev, Failed, []action{actSendFailure, actCleanup}}, true
	case ev == evBeginDrain && from == Draining:
		return step{from, ev, Draining, nil}, true
	case ev == evBeginDrain && from != Drained && from != Failed:
		return step{from, ev, Draining, nil}, true
	}
	return step{}, false
}

// TestMachineTables feeds every event in every state of every stage kind
// and checks the next state and the actions against the tables above,
// including Error from each state and the idempotent Failed.
func TestMachineTables(t *testing.T) {
	ctx := context.Background()
	for _, k := range []kind{kindSource, kindTransform, kindSink} {
		for _, from := range statesOf(k) {
			for ev := evInitialize; ev <= evError; ev++ {
				t.Run(k.String()+"/"+from.String()+"/"+ev.String(), func(t *testing.T) {
					initial := State{Kind: from}
					if from == Failed {
						initial.Reason = errBoom
					}
					m, err := newMachine(k, initial)
					require.NoError(t, err)
					e := event{kind: ev}
					if ev == evError {
						e.err = errors.New("second failure")
					}
					actions, err := m.Handle(ctx, e, nil)
					want, ok := expected(k, from, ev)
					if !ok {
						assert.ErrorIs(t, err, stagefsm.ErrUnhandledEvent)
						assert.Equal(t, initial, m.State(), "a rejected event leaves the state")
						return
					}
					require.NoError(t, err)
					got := m.State()
					assert.Equal(t, want.to, got.Kind)
					assert.Equal(t, want.actions, append([]action(nil), actions...))
					switch {
					case from == Failed:
						assert.ErrorIs(t, got.Reason, errBoom, "Failed keeps its first reason")
					case ev == evError:
						assert.Equal(t, e.err, got.Reason, "Failed carries the error")
					default:
						assert.NoError(t, got.Reason)
					}
				})
			}
		}
	}
}

func TestWaitingForGunIsSourceOnly(t *testing.T) {
	_, err := newMachine(kindTransform, State{Kind: WaitingForGun})
	assert.Error(t, err)
}

// TestControlModes checks that the states before Running are gates, that
// Running and Draining poll and that the terminal states ignore control
// events.
func TestControlModes(t *testing.T) {
	want := map[StateKind]stagefsm.ControlMode{
		Created: stagefsm.ControlBlock, Initialized: stagefsm.ControlBlock, WaitingForGun: stagefsm.ControlBlock,
		Running: stagefsm.ControlPoll, Draining: stagefsm.ControlPoll,
		Drained: stagefsm.ControlIgnore, Failed: stagefsm.ControlIgnore,
	}
	for s, m := range want {
		assert.Equal(t, m, supervisor{}.ControlMode(State{Kind: s}), s.String())
	}
	ev, ok := supervisor{}.ControlClosed(State{Kind: Created})
	assert.True(t, ok)
	assert.ErrorIs(t, ev.err, ErrStartupAborted)
	ev, ok = supervisor{}.ControlClosed(State{Kind: Running})
	assert.True(t, ok)
	assert.Equal(t, evBeginDrain, ev.kind)
	_, ok = supervisor{}.ControlClosed(State{Kind: Drained})
	assert.False(t, ok)
}

func TestStateString(t *testing.T) {
	assert.Equal(t, "Running", State{Kind: Running}.String())
	assert.Equal(t, "Failed(boom)", State{Kind: Failed, Reason: errBoom}.String())
	assert.Equal(t, "StateKind(42)", StateKind(42).String())
	assert.True(t, State{Kind: Drained}.Terminal())
	assert.False(t, State{Kind: Draining}.Terminal())
}

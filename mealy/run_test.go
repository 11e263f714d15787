package mealy_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
)

// declareLifecycle declares Created -> Running -> Done with failures to
// Failed, Done terminal but leaving on failure (its entry action may fail).
func declareLifecycle(b *builder) {
	b.Initial(created)
	b.FailureEvent(fail)
	b.Strict()
	b.State(created)
	b.State(running).Entry("open")
	b.State(done).Terminal().Entry("cleanup")
	b.State(failed).Terminal()
	b.On(created, start).To(state{kind: running})
	b.On(running, finish).To(state{kind: done}).Do("flush")
	b.OnAny(fail).Choose(failTo, failed).Do("report")
	b.On(done, fail).Choose(failTo, failed).Do("report")
	b.On(failed, fail).Stay()
}

func TestRunRoutesFailuresThroughMealy(t *testing.T) {
	errDispatch := errors.New("dispatch failed")
	tests := []struct {
		name      string
		failOn    action // an action that fails
		dispatch  error  // returned by the first dispatch in Running
		wantLog   []string
		wantState state
		wantCause error
	}{
		{
			name:      "success",
			wantLog:   []string{"open", "cleanup", "flush"},
			wantState: state{kind: done},
		},
		{
			name:      "dispatch error: any-state failure transition",
			dispatch:  errDispatch,
			wantLog:   []string{"open", "report"},
			wantState: state{kind: failed},
			wantCause: errDispatch,
		},
		{
			name:      "action error routed from the entered terminal state",
			failOn:    "cleanup",
			wantLog:   []string{"open", "cleanup", "report"},
			wantState: state{kind: failed},
			wantCause: errAction,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBuilder()
			declareLifecycle(b)
			def, err := b.Build()
			require.NoError(t, err)

			var final state
			dispatchErr := tt.dispatch
			s := &stage{def: def}
			s.dispatch = func(_ context.Context, st state, _ *record) (stagefsm.Directive[event], error) {
				switch st.kind {
				case created:
					return stagefsm.Transition(event{kind: start}), nil
				case running:
					if err := dispatchErr; err != nil {
						dispatchErr = nil
						return stagefsm.Directive[event]{}, err
					}
					return stagefsm.Transition(event{kind: finish}), nil
				default:
					final = st
					return stagefsm.Terminate[event](), nil
				}
			}
			c := &record{failOn: tt.failOn}
			require.NoError(t, stagefsm.Run(context.Background(), s, state{kind: created}, c))
			assert.Equal(t, tt.wantLog, c.log)
			assert.Equal(t, tt.wantState.kind, final.kind)
			if tt.wantCause == nil {
				assert.Empty(t, s.routed)
				return
			}
			require.Len(t, s.routed, 1)
			assert.ErrorIs(t, s.routed[0], tt.wantCause)
			assert.Equal(t, s.routed[0].Error(), final.reason, "the Choose handler saw the event's payload")
		})
	}
}

func TestRunRejectsUnhandledEvent(t *testing.T) {
	b := newBuilder()
	declareLifecycle(b)
	def, err := b.Build()
	require.NoError(t, err)
	s := &stage{def: def, dispatch: func(context.Context, state, *record) (stagefsm.Directive[event], error) {
		return stagefsm.Transition(event{kind: tick}), nil // Created does not handle Tick
	}}
	err = stagefsm.Run(context.Background(), s, state{kind: created}, &record{})
	assert.ErrorIs(t, err, mealy.ErrUnhandledEvent)
	assert.ErrorIs(t, err, stagefsm.ErrUnhandledEvent)
	assert.Equal(t, 0, s.complete)
}

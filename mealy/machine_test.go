package mealy_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/mealy"
)

func TestHandleBasic(t *testing.T) {
	b := newBuilder()
	b.State(created).Exit("leaveCreated")
	b.State(running).Entry("enterRunning")
	b.State(done).Terminal()
	b.State(failed).Terminal()
	b.On(created, start).To(state{kind: running}).Do("begin")
	b.On(running, finish).To(state{kind: done})
	b.OnAny(fail).Choose(failTo, failed).Do("report")
	def, err := b.Build()
	require.NoError(t, err)

	m, err := def.New(state{kind: created})
	require.NoError(t, err)
	ctx, c := context.Background(), &record{}

	actions, err := m.Handle(ctx, event{kind: start}, c)
	require.NoError(t, err)
	assert.Equal(t, []action{"leaveCreated", "enterRunning", "begin"}, actions)
	assert.Equal(t, state{kind: running}, m.State())

	_, err = m.Handle(ctx, event{kind: tick}, c)
	assert.ErrorIs(t, err, mealy.ErrUnhandledEvent)
	assert.Equal(t, state{kind: running}, m.State())

	actions, err = m.Handle(ctx, event{kind: fail, err: errAction}, c)
	require.NoError(t, err)
	assert.Equal(t, []action{"report"}, actions)
	assert.Equal(t, state{kind: failed, reason: errAction.Error()}, m.State())
}

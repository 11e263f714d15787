package mealy_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/mealy"
)

type termAct string

func (a termAct) String() string { return string(a) }

func TestDefinitionTerminal(t *testing.T) {
	id := func(s string) string { return s }
	b := mealy.New[string, string, struct{}, termAct](id, id)
	b.Initial("open")
	b.State("open")
	b.State("done").Terminal()
	b.On("open", "close").To("done")
	def, err := b.Build()
	require.NoError(t, err)
	assert.True(t, def.Terminal("done"))
	assert.False(t, def.Terminal("open"))
	assert.False(t, def.Terminal("undeclared"))
}

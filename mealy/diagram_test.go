package mealy_test

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/mealy"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// declareDrawn declares a machine using every feature diagrams show: the
// initial state, hooks, a timeout, Stay, re-entry, Choose, any-state
// failure edges with actions, terminal states.
func declareDrawn(b *builder) {
	declareValid(b)
	b.State(created).Exit("log")
	b.State(running).Entry("open").Exit("close")
	b.On(running, tick).Stay().Do("count")
	b.On(waiting, ping).To(state{kind: waiting}).Do("pong")
	b.On(waiting, finish).Choose(failTo, done, failed).Do("flush", "report")
}

// declareDrawnReversed declares the same machine in another order.
func declareDrawnReversed(b *builder) {
	b.On(waiting, finish).Choose(failTo, done, failed).Do("flush", "report")
	b.On(waiting, ping).To(state{kind: waiting}).Do("pong")
	b.On(running, tick).Stay().Do("count")
	b.On(failed, fail).Stay()
	b.OnAny(fail).Choose(failTo, failed)
	b.On(running, finish).To(state{kind: done})
	b.On(waiting, tick).To(state{kind: done})
	b.On(running, ping).To(state{kind: waiting})
	b.On(created, start).To(state{kind: running})
	b.State(failed).Terminal()
	b.State(done).Terminal()
	b.State(waiting).Timeout(waitTimeout, event{kind: tick})
	b.State(running).Entry("open").Exit("close")
	b.State(created).Exit("log")
	b.Strict()
	b.FailureEvent(fail)
	b.Initial(created)
}

// oddKey is a state key whose names need quoting.
type oddKey string

type oddAction string

func (a oddAction) String() string { return string(a) }

func TestDiagramGolden(t *testing.T) {
	b := newBuilder()
	declareDrawn(b)
	def, err := b.Build()
	require.NoError(t, err)

	odd := mealy.New[oddKey, string, struct{}, oddAction](
		func(k oddKey) oddKey { return k }, func(e string) string { return e })
	odd.Initial("first state")
	odd.State(`say "hi"`).Terminal()
	odd.State("first state").Entry(`a;b`)
	odd.State("end") // a Mermaid keyword
	odd.On("first state", "go\nnow").To(`say "hi"`).Do(`x "y"`)
	odd.On("first state", "end").To("end")
	odd.On("end", "back").To("first state")
	odd.State("state0")
	odd.On("end", "jump").To("state0") // the name of a generated id
	odd.On("state0", "back").To("first state")
	oddDef, err := odd.Build()
	require.NoError(t, err)

	tests := []struct {
		file string
		got  string
	}{
		{"machine.mmd", def.Mermaid()},
		{"machine.dot", def.DOT()},
		{"machine_highlight.mmd", def.Mermaid(state{kind: waiting})},
		{"machine_highlight.dot", def.DOT(state{kind: waiting})},
		{"odd.mmd", oddDef.Mermaid("end")},
		{"odd.dot", oddDef.DOT("end")},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			if *update {
				require.NoError(t, os.MkdirAll("testdata", 0o755))
				require.NoError(t, os.WriteFile(path, []byte(tt.got), 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err, "run go test -update to create it")
			assert.Equal(t, string(want), tt.got)
		})
	}
}

func TestDiagramDeterministic(t *testing.T) {
	b1, b2 := newBuilder(), newBuilder()
	declareDrawn(b1)
	declareDrawnReversed(b2)
	d1, err := b1.Build()
	require.NoError(t, err)
	d2, err := b2.Build()
	require.NoError(t, err)
	assert.Equal(t, d1.Mermaid(state{kind: running}), d2.Mermaid(state{kind: running}))
	assert.Equal(t, d1.DOT(state{kind: running}), d2.DOT(state{kind: running}))
	assert.Equal(t, d1.Mermaid(), d1.Mermaid(state{kind: orphan}), "an unknown state is not highlighted")

	var nilDef *mealy.Definition[state, event, *record, action]
	assert.Empty(t, nilDef.Mermaid())
	assert.Empty(t, nilDef.DOT())
}

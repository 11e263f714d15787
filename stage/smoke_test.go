package stage_test

import (
	"context"
	"io"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/stage"
)

func count(n int) stage.Source[int] {
	i := 0
	return stage.SourceFunc[int](func(_ context.Context, emit func(int)) error {
		if i == n {
			return io.EOF
		}
		i++
		emit(i)
		return nil
	})
}

func TestSmoke(t *testing.T) {
	var got []string
	j := &stage.MemoryJournal{}
	p := stage.To(
		stage.Then(stage.From("count", count(1000)), "itoa",
			stage.TransformFunc[int, string](func(_ context.Context, in int, emit func(string)) error {
				emit(strconv.Itoa(in))
				return nil
			})),
		"collect", stage.SinkFunc[string](func(_ context.Context, s string) error {
			got = append(got, s)
			return nil
		}), stage.WithJournal(j))
	require.NoError(t, p.Start(context.Background()))
	require.NoError(t, p.Wait(context.Background()))
	assert.Len(t, got, 1000)
	st := p.Stats()
	t.Logf("%+v", st)
	for _, e := range j.Entries() {
		t.Logf("%+v", e)
	}
}

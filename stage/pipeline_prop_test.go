package stage_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stage"
)

var errPipeFatal = errors.New("pipe: fatal")

// pipeStageErrors returns the *StageErrors in err's tree, by stage.
func pipeStageErrors(err error) map[string]*stage.StageError {
	found := map[string]*stage.StageError{}
	var walk func(error)
	walk = func(err error) {
		if se, ok := err.(*stage.StageError); ok {
			found[se.Stage] = se
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			if e := u.Unwrap(); e != nil {
				walk(e)
			}
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	return found
}

// Regression tests for the bugs the properties found, each minimised to a
// plain case.

// closeFails is a transform whose Process returns process's error and whose
// Close hook returns closeErr.
type closeFails struct {
	process  func(v int) error
	closeErr error
}

func (c closeFails) Process(_ context.Context, v int, emit func(int)) error {
	if err := c.process(v); err != nil {
		return err
	}
	emit(v)
	return nil
}

func (c closeFails) Close() error { return c.closeErr }

// TestFailedStageCloseErrorDoesNotAbortPipeline: a stage that had failed
// ran its Close hook as a failure action; a Close error there was a double
// fault that ended the stage's loop, and the pipeline aborted every other
// stage (their items dead-lettered with ErrAborted, Wait reporting an
// abort nobody asked for). The failure of one stage drains the others; the
// Close error is reported with the stage's reason.
func TestFailedStageCloseErrorDoesNotAbortPipeline(t *testing.T) {
	errClose := errors.New("close failed")
	for _, tt := range []struct {
		name     string
		closeErr error
	}{
		{"Close error", errClose},
		{"Close panic", nil}, // see closePanics
	} {
		t.Run(tt.name, func(t *testing.T) {
			var mid stage.Transform[int, int] = closeFails{
				process: func(v int) error {
					if v == 3 {
						return stage.Fatal(errPipeFatal)
					}
					return nil
				},
				closeErr: tt.closeErr,
			}
			if tt.closeErr == nil {
				mid = closePanics{mid.(closeFails)}
			}
			n := 0
			src := stage.SourceFunc[int](func(_ context.Context, emit func(int)) error {
				if n == 10 {
					return io.EOF
				}
				n++
				emit(n)
				return nil
			})
			var got []int
			sink := stage.SinkFunc[int](func(_ context.Context, v int) error { got = append(got, v); return nil })
			letters := 0
			p := stage.To(stage.Then(stage.From("src", src), "mid", mid), "sink", sink,
				stage.WithBatchSize(1), stage.WithDeadLetter(func(stage.Item[any]) { letters++ }))
			ctx := context.Background()

			require.NoError(t, p.Start(ctx))
			err := p.Wait(ctx)

			assert.NotErrorIs(t, err, stage.ErrAborted, "nobody aborted")
			se := pipeStageErrors(err)
			require.Contains(t, se, "mid")
			assert.ErrorIs(t, se["mid"], errPipeFatal, "the stage's reason")
			if tt.closeErr != nil {
				assert.ErrorIs(t, se["mid"], errClose, "and its Close error")
			} else {
				var pe *stagefsm.PanicError
				assert.ErrorAs(t, se["mid"], &pe, "and its Close panic")
			}
			assert.Len(t, se, 1)
			st := p.Stats()
			assert.Equal(t, []stage.StateKind{stage.Drained, stage.Failed, stage.Drained},
				[]stage.StateKind{st.Stages[0].State.Kind, st.Stages[1].State.Kind, st.Stages[2].State.Kind})
			assert.Equal(t, []int{1, 2}, got, "the sink drained what mid sent before failing")
			assert.Equal(t, st.Emitted, st.Delivered+st.DeadLettered)
			assert.EqualValues(t, letters, st.DeadLettered)
		})
	}
}

// closePanics is closeFails with a Close hook that panics.
type closePanics struct{ closeFails }

func (c closePanics) Close() error { panic("close panicked") }

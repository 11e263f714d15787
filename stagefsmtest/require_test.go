package stagefsmtest_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

// recorded returns a Recorder filled by a run that starts, fails in
// Running with errBoom, and ends there because its failure action Close
// fails: timeline Created, Running, Failed; actions Open, Report, Close (the
// last one failed); one failure; no completion.
func recorded(t *testing.T) *stagefsmtest.Recorder[State, Event] {
	t.Helper()
	rec := &stagefsmtest.Recorder[State, Event]{}
	a := newActs(rec)
	a.Close = a.Close.Fails(errClose)
	sup := stagefsmtest.NewSupervisor(t, builder(a), failed).
		In(Created, stagefsmtest.Returns(start)).
		In(Running, stagefsmtest.Fails[Event](errBoom))
	err := stagefsm.Run(t.Context(), stagefsmtest.Record(rec, sup), Created, &Ctx{})
	require.ErrorIs(t, err, errClose, "a failing failure action ends Run")
	return rec
}

var errClose = errors.New("close failed")

// check runs a helper against a fake TB and returns its messages and
// whether it stopped the test.
func check(fn func(tb testing.TB)) (msgs []string, stopped bool) {
	tb := &fakeTB{}
	tb.run(fn)
	return tb.messages(), tb.stopped()
}

func TestRequireTimeline(t *testing.T) {
	rec := recorded(t)
	for _, tc := range []struct {
		name string
		want []State
		msg  string // "" = passes
	}{
		{"equal", []State{Created, Running, Failed}, ""},
		{"missing", []State{Created, Failed}, "stagefsmtest: state timeline differs (-want +got):\n" +
			"\t  Created\n" +
			"\t+ Running\n" +
			"\t  Failed"},
		{"extra", []State{Created, Running, Waiting, Failed}, "stagefsmtest: state timeline differs (-want +got):\n" +
			"\t  Created\n" +
			"\t  Running\n" +
			"\t- Waiting\n" +
			"\t  Failed"},
		{"replaced", []State{Created, Running, Done}, "stagefsmtest: state timeline differs (-want +got):\n" +
			"\t  Created\n" +
			"\t  Running\n" +
			"\t- Done\n" +
			"\t+ Failed"},
		{"empty", nil, "stagefsmtest: state timeline differs (-want +got):\n" +
			"\t+ Created\n" +
			"\t+ Running\n" +
			"\t+ Failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs, stopped := check(func(tb testing.TB) { stagefsmtest.RequireTimeline(tb, rec, tc.want...) })
			if tc.msg == "" {
				assert.Empty(t, msgs)
				assert.False(t, stopped)
				return
			}
			assert.Equal(t, []string{tc.msg}, msgs)
			assert.True(t, stopped, "Require stops the test")
		})
	}
}

func TestRequireActions(t *testing.T) {
	rec := recorded(t)
	msgs, stopped := check(func(tb testing.TB) { stagefsmtest.RequireActions(tb, rec, "Open", "Report", "Close") })
	assert.Empty(t, msgs)
	assert.False(t, stopped)

	msgs, stopped = check(func(tb testing.TB) { stagefsmtest.RequireActions(tb, rec, "Open", "Close", "Cleanup") })
	assert.Equal(t, []string{"stagefsmtest: executed actions differ (-want +got):\n" +
		"\t  Open\n" +
		"\t+ Report\n" +
		"\t  Close (failed: close failed)\n" +
		"\t- Cleanup"}, msgs)
	assert.True(t, stopped)
}

func TestRequireFailures(t *testing.T) {
	rec := recorded(t)
	msgs, stopped := check(func(tb testing.TB) { stagefsmtest.RequireFailures(tb, rec, errBoom) })
	assert.Empty(t, msgs)
	assert.False(t, stopped)

	msgs, stopped = check(func(tb testing.TB) { stagefsmtest.RequireFailures(tb, rec) })
	assert.Equal(t, []string{"stagefsmtest: routed failures differ (-want +got):\n" +
		"\t+ dispatch in state Running: boom -> event Error(dispatch in state Running: boom)"}, msgs)
	assert.True(t, stopped)

	msgs, _ = check(func(tb testing.TB) { stagefsmtest.RequireFailures(tb, rec, errClose) })
	assert.Equal(t, []string{"stagefsmtest: routed failures differ (-want +got):\n" +
		"\t- errors.Is close failed\n" +
		"\t+ dispatch in state Running: boom -> event Error(dispatch in state Running: boom)"}, msgs)
}

func TestRequireCompletions(t *testing.T) {
	rec := recorded(t)
	msgs, stopped := check(func(tb testing.TB) { stagefsmtest.RequireCompletions(tb, rec, 0) })
	assert.Empty(t, msgs, "Run ended before Terminate")
	assert.False(t, stopped)

	msgs, stopped = check(func(tb testing.TB) { stagefsmtest.RequireCompletions(tb, rec, 1) })
	assert.Equal(t, []string{"stagefsmtest: WriteCompletionEvent called 0 times, want 1"}, msgs)
	assert.True(t, stopped)

	var done stagefsmtest.Recorder[State, Event]
	sup := stagefsmtest.NewSupervisor(t, builder(acts{}), failed).
		In(Done, stagefsmtest.Returns(terminate).Forever())
	require.NoError(t, stagefsm.Run(t.Context(), stagefsmtest.Record(&done, sup), Done, &Ctx{}))
	sup.CompleteWith(errClose)
	require.ErrorIs(t, stagefsm.Run(t.Context(), stagefsmtest.Record(&done, sup), Done, &Ctx{}), errClose)

	msgs, _ = check(func(tb testing.TB) { stagefsmtest.RequireCompletions(tb, &done, 1) })
	assert.Equal(t, []string{"stagefsmtest: WriteCompletionEvent called 2 times, want 1\n" +
		"\tcall 1: ok\n" +
		"\tcall 2: error: close failed"}, msgs)
}

func TestRequireNilRecorder(t *testing.T) {
	var rec *stagefsmtest.Recorder[State, Event]
	for name, fn := range map[string]func(tb testing.TB){
		"RequireTimeline":    func(tb testing.TB) { stagefsmtest.RequireTimeline(tb, rec) },
		"RequireActions":     func(tb testing.TB) { stagefsmtest.RequireActions(tb, rec) },
		"RequireFailures":    func(tb testing.TB) { stagefsmtest.RequireFailures(tb, rec) },
		"RequireCompletions": func(tb testing.TB) { stagefsmtest.RequireCompletions(tb, rec, 0) },
	} {
		msgs, stopped := check(fn)
		assert.Equal(t, []string{"stagefsmtest: " + name + ": nil Recorder"}, msgs)
		assert.True(t, stopped)
	}
}

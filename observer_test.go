package stagefsm_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
)

// obsBenchToggle is a two-state machine for benchmarks: every event flips the
// state, and no action is returned.
type obsBenchToggle struct{ on bool }

func (m *obsBenchToggle) State() bool { return m.on }

func (m *obsBenchToggle) Handle(context.Context, int, *testing.B) ([]obsBenchAction, error) {
	m.on = !m.on
	return nil, nil
}

type obsBenchAction struct{}

func (obsBenchAction) Execute(context.Context, *testing.B) error { return nil }

// obsBenchStage is a supervisor whose dispatch is the benchmark loop: each
// b.Loop iteration is one dispatch and one committed transition, so setup
// costs of Run stay outside the measurement.
type obsBenchStage struct{}

func (obsBenchStage) Name() string                               { return "bench" }
func (obsBenchStage) EventForActionError(error) int              { return 0 }
func (obsBenchStage) WriteCompletionEvent(context.Context) error { return nil }

func (obsBenchStage) BuildStateMachine(initial bool) (stagefsm.Machine[bool, int, *testing.B, obsBenchAction], error) {
	return &obsBenchToggle{on: initial}, nil
}

func (obsBenchStage) DispatchState(_ context.Context, _ bool, b *testing.B) (stagefsm.Directive[int], error) {
	if b.Loop() {
		return stagefsm.Transition(1), nil
	}
	return stagefsm.Terminate[int](), nil
}

func BenchmarkLoopTransition(b *testing.B) {
	b.ReportAllocs()
	if err := stagefsm.Run(context.Background(), obsBenchStage{}, false, b); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkLoopTransitionObserver(b *testing.B) {
	b.ReportAllocs()
	n := 0
	obs := stagefsm.WithObserver(stagefsm.Observer[bool, int]{
		OnTransition: func(bool, int, bool, int) { n++ },
	})
	if err := stagefsm.Run(context.Background(), obsBenchStage{}, false, b, obs); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLoopTransitionStart runs the same loop under Start: each
// iteration also looks at the control queue and publishes the new state.
func BenchmarkLoopTransitionStart(b *testing.B) {
	b.ReportAllocs()
	st := stagefsm.Start(context.Background(), obsBenchStage{}, false, b)
	if err := st.Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// ctlRecorder is an Observer that writes each call to the stage's log, so
// that its calls interleave with the loop's calls to the fake.
func ctlRecorder(r *ctlRec) stagefsm.Observer[string, string] {
	return stagefsm.Observer[string, string]{
		OnTransition: func(from, event, to string, actions int) {
			r.add("OnTransition %s -%s-> %s, %d actions", from, event, to, actions)
		},
		OnFailure: func(from, event, to string, cause error) {
			var de *stagefsm.DispatchError
			r.add("OnFailure %s -%s-> %s, dispatch error: %t", from, event, to, errors.As(cause, &de))
		},
		OnComplete: func(state string, err error) { r.add("OnComplete %s, %v", state, err) },
		OnExit:     func(state string, err error) { r.add("OnExit %s, error: %t", state, err != nil) },
	}
}

// ctlScripted: created -start-> running (2 actions); running's dispatch fails
// once, routed to failed (1 action); failed terminates.
func ctlScripted() *ctlFake {
	return &ctlFake{
		edges: map[string]map[string]ctlEdge{
			"created": {"start": ctlTo("running", ctlAct{name: "a1"}, ctlAct{name: "a2"})},
			"running": {"fail": ctlTo("failed", ctlAct{name: "report"})},
		},
		dispatch: func(_ context.Context, s string, _ *ctlRec) (stagefsm.Directive[string], error) {
			switch s {
			case "created":
				return stagefsm.Transition("start"), nil
			case "running":
				return stagefsm.Directive[string]{}, errors.New("flaky")
			}
			return stagefsm.Terminate[string](), nil
		},
	}
}

func TestObserverCallOrderAndArguments(t *testing.T) {
	r := &ctlRec{}
	err := stagefsm.Run(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlScripted()), "created", r,
		stagefsm.WithObserver(ctlRecorder(r)))
	require.NoError(t, err)
	assert.Equal(t, []string{
		"dispatch created",
		"handle start: created -> running",
		"OnTransition created -start-> running, 2 actions", // after the commit, before the actions
		"exec a1", "exec a2",
		"dispatch running",
		"handle fail: running -> failed",
		"OnFailure running -fail-> failed, dispatch error: true",
		"exec report",
		"dispatch failed",
		"OnComplete failed, <nil>",
		"OnExit failed, error: false",
	}, r.lines())
}

func TestObserverUnderStartSeesControlAndTimeoutTransitions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := ctlGated()
		f.timeouts = map[string]ctlTimeout{"draining": {after: time.Second, event: "drained"}}
		f.dispatch = ctlByState(map[string]stagefsm.Directive[string]{"running": ctlIdle, "draining": ctlIdle})
		r := &ctlRec{}
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "gate", r,
			stagefsm.WithObserver(ctlRecorder(r)), stagefsm.WithIdleBackoff(time.Hour, time.Hour))
		defer ctlFinish(t, st)
		require.NoError(t, st.Send(t.Context(), "open"))
		require.NoError(t, st.Send(t.Context(), "drain"))
		require.NoError(t, st.Wait(t.Context()))

		var calls []string
		for _, l := range r.lines() {
			if strings.HasPrefix(l, "On") {
				calls = append(calls, l)
			}
		}
		assert.Equal(t, []string{
			"OnTransition gate -open-> running, 0 actions",      // control event, Block
			"OnTransition running -drain-> draining, 1 actions", // control event, Poll (woke the idle wait)
			"OnTransition draining -drained-> done, 1 actions",  // state timeout
			"OnComplete done, <nil>",
			"OnExit done, error: false",
		}, calls)
	})
}

func TestObserverOnExitWhenRunFails(t *testing.T) {
	f := ctlScripted()
	f.edges["running"] = nil // the failure event is rejected: Run fails
	r := &ctlRec{}
	var exitErr error
	obs := ctlRecorder(r)
	obs.OnExit = func(_ string, err error) { exitErr = err }
	err := stagefsm.Run(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "created", r,
		stagefsm.WithObserver(obs))
	require.ErrorIs(t, err, stagefsm.ErrUnhandledEvent)
	assert.Same(t, err, exitErr, "OnExit gets Run's result")
	assert.Zero(t, r.count("OnComplete running, <nil>"))
	assert.NotContains(t, strings.Join(r.lines(), "\n"), "OnFailure", "a rejected failure is not committed")
}

func TestObserverTypeMismatchIsAnError(t *testing.T) {
	r := &ctlRec{}
	f := ctlScripted()
	built := false
	f.dispatch = func(context.Context, string, *ctlRec) (stagefsm.Directive[string], error) {
		built = true
		return stagefsm.Terminate[string](), nil
	}
	wrong := stagefsm.WithObserver(stagefsm.Observer[int, int]{OnExit: func(int, error) {}})
	err := stagefsm.Run(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "created", r, wrong)
	assert.Error(t, err)
	assert.False(t, built, "nothing runs")

	st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "created", r, wrong)
	assert.Error(t, st.Wait(t.Context()))
	assert.False(t, built)
}

func TestObserverPanicEndsRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		obs  stagefsm.Observer[string, string]
	}{
		{"OnTransition", stagefsm.Observer[string, string]{OnTransition: func(string, string, string, int) { panic("t") }}},
		{"OnFailure", stagefsm.Observer[string, string]{OnFailure: func(string, string, string, error) { panic("f") }}},
		{"OnComplete", stagefsm.Observer[string, string]{OnComplete: func(string, error) { panic("c") }}},
		{"OnExit", stagefsm.Observer[string, string]{OnExit: func(string, error) { panic("e") }}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := stagefsm.Run(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlScripted()), "created", &ctlRec{},
				stagefsm.WithObserver(tc.obs))
			var pe *stagefsm.PanicError
			assert.ErrorAs(t, err, &pe)
		})
	}
}

func TestEmptyObserverIsNone(t *testing.T) {
	r := &ctlRec{}
	err := stagefsm.Run(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlScripted()), "created", r,
		stagefsm.WithObserver(ctlRecorder(r)), stagefsm.WithObserver(stagefsm.Observer[string, string]{}))
	require.NoError(t, err)
	assert.NotContains(t, strings.Join(r.lines(), "\n"), "On", "the later, empty observer replaced the first")
}

package stagefsm_test

import (
	"context"
	"errors"
	"testing"

	"github.com/looplab/fsm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/looplab"
	"github.com/stagefsm/stagefsm/mealy"
)

// The conformance test runs one scripted stage under stagefsm.Run twice:
// once over a mealy machine, once over a looplab/fsm machine through
// looplab.FromFSM. Both machines encode the same FSM:
//
//	created -start->  running  [Announce]
//	running -finish-> done     [Flush, Publish]
//	failed  -retry->  running  [Resume]
//	any     -error->  failed   [ReportFailure]
//
// The script: start; a dispatch error in running (→ failed); retry; finish,
// whose Flush fails, so Publish is skipped and the failure is routed from
// done (→ failed); Terminate. The observable results — committed states,
// actions executed, failures routed, completion, Run's result — must be
// the same.

type cState int

const (
	cCreated cState = iota
	cRunning
	cDone
	cFailed
)

var cStateNames = [...]string{"created", "running", "done", "failed"}

func (s cState) String() string { return cStateNames[s] }

type cKind int

const (
	cStart cKind = iota
	cFinish
	cRetry
	cError
	cPause // no machine handles it
)

var cKindNames = [...]string{"start", "finish", "retry", "error", "pause"}

func (k cKind) String() string { return cKindNames[k] }

type cEvent struct {
	kind cKind
	err  error // for cError
}

// cCtx is the stage context: the script's progress and what was observed.
type cCtx struct {
	running, failed int // dispatches seen in each state
	unhandledAt     int // the running dispatch that feeds cPause; 0: never
	executed        []string
}

type cAction struct {
	name string
	err  error
}

func (a cAction) String() string { return a.name }

func (a cAction) Execute(_ context.Context, c *cCtx) error {
	if a.err != nil {
		c.executed = append(c.executed, a.name+" (failed)")
	} else {
		c.executed = append(c.executed, a.name)
	}
	return a.err
}

var (
	errDisk  = errors.New("disk full")
	errFlush = errors.New("flush failed")

	announce = cAction{name: "Announce"}
	flush    = cAction{name: "Flush", err: errFlush}
	publish  = cAction{name: "Publish"}
	resume   = cAction{name: "Resume"}
	report   = cAction{name: "ReportFailure"}
)

func conformanceMealy(t *testing.T) func(cState) (stagefsm.Machine[cState, cEvent, *cCtx, cAction], error) {
	b := mealy.New[cState, cEvent, *cCtx, cAction](func(s cState) cState { return s }, func(e cEvent) cKind { return e.kind })
	b.Initial(cCreated)
	b.FailureEvent(cError)
	b.On(cCreated, cStart).To(cRunning).Do(announce)
	b.On(cRunning, cFinish).To(cDone).Do(flush, publish)
	b.On(cFailed, cRetry).To(cRunning).Do(resume)
	b.OnAny(cError).To(cFailed).Do(report)
	def, err := b.Build()
	require.NoError(t, err)
	return func(initial cState) (stagefsm.Machine[cState, cEvent, *cCtx, cAction], error) {
		return def.New(initial)
	}
}

func conformanceLooplab(initial cState) (stagefsm.Machine[cState, cEvent, *cCtx, cAction], error) {
	f := fsm.NewFSM(initial.String(), fsm.Events{
		{Name: "start", Src: []string{"created"}, Dst: "running"},
		{Name: "finish", Src: []string{"running"}, Dst: "done"},
		{Name: "retry", Src: []string{"failed"}, Dst: "running"},
		{Name: "error", Src: []string{"created", "running", "done", "failed"}, Dst: "failed"},
	}, nil)
	return looplab.FromFSM(f, looplab.Config[cState, cEvent, *cCtx, cAction]{
		Event: func(e cEvent) string { return e.kind.String() },
		State: func(name string) cState {
			for i, n := range cStateNames {
				if n == name {
					return cState(i)
				}
			}
			return -1
		},
		Actions: func(_ cState, e cEvent, _ cState, _ *cCtx) []cAction {
			switch e.kind {
			case cStart:
				return []cAction{announce}
			case cFinish:
				return []cAction{flush, publish}
			case cRetry:
				return []cAction{resume}
			default: // cError
				return []cAction{report}
			}
		},
	})
}

// recorder wraps a machine and records every state it commits.
type recorder struct {
	stagefsm.Machine[cState, cEvent, *cCtx, cAction]
	timeline []cState
}

func (r *recorder) Handle(ctx context.Context, e cEvent, c *cCtx) ([]cAction, error) {
	actions, err := r.Machine.Handle(ctx, e, c)
	if err == nil {
		r.timeline = append(r.timeline, r.State())
	}
	return actions, err
}

// scriptedStage is the supervisor of the scenario.
type scriptedStage struct {
	build       func(cState) (stagefsm.Machine[cState, cEvent, *cCtx, cAction], error)
	rec         *recorder
	failures    []confFailure
	completions int
}

// confFailure is what the stage observed of a routed failure.
type confFailure struct {
	where   string // "dispatch" or "action"
	state   string // DispatchError.State
	index   int    // ActionError.Index
	action  string
	skipped []string
	cause   error // the sentinel the error wraps
}

func (s *scriptedStage) Name() string { return "scripted" }

func (s *scriptedStage) WriteCompletionEvent(context.Context) error {
	s.completions++
	return nil
}

func (s *scriptedStage) BuildStateMachine(initial cState) (stagefsm.Machine[cState, cEvent, *cCtx, cAction], error) {
	m, err := s.build(initial)
	if err != nil {
		return nil, err
	}
	s.rec = &recorder{Machine: m, timeline: []cState{m.State()}}
	return s.rec, nil
}

func (s *scriptedStage) EventForActionError(err error) cEvent {
	var f confFailure
	var de *stagefsm.DispatchError
	var ae *stagefsm.ActionError
	switch {
	case errors.As(err, &de):
		f.where, f.state = "dispatch", de.State
	case errors.As(err, &ae):
		f.where, f.index, f.action = "action", ae.Index, ae.Action.(cAction).name
		for _, a := range ae.Skipped {
			f.skipped = append(f.skipped, a.(cAction).name)
		}
	}
	for _, sentinel := range []error{errDisk, errFlush} {
		if errors.Is(err, sentinel) {
			f.cause = sentinel
		}
	}
	s.failures = append(s.failures, f)
	return cEvent{kind: cError, err: err}
}

func (s *scriptedStage) DispatchState(_ context.Context, state cState, c *cCtx) (stagefsm.Directive[cEvent], error) {
	switch state {
	case cCreated:
		return stagefsm.Transition(cEvent{kind: cStart}), nil
	case cRunning:
		c.running++
		switch c.running {
		case c.unhandledAt:
			return stagefsm.Transition(cEvent{kind: cPause}), nil
		case 1:
			return stagefsm.Directive[cEvent]{}, errDisk
		default:
			return stagefsm.Transition(cEvent{kind: cFinish}), nil
		}
	case cFailed:
		c.failed++
		if c.failed == 1 {
			return stagefsm.Transition(cEvent{kind: cRetry}), nil
		}
		return stagefsm.Terminate[cEvent](), nil
	default: // cDone: never reached, its failure is routed at once
		return stagefsm.Terminate[cEvent](), nil
	}
}

// observation is everything the scenario lets a user observe.
type observation struct {
	Timeline    []cState
	Executed    []string
	Failures    []confFailure
	Completions int
	Unhandled   bool // Run's error matches stagefsm.ErrUnhandledEvent
	Result      error
}

func observe(t *testing.T, build func(cState) (stagefsm.Machine[cState, cEvent, *cCtx, cAction], error), unhandledAt int) observation {
	t.Helper()
	s := &scriptedStage{build: build}
	c := &cCtx{unhandledAt: unhandledAt}
	err := stagefsm.Run(t.Context(), s, cCreated, c)
	require.NotNil(t, s.rec, "the machine was built")
	o := observation{
		Timeline:    s.rec.timeline,
		Executed:    c.executed,
		Failures:    s.failures,
		Completions: s.completions,
		Unhandled:   errors.Is(err, stagefsm.ErrUnhandledEvent),
	}
	if err != nil && !o.Unhandled {
		o.Result = err
	}
	return o
}

func TestConformanceMealyAndLooplab(t *testing.T) {
	machines := map[string]func(cState) (stagefsm.Machine[cState, cEvent, *cCtx, cAction], error){
		"mealy":   conformanceMealy(t),
		"looplab": conformanceLooplab,
	}
	tests := []struct {
		name        string
		unhandledAt int
		want        observation
	}{
		{
			name: "dispatch error, action error, terminate",
			want: observation{
				Timeline: []cState{cCreated, cRunning, cFailed, cRunning, cDone, cFailed},
				Executed: []string{"Announce", "ReportFailure", "Resume", "Flush (failed)", "ReportFailure"},
				Failures: []confFailure{
					{where: "dispatch", state: "running", cause: errDisk},
					{where: "action", index: 0, action: "Flush", skipped: []string{"Publish"}, cause: errFlush},
				},
				Completions: 1,
			},
		},
		{
			name:        "a normal event no state handles ends Run",
			unhandledAt: 2,
			want: observation{
				Timeline:  []cState{cCreated, cRunning, cFailed, cRunning},
				Executed:  []string{"Announce", "ReportFailure", "Resume"},
				Failures:  []confFailure{{where: "dispatch", state: "running", cause: errDisk}},
				Unhandled: true,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]observation{}
			for name, build := range machines {
				got[name] = observe(t, build, tt.unhandledAt)
				assert.Equal(t, tt.want, got[name], name)
			}
			assert.Equal(t, got["mealy"], got["looplab"], "mealy and looplab observed alike")
		})
	}
}

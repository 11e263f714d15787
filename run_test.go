package stagefsm_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/stagefsm/stagefsm"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The fake stage below is scripted by closures. Everything it observes is
// appended to the stage context's trace, so a test can assert the exact order
// of dispatches, transitions, actions and the completion.

// state is the fake FSM's state.
type state int

const (
	created state = iota
	running
	waiting
	failed
	done
	broken // its String method panics
)

func (s state) String() string {
	switch s {
	case created:
		return "Created"
	case running:
		return "Running"
	case waiting:
		return "Waiting"
	case failed:
		return "Failed"
	case done:
		return "Done"
	case broken:
		panic("String called on the broken state")
	default:
		return fmt.Sprintf("state(%d)", int(s))
	}
}

// event is the fake FSM's event. A failure event carries the error Run gave
// to EventForActionError.
type event struct {
	name string
	err  error
}

const (
	failure = "failure" // the event EventForActionError returns
	timeout = "timeout" // the event a timed machine fires
)

func ev(name string) event { return event{name: name} }

func (e event) String() string { return e.name }

// stageCtx is the stage context C.
type stageCtx struct {
	trace []string
	n     int // mutated by actions
}

func (c *stageCtx) add(format string, args ...any) {
	c.trace = append(c.trace, fmt.Sprintf(format, args...))
}

// action is the fake action A; a nil run succeeds.
type action struct {
	name string
	run  func(ctx context.Context, c *stageCtx) error
}

func act(name string) *action { return &action{name: name} }

func actFn(name string, run func(ctx context.Context, c *stageCtx) error) *action {
	return &action{name: name, run: run}
}

func failingAct(name string, err error) *action {
	return actFn(name, func(context.Context, *stageCtx) error { return err })
}

func (a *action) Execute(ctx context.Context, c *stageCtx) error {
	c.add("exec %s", a.name)
	if a.run == nil {
		return nil
	}
	return a.run(ctx, c)
}

func (a *action) String() string { return a.name }

// edge and to make a transition table: from a state, on an event name, to a
// state with actions.
type edge struct {
	from  state
	event string
}

type to struct {
	state   state
	actions []*action
}

// machine is the fake Machine: a transition table plus hooks.
type machine struct {
	state    state
	edges    map[edge]to
	onHandle func(ctx context.Context, e event) error // runs first; an error rejects the event
	onState  func()
}

func (m *machine) State() state {
	if m.onState != nil {
		m.onState()
	}
	return m.state
}

func (m *machine) Handle(ctx context.Context, e event, c *stageCtx) ([]*action, error) {
	if m.onHandle != nil {
		if err := m.onHandle(ctx, e); err != nil {
			return nil, err
		}
	}
	t, ok := m.edges[edge{m.state, e.name}]
	if !ok {
		return nil, fmt.Errorf("%w: %s in state %d", stagefsm.ErrUnhandledEvent, e.name, int(m.state))
	}
	c.add("%d -%s-> %d", int(m.state), e.name, int(t.state))
	m.state = t.state
	return t.actions, nil
}

// timedMachine adds state timeouts: entering a state listed in after arms
// a deadline that far ahead, with the event "timeout"; leaving disarms it;
// handling "timeout" re-arms it.
type timedMachine struct {
	*machine
	after     map[state]time.Duration
	deadline  time.Time
	armed     bool
	onTimeout func()
}

func (m *timedMachine) arm() {
	d, ok := m.after[m.state]
	m.armed = ok
	if ok {
		m.deadline = time.Now().Add(d)
	}
}

func (m *timedMachine) Handle(ctx context.Context, e event, c *stageCtx) ([]*action, error) {
	from := m.state
	actions, err := m.machine.Handle(ctx, e, c)
	if err == nil && (m.state != from || e.name == timeout) {
		m.arm()
	}
	return actions, err
}

func (m *timedMachine) Timeout() (time.Time, event, bool) {
	if m.onTimeout != nil {
		m.onTimeout()
	}
	return m.deadline, ev(timeout), m.armed
}

type fakeMachine = stagefsm.Machine[state, event, *stageCtx, *action]

// sup is the fake HandlerSupervised.
type sup struct {
	c        *stageCtx
	edges    map[edge]to
	after    map[state]time.Duration // non-nil: the machine implements stagefsm.Timed
	dispatch func(ctx context.Context, s state, c *stageCtx) (stagefsm.Directive[event], error)

	// Hooks; nil ones do nothing.
	build      func(initial state) (fakeMachine, error) // replaces the default machine
	onHandle   func(ctx context.Context, e event) error
	onState    func()
	onTimeout  func()
	onError    func(err error)
	onName     func()
	completion func(ctx context.Context) error

	m           *machine // the machine built
	routed      []error  // what EventForActionError received
	completions int
}

// newSup returns a stage with the given table and dispatch, and its context.
func newSup(edges map[edge]to, dispatch func(context.Context, state, *stageCtx) (stagefsm.Directive[event], error)) (*sup, *stageCtx) {
	c := &stageCtx{}
	return &sup{c: c, edges: edges, dispatch: dispatch}, c
}

// stdEdges: Created -start-> Running -finish-> Done; a failure in Running or
// Failed goes to Failed. Created and Done have no failure transition.
func stdEdges() map[edge]to {
	return map[edge]to{
		{created, "start"}:  {state: running},
		{running, "work"}:   {state: running},
		{running, "finish"}: {state: done},
		{running, failure}:  {state: failed},
		{failed, failure}:   {state: failed},
	}
}

func (s *sup) Name() string {
	if s.onName != nil {
		s.onName()
	}
	return "fake"
}

func (s *sup) BuildStateMachine(initial state) (fakeMachine, error) {
	if s.build != nil {
		return s.build(initial)
	}
	s.m = &machine{state: initial, edges: s.edges, onHandle: s.onHandle, onState: s.onState}
	if s.after == nil {
		return s.m, nil
	}
	tm := &timedMachine{machine: s.m, after: s.after, onTimeout: s.onTimeout}
	tm.arm()
	return tm, nil
}

func (s *sup) DispatchState(ctx context.Context, st state, c *stageCtx) (stagefsm.Directive[event], error) {
	c.add("dispatch %d", int(st))
	return s.dispatch(ctx, st, c)
}

func (s *sup) EventForActionError(err error) event {
	s.routed = append(s.routed, err)
	if s.onError != nil {
		s.onError(err)
	}
	return event{name: failure, err: err}
}

func (s *sup) WriteCompletionEvent(ctx context.Context) error {
	s.completions++
	s.c.add("complete")
	if s.completion != nil {
		return s.completion(ctx)
	}
	return nil
}

// step is one scripted dispatch.
type step func(ctx context.Context, s state, c *stageCtx) (stagefsm.Directive[event], error)

// script dispatches the steps in order, then Terminate forever.
func script(steps ...step) func(context.Context, state, *stageCtx) (stagefsm.Directive[event], error) {
	i := 0
	return func(ctx context.Context, s state, c *stageCtx) (stagefsm.Directive[event], error) {
		if i >= len(steps) {
			return stagefsm.Terminate[event](), nil
		}
		i++
		return steps[i-1](ctx, s, c)
	}
}

func directive(d stagefsm.Directive[event]) step {
	return func(context.Context, state, *stageCtx) (stagefsm.Directive[event], error) { return d, nil }
}

func cont() step             { return directive(stagefsm.Continue[event]()) }
func idle() step             { return directive(stagefsm.Idle[event]()) }
func trans(name string) step { return directive(stagefsm.Transition(ev(name))) }
func zeroDirective() step    { return directive(stagefsm.Directive[event]{}) }
func fail(err error) step    { return errorStep(err) }
func repeat(n int, s step) []step {
	steps := make([]step, n)
	for i := range steps {
		steps[i] = s
	}
	return steps
}

func errorStep(err error) step {
	return func(context.Context, state, *stageCtx) (stagefsm.Directive[event], error) {
		return stagefsm.Directive[event]{}, err
	}
}

func panicking(v any) step {
	return func(context.Context, state, *stageCtx) (stagefsm.Directive[event], error) { panic(v) }
}

// blockUntilDone blocks until ctx is done and returns wrap(ctx.Err()).
func blockUntilDone(wrap func(error) error) step {
	return func(ctx context.Context, _ state, _ *stageCtx) (stagefsm.Directive[event], error) {
		<-ctx.Done()
		return stagefsm.Directive[event]{}, wrap(ctx.Err())
	}
}

func same(err error) error { return err }

// goRun starts Run in a goroutine and returns its result channel.
func goRun(ctx context.Context, s *sup, initial state, opts ...stagefsm.Option) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- stagefsm.Run(ctx, s, initial, s.c, opts...) }()
	return errc
}

var (
	errCause  = errors.New("handler failed")
	errAction = errors.New("action failed")
	errReport = errors.New("failure report failed")
	errBuild  = errors.New("cannot build")
	errWrite  = errors.New("cannot write completion")
	errReject = errors.New("machine says no")
	errStop   = errors.New("operator stop")
	errBoom   = errors.New("boom")
)

// ---- every way Run returns ----

func TestRunTerminateWritesCompletionOnce(t *testing.T) {
	s, c := newSup(stdEdges(), script(trans("start"), cont(), trans("finish")))

	err := stagefsm.Run(t.Context(), s, created, c)

	require.NoError(t, err)
	assert.Equal(t, 1, s.completions)
	assert.Empty(t, s.routed)
	assert.Equal(t, []string{
		"dispatch 0", "0 -start-> 1",
		"dispatch 1",
		"dispatch 1", "1 -finish-> 4",
		"dispatch 4", "complete",
	}, c.trace)
}

func TestRunReturnsCompletionError(t *testing.T) {
	s, c := newSup(stdEdges(), script())
	s.completion = func(context.Context) error { return errWrite }

	err := stagefsm.Run(t.Context(), s, running, c)

	require.ErrorIs(t, err, errWrite)
	assert.Equal(t, 1, s.completions)
	assert.Empty(t, s.routed)
}

func TestRunRejectedNormalEventIsFatal(t *testing.T) {
	s, c := newSup(stdEdges(), script(trans("bogus")))

	err := stagefsm.Run(t.Context(), s, running, c)

	require.ErrorIs(t, err, stagefsm.ErrUnhandledEvent)
	assert.Empty(t, s.routed, "a rejected normal event is not routed as a failure")
	assert.Zero(t, s.completions)
	assert.Equal(t, []string{"dispatch 1"}, c.trace)
	assert.Equal(t, running, s.m.state)
}

func TestRunRejectedFailureEventIsFatal(t *testing.T) {
	edges := stdEdges()
	s, c := newSup(edges, script(fail(errCause))) // Created has no failure transition

	err := stagefsm.Run(t.Context(), s, created, c)

	require.ErrorIs(t, err, errCause, "the original failure")
	require.ErrorIs(t, err, stagefsm.ErrUnhandledEvent, "the machine's error")
	require.Len(t, s.routed, 1)
	var de *stagefsm.DispatchError
	require.ErrorAs(t, s.routed[0], &de)
	assert.Equal(t, "Created", de.State)
	assert.Zero(t, s.completions)
	assert.Equal(t, []string{"dispatch 0"}, c.trace)
}

func TestRunFailureActionErrorIsFatal(t *testing.T) {
	edges := stdEdges()
	edges[edge{running, failure}] = to{state: failed, actions: []*action{
		act("log"), failingAct("report", errReport), act("cleanup"),
	}}
	s, c := newSup(edges, script(fail(errCause)))

	err := stagefsm.Run(t.Context(), s, running, c)

	require.ErrorIs(t, err, errReport, "the failure action's error")
	require.ErrorIs(t, err, errCause, "the failure being routed")
	assert.Len(t, s.routed, 1, "a double fault is not routed again")
	assert.Zero(t, s.completions)
	assert.Equal(t, []string{"dispatch 1", "1 -failure-> 3", "exec log", "exec report"}, c.trace)
}

func TestRunFailureLoopReturnsErrFailureLoop(t *testing.T) {
	edges := stdEdges()
	edges[edge{running, failure}] = to{state: running} // the failure transition stays put
	s, c := newSup(edges, func(context.Context, state, *stageCtx) (stagefsm.Directive[event], error) {
		return stagefsm.Directive[event]{}, errCause
	})

	err := stagefsm.Run(t.Context(), s, running, c, stagefsm.WithMaxConsecutiveFailures(3))

	require.ErrorIs(t, err, stagefsm.ErrFailureLoop)
	require.ErrorIs(t, err, errCause, "the failure that was not routed")
	assert.Len(t, s.routed, 3)
	assert.Zero(t, s.completions)
}

func TestRunBuildErrorIsReturned(t *testing.T) {
	s, c := newSup(stdEdges(), script())
	s.build = func(state) (fakeMachine, error) { return nil, errBuild }

	err := stagefsm.Run(t.Context(), s, created, c)

	require.ErrorIs(t, err, errBuild)
	assert.Empty(t, c.trace, "nothing runs after a failed build")
	assert.Zero(t, s.completions)
}

func TestRunNilSupervisorOrMachine(t *testing.T) {
	t.Run("nil supervisor", func(t *testing.T) {
		var h stagefsm.HandlerSupervised[state, event, *stageCtx, *action]
		err := stagefsm.Run(t.Context(), h, created, &stageCtx{})
		assert.Error(t, err)
	})
	t.Run("typed nil supervisor", func(t *testing.T) {
		var s *sup
		var err error
		require.NotPanics(t, func() { err = stagefsm.Run(t.Context(), s, created, &stageCtx{}) })
		var pe *stagefsm.PanicError
		assert.ErrorAs(t, err, &pe)
	})
	t.Run("nil machine", func(t *testing.T) {
		s, c := newSup(stdEdges(), script())
		s.build = func(state) (fakeMachine, error) { return nil, nil }
		err := stagefsm.Run(t.Context(), s, created, c)
		assert.Error(t, err)
		assert.Empty(t, c.trace)
	})
	t.Run("typed nil machine", func(t *testing.T) {
		s, c := newSup(stdEdges(), script())
		s.build = func(state) (fakeMachine, error) { return (*machine)(nil), nil }
		var err error
		require.NotPanics(t, func() { err = stagefsm.Run(t.Context(), s, created, c) })
		var pe *stagefsm.PanicError
		assert.ErrorAs(t, err, &pe)
		assert.Empty(t, c.trace)
	})
}

// ---- transitions, actions and the failure path ----

func TestRunExecutesActionsInOrderWithSharedContext(t *testing.T) {
	var seen []int
	edges := stdEdges()
	edges[edge{created, "start"}] = to{state: running, actions: []*action{
		actFn("first", func(_ context.Context, c *stageCtx) error { c.n = 1; return nil }),
		actFn("second", func(_ context.Context, c *stageCtx) error { seen = append(seen, c.n); c.n *= 10; return nil }),
		actFn("third", func(_ context.Context, c *stageCtx) error { seen = append(seen, c.n); c.n++; return nil }),
	}}
	s, c := newSup(edges, script(trans("start"), trans("finish")))

	err := stagefsm.Run(t.Context(), s, created, c)

	require.NoError(t, err)
	assert.Equal(t, []int{1, 10}, seen, "each action sees the context as the previous one left it")
	assert.Equal(t, 11, c.n)
	assert.Equal(t, []string{
		"dispatch 0", "0 -start-> 1", "exec first", "exec second", "exec third",
		"dispatch 1", "1 -finish-> 4",
		"dispatch 4", "complete",
	}, c.trace)
}

func TestRunActionFailureIsRoutedFromEnteredState(t *testing.T) {
	first, second, third, fourth := act("first"), failingAct("second", errAction), act("third"), act("fourth")
	edges := stdEdges()
	edges[edge{created, "start"}] = to{state: running, actions: []*action{first, second, third, fourth}}
	edges[edge{running, failure}] = to{state: failed, actions: []*action{act("report")}}
	var failureEvents []event
	s, c := newSup(edges, script(trans("start")))
	s.onHandle = func(_ context.Context, e event) error {
		if e.name == failure {
			failureEvents = append(failureEvents, e)
		}
		return nil
	}

	err := stagefsm.Run(t.Context(), s, created, c) // Created has no failure transition

	require.NoError(t, err)
	assert.Equal(t, []string{
		"dispatch 0", "0 -start-> 1", "exec first", "exec second",
		"1 -failure-> 3", "exec report",
		"dispatch 3", "complete",
	}, c.trace, "handled from Running, the state the transition entered; third and fourth not run")
	require.Len(t, s.routed, 1)
	var ae *stagefsm.ActionError
	require.ErrorAs(t, s.routed[0], &ae)
	assert.Equal(t, 1, ae.Index)
	assert.Same(t, second, ae.Action)
	assert.Equal(t, []any{third, fourth}, ae.Skipped)
	require.ErrorIs(t, ae, errAction)
	require.Len(t, failureEvents, 1)
	assert.ErrorIs(t, failureEvents[0].err, errAction, "the machine gets the event made from the error")
}

func TestRunActionFailureOfLastActionSkipsNothing(t *testing.T) {
	last := failingAct("last", errAction)
	edges := stdEdges()
	edges[edge{created, "start"}] = to{state: running, actions: []*action{act("first"), last}}
	s, c := newSup(edges, script(trans("start")))

	require.NoError(t, stagefsm.Run(t.Context(), s, created, c))

	require.Len(t, s.routed, 1)
	var ae *stagefsm.ActionError
	require.ErrorAs(t, s.routed[0], &ae)
	assert.Equal(t, 1, ae.Index)
	assert.Same(t, last, ae.Action)
	assert.Empty(t, ae.Skipped)
}

func TestRunDispatchErrorIsRoutedAndNamesState(t *testing.T) {
	s, c := newSup(stdEdges(), script(cont(), fail(errCause)))

	err := stagefsm.Run(t.Context(), s, running, c)

	require.NoError(t, err, "Failed dispatches Terminate")
	assert.Equal(t, 1, s.completions)
	assert.Equal(t, []string{
		"dispatch 1", "dispatch 1", "1 -failure-> 3",
		"dispatch 3", "complete",
	}, c.trace)
	require.Len(t, s.routed, 1)
	var de *stagefsm.DispatchError
	require.ErrorAs(t, s.routed[0], &de)
	assert.Equal(t, "Running", de.State, "the state's String form")
	assert.ErrorIs(t, de, errCause)
}

func TestRunDispatchErrorInStateWithPanickingString(t *testing.T) {
	edges := map[edge]to{{broken, failure}: {state: failed}}
	s, c := newSup(edges, script(fail(errCause)))

	var err error
	require.NotPanics(t, func() { err = stagefsm.Run(t.Context(), s, broken, c) })

	require.NoError(t, err)
	require.Len(t, s.routed, 1)
	var de *stagefsm.DispatchError
	require.ErrorAs(t, s.routed[0], &de)
	assert.NotEmpty(t, de.State)
	assert.ErrorIs(t, de, errCause)
}

// plainStage has a state type without a String method: a bare int.
type plainStage struct{ routed []error }

type plainMachine struct{ state int }

func (m *plainMachine) State() int { return m.state }

func (m *plainMachine) Handle(_ context.Context, e string, _ *stageCtx) ([]*action, error) {
	if e != failure {
		return nil, stagefsm.ErrUnhandledEvent
	}
	m.state = -1
	return nil, nil
}

func (*plainStage) Name() string                               { return "plain" }
func (*plainStage) WriteCompletionEvent(context.Context) error { return nil }

func (p *plainStage) EventForActionError(err error) string {
	p.routed = append(p.routed, err)
	return failure
}

func (*plainStage) BuildStateMachine(initial int) (stagefsm.Machine[int, string, *stageCtx, *action], error) {
	return &plainMachine{state: initial}, nil
}

func (*plainStage) DispatchState(_ context.Context, s int, _ *stageCtx) (stagefsm.Directive[string], error) {
	if s < 0 {
		return stagefsm.Terminate[string](), nil
	}
	return stagefsm.Directive[string]{}, errCause
}

func TestRunDispatchErrorNamesStateWithoutStringMethod(t *testing.T) {
	p := &plainStage{}

	require.NoError(t, stagefsm.Run(t.Context(), p, 42, &stageCtx{}))

	require.Len(t, p.routed, 1)
	var de *stagefsm.DispatchError
	require.ErrorAs(t, p.routed[0], &de)
	assert.Equal(t, "42", de.State, "the %v form")
}

func TestRunZeroDirectiveIsRouted(t *testing.T) {
	s, c := newSup(stdEdges(), script(zeroDirective()))

	err := stagefsm.Run(t.Context(), s, running, c)

	require.NoError(t, err)
	require.Len(t, s.routed, 1)
	require.ErrorIs(t, s.routed[0], stagefsm.ErrZeroDirective)
	var de *stagefsm.DispatchError
	require.ErrorAs(t, s.routed[0], &de)
	assert.Equal(t, "Running", de.State)
	assert.Equal(t, []string{"dispatch 1", "1 -failure-> 3", "dispatch 3", "complete"}, c.trace)
}

// ---- panics ----

func TestRunRoutesPanics(t *testing.T) {
	t.Run("dispatch", func(t *testing.T) {
		s, c := newSup(stdEdges(), script(panicking("boom")))

		require.NoError(t, stagefsm.Run(t.Context(), s, running, c))

		require.Len(t, s.routed, 1)
		var de *stagefsm.DispatchError
		require.ErrorAs(t, s.routed[0], &de)
		assert.Equal(t, "Running", de.State)
		var pe *stagefsm.PanicError
		require.ErrorAs(t, s.routed[0], &pe)
		assert.Equal(t, "boom", pe.Value)
		assert.NotEmpty(t, pe.Stack)
		assert.Equal(t, 1, s.completions)
	})
	t.Run("dispatch panics with an error", func(t *testing.T) {
		s, c := newSup(stdEdges(), script(panicking(errBoom)))

		require.NoError(t, stagefsm.Run(t.Context(), s, running, c))

		require.Len(t, s.routed, 1)
		assert.ErrorIs(t, s.routed[0], errBoom, "PanicError unwraps an error value")
	})
	t.Run("action", func(t *testing.T) {
		boom := actFn("boom", func(context.Context, *stageCtx) error { panic("boom") })
		after := act("after")
		edges := stdEdges()
		edges[edge{running, "work"}] = to{state: running, actions: []*action{boom, after}}
		s, c := newSup(edges, script(trans("work")))

		require.NoError(t, stagefsm.Run(t.Context(), s, running, c))

		require.Len(t, s.routed, 1)
		var ae *stagefsm.ActionError
		require.ErrorAs(t, s.routed[0], &ae)
		assert.Equal(t, 0, ae.Index)
		assert.Same(t, boom, ae.Action)
		assert.Equal(t, []any{after}, ae.Skipped)
		var pe *stagefsm.PanicError
		require.ErrorAs(t, s.routed[0], &pe)
		assert.Equal(t, "boom", pe.Value)
		assert.NotContains(t, c.trace, "exec after")
		assert.Equal(t, 1, s.completions)
	})
}

func TestRunUnroutablePanicsEndRun(t *testing.T) {
	panicOnce := func(calls int) func() {
		n := 0
		return func() {
			n++
			if n == calls {
				panic("boom")
			}
		}
	}
	tests := []struct {
		name        string
		setup       func(s *sup)
		steps       []step
		completions int
		routing     bool // the error also wraps the failure being routed
	}{
		{"BuildStateMachine", func(s *sup) {
			s.build = func(state) (fakeMachine, error) { panic("boom") }
		}, nil, 0, false},
		{"State at start", func(s *sup) { s.onState = panicOnce(1) }, nil, 0, false},
		{"State after Handle", func(s *sup) { s.onState = panicOnce(2) }, []step{trans("work")}, 0, false},
		{"Handle", func(s *sup) {
			s.onHandle = func(context.Context, event) error { panic("boom") }
		}, []step{trans("work")}, 0, false},
		{"Handle of a failure event", func(s *sup) {
			s.onHandle = func(_ context.Context, e event) error {
				if e.name == failure {
					panic("boom")
				}
				return nil
			}
		}, []step{fail(errCause)}, 0, true},
		{"failure action", func(s *sup) {
			s.edges[edge{running, failure}] = to{state: failed, actions: []*action{
				actFn("report", func(context.Context, *stageCtx) error { panic("boom") }),
			}}
		}, []step{fail(errCause)}, 0, true},
		{"EventForActionError", func(s *sup) { s.onError = func(error) { panic("boom") } }, []step{fail(errCause)}, 0, true},
		{"WriteCompletionEvent", func(s *sup) {
			s.completion = func(context.Context) error { panic("boom") }
		}, nil, 1, false},
		{"Timeout", func(s *sup) {
			s.after = map[state]time.Duration{}
			s.onTimeout = panicOnce(2)
		}, []step{trans("work")}, 0, false},
		{"Name", func(s *sup) { s.onName = panicOnce(1) }, nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := newSup(stdEdges(), script(tt.steps...))
			tt.setup(s)
			core, _ := observer.New(zapcore.InfoLevel)
			logger := zap.New(core)

			var err error
			require.NotPanics(t, func() { err = stagefsm.Run(t.Context(), s, running, c, stagefsm.WithLogger(logger)) })

			var pe *stagefsm.PanicError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, "boom", pe.Value)
			assert.NotEmpty(t, pe.Stack)
			assert.Equal(t, tt.completions, s.completions)
			if tt.routing {
				assert.ErrorIs(t, err, errCause, "the failure being routed")
			}
		})
	}
}

func TestRunPanicsInCornerCases(t *testing.T) {
	t.Run("dispatch while a state timeout is armed is routed", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			edges := stdEdges()
			edges[edge{running, timeout}] = to{state: running}
			s, c := newSup(edges, script(panicking("boom")))
			s.after = map[state]time.Duration{running: time.Hour}

			require.NoError(t, stagefsm.Run(t.Context(), s, running, c))

			require.Len(t, s.routed, 1)
			var pe *stagefsm.PanicError
			assert.ErrorAs(t, s.routed[0], &pe)
		})
	})
	t.Run("Handle panicking once ctx is done is cancellation", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		s, c := newSup(stdEdges(), script(trans("work")))
		s.onHandle = func(context.Context, event) error { cancel(); panic("boom") }

		err := stagefsm.Run(ctx, s, running, c)

		require.ErrorIs(t, err, context.Canceled)
		var pe *stagefsm.PanicError
		assert.ErrorAs(t, err, &pe, "the panic is kept")
		assert.Empty(t, s.routed)
	})
	t.Run("State of a timed machine after Handle", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			calls := 0
			s, c := newSup(stdEdges(), script(trans("work")))
			s.after = map[state]time.Duration{}
			s.onState = func() {
				if calls++; calls == 2 {
					panic("boom")
				}
			}

			err := stagefsm.Run(t.Context(), s, running, c)

			var pe *stagefsm.PanicError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, "boom", pe.Value)
			assert.Zero(t, s.completions)
		})
	})
}

func TestRunWithoutPanicRecovery(t *testing.T) {
	tests := []struct {
		name  string
		setup func(s *sup)
		steps []step
	}{
		{"dispatch", func(*sup) {}, []step{panicking("boom")}},
		{"action", func(s *sup) {
			s.edges[edge{running, "work"}] = to{state: running, actions: []*action{
				actFn("boom", func(context.Context, *stageCtx) error { panic("boom") }),
			}}
		}, []step{trans("work")}},
		{"Handle", func(s *sup) {
			s.onHandle = func(context.Context, event) error { panic("boom") }
		}, []step{trans("work")}},
		{"WriteCompletionEvent", func(s *sup) {
			s.completion = func(context.Context) error { panic("boom") }
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := newSup(stdEdges(), script(tt.steps...))
			tt.setup(s)

			recovered := func() (v any) {
				defer func() { v = recover() }()
				_ = stagefsm.Run(t.Context(), s, running, c, stagefsm.WithRecoverPanics(false))
				return nil
			}()

			assert.Equal(t, "boom", recovered, "the original panic value propagates")
			assert.Empty(t, s.routed)
		})
	}
}

// ---- cancellation ----

func TestRunCanceledBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	s, c := newSup(stdEdges(), script())

	err := stagefsm.Run(ctx, s, running, c)

	require.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, c.trace, "no dispatch")
	assert.Zero(t, s.completions)
}

func TestRunCanceledWhileDispatchBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(t.Context())
		s, _ := newSup(stdEdges(), script(cont(), blockUntilDone(same)))
		start := time.Now()
		errc := goRun(ctx, s, running)

		synctest.Wait() // Run is blocked in dispatch
		cancel(errStop)
		err := <-errc

		require.ErrorIs(t, err, context.Canceled)
		require.ErrorIs(t, err, context.Cause(ctx))
		assert.ErrorIs(t, err, errStop)
		assert.Empty(t, s.routed, "cancellation is not a failure")
		assert.Zero(t, s.completions)
		assert.Zero(t, time.Since(start), "Run returns at once")
	})
}

func TestRunDeadlineWhileDispatchBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Millisecond)
		defer cancel()
		s, c := newSup(stdEdges(), script(blockUntilDone(same)))
		start := time.Now()

		err := stagefsm.Run(ctx, s, running, c)

		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Empty(t, s.routed)
		assert.Zero(t, s.completions)
		assert.Equal(t, 5*time.Millisecond, time.Since(start))
	})
}

func TestRunCanceledWhileIdling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(t.Context())
		s, _ := newSup(stdEdges(), func(context.Context, state, *stageCtx) (stagefsm.Directive[event], error) {
			return stagefsm.Idle[event](), nil
		})
		start := time.Now()
		errc := goRun(ctx, s, running, stagefsm.WithIdleBackoff(time.Hour, time.Hour))

		synctest.Wait() // Run is waiting out the first idle backoff
		cancel(errStop)
		err := <-errc

		require.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, err, errStop)
		assert.Zero(t, time.Since(start), "the wait is cut short")
		assert.Equal(t, []string{"dispatch 1"}, s.c.trace)
		assert.Zero(t, s.completions)
	})
}

func TestRunDeadlineWhileIdling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 24*time.Millisecond)
		defer cancel()
		var dispatched []time.Duration
		start := time.Now()
		s, c := newSup(stdEdges(), func(context.Context, state, *stageCtx) (stagefsm.Directive[event], error) {
			dispatched = append(dispatched, time.Since(start))
			return stagefsm.Idle[event](), nil
		})

		err := stagefsm.Run(ctx, s, running, c) // waits 1, 2, 4, 8, then 10 cut short at 24

		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 24*time.Millisecond, time.Since(start))
		assert.Equal(t, []time.Duration{0, 1, 3, 7, 15}, millis(dispatched))
	})
}

func TestRunErrorBecauseCtxDoneIsNotRouted(t *testing.T) {
	t.Run("dispatch returns a wrapped ctx error", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			s, _ := newSup(stdEdges(), script(blockUntilDone(func(err error) error { return fmt.Errorf("read: %w", err) })))
			errc := goRun(ctx, s, running)
			synctest.Wait()
			cancel()

			err := <-errc
			require.ErrorIs(t, err, context.Canceled)
			assert.Empty(t, s.routed)
			assert.Zero(t, s.completions)
		})
	})
	t.Run("dispatch returns an unrelated error", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			s, _ := newSup(stdEdges(), script(blockUntilDone(func(error) error { return errCause })))
			errc := goRun(ctx, s, running)
			synctest.Wait()
			cancel()

			err := <-errc
			require.ErrorIs(t, err, context.Canceled)
			assert.ErrorIs(t, err, errCause, "what dispatch returned is kept")
			assert.Empty(t, s.routed)
		})
	})
	t.Run("action", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		edges := stdEdges()
		edges[edge{running, "work"}] = to{state: running, actions: []*action{
			actFn("cancels", func(context.Context, *stageCtx) error { cancel(); return errAction }),
			act("after"),
		}}
		s, c := newSup(edges, script(trans("work")))

		err := stagefsm.Run(ctx, s, running, c)

		require.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, err, errAction)
		assert.Empty(t, s.routed)
		assert.Zero(t, s.completions)
		assert.Equal(t, []string{"dispatch 1", "1 -work-> 1", "exec cancels"}, c.trace)
	})
	t.Run("failure action", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		edges := stdEdges()
		edges[edge{running, failure}] = to{state: failed, actions: []*action{
			actFn("cancels", func(context.Context, *stageCtx) error { cancel(); return errReport }),
		}}
		s, c := newSup(edges, script(fail(errCause)))

		err := stagefsm.Run(ctx, s, running, c)

		require.ErrorIs(t, err, context.Canceled)
		assert.Len(t, s.routed, 1)
		assert.Zero(t, s.completions)
	})
	t.Run("Handle", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		s, c := newSup(stdEdges(), script(trans("work")))
		s.onHandle = func(context.Context, event) error { cancel(); return errReject }

		err := stagefsm.Run(ctx, s, running, c)

		require.ErrorIs(t, err, context.Canceled)
		assert.Empty(t, s.routed)
	})
	t.Run("WriteCompletionEvent", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		s, c := newSup(stdEdges(), script())
		s.completion = func(context.Context) error { cancel(); return errWrite }

		err := stagefsm.Run(ctx, s, running, c)

		require.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, err, errWrite)
		assert.Equal(t, 1, s.completions)
	})
}

func TestRunHonoursDirectiveReturnedAsCtxIsCanceled(t *testing.T) {
	t.Run("Transition", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		s, c := newSup(stdEdges(), script(func(context.Context, state, *stageCtx) (stagefsm.Directive[event], error) {
			cancel()
			return stagefsm.Transition(ev("start")), nil
		}))

		err := stagefsm.Run(ctx, s, created, c)

		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, []string{"dispatch 0", "0 -start-> 1"}, c.trace, "the transition happens, then Run stops")
	})
	t.Run("Terminate", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		s, c := newSup(stdEdges(), script(func(context.Context, state, *stageCtx) (stagefsm.Directive[event], error) {
			cancel()
			return stagefsm.Terminate[event](), nil
		}))

		err := stagefsm.Run(ctx, s, running, c)

		require.NoError(t, err, "the completion was written")
		assert.Equal(t, 1, s.completions)
	})
}

// ---- the failure-loop guard ----

func TestRunFailureLoopGuard(t *testing.T) {
	stayPut := func() map[edge]to {
		edges := stdEdges()
		edges[edge{running, failure}] = to{state: running}
		edges[edge{running, "bad"}] = to{state: running, actions: []*action{failingAct("bad", errAction)}}
		return edges
	}
	tests := []struct {
		name   string
		limit  []stagefsm.Option
		steps  []step
		routed int
		loop   bool // Run returns ErrFailureLoop
	}{
		{"limit 1", opts(stagefsm.WithMaxConsecutiveFailures(1)), repeat(5, fail(errCause)), 1, true},
		{"limit 3", opts(stagefsm.WithMaxConsecutiveFailures(3)), repeat(5, fail(errCause)), 3, true},
		{"limit 3 reached exactly", opts(stagefsm.WithMaxConsecutiveFailures(3)), repeat(3, fail(errCause)), 3, false},
		{"default is 100", nil, repeat(200, fail(errCause)), 100, true},
		{"default reached exactly", nil, repeat(100, fail(errCause)), 100, false},
		{"action failures count", opts(stagefsm.WithMaxConsecutiveFailures(2)),
			[]step{trans("bad"), fail(errCause), trans("bad")}, 2, true},
		{"reset by Continue", opts(stagefsm.WithMaxConsecutiveFailures(3)),
			concat(repeat(3, fail(errCause)), []step{cont()}, repeat(3, fail(errCause))), 6, false},
		{"reset by Idle", opts(stagefsm.WithMaxConsecutiveFailures(3)),
			concat(repeat(3, fail(errCause)), []step{idle()}, repeat(3, fail(errCause))), 6, false},
		{"reset by a successful Transition", opts(stagefsm.WithMaxConsecutiveFailures(3)),
			concat(repeat(3, fail(errCause)), []step{trans("work")}, repeat(3, fail(errCause))), 6, false},
		{"not reset by a failing Transition", opts(stagefsm.WithMaxConsecutiveFailures(3)),
			concat(repeat(2, fail(errCause)), []step{trans("bad")}, repeat(3, fail(errCause))), 3, true},
		{"zero is unbounded", opts(stagefsm.WithMaxConsecutiveFailures(0)), repeat(500, fail(errCause)), 500, false},
		{"negative is unbounded", opts(stagefsm.WithMaxConsecutiveFailures(-1)), repeat(500, fail(errCause)), 500, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, c := newSup(stayPut(), script(tt.steps...))

				err := stagefsm.Run(t.Context(), s, running, c, tt.limit...)

				assert.Len(t, s.routed, tt.routed)
				if tt.loop {
					require.ErrorIs(t, err, stagefsm.ErrFailureLoop)
					assert.Zero(t, s.completions)
					return
				}
				require.NoError(t, err)
				assert.Equal(t, 1, s.completions)
			})
		})
	}
}

func opts(o ...stagefsm.Option) []stagefsm.Option { return o }

func concat(parts ...[]step) []step {
	var all []step
	for _, p := range parts {
		all = append(all, p...)
	}
	return all
}

// ---- idle backoff ----

// millis converts durations to whole milliseconds for readable expectations.
func millis(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d / time.Millisecond
	}
	return out
}

// gaps runs the steps under synctest and returns the time between successive
// dispatches, in milliseconds.
func gaps(t *testing.T, steps []step, opts ...stagefsm.Option) []time.Duration {
	t.Helper()
	var got []time.Duration
	synctest.Test(t, func(t *testing.T) {
		var last time.Time
		next := script(steps...)
		s, c := newSup(stdEdges(), func(ctx context.Context, st state, c *stageCtx) (stagefsm.Directive[event], error) {
			if now := time.Now(); !last.IsZero() {
				got = append(got, now.Sub(last))
				last = now
			} else {
				last = now
			}
			return next(ctx, st, c)
		})
		require.NoError(t, stagefsm.Run(t.Context(), s, running, c, opts...))
	})
	for _, g := range got {
		require.Zero(t, g%time.Millisecond, "waits are whole milliseconds here")
	}
	return millis(got)
}

func TestRunIdleBackoff(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		opts []stagefsm.Option
		want []time.Duration
	}{
		{"defaults", nil, []time.Duration{1, 2, 4, 8, 10, 10, 10}},
		{"custom", opts(stagefsm.WithIdleBackoff(3*ms, 20*ms)), []time.Duration{3, 6, 12, 20, 20, 20, 20}},
		{"max not a power of two times initial", opts(stagefsm.WithIdleBackoff(3*ms, 10*ms)), []time.Duration{3, 6, 10, 10, 10, 10, 10}},
		{"max equal to initial", opts(stagefsm.WithIdleBackoff(5*ms, 5*ms)), []time.Duration{5, 5, 5, 5, 5, 5, 5}},
		{"max below initial means max = initial", opts(stagefsm.WithIdleBackoff(5*ms, 2*ms)), []time.Duration{5, 5, 5, 5, 5, 5, 5}},
		{"zero values fall back to the defaults", opts(stagefsm.WithIdleBackoff(0, 0)), []time.Duration{1, 2, 4, 8, 10, 10, 10}},
		{"negative initial falls back", opts(stagefsm.WithIdleBackoff(-ms, 4*ms)), []time.Duration{1, 2, 4, 4, 4, 4, 4}},
		{"negative max falls back", opts(stagefsm.WithIdleBackoff(4*ms, -ms)), []time.Duration{4, 8, 10, 10, 10, 10, 10}},
		{"last option wins", opts(stagefsm.WithIdleBackoff(7*ms, 7*ms), stagefsm.WithIdleBackoff(2*ms, 4*ms)), []time.Duration{2, 4, 4, 4, 4, 4, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, gaps(t, repeat(len(tt.want), idle()), tt.opts...))
		})
	}
}

func TestRunIdleBackoffResetByOtherDirectives(t *testing.T) {
	steps := concat(
		repeat(3, idle()), []step{cont()}, // 1 2 4, Continue: 0
		repeat(3, idle()), []step{trans("work")}, // 1 2 4, Transition: 0
		repeat(2, idle()), // 1 2
	)
	assert.Equal(t, []time.Duration{1, 2, 4, 0, 1, 2, 4, 0, 1, 2}, gaps(t, steps))
}

func TestRunContinueDoesNotWait(t *testing.T) {
	assert.Equal(t, []time.Duration{0, 0, 0, 0}, gaps(t, repeat(4, cont())))
}

// ---- logging ----

func fieldsByKey(e observer.LoggedEntry) map[string]zapcore.Field {
	m := make(map[string]zapcore.Field, len(e.Context))
	for _, f := range e.Context {
		m[f.Key] = f
	}
	return m
}

func TestRunLogsLifecycleAtInfoAndFailuresAtWarn(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	s, c := newSup(stdEdges(), script(trans("start"), cont(), fail(errCause)))

	require.NoError(t, stagefsm.Run(t.Context(), s, created, c, stagefsm.WithLogger(zap.New(core))))

	entries := logs.AllUntimed()
	require.Len(t, entries, 3)
	assert.Equal(t, []zapcore.Level{zapcore.InfoLevel, zapcore.WarnLevel, zapcore.InfoLevel},
		[]zapcore.Level{entries[0].Level, entries[1].Level, entries[2].Level})
	for _, e := range entries {
		f := fieldsByKey(e)
		for key, want := range map[string]string{"supervisor": "fake"} {
			if assert.Contains(t, f, key, "entry %q", e.Message) {
				assert.Equal(t, zapcore.StringType, f[key].Type, "%s is a typed string field", key)
				assert.Equal(t, want, f[key].String)
			}
		}
	}
	warn := fieldsByKey(entries[1])
	require.Contains(t, warn, "error")
	require.Equal(t, zapcore.ErrorType, warn["error"].Type)
	routed, ok := warn["error"].Interface.(error)
	require.True(t, ok)
	assert.ErrorIs(t, routed, errCause)
	assert.Contains(t, warn, "state")
	assert.Contains(t, warn, "event")
}

func TestRunLogsNothingAboveDebugPerIteration(t *testing.T) {
	for _, iterations := range []int{1, 50} {
		t.Run(fmt.Sprint(iterations), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				core, logs := observer.New(zapcore.DebugLevel)
				var steps []step
				for range iterations {
					steps = append(steps, cont(), idle(), trans("work"))
				}
				s, c := newSup(stdEdges(), script(steps...))

				require.NoError(t, stagefsm.Run(t.Context(), s, running, c, stagefsm.WithLogger(zap.New(core))))

				debug := logs.FilterLevelExact(zapcore.DebugLevel).AllUntimed()
				assert.GreaterOrEqual(t, len(debug), 3*iterations, "per-iteration detail is logged at Debug")
				above := logs.Filter(func(e observer.LoggedEntry) bool { return e.Level > zapcore.DebugLevel }).AllUntimed()
				if assert.Len(t, above, 2, "only start and terminate, however many iterations") {
					assert.Equal(t, zapcore.InfoLevel, above[0].Level)
					assert.Equal(t, zapcore.InfoLevel, above[1].Level)
				}
				for _, e := range debug {
					assert.Contains(t, fieldsByKey(e), "state", "entry %q", e.Message)
					assert.Equal(t, zapcore.StringType, fieldsByKey(e)["supervisor"].Type)
				}
			})
		})
	}
}

func TestRunDoesNotLogReturnedErrors(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	edges := stdEdges()
	edges[edge{running, failure}] = to{state: running}
	s, c := newSup(edges, script(repeat(5, fail(errCause))...))

	err := stagefsm.Run(t.Context(), s, running, c,
		stagefsm.WithLogger(zap.New(core)), stagefsm.WithMaxConsecutiveFailures(2))

	require.ErrorIs(t, err, stagefsm.ErrFailureLoop)
	assert.Zero(t, logs.Filter(func(e observer.LoggedEntry) bool { return e.Level >= zapcore.ErrorLevel }).Len())
	assert.Equal(t, 2, logs.FilterLevelExact(zapcore.WarnLevel).Len(), "one Warn per routed failure")
}

func TestRunWithNilLogger(t *testing.T) {
	s, c := newSup(stdEdges(), script(trans("start")))
	require.NoError(t, stagefsm.Run(t.Context(), s, created, c, stagefsm.WithLogger(nil), nil))
	assert.Equal(t, 1, s.completions)
}

// ---- state timeouts ----

// timedEdges: Created -start-> Waiting -timeout-> Done; Waiting -leave->
// Running. Waiting times out after 50ms.
func timedSup(dispatch func(context.Context, state, *stageCtx) (stagefsm.Directive[event], error)) (*sup, *stageCtx) {
	edges := stdEdges()
	edges[edge{created, "start"}] = to{state: waiting}
	edges[edge{waiting, timeout}] = to{state: done}
	edges[edge{waiting, "leave"}] = to{state: running}
	s, c := newSup(edges, dispatch)
	s.after = map[state]time.Duration{waiting: 50 * time.Millisecond}
	return s, c
}

// recordTimeouts makes s record when each timeout event is handled, relative
// to start.
func recordTimeouts(s *sup, start time.Time) *[]time.Duration {
	var fired []time.Duration
	s.onHandle = func(_ context.Context, e event) error {
		if e.name == timeout {
			fired = append(fired, time.Since(start))
		}
		return nil
	}
	return &fired
}

// byState dispatches Transition(start) in Created, Terminate in Done and
// Failed, and waitingDo otherwise.
func byState(waitingDo step) func(context.Context, state, *stageCtx) (stagefsm.Directive[event], error) {
	return func(ctx context.Context, s state, c *stageCtx) (stagefsm.Directive[event], error) {
		switch s {
		case created:
			return stagefsm.Transition(ev("start")), nil
		case done, failed:
			return stagefsm.Terminate[event](), nil
		default:
			return waitingDo(ctx, s, c)
		}
	}
}

func TestRunStateTimeoutFiresWhileIdling(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []stagefsm.Option
	}{
		{"default backoff", nil}, // 1+2+4+8+10+10+10 = 45, then cut to 5
		{"long backoff", opts(stagefsm.WithIdleBackoff(time.Hour, time.Hour))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, c := timedSup(byState(idle()))
				fired := recordTimeouts(s, time.Now())

				require.NoError(t, stagefsm.Run(t.Context(), s, created, c, tt.opts...))

				assert.Equal(t, []time.Duration{50 * time.Millisecond}, *fired, "fires exactly at the deadline")
				assert.Empty(t, s.routed)
				assert.Equal(t, done, s.m.state)
			})
		})
	}
}

func TestRunStateTimeoutFiresWhileDispatchBlocks(t *testing.T) {
	for _, tt := range []struct {
		name string
		wrap func(error) error
	}{
		{"dispatch returns ctx.Err()", same},
		{"dispatch wraps ctx.Err()", func(err error) error { return fmt.Errorf("poll: %w", err) }},
		{"dispatch returns another error once the deadline passed", func(error) error { return errCause }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				var deadlines []time.Duration
				s, c := timedSup(byState(func(ctx context.Context, s state, c *stageCtx) (stagefsm.Directive[event], error) {
					if d, ok := ctx.Deadline(); ok {
						deadlines = append(deadlines, d.Sub(start))
					}
					return blockUntilDone(tt.wrap)(ctx, s, c)
				}))
				fired := recordTimeouts(s, start)

				require.NoError(t, stagefsm.Run(t.Context(), s, created, c))

				assert.Equal(t, []time.Duration{50 * time.Millisecond}, deadlines, "dispatch's ctx is done at the deadline")
				assert.Equal(t, []time.Duration{50 * time.Millisecond}, *fired)
				assert.Empty(t, s.routed, "an error due to the deadline is not a failure")
				assert.Equal(t, done, s.m.state)
			})
		})
	}
}

func TestRunStateTimeoutFiresBetweenContinues(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, c := timedSup(byState(func(context.Context, state, *stageCtx) (stagefsm.Directive[event], error) {
			time.Sleep(7 * time.Millisecond) // work that takes time
			return stagefsm.Continue[event](), nil
		}))
		fired := recordTimeouts(s, time.Now())

		require.NoError(t, stagefsm.Run(t.Context(), s, created, c))

		// Dispatches end at 7, 14, ..., 49, 56: the first check after the deadline fires.
		assert.Equal(t, []time.Duration{56 * time.Millisecond}, *fired)
		assert.Empty(t, s.routed)
	})
}

func TestRunStateTimeoutDisarmedOnLeaving(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var runningDeadlines int
		s, c := timedSup(func(ctx context.Context, s state, _ *stageCtx) (stagefsm.Directive[event], error) {
			switch {
			case s == created:
				return stagefsm.Transition(ev("start")), nil
			case s == waiting:
				time.Sleep(10 * time.Millisecond)
				return stagefsm.Transition(ev("leave")), nil
			case s == running && time.Since(start) < 200*time.Millisecond:
				if _, ok := ctx.Deadline(); ok {
					runningDeadlines++
				}
				return stagefsm.Idle[event](), nil
			default:
				return stagefsm.Terminate[event](), nil
			}
		})
		fired := recordTimeouts(s, start)

		require.NoError(t, stagefsm.Run(t.Context(), s, created, c))

		assert.Empty(t, *fired, "the timeout of Waiting does not fire in Running")
		assert.Zero(t, runningDeadlines, "dispatch in Running gets no deadline")
		assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
	})
}

func TestRunStateTimeoutRearmed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		edges := stdEdges()
		edges[edge{running, timeout}] = to{state: running} // re-armed by the fake
		s, c := newSup(edges, nil)
		s.after = map[state]time.Duration{running: 30 * time.Millisecond}
		start := time.Now()
		fired := recordTimeouts(s, start)
		s.dispatch = func(context.Context, state, *stageCtx) (stagefsm.Directive[event], error) {
			if len(*fired) == 3 {
				return stagefsm.Terminate[event](), nil
			}
			return stagefsm.Idle[event](), nil
		}

		require.NoError(t, stagefsm.Run(t.Context(), s, running, c, stagefsm.WithIdleBackoff(time.Hour, time.Hour)))

		ms := time.Millisecond
		assert.Equal(t, []time.Duration{30 * ms, 60 * ms, 90 * ms}, *fired)
	})
}

func TestRunCanceledWhileArmedDispatchBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		s, _ := timedSup(byState(blockUntilDone(same)))
		fired := recordTimeouts(s, time.Now())
		errc := goRun(ctx, s, created)

		time.Sleep(10 * time.Millisecond) // before the 50ms deadline
		cancel()
		err := <-errc

		require.ErrorIs(t, err, context.Canceled)
		assert.Empty(t, *fired)
		assert.Empty(t, s.routed)
		assert.Zero(t, s.completions)
	})
}

func TestRunRejectedTimeoutEventIsFatal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, c := timedSup(byState(idle()))
		delete(s.edges, edge{waiting, timeout})

		err := stagefsm.Run(t.Context(), s, created, c)

		require.ErrorIs(t, err, stagefsm.ErrUnhandledEvent)
		assert.Empty(t, s.routed)
		assert.Zero(t, s.completions)
	})
}

// ---- concurrency ----

func TestRunManyConcurrently(t *testing.T) {
	const runs = 1000
	synctest.Test(t, func(t *testing.T) {
		var wg sync.WaitGroup
		sups := make([]*sup, runs)
		errs := make([]error, runs)
		for i := range runs {
			edges := stdEdges()
			edges[edge{running, "work"}] = to{state: running, actions: []*action{
				actFn("count", func(_ context.Context, c *stageCtx) error { c.n++; return nil }),
			}}
			steps := []step{trans("start"), idle(), trans("work"), cont(), trans("work")}
			if i%2 == 0 {
				steps = append(steps, fail(errCause)) // half end through Failed
			} else {
				steps = append(steps, trans("finish"))
			}
			sups[i], _ = newSup(edges, script(steps...))
			wg.Go(func() { errs[i] = stagefsm.Run(t.Context(), sups[i], created, sups[i].c) })
		}
		wg.Wait()
		for i, s := range sups {
			require.NoError(t, errs[i], "run %d", i)
			assert.Equal(t, 1, s.completions, "run %d", i)
			assert.Equal(t, 2, s.c.n, "run %d", i)
			assert.Len(t, s.routed, (i+1)%2, "run %d", i)
		}
	})
}

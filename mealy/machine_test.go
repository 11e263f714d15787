package mealy_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/mealy"
)

// step feeds one event and says what Handle must do.
type step struct {
	event   event
	actions []action // returned, in order
	state   state    // after the step (unchanged on error)
	err     error    // matched with errors.Is; nil: success
}

var errChoose = errors.New("choose failed")

// declareHooks declares entry and exit actions on every state but Done.
func declareHooks(b *builder) {
	for _, k := range []stateKind{created, running, waiting, failed} {
		b.State(k).Entry(action("enter" + k.String())).Exit(action("exit" + k.String()))
	}
	b.State(done).Terminal()
}

func TestHandle(t *testing.T) {
	tests := []struct {
		name    string
		declare func(b *builder)
		initial state
		steps   []step
	}{
		{
			name: "order: exit, entry, then the transition's own actions",
			declare: func(b *builder) {
				declareHooks(b)
				b.On(created, start).To(state{kind: running}).Do("a", "b")
				b.On(running, finish).To(state{kind: done}).Do("c")
			},
			initial: state{kind: created},
			steps: []step{
				{event: event{kind: start}, actions: []action{"exitCreated", "enterRunning", "a", "b"}, state: state{kind: running}},
				{event: event{kind: finish}, actions: []action{"exitRunning", "c"}, state: state{kind: done}},
			},
		},
		{
			name: "Stay runs no hooks and keeps the state value",
			declare: func(b *builder) {
				declareHooks(b)
				b.On(failed, tick).Stay().Do("kept")
				b.On(failed, start).To(state{kind: created})
			},
			initial: state{kind: failed, reason: "first"},
			steps: []step{
				{event: event{kind: tick}, actions: []action{"kept"}, state: state{kind: failed, reason: "first"}},
				{event: event{kind: tick}, actions: []action{"kept"}, state: state{kind: failed, reason: "first"}},
			},
		},
		{
			name: "To the current state re-enters it",
			declare: func(b *builder) {
				declareHooks(b)
				b.On(running, tick).To(state{kind: running}).Do("again")
				b.On(running, finish).To(state{kind: done})
			},
			initial: state{kind: running},
			steps: []step{
				{event: event{kind: tick}, actions: []action{"exitRunning", "enterRunning", "again"}, state: state{kind: running}},
			},
		},
		{
			name: "Choose onto the current state re-enters it with the new payload",
			declare: func(b *builder) {
				declareHooks(b)
				b.On(failed, fail).Choose(failTo, failed).Do("report")
				b.On(failed, start).To(state{kind: created})
			},
			initial: state{kind: failed, reason: "first"},
			steps: []step{
				{event: event{kind: fail, err: errChoose}, actions: []action{"exitFailed", "enterFailed", "report"}, state: state{kind: failed, reason: errChoose.Error()}},
			},
		},
		{
			name: "routing by variant: payloads do not matter",
			declare: func(b *builder) {
				b.On(failed, start).To(state{kind: running}).Do("restart")
				b.On(running, fail).Choose(failTo, failed)
			},
			initial: state{kind: failed, reason: "any reason"},
			steps: []step{
				{event: event{kind: start, err: errors.New("ignored payload")}, actions: []action{"restart"}, state: state{kind: running}},
				{event: event{kind: fail, err: errAction}, state: state{kind: failed, reason: errAction.Error()}},
				{event: event{kind: start}, actions: []action{"restart"}, state: state{kind: running}},
				{event: event{kind: fail}, state: state{kind: failed, reason: "unknown"}},
			},
		},
		{
			name: "Choose error: state unchanged, no actions",
			declare: func(b *builder) {
				declareHooks(b)
				b.On(running, finish).Choose(func(context.Context, state, event, *record) (state, error) {
					return state{}, errChoose
				}, done).Do("never")
			},
			initial: state{kind: running},
			steps: []step{
				{event: event{kind: finish}, state: state{kind: running}, err: errChoose},
			},
		},
		{
			name: "Choose returning an undeclared target",
			declare: func(b *builder) {
				b.On(running, finish).Choose(func(context.Context, state, event, *record) (state, error) {
					return state{kind: created}, nil // a state of the definition, not a declared target
				}, done)
				b.On(created, start).To(state{kind: running})
			},
			initial: state{kind: running},
			steps: []step{
				{event: event{kind: finish}, state: state{kind: running}, err: mealy.ErrUndeclaredState},
			},
		},
		{
			name: "Choose returning a state unknown to the definition",
			declare: func(b *builder) {
				b.On(running, finish).Choose(func(context.Context, state, event, *record) (state, error) {
					return state{kind: waiting}, nil
				}, done)
			},
			initial: state{kind: running},
			steps: []step{
				{event: event{kind: finish}, state: state{kind: running}, err: mealy.ErrUndeclaredState},
			},
		},
		{
			name: "any-state: applies to non-terminal states not excluded",
			declare: func(b *builder) {
				b.State(created)
				b.State(running)
				b.State(waiting)
				b.State(failed).Terminal()
				b.State(done).Terminal()
				b.On(created, start).To(state{kind: running})
				b.On(running, ping).To(state{kind: waiting})
				b.On(waiting, finish).To(state{kind: done})
				b.OnAny(fail, waiting).Choose(failTo, failed).Do("anyFail")
			},
			initial: state{kind: created},
			steps: []step{
				{event: event{kind: start}, state: state{kind: running}},
				{event: event{kind: ping}, state: state{kind: waiting}},
				{event: event{kind: fail}, state: state{kind: waiting}, err: mealy.ErrUnhandledEvent}, // excluded
				{event: event{kind: finish}, state: state{kind: done}},
				{event: event{kind: fail}, state: state{kind: done}, err: mealy.ErrUnhandledEvent}, // terminal
			},
		},
		{
			name: "any-state: a specific transition takes precedence",
			declare: func(b *builder) {
				b.On(created, fail).To(state{kind: done}).Do("specific")
				b.On(created, start).To(state{kind: running})
				b.OnAny(fail).Choose(failTo, failed).Do("anyFail")
			},
			initial: state{kind: created},
			steps: []step{
				{event: event{kind: fail}, actions: []action{"specific"}, state: state{kind: done}},
			},
		},
		{
			name: "any-state: Stay keeps each state",
			declare: func(b *builder) {
				b.On(created, start).To(state{kind: running})
				b.On(running, finish).To(state{kind: created})
				b.OnAny(ping).Stay().Do("pong")
			},
			initial: state{kind: created},
			steps: []step{
				{event: event{kind: ping}, actions: []action{"pong"}, state: state{kind: created}},
				{event: event{kind: start}, state: state{kind: running}},
				{event: event{kind: ping}, actions: []action{"pong"}, state: state{kind: running}},
			},
		},
		{
			name: "unhandled: an error by default, state unchanged",
			declare: func(b *builder) {
				b.On(created, start).To(state{kind: running})
			},
			initial: state{kind: created},
			steps: []step{
				{event: event{kind: tick}, state: state{kind: created}, err: mealy.ErrUnhandledEvent},
				{event: event{kind: orphanEvent}, state: state{kind: created}, err: mealy.ErrUnhandledEvent}, // unknown to the definition
			},
		},
		{
			name: "unhandled: ignored",
			declare: func(b *builder) {
				b.On(created, start).To(state{kind: running})
				b.IgnoreUnhandled()
			},
			initial: state{kind: created},
			steps: []step{
				{event: event{kind: tick}, state: state{kind: created}},
				{event: event{kind: start}, state: state{kind: running}},
				{event: event{kind: start}, state: state{kind: running}},
			},
		},
		{
			name: "unhandled: a hook that accepts or rejects",
			declare: func(b *builder) {
				b.On(created, start).To(state{kind: running})
				b.OnUnhandled(func(_ context.Context, s state, e event, c *record) error {
					c.seen = append(c.seen, fmt.Sprintf("unhandled %v in %v", e, s))
					if e.kind == fail {
						return errChoose
					}
					return nil
				})
			},
			initial: state{kind: created},
			steps: []step{
				{event: event{kind: tick}, state: state{kind: created}},
				{event: event{kind: fail}, state: state{kind: created}, err: errChoose},
				{event: event{kind: fail}, state: state{kind: created}, err: mealy.ErrUnhandledEvent},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBuilder()
			tt.declare(b)
			def, err := b.Build()
			require.NoError(t, err)
			m, err := def.New(tt.initial)
			require.NoError(t, err)
			c := &record{}
			for n, st := range tt.steps {
				actions, err := m.Handle(context.Background(), st.event, c)
				if st.err != nil {
					assert.ErrorIs(t, err, st.err, "step %d", n)
					assert.Nil(t, actions, "step %d", n)
				} else {
					require.NoError(t, err, "step %d", n)
					assert.Equal(t, fmt.Sprint(st.actions), fmt.Sprint(actions), "step %d", n)
				}
				assert.Equal(t, st.state, m.State(), "step %d", n)
			}
		})
	}
}

// orphanEvent is an event kind no definition declares.
const orphanEvent eventKind = 99

func TestHandleUnhandledErrorNamesStateAndEvent(t *testing.T) {
	b := newBuilder()
	b.On(created, start).To(state{kind: running})
	def, err := b.Build()
	require.NoError(t, err)
	m, err := def.New(state{kind: created})
	require.NoError(t, err)

	_, err = m.Handle(context.Background(), event{kind: fail, err: errAction}, &record{})
	require.ErrorIs(t, err, mealy.ErrUnhandledEvent)
	// Identity is checked above; the message must also say where.
	assert.Contains(t, err.Error(), "Created")
	assert.Contains(t, err.Error(), event{kind: fail, err: errAction}.String())
}

func TestHandlersSeeTypedValues(t *testing.T) {
	b := newBuilder()
	b.On(running, fail).Choose(func(_ context.Context, s state, e event, c *record) (state, error) {
		c.seen = append(c.seen, fmt.Sprintf("%v %v", s, e))
		return state{kind: failed, reason: s.kind.String() + ": " + e.err.Error()}, nil
	}, failed)
	b.State(running)
	b.State(failed).Terminal()
	def, err := b.Build()
	require.NoError(t, err)
	m, err := def.New(state{kind: running})
	require.NoError(t, err)

	c := &record{}
	_, err = m.Handle(context.Background(), event{kind: fail, err: errAction}, c)
	require.NoError(t, err)
	assert.Equal(t, []string{"Running Fail(action failed)"}, c.seen)
	assert.Equal(t, state{kind: failed, reason: "Running: action failed"}, m.State())
}

func TestZeroMachine(t *testing.T) {
	var m *mealy.Machine[state, event, *record, action]
	_, err := m.Handle(context.Background(), event{}, &record{})
	assert.ErrorIs(t, err, mealy.ErrInvalidDeclaration)
	assert.Equal(t, state{}, m.State())
	_, _, ok := m.Timeout()
	assert.False(t, ok)

	var zero mealy.Machine[state, event, *record, action]
	_, err = zero.Handle(context.Background(), event{}, &record{})
	assert.ErrorIs(t, err, mealy.ErrInvalidDeclaration)
}

func TestHandleReturnedSliceIsTheMachines(t *testing.T) {
	b := newBuilder()
	b.On(created, tick).Stay().Do("a", "b")
	b.On(created, start).To(state{kind: running})
	def, err := b.Build()
	require.NoError(t, err)
	m1, err := def.New(state{kind: created})
	require.NoError(t, err)
	m2, err := def.New(state{kind: created})
	require.NoError(t, err)

	got, err := m1.Handle(context.Background(), event{kind: tick}, &record{})
	require.NoError(t, err)
	got[0] = "scribbled" // a careless caller must not corrupt the definition or other machines
	again, err := m2.Handle(context.Background(), event{kind: tick}, &record{})
	require.NoError(t, err)
	assert.Equal(t, []action{"a", "b"}, again)
}

func TestHandleDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	tests := []struct {
		name  string
		timed bool
		event flipEvent
		from  flipState
	}{
		{"To", false, flipEvent{kind: flip}, 0},
		{"To with a timeout", true, flipEvent{kind: flip}, 0},
		{"Stay", false, flipEvent{kind: 1}, 0},
		{"Choose", false, flipEvent{kind: 2}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := flipDefinition(t, tt.timed).New(tt.from)
			require.NoError(t, err)
			ctx, c := context.Background(), &flipCtx{}
			allocs := testing.AllocsPerRun(100, func() {
				if _, err := m.Handle(ctx, tt.event, c); err != nil {
					t.Fatal(err)
				}
			})
			assert.Zero(t, allocs)
		})
	}
}

func TestDefinitionSharedByConcurrentMachines(t *testing.T) {
	b := newBuilder()
	declareDrawn(b)
	def, err := b.Build()
	require.NoError(t, err)
	want := def.Mermaid()

	const workers = 8
	errs := make(chan error, workers)
	for range workers {
		go func() {
			m, err := def.New(state{kind: created})
			if err != nil {
				errs <- err
				return
			}
			for _, e := range []event{{kind: start}, {kind: tick}, {kind: ping}, {kind: tick}} {
				if _, err := m.Handle(context.Background(), e, &record{}); err != nil {
					errs <- err
					return
				}
			}
			if m.State().kind != done || def.Mermaid() != want {
				errs <- fmt.Errorf("machine ended in %v", m.State())
				return
			}
			errs <- nil
		}()
	}
	for range workers {
		assert.NoError(t, <-errs)
	}
}

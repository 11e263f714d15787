package mealy_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/mealy"
)

type builder = mealy.Builder[state, event, *record, action, stateKind, eventKind]

// declareValid declares a machine that passes every check, Strict included.
func declareValid(b *builder) {
	b.Initial(created)
	b.FailureEvent(fail)
	b.Strict()
	b.State(created)
	b.State(running)
	b.State(waiting).Timeout(5*time.Second, event{kind: tick})
	b.State(done).Terminal()
	b.State(failed).Terminal()
	b.On(created, start).To(state{kind: running})
	b.On(running, ping).To(state{kind: waiting})
	b.On(waiting, tick).To(state{kind: done})
	b.On(running, finish).To(state{kind: done})
	b.OnAny(fail).Choose(failTo, failed)
	b.On(failed, fail).Stay()
}

func TestBuildValidation(t *testing.T) {
	chooseNil := func(context.Context, state, event, *record) (state, error) { return state{}, nil }
	tests := []struct {
		name    string
		valid   bool // start from declareValid
		declare func(b *builder)
		want    []error // each must match; nil: Build succeeds
	}{
		{name: "valid", valid: true, declare: func(*builder) {}},
		{name: "states not declared: references are free", declare: func(b *builder) {
			b.On(created, start).To(state{kind: running})
			b.On(running, finish).To(state{kind: done})
		}},
		{name: "duplicate transition", valid: true, declare: func(b *builder) {
			b.On(created, start).To(state{kind: failed})
		}, want: []error{mealy.ErrDuplicate}},
		{name: "duplicate any-state transition", valid: true, declare: func(b *builder) {
			b.OnAny(fail).Stay()
		}, want: []error{mealy.ErrDuplicate}},
		{name: "two targets", declare: func(b *builder) {
			b.On(created, start).To(state{kind: running}).Stay()
		}, want: []error{mealy.ErrDuplicate}},
		{name: "no target", declare: func(b *builder) {
			b.On(created, start).Do("a")
		}, want: []error{mealy.ErrInvalidDeclaration}},
		{name: "nil Choose handler", declare: func(b *builder) {
			b.On(created, start).Choose(nil, running)
		}, want: []error{mealy.ErrInvalidDeclaration}},
		{name: "Choose without targets", declare: func(b *builder) {
			b.On(created, start).Choose(chooseNil)
		}, want: []error{mealy.ErrInvalidDeclaration}},
		{name: "transition from an undeclared state", declare: func(b *builder) {
			b.State(running)
			b.On(created, start).To(state{kind: running})
		}, want: []error{mealy.ErrUndeclaredState}},
		{name: "transition to an undeclared state", declare: func(b *builder) {
			b.State(created)
			b.On(created, start).To(state{kind: running})
		}, want: []error{mealy.ErrUndeclaredState}},
		{name: "Choose target undeclared", declare: func(b *builder) {
			b.State(created)
			b.On(created, start).Choose(chooseNil, running)
		}, want: []error{mealy.ErrUndeclaredState}},
		{name: "except undeclared", declare: func(b *builder) {
			b.State(created)
			b.OnAny(fail, running).To(state{kind: created})
		}, want: []error{mealy.ErrUndeclaredState}},
		{name: "initial undeclared", declare: func(b *builder) {
			b.State(created)
			b.Initial(running)
		}, want: []error{mealy.ErrUndeclaredState}},
		{name: "initial with no way out", declare: func(b *builder) {
			b.Initial(created)
			b.On(created, tick).Stay()
			b.On(created, ping).To(state{kind: created})
		}, want: []error{mealy.ErrNoWayOut}},
		{name: "terminal initial has no way out", declare: func(b *builder) {
			b.State(done).Terminal()
			b.Initial(done)
		}, want: []error{mealy.ErrNoWayOut}},
		{name: "initial declared twice", valid: true, declare: func(b *builder) {
			b.Initial(running)
		}, want: []error{mealy.ErrDuplicate}},
		{name: "failure event declared twice", valid: true, declare: func(b *builder) {
			b.FailureEvent(tick)
		}, want: []error{mealy.ErrDuplicate}},
		{name: "unhandled policy set twice", declare: func(b *builder) {
			b.IgnoreUnhandled()
			b.OnUnhandled(func(context.Context, state, event, *record) error { return nil })
		}, want: []error{mealy.ErrDuplicate}},
		{name: "nil unhandled hook", declare: func(b *builder) {
			b.OnUnhandled(nil)
		}, want: []error{mealy.ErrInvalidDeclaration}},
		{name: "timeout not positive", valid: true, declare: func(b *builder) {
			b.State(running).Timeout(0, event{kind: finish})
		}, want: []error{mealy.ErrInvalidDeclaration}},
		{name: "timeout event not handled", valid: true, declare: func(b *builder) {
			b.State(running).Timeout(time.Second, event{kind: tick})
		}, want: []error{mealy.ErrInvalidDeclaration}},
		{name: "timeout event handled by Stay", valid: true, declare: func(b *builder) {
			b.State(created).Timeout(time.Second, event{kind: tick})
			b.On(created, tick).Stay()
		}, want: []error{mealy.ErrInvalidDeclaration}},
		{name: "timeout declared twice", valid: true, declare: func(b *builder) {
			b.State(waiting).Timeout(time.Second, event{kind: tick})
		}, want: []error{mealy.ErrDuplicate}},
		{name: "timeout re-entering is fine", valid: true, declare: func(b *builder) {
			b.State(created).Timeout(time.Second, event{kind: tick})
			b.On(created, tick).To(state{kind: created})
		}},
		{name: "terminal state leaves", valid: true, declare: func(b *builder) {
			b.On(done, start).To(state{kind: running})
		}, want: []error{mealy.ErrInvalidDeclaration}},
		{name: "terminal state Choose may leave", valid: true, declare: func(b *builder) {
			b.On(done, start).Choose(chooseNil, done, running)
		}, want: []error{mealy.ErrInvalidDeclaration}},
		{name: "terminal state may leave on the failure event", valid: true, declare: func(b *builder) {
			b.On(done, fail).Choose(failTo, failed) // a failing action that entered Done
		}},
		{name: "terminal state may re-enter itself", valid: true, declare: func(b *builder) {
			b.On(done, start).To(state{kind: done})
		}},
		{name: "strict: failure not handled in an excluded state", declare: func(b *builder) {
			declareValidExcept(b, created)
		}, want: []error{mealy.ErrFailureNotHandled}},
		{name: "strict: unreachable state", valid: true, declare: func(b *builder) {
			b.State(orphan)
			b.On(orphan, start).To(state{kind: running})
		}, want: []error{mealy.ErrUnreachable}},
		{name: "strict: no terminal state", declare: func(b *builder) {
			b.Initial(created)
			b.FailureEvent(fail)
			b.Strict()
			b.On(created, start).To(state{kind: running})
			b.On(running, finish).To(state{kind: created})
			b.OnAny(fail).To(state{kind: created})
		}, want: []error{mealy.ErrNoTerminal}},
		{name: "strict: terminal state unreachable", declare: func(b *builder) {
			b.Initial(created)
			b.FailureEvent(fail)
			b.Strict()
			b.State(created)
			b.State(running)
			b.State(done).Terminal()
			b.On(created, start).To(state{kind: running})
			b.On(running, finish).To(state{kind: created})
			b.OnAny(fail).To(state{kind: created})
		}, want: []error{mealy.ErrNoTerminal, mealy.ErrUnreachable}},
		{name: "strict: non-terminal dead end", declare: func(b *builder) {
			b.Initial(created)
			b.FailureEvent(fail)
			b.Strict()
			b.State(created)
			b.State(running)
			b.State(done).Terminal()
			b.On(created, start).To(state{kind: running})
			b.On(created, finish).To(state{kind: done})
			b.OnAny(fail).Stay()
		}, want: []error{mealy.ErrNoWayOut}},
		{name: "strict: Choose targets count as reachable", declare: func(b *builder) {
			b.Initial(created)
			b.FailureEvent(fail)
			b.Strict()
			b.State(created)
			b.State(failed).Terminal()
			b.OnAny(fail).Choose(failTo, failed)
		}},
		{name: "strict requires Initial and FailureEvent", declare: func(b *builder) {
			b.Strict()
			b.State(created)
			b.State(done).Terminal()
			b.On(created, start).To(state{kind: done})
		}, want: []error{mealy.ErrInvalidDeclaration}},
		{name: "every problem is reported", valid: true, declare: func(b *builder) {
			b.On(created, start).To(state{kind: failed})                // duplicate
			b.State(running).Timeout(-time.Second, event{kind: finish}) // not positive
			b.FailureEvent(tick)                                        // duplicate
		}, want: []error{mealy.ErrDuplicate, mealy.ErrInvalidDeclaration}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBuilder()
			if tt.valid {
				declareValid(b)
			}
			tt.declare(b)
			def, err := b.Build()
			if tt.want == nil {
				require.NoError(t, err)
				assert.NotNil(t, def)
				return
			}
			require.Error(t, err)
			t.Log(err)
			assert.Nil(t, def)
			for _, want := range tt.want {
				assert.ErrorIs(t, err, want)
			}
		})
	}
}

// declareValidExcept is declareValid with the any-state failure transition
// not applying to except.
func declareValidExcept(b *builder, except stateKind) {
	b.Initial(created)
	b.FailureEvent(fail)
	b.Strict()
	b.State(created)
	b.State(running)
	b.State(done).Terminal()
	b.State(failed).Terminal()
	b.On(created, start).To(state{kind: running})
	b.On(running, finish).To(state{kind: done})
	b.OnAny(fail, except).Choose(failTo, failed)
}

func TestBuildNilKeyFunctions(t *testing.T) {
	def, err := mealy.New[state, event, *record, action, stateKind, eventKind](nil, nil).Build()
	assert.ErrorIs(t, err, mealy.ErrInvalidDeclaration)
	assert.Nil(t, def)

	var zero builder
	zero.State(created).Terminal() // no panic on a zero Builder
	_, err = zero.Build()
	assert.ErrorIs(t, err, mealy.ErrInvalidDeclaration)
}

// dupKey prints the same name for every key.
type dupKey int

func (dupKey) String() string { return "Same" }

func TestBuildDuplicateStateNames(t *testing.T) {
	b := mealy.New[dupKey, eventKind, *record, action](func(k dupKey) dupKey { return k }, func(e eventKind) eventKind { return e })
	b.On(1, start).To(2)
	_, err := b.Build()
	assert.ErrorIs(t, err, mealy.ErrDuplicate)
}

func TestBuildTwice(t *testing.T) {
	b := newBuilder()
	b.On(created, start).To(state{kind: running})
	first, err := b.Build()
	require.NoError(t, err)
	b.On(created, start).To(state{kind: done})
	_, err = b.Build()
	assert.ErrorIs(t, err, mealy.ErrDuplicate, "the second Build sees the new declaration")

	m, err := first.New(state{kind: created})
	require.NoError(t, err)
	_, err = m.Handle(context.Background(), event{kind: start}, &record{})
	require.NoError(t, err)
	assert.Equal(t, state{kind: running}, m.State(), "a built Definition is not changed by later declarations")
}

func TestNew(t *testing.T) {
	b := newBuilder()
	b.State(created)
	b.State(running)
	b.State(done).Terminal()
	b.On(created, start).To(state{kind: running})
	b.On(running, tick).Stay()
	def, err := b.Build()
	require.NoError(t, err)

	tests := []struct {
		name    string
		initial state
		want    error
	}{
		{"has a way out", state{kind: created}, nil},
		{"terminal is allowed", state{kind: done}, nil},
		{"no way out", state{kind: running}, mealy.ErrNoWayOut},
		{"unknown state", state{kind: failed}, mealy.ErrUndeclaredState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := def.New(tt.initial)
			if tt.want != nil {
				assert.ErrorIs(t, err, tt.want)
				assert.Nil(t, m)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.initial, m.State())
		})
	}

	var nilDef *mealy.Definition[state, event, *record, action]
	_, err = nilDef.New(state{})
	assert.ErrorIs(t, err, mealy.ErrInvalidDeclaration)
}

package mealy_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
)

const waitTimeout = 5 * time.Second

// declareTimed declares Waiting with a timeout: Tick leaves to Done, Ping
// re-enters Waiting (or stays, with pingStays), Finish moves to Running.
func declareTimed(b *builder, pingStays bool) {
	b.State(created)
	b.State(running)
	b.State(waiting).Timeout(waitTimeout, event{kind: tick})
	b.State(done).Terminal()
	b.State(failed).Terminal()
	b.On(created, start).To(state{kind: waiting})
	b.On(waiting, tick).To(state{kind: done}).Do("timedOut")
	if pingStays {
		b.On(waiting, ping).Stay().Do("pinged")
	} else {
		b.On(waiting, ping).To(state{kind: waiting}).Do("pinged")
	}
	b.On(waiting, finish).To(state{kind: running})
	b.On(running, finish).To(state{kind: done})
	b.On(running, ping).To(state{kind: waiting})
	b.OnAny(fail).Choose(func(_ context.Context, s state, e event, _ *record) (state, error) {
		if e.err == errChoose {
			return s, errChoose
		}
		return state{kind: failed}, nil
	}, failed)
}

func TestTimeoutArming(t *testing.T) {
	// Each step sleeps, feeds an event, then checks the armed deadline as
	// an offset from the start (or that none is armed).
	type timedStep struct {
		sleep   time.Duration
		event   event
		err     error
		armedAt time.Duration // deadline - start; -1: disarmed
	}
	tests := []struct {
		name      string
		pingStays bool
		initial   state
		steps     []timedStep
	}{
		{
			name: "armed by New and on entry, disarmed on leaving", initial: state{kind: waiting},
			steps: []timedStep{
				{sleep: time.Second, event: event{kind: finish}, armedAt: -1},
				{sleep: time.Second, event: event{kind: ping}, armedAt: 2*time.Second + waitTimeout},
			},
		},
		{
			name: "not armed in a state without timeout", initial: state{kind: created},
			steps: []timedStep{
				{sleep: time.Second, event: event{kind: start}, armedAt: time.Second + waitTimeout},
			},
		},
		{
			name: "re-entry re-arms", initial: state{kind: waiting},
			steps: []timedStep{
				{sleep: 2 * time.Second, event: event{kind: ping}, armedAt: 2*time.Second + waitTimeout},
				{sleep: time.Second, event: event{kind: ping}, armedAt: 3*time.Second + waitTimeout},
			},
		},
		{
			name: "Stay keeps the deadline", pingStays: true, initial: state{kind: waiting},
			steps: []timedStep{
				{sleep: 2 * time.Second, event: event{kind: ping}, armedAt: waitTimeout},
			},
		},
		{
			name: "errors change nothing", initial: state{kind: waiting},
			steps: []timedStep{
				{sleep: time.Second, event: event{kind: start}, err: mealy.ErrUnhandledEvent, armedAt: waitTimeout},
				{sleep: time.Second, event: event{kind: fail, err: errChoose}, err: errChoose, armedAt: waitTimeout},
			},
		},
		{
			name: "the timeout event leaves", initial: state{kind: waiting},
			steps: []timedStep{
				{sleep: waitTimeout, event: event{kind: tick}, armedAt: -1},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBuilder()
				declareTimed(b, tt.pingStays)
				def, err := b.Build()
				require.NoError(t, err)
				t0 := time.Now()
				m, err := def.New(tt.initial)
				require.NoError(t, err)
				if deadline, ev, ok := m.Timeout(); tt.initial.kind == waiting {
					require.True(t, ok)
					assert.Equal(t, waitTimeout, deadline.Sub(t0))
					assert.Equal(t, event{kind: tick}, ev)
				} else {
					assert.False(t, ok)
				}
				for n, st := range tt.steps {
					time.Sleep(st.sleep)
					_, err := m.Handle(context.Background(), st.event, &record{})
					if st.err != nil {
						assert.ErrorIs(t, err, st.err, "step %d", n)
					} else {
						require.NoError(t, err, "step %d", n)
					}
					deadline, _, ok := m.Timeout()
					if st.armedAt < 0 {
						assert.False(t, ok, "step %d: disarmed", n)
						continue
					}
					require.True(t, ok, "step %d: armed", n)
					assert.Equal(t, st.armedAt, deadline.Sub(t0), "step %d: deadline", n)
				}
			})
		})
	}
}

// stage is a scripted supervisor over a mealy definition: dispatch is a
// closure, failures routed are recorded.
type stage struct {
	def      *mealy.Definition[state, event, *record, action]
	dispatch func(ctx context.Context, s state, c *record) (stagefsm.Directive[event], error)
	routed   []error
	complete int
}

func (s *stage) Name() string                               { return "test" }
func (s *stage) WriteCompletionEvent(context.Context) error { s.complete++; return nil }

func (s *stage) BuildStateMachine(initial state) (stagefsm.Machine[state, event, *record, action], error) {
	return s.def.New(initial)
}

func (s *stage) DispatchState(ctx context.Context, st state, c *record) (stagefsm.Directive[event], error) {
	return s.dispatch(ctx, st, c)
}

func (s *stage) EventForActionError(err error) event {
	s.routed = append(s.routed, err)
	return event{kind: fail, err: err}
}

// In Waiting, a dispatch either idles or blocks until its context is done.
func idleInWaiting(context.Context) (stagefsm.Directive[event], error) {
	return stagefsm.Idle[event](), nil
}

func blockInWaiting(ctx context.Context) (stagefsm.Directive[event], error) {
	<-ctx.Done()
	return stagefsm.Directive[event]{}, ctx.Err()
}

func TestTimeoutUnderRun(t *testing.T) {
	tests := []struct {
		name      string
		pingStays bool
		opts      []stagefsm.Option
		// waiting is the dispatch of Waiting; since is the time since start.
		waiting func(ctx context.Context, since time.Duration, c *record) (stagefsm.Directive[event], error)
		firesAt time.Duration // when "timedOut" runs; -1: never
		endsAt  time.Duration // when the stage completes
	}{
		{
			name: "fires at the deadline while idle",
			waiting: func(ctx context.Context, _ time.Duration, _ *record) (stagefsm.Directive[event], error) {
				return idleInWaiting(ctx)
			},
			firesAt: waitTimeout, endsAt: waitTimeout,
		},
		{
			name: "fires at the deadline while dispatch blocks",
			waiting: func(ctx context.Context, _ time.Duration, _ *record) (stagefsm.Directive[event], error) {
				return blockInWaiting(ctx)
			},
			firesAt: waitTimeout, endsAt: waitTimeout,
		},
		{
			name: "does not fire after leaving the state",
			opts: []stagefsm.Option{stagefsm.WithIdleBackoff(time.Second, time.Second)},
			waiting: func(ctx context.Context, since time.Duration, _ *record) (stagefsm.Directive[event], error) {
				select {
				case <-time.After(2*time.Second - since):
					return stagefsm.Transition(event{kind: finish}), nil // to Running
				case <-ctx.Done():
					return stagefsm.Directive[event]{}, ctx.Err()
				}
			},
			firesAt: -1, endsAt: 3 * waitTimeout,
		},
		{
			name: "re-armed on self-entry while dispatch blocks",
			waiting: func(ctx context.Context, since time.Duration, c *record) (stagefsm.Directive[event], error) {
				if slices.Contains(c.log, "pinged") {
					return blockInWaiting(ctx)
				}
				select {
				case <-time.After(3*time.Second - since):
					return stagefsm.Transition(event{kind: ping}), nil
				case <-ctx.Done():
					return stagefsm.Directive[event]{}, ctx.Err()
				}
			},
			firesAt: 3*time.Second + waitTimeout, endsAt: 3*time.Second + waitTimeout,
		},
		{
			name: "re-armed on self-entry while idle",
			opts: []stagefsm.Option{stagefsm.WithIdleBackoff(time.Second, time.Second)},
			waiting: func(ctx context.Context, since time.Duration, c *record) (stagefsm.Directive[event], error) {
				if since == 3*time.Second && !slices.Contains(c.log, "pinged") {
					return stagefsm.Transition(event{kind: ping}), nil
				}
				return idleInWaiting(ctx)
			},
			firesAt: 3*time.Second + waitTimeout, endsAt: 3*time.Second + waitTimeout,
		},
		{
			name: "a Stay keeps the deadline", pingStays: true,
			waiting: func(ctx context.Context, since time.Duration, c *record) (stagefsm.Directive[event], error) {
				if slices.Contains(c.log, "pinged") {
					return blockInWaiting(ctx)
				}
				select {
				case <-time.After(3*time.Second - since):
					return stagefsm.Transition(event{kind: ping}), nil
				case <-ctx.Done():
					return stagefsm.Directive[event]{}, ctx.Err()
				}
			},
			firesAt: waitTimeout, endsAt: waitTimeout,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBuilder()
				declareTimed(b, tt.pingStays)
				def, err := b.Build()
				require.NoError(t, err)

				t0 := time.Now()
				var end time.Duration
				s := &stage{def: def}
				s.dispatch = func(ctx context.Context, st state, c *record) (stagefsm.Directive[event], error) {
					switch st.kind {
					case created:
						return stagefsm.Transition(event{kind: start}), nil
					case waiting:
						return tt.waiting(ctx, time.Since(t0), c)
					case running: // leave after 3 timeouts' worth of time
						if time.Since(t0) >= 3*waitTimeout {
							return stagefsm.Transition(event{kind: finish}), nil
						}
						return stagefsm.Idle[event](), nil
					default:
						end = time.Since(t0)
						return stagefsm.Terminate[event](), nil
					}
				}
				c := &record{}
				err = stagefsm.Run(context.Background(), s, state{kind: created}, c, tt.opts...)
				require.NoError(t, err)
				assert.Equal(t, 1, s.complete)
				assert.Empty(t, s.routed, "a dispatch ended by the deadline is not a failure")
				assert.Equal(t, tt.endsAt, end)

				i := slices.Index(c.log, "timedOut")
				if tt.firesAt < 0 {
					assert.Equal(t, -1, i, "timeout fired: %v", c.log)
					return
				}
				require.GreaterOrEqual(t, i, 0, "timeout never fired: %v", c.log)
				assert.Equal(t, tt.firesAt, c.at[i].Sub(t0), "fired exactly at the deadline")
			})
		})
	}
}

func TestTimeoutEventRejectedByRun(t *testing.T) {
	// A Choose on the timeout event that fails: Run reports the machine's
	// error, wrapping the handler's.
	synctest.Test(t, func(t *testing.T) {
		b := newBuilder()
		b.State(waiting).Timeout(waitTimeout, event{kind: tick})
		b.State(done).Terminal()
		b.On(waiting, tick).Choose(func(context.Context, state, event, *record) (state, error) {
			return state{}, errChoose
		}, done)
		def, err := b.Build()
		require.NoError(t, err)
		s := &stage{def: def, dispatch: func(ctx context.Context, _ state, _ *record) (stagefsm.Directive[event], error) {
			return blockInWaiting(ctx)
		}}
		err = stagefsm.Run(context.Background(), s, state{kind: waiting}, &record{})
		assert.ErrorIs(t, err, errChoose)
		assert.False(t, errors.Is(err, context.DeadlineExceeded), "the deadline is not reported as a cancellation")
	})
}

package stagefsm_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/stagefsm/stagefsm"
)

// The fake stage of the restart tests. Its states are strings: "created"
// is a gate (it blocks for "init"), "running" polls control events and
// runs the incarnation's script, "draining" finishes, "failed" and "done"
// are terminal ("failed" is reported failed through stagefsm.Failable).
// Each incarnation's context is a new *rstWork numbered from 1, made by
// rstFactory; the script says what "running" does in each incarnation.

// rstWork is the context of one incarnation.
type rstWork struct {
	n      int      // incarnation, from 1
	events []string // control events this incarnation took ("poke:x")
}

type rstAct struct{ event string }

func (a rstAct) Execute(_ context.Context, w *rstWork) error {
	w.events = append(w.events, a.event)
	return nil
}

type rstMachine struct{ state string }

func (m *rstMachine) State() string { return m.state }

var rstEdges = map[string]map[string]string{
	"created":  {"init": "running", "fail": "failed", "drain": "done"},
	"running":  {"finish": "done", "fail": "failed", "drain": "draining"},
	"draining": {"drained": "done", "fail": "failed"},
	"failed":   {"fail": "failed"},
}

func (m *rstMachine) Handle(_ context.Context, event string, _ *rstWork) ([]rstAct, error) {
	if event == "fatal" {
		return nil, stagefsm.Permanent(errors.New("machine corrupt"))
	}
	if m.state == "running" && len(event) > 5 && event[:5] == "poke:" {
		return []rstAct{{event}}, nil // a self-loop recording the event
	}
	to, ok := rstEdges[m.state][event]
	if !ok {
		return nil, fmt.Errorf("%w: %s in %s", stagefsm.ErrUnhandledEvent, event, m.state)
	}
	m.state = to
	return nil, nil
}

// rstStep is what "running" does in one incarnation.
type rstStep func(ctx context.Context, w *rstWork) (stagefsm.Directive[string], error)

var errFlaky = errors.New("flaky")

// rstFail routes a dispatch failure: the machine goes to "failed", the
// incarnation terminates without error in a failed state.
func rstFail(err error) rstStep {
	return func(context.Context, *rstWork) (stagefsm.Directive[string], error) {
		return stagefsm.Directive[string]{}, err
	}
}

// rstReject makes Run return an error: the machine rejects the event.
func rstReject(event string) rstStep {
	return func(context.Context, *rstWork) (stagefsm.Directive[string], error) {
		return stagefsm.Transition(event), nil
	}
}

func rstPanic(context.Context, *rstWork) (stagefsm.Directive[string], error) { panic("boom") }

func rstSucceed(context.Context, *rstWork) (stagefsm.Directive[string], error) {
	return stagefsm.Transition("finish"), nil
}

func rstIdle(context.Context, *rstWork) (stagefsm.Directive[string], error) {
	return stagefsm.Idle[string](), nil
}

// rstAfter runs for d (honouring ctx), then does step.
func rstAfter(d time.Duration, step rstStep) rstStep {
	return func(ctx context.Context, w *rstWork) (stagefsm.Directive[string], error) {
		select {
		case <-time.After(d):
			return step(ctx, w)
		case <-ctx.Done():
			return stagefsm.Directive[string]{}, ctx.Err()
		}
	}
}

// rstStage is the supervisor. script[i] is incarnation i+1's step; the
// incarnations past the script idle.
type rstStage struct {
	script []rstStep
}

func (*rstStage) Name() string                               { return "rst" }
func (*rstStage) EventForActionError(error) string           { return "fail" }
func (*rstStage) WriteCompletionEvent(context.Context) error { return nil }
func (*rstStage) StopEvent() string                          { return "drain" }
func (*rstStage) FailedState(s string) bool                  { return s == "failed" }
func (*rstStage) ControlClosed(string) (string, bool)        { return "drain", true }

func (*rstStage) BuildStateMachine(initial string) (stagefsm.Machine[string, string, *rstWork, rstAct], error) {
	return &rstMachine{state: initial}, nil
}

func (*rstStage) ControlMode(s string) stagefsm.ControlMode {
	switch s {
	case "created":
		return stagefsm.ControlBlock
	case "running", "draining":
		return stagefsm.ControlPoll
	default:
		return stagefsm.ControlIgnore
	}
}

func (f *rstStage) DispatchState(ctx context.Context, s string, w *rstWork) (stagefsm.Directive[string], error) {
	switch s {
	case "running":
		if w.n <= len(f.script) {
			return f.script[w.n-1](ctx, w)
		}
		return stagefsm.Idle[string](), nil
	case "draining":
		return stagefsm.Transition("drained"), nil
	default:
		return stagefsm.Terminate[string](), nil
	}
}

// rstFactory numbers the incarnations.
func rstFactory(_ context.Context, prev *rstWork) (*rstWork, error) {
	return &rstWork{n: prev.n + 1}, nil
}

// rstLog records the restart callbacks with the (fake) time since the
// test started.
type rstLog struct {
	t0 time.Time
	mu sync.Mutex
	ev []string
}

func newRstLog() *rstLog { return &rstLog{t0: time.Now()} }

func (l *rstLog) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ev = append(l.ev, fmt.Sprintf("%v ", time.Since(l.t0))+fmt.Sprintf(format, args...))
}

func (l *rstLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ev)
}

func (l *rstLog) observer() stagefsm.Option {
	return stagefsm.WithObserver(stagefsm.Observer[string, string]{
		OnRestartScheduled: func(n int, d time.Duration, cause error) { l.add("scheduled %d in %v", n, d) },
		OnRestarted:        func(n int) { l.add("incarnation %d", n) },
		OnGaveUp:           func(err error) { l.add("gave up") },
	})
}

// noJitter is a policy whose waits are exactly 100ms, 200ms, 400ms...
var noJitter = stagefsm.RestartPolicy{MaxRestarts: -1, BackoffInitial: 100 * time.Millisecond, BackoffMax: time.Second}

func rstStart(ctx context.Context, sup *rstStage, initial string, policy stagefsm.RestartPolicy, opts ...stagefsm.Option) *stagefsm.Stage[string, string] {
	opts = append([]stagefsm.Option{stagefsm.WithRestart(policy, rstFactory)}, opts...)
	return stagefsm.Start(ctx, sup, initial, &rstWork{n: 1}, opts...)
}

func TestRestartFailingKTimesThenSucceeding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := newRstLog()
		sup := &rstStage{script: []rstStep{
			rstFail(errFlaky),  // routed: terminates in "failed"
			rstReject("bogus"), // Run returns an error
			rstPanic,           // routed panic: retryable by default
			rstSucceed,
		}}
		st := rstStart(t.Context(), sup, "running", noJitter, log.observer())

		require.NoError(t, st.Wait(t.Context()))
		assert.Equal(t, 3, st.Restarts())
		assert.Equal(t, "done", st.State())
		var p *stagefsm.PanicError
		assert.ErrorAs(t, st.LastFailure(), &p, "the last failure was the panic")
		assert.ErrorIs(t, st.LastFailure(), stagefsm.ErrFailedState)
		assert.Equal(t, []string{
			"0s scheduled 1 in 100ms",
			"100ms incarnation 2",
			"100ms scheduled 2 in 200ms",
			"300ms incarnation 3",
			"300ms scheduled 3 in 400ms",
			"700ms incarnation 4",
		}, log.lines())
	})
}

func TestRestartBackoffSequenceIsDeterministicBySeed(t *testing.T) {
	policy := stagefsm.RestartPolicy{
		MaxRestarts:    -1,
		BackoffInitial: 100 * time.Millisecond,
		BackoffMax:     time.Second,
		Jitter:         0.5,
		Seed:           42,
	}
	script := slices.Repeat([]rstStep{rstFail(errFlaky)}, 6)
	script = append(script, rstSucceed)
	delays := func(t *testing.T, seed uint64) (scheduled, measured []time.Duration) {
		var last time.Time
		obs := stagefsm.WithObserver(stagefsm.Observer[string, string]{
			OnRestartScheduled: func(_ int, d time.Duration, _ error) {
				scheduled = append(scheduled, d)
				last = time.Now()
			},
			OnRestarted: func(int) { measured = append(measured, time.Since(last)) },
		})
		p := policy
		p.Seed = seed
		st := rstStart(t.Context(), &rstStage{script: script}, "running", p, obs)
		require.NoError(t, st.Wait(t.Context()))
		assert.Equal(t, 6, st.Restarts())
		return scheduled, measured
	}
	synctest.Test(t, func(t *testing.T) {
		scheduled, measured := delays(t, 42)
		assert.Equal(t, []time.Duration{
			58_726_375,  // base 100ms
			195_718_005, // 200ms
			244_785_391, // 400ms
			664_215_810, // 800ms
			510_042_129, // 1s (capped)
			539_954_354, // 1s
		}, scheduled, "seed 42's sequence")
		assert.Equal(t, scheduled, measured, "each restart starts exactly after its delay")
		bases := []time.Duration{100, 200, 400, 800, 1000, 1000}
		for i, d := range scheduled {
			base := bases[i] * time.Millisecond
			assert.Greater(t, d, base/2, "restart %d", i+1)
			assert.LessOrEqual(t, d, base, "restart %d", i+1)
		}

		again, _ := delays(t, 42)
		assert.Equal(t, scheduled, again, "same seed, same sequence")
		other, _ := delays(t, 43)
		assert.NotEqual(t, scheduled, other, "another seed, another sequence")
	})
}

func TestRestartIntensityExceeded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var gaveUp error
		sup := &rstStage{script: []rstStep{rstFail(errFlaky), rstFail(errFlaky), rstReject("bogus"), rstSucceed}}
		policy := noJitter
		policy.MaxRestarts, policy.Period = 2, time.Minute
		st := rstStart(t.Context(), sup, "running", policy,
			stagefsm.WithObserver(stagefsm.Observer[string, string]{
				OnGaveUp: func(err error) { gaveUp = err },
			}))

		err := st.Wait(t.Context())
		require.Error(t, err)
		assert.ErrorIs(t, err, stagefsm.ErrRestartIntensity)
		assert.ErrorIs(t, err, stagefsm.ErrUnhandledEvent, "the last cause: the third incarnation's rejected event")
		assert.ErrorIs(t, err, st.LastFailure())
		assert.Same(t, err, gaveUp)
		assert.Equal(t, 2, st.Restarts())
		assert.Equal(t, "running", st.State(), "the final state of the last incarnation")
	})
}

func TestRestartIntensityWindowSlides(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Two restarts per minute allowed. Incarnations that fail after 35s
		// never put three restarts in one minute (a restart counts at its
		// failure: 35s, 70.1s, 105.3s, 140.7s, 176.5s); one that fails at
		// once (177.5s, after the 1s cap) makes the third within a minute of
		// 140.7s.
		policy := noJitter
		policy.MaxRestarts, policy.Period = 2, time.Minute
		slow := rstAfter(35*time.Second, rstFail(errFlaky))
		fast := rstFail(errFlaky)
		sup := &rstStage{script: []rstStep{slow, slow, slow, slow, slow, fast, rstSucceed}}
		var failedAt []string
		t0 := time.Now()
		st := rstStart(t.Context(), sup, "running", policy, stagefsm.WithObserver(stagefsm.Observer[string, string]{
			OnFailure: func(_, _, _ string, _ error) { failedAt = append(failedAt, time.Since(t0).String()) },
		}))

		err := st.Wait(t.Context())
		require.ErrorIs(t, err, stagefsm.ErrRestartIntensity)
		assert.ErrorIs(t, err, errFlaky)
		assert.Equal(t, 5, st.Restarts())
		assert.Equal(t, []string{"35s", "1m10.1s", "1m45.3s", "2m20.7s", "2m56.5s", "2m57.5s"}, failedAt)
	})
}

func TestPermanentFailuresAreNotRestarted(t *testing.T) {
	cases := []struct {
		name   string
		step   rstStep
		policy func(*stagefsm.RestartPolicy)
		is     error
	}{
		{name: "routed permanent error", step: rstFail(stagefsm.Permanent(errFlaky)), is: errFlaky},
		{name: "Run error wrapping ErrPermanent", step: rstReject("fatal"), is: stagefsm.ErrPermanent},
		{name: "panic with PanicIsPermanent", step: rstPanic,
			policy: func(p *stagefsm.RestartPolicy) { p.PanicIsPermanent = true }, is: stagefsm.ErrFailedState},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				log := newRstLog()
				policy := noJitter
				if tc.policy != nil {
					tc.policy(&policy)
				}
				st := rstStart(t.Context(), &rstStage{script: []rstStep{tc.step, rstSucceed}}, "running", policy, log.observer())
				err := st.Wait(t.Context())
				require.Error(t, err)
				assert.ErrorIs(t, err, tc.is)
				assert.NotErrorIs(t, err, stagefsm.ErrRestartIntensity)
				assert.Equal(t, 0, st.Restarts())
				assert.Equal(t, err, st.LastFailure())
				assert.Equal(t, []string{"0s gave up"}, log.lines())
			})
		})
	}
	t.Run("Permanent", func(t *testing.T) {
		assert.NoError(t, stagefsm.Permanent(nil))
		p := stagefsm.Permanent(errFlaky)
		assert.ErrorIs(t, p, stagefsm.ErrPermanent)
		assert.ErrorIs(t, p, errFlaky)
		assert.Same(t, p, stagefsm.Permanent(p), "already permanent")
	})
}

func TestRestartStopAndCancelDuringBackoff(t *testing.T) {
	cases := []struct {
		name string
		end  func(st *stagefsm.Stage[string, string]) error
		is   error
	}{
		{name: "Stop returns at once", end: func(st *stagefsm.Stage[string, string]) error {
			return st.Stop(context.Background())
		}, is: errFlaky},
		{name: "CloseControl", end: func(st *stagefsm.Stage[string, string]) error {
			st.CloseControl()
			return st.Wait(context.Background())
		}, is: errFlaky},
		{name: "Abort", end: func(st *stagefsm.Stage[string, string]) error {
			st.Abort()
			return st.Wait(context.Background())
		}, is: context.Canceled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				scheduled := make(chan struct{})
				factoryCalls := 0
				obs := stagefsm.WithObserver(stagefsm.Observer[string, string]{
					OnRestartScheduled: func(int, time.Duration, error) { close(scheduled) },
				})
				policy := stagefsm.RestartPolicy{BackoffInitial: time.Hour}
				st := stagefsm.Start(t.Context(), &rstStage{script: []rstStep{rstFail(errFlaky)}}, "running", &rstWork{n: 1},
					stagefsm.WithRestart(policy, func(ctx context.Context, prev *rstWork) (*rstWork, error) {
						factoryCalls++
						return rstFactory(ctx, prev)
					}), obs)
				<-scheduled
				synctest.Wait() // the stage is in its backoff wait
				t0 := time.Now()

				err := tc.end(st)
				assert.Equal(t, t0, time.Now(), "no wait")
				require.Error(t, err)
				assert.ErrorIs(t, err, tc.is)
				assert.ErrorIs(t, err, errFlaky, "the failure is in the error")
				assert.Equal(t, 0, factoryCalls, "no new incarnation")
				assert.Equal(t, 0, st.Restarts())
				assert.Equal(t, "failed", st.State())
			})
		})
	}
}

func TestRestartStopWhileRunningIsGraceful(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sup := &rstStage{script: []rstStep{rstFail(errFlaky), rstIdle}}
		st := rstStart(t.Context(), sup, "running", noJitter)
		_, err := st.WaitState(t.Context(), func(string) bool { return st.Restarts() == 1 })
		require.NoError(t, err)
		synctest.Wait() // incarnation 2 idles

		require.NoError(t, st.Stop(t.Context()), "a graceful stop is not a failure")
		assert.Equal(t, "done", st.State())
		assert.Equal(t, 1, st.Restarts())
		assert.ErrorIs(t, st.LastFailure(), errFlaky)
	})
}

func TestRestartFailureAfterStopIsNotRestarted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Dispatch fails while the stop event waits in the queue.
		block := make(chan struct{})
		sup := &rstStage{script: []rstStep{func(ctx context.Context, w *rstWork) (stagefsm.Directive[string], error) {
			<-block
			return stagefsm.Directive[string]{}, errFlaky
		}}}
		st := rstStart(t.Context(), sup, "running", noJitter)
		synctest.Wait() // dispatch blocks
		stopped := make(chan error)
		go func() { stopped <- st.Stop(context.Background()) }()
		synctest.Wait() // the stop event is queued
		close(block)    // dispatch fails before the event is taken

		err := <-stopped
		assert.ErrorIs(t, err, errFlaky)
		assert.ErrorIs(t, err, stagefsm.ErrFailedState)
		assert.Equal(t, 0, st.Restarts())
	})
}

func TestRestartCancelWhileRunningIsNotRestarted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := rstStart(t.Context(), &rstStage{}, "running", noJitter)
		synctest.Wait()
		st.Abort()
		err := st.Wait(t.Context())
		assert.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, 0, st.Restarts())
		assert.NoError(t, st.LastFailure(), "a cancellation is not a failure")
	})
}

func TestRestartHealthyTimeResetsBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := newRstLog()
		policy := noJitter
		policy.HealthyAfter = 10 * time.Second
		fast := rstFail(errFlaky)
		sup := &rstStage{script: []rstStep{
			fast,
			fast,
			rstAfter(10*time.Second, rstFail(errFlaky)), // healthy long enough
			fast,
			rstAfter(9*time.Second, rstFail(errFlaky)), // not quite
			rstSucceed,
		}}
		st := rstStart(t.Context(), sup, "running", policy, log.observer())
		require.NoError(t, st.Wait(t.Context()))
		assert.Equal(t, []string{
			"0s scheduled 1 in 100ms",
			"100ms incarnation 2",
			"100ms scheduled 2 in 200ms",
			"300ms incarnation 3",
			"10.3s scheduled 3 in 100ms", // reset
			"10.4s incarnation 4",
			"10.4s scheduled 4 in 200ms",
			"10.6s incarnation 5",
			"19.6s scheduled 5 in 400ms", // no reset
			"20s incarnation 6",
		}, log.lines())
	})
}

func TestRestartHandleAcrossRestarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		fail := make(chan struct{})
		failOnSignal := func(ctx context.Context, w *rstWork) (stagefsm.Directive[string], error) {
			select {
			case <-fail:
				return stagefsm.Directive[string]{}, errFlaky
			default:
				return stagefsm.Idle[string](), nil
			}
		}
		var st *stagefsm.Stage[string, string]
		var works []*rstWork
		sup := &rstStage{script: []rstStep{failOnSignal, rstIdle}}
		obs := stagefsm.WithObserver(stagefsm.Observer[string, string]{
			// The gate of a new incarnation must be opened again: the queue
			// has just been emptied, so this is the first event it takes.
			OnRestartScheduled: func(int, time.Duration, error) { assert.NoError(t, st.TrySend("init")) },
		})
		st = stagefsm.Start(ctx, sup, "created", &rstWork{n: 1},
			stagefsm.WithRestart(stagefsm.RestartPolicy{BackoffInitial: time.Second}, func(ctx context.Context, prev *rstWork) (*rstWork, error) {
				works = append(works, prev)
				return rstFactory(ctx, prev)
			}), obs)
		states := st.Subscribe(ctx)
		changes := st.Changes(ctx, 32)
		assert.Equal(t, "created", <-states)

		require.NoError(t, st.Send(ctx, "init"))
		s, err := st.WaitState(ctx, func(s string) bool { return s == "running" })
		require.NoError(t, err)
		assert.Equal(t, "running", s)
		assert.Equal(t, "running", <-states)
		require.NoError(t, st.Send(ctx, "poke:1"))
		synctest.Wait()

		// Fail incarnation 1; while it is "failed" (ignoring control
		// events) an event is queued: the restart discards it.
		close(fail)
		_, err = st.WaitState(ctx, func(s string) bool { return s == "failed" })
		require.NoError(t, err)
		synctest.Wait() // in the backoff: the queue was emptied
		assert.Equal(t, "failed", st.State())
		assert.Equal(t, "failed", <-states)
		require.NoError(t, st.Send(ctx, "poke:2"), "sent during the backoff: for incarnation 2")

		s, err = st.WaitState(ctx, func(s string) bool { return s == "created" })
		require.NoError(t, err, "WaitState sees the initial state of the new incarnation")
		assert.Equal(t, "created", s)
		assert.Equal(t, 1, st.Restarts())
		_, err = st.WaitState(ctx, func(s string) bool { return s == "running" })
		require.NoError(t, err)
		synctest.Wait()
		assert.Equal(t, "running", <-states, "the subscription goes on (latest state)")
		select {
		case <-st.Done():
			t.Fatal("Done closed after a restart")
		default:
		}

		require.NoError(t, st.Stop(ctx))
		assert.Equal(t, "done", <-states)
		_, open := <-states
		assert.False(t, open, "closed once, at the end")

		var got []string
		for c := range changes {
			got = append(got, fmt.Sprintf("%d r%d %s -%s-> %s", c.Seq, c.Restarts, c.From, c.Event, c.To))
		}
		assert.Equal(t, []string{
			"1 r0 created -init-> running",
			"2 r0 running -poke:1-> running",
			"3 r0 running -fail-> failed",
			"4 r1 created -init-> running",
			"5 r1 running -poke:2-> running",
			"6 r1 running -drain-> draining",
			"7 r1 draining -drained-> done",
		}, got, "Seq goes on across incarnations")
		require.Len(t, works, 1)
		assert.Equal(t, []string{"poke:1"}, works[0].events)
	})
}

func TestRestartDiscardsEventsQueuedForTheFailedIncarnation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zapcore.WarnLevel)
		fail := make(chan struct{})
		var last *rstWork
		sup := &rstStage{script: []rstStep{
			func(ctx context.Context, w *rstWork) (stagefsm.Directive[string], error) {
				<-fail
				return stagefsm.Directive[string]{}, errFlaky
			},
			rstIdle,
		}}
		st := stagefsm.Start(t.Context(), sup, "running", &rstWork{n: 1},
			stagefsm.WithRestart(noJitter, func(ctx context.Context, prev *rstWork) (*rstWork, error) {
				w, err := rstFactory(ctx, prev)
				last = w
				return w, err
			}),
			stagefsm.WithLogger(zap.New(core)))
		synctest.Wait() // dispatch blocks
		require.NoError(t, st.Send(t.Context(), "poke:a"))
		require.NoError(t, st.Send(t.Context(), "poke:b"))
		close(fail)
		_, err := st.WaitState(t.Context(), func(string) bool { return st.Restarts() == 1 })
		require.NoError(t, err)
		synctest.Wait()
		require.NoError(t, st.Stop(t.Context()))

		assert.Empty(t, last.events, "the events queued for incarnation 1 were discarded")
		restarts := logs.FilterMessage("restarting stage after failure").All()
		require.Len(t, restarts, 1)
		assert.Equal(t, zapcore.WarnLevel, restarts[0].Level)
		fields := restarts[0].ContextMap()
		assert.Equal(t, int64(2), fields["discarded_control_events"])
		assert.Equal(t, int64(1), fields["restart"])
		assert.Equal(t, 100*time.Millisecond, fields["delay"])
		assert.Equal(t, "rst", fields["supervisor"])
	})
}

func TestRestartContextFactory(t *testing.T) {
	t.Run("errors are failures of the restart", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			log := newRstLog()
			errDial := errors.New("dial")
			calls := 0
			st := stagefsm.Start(t.Context(), &rstStage{script: []rstStep{rstFail(errFlaky), rstSucceed}}, "running", &rstWork{n: 1},
				stagefsm.WithRestart(noJitter, func(ctx context.Context, prev *rstWork) (*rstWork, error) {
					calls++
					if calls < 3 {
						return nil, errDial
					}
					return rstFactory(ctx, prev)
				}), log.observer())
			require.NoError(t, st.Wait(t.Context()))
			assert.Equal(t, 1, st.Restarts())
			assert.ErrorIs(t, st.LastFailure(), errDial)
			assert.Equal(t, []string{
				"0s scheduled 1 in 100ms",
				"100ms scheduled 1 in 200ms", // the factory failed: restart 1 again
				"300ms scheduled 1 in 400ms", // again
				"700ms incarnation 2",
			}, log.lines())
		})
	})
	t.Run("a gate re-opened from OnRestartScheduled survives a failed restart", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var st *stagefsm.Stage[string, string]
			calls := 0
			obs := stagefsm.WithObserver(stagefsm.Observer[string, string]{
				OnRestartScheduled: func(int, time.Duration, error) { assert.NoError(t, st.TrySend("init")) },
			})
			st = stagefsm.Start(t.Context(), &rstStage{script: []rstStep{rstFail(errFlaky), rstSucceed}}, "created", &rstWork{n: 1},
				stagefsm.WithRestart(noJitter, func(ctx context.Context, prev *rstWork) (*rstWork, error) {
					calls++
					if calls == 1 {
						return nil, errors.New("dial")
					}
					return rstFactory(ctx, prev)
				}), obs)
			require.NoError(t, st.Send(t.Context(), "init"))
			require.NoError(t, st.Wait(t.Context()), "one init per incarnation, none left over to be rejected")
			assert.Equal(t, 1, st.Restarts())
			assert.Equal(t, "done", st.State())
		})
	})
	t.Run("permanent error ends the stage", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			errConfig := stagefsm.Permanent(errors.New("no such topic"))
			st := stagefsm.Start(t.Context(), &rstStage{script: []rstStep{rstFail(errFlaky)}}, "running", &rstWork{n: 1},
				stagefsm.WithRestart(noJitter, func(context.Context, *rstWork) (*rstWork, error) { return nil, errConfig }))
			err := st.Wait(t.Context())
			assert.ErrorIs(t, err, errConfig)
			assert.Equal(t, 0, st.Restarts())
		})
	})
	t.Run("panic is a failure", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			policy := noJitter
			policy.MaxRestarts = 1
			st := stagefsm.Start(t.Context(), &rstStage{script: []rstStep{rstFail(errFlaky)}}, "running", &rstWork{n: 1},
				stagefsm.WithRestart(policy, func(context.Context, *rstWork) (*rstWork, error) { panic("factory") }))
			err := st.Wait(t.Context())
			assert.ErrorIs(t, err, stagefsm.ErrRestartIntensity)
			var p *stagefsm.PanicError
			assert.ErrorAs(t, err, &p)
		})
	})
}

func TestRestartMisuseIsAnError(t *testing.T) {
	sup := &rstStage{script: []rstStep{rstSucceed}}
	cases := []struct {
		name string
		opt  stagefsm.Option
	}{
		{"nil factory", stagefsm.WithRestart[*rstWork](stagefsm.RestartPolicy{}, nil)},
		{"factory of another context type", stagefsm.WithRestart(stagefsm.RestartPolicy{},
			func(context.Context, int) (int, error) { return 0, nil })},
		{"negative duration", stagefsm.WithRestart(stagefsm.RestartPolicy{Period: -time.Second}, rstFactory)},
		{"jitter above 1", stagefsm.WithRestart(stagefsm.RestartPolicy{Jitter: 1.5}, rstFactory)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := &rstWork{n: 1}
			st := stagefsm.Start(t.Context(), sup, "running", w, tc.opt)
			assert.Error(t, st.Wait(t.Context()))
			assert.Equal(t, "running", st.State(), "nothing ran")
		})
	}
	t.Run("Run with WithRestart", func(t *testing.T) {
		err := stagefsm.Run(t.Context(), sup, "running", &rstWork{n: 1}, stagefsm.WithRestart(noJitter, rstFactory))
		assert.Error(t, err)
	})
	t.Run("nil supervisor", func(t *testing.T) {
		st := stagefsm.Start[string, string, *rstWork, rstAct](t.Context(), nil, "running", &rstWork{n: 1},
			stagefsm.WithRestart(noJitter, rstFactory))
		assert.Error(t, st.Wait(t.Context()))
		assert.Equal(t, 0, st.Restarts())
	})
}

func TestRestartObserverPanics(t *testing.T) {
	cases := map[string]stagefsm.Observer[string, string]{
		"OnRestartScheduled": {OnRestartScheduled: func(int, time.Duration, error) { panic("x") }},
		"OnRestarted":        {OnRestarted: func(int) { panic("x") }},
		"OnGaveUp":           {OnGaveUp: func(error) { panic("x") }},
	}
	for name, obs := range cases {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				policy := noJitter
				policy.MaxRestarts = 1
				script := []rstStep{rstFail(errFlaky), rstFail(errFlaky)}
				st := rstStart(t.Context(), &rstStage{script: script}, "running", policy, stagefsm.WithObserver(obs))
				err := st.Wait(t.Context())
				var p *stagefsm.PanicError
				assert.ErrorAs(t, err, &p)
				assert.ErrorIs(t, err, errFlaky)
			})
		})
	}
}

func TestRestartWithoutFailableRestartsOnlyErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// bareRst hides FailedState: terminating in "failed" is success.
		type bareRst struct {
			stagefsm.HandlerSupervised[string, string, *rstWork, rstAct]
		}
		st := stagefsm.Start(t.Context(), bareRst{&rstStage{script: []rstStep{rstFail(errFlaky)}}}, "running", &rstWork{n: 1},
			stagefsm.WithRestart(noJitter, rstFactory))
		require.NoError(t, st.Wait(t.Context()))
		assert.Equal(t, "failed", st.State())
		assert.Equal(t, 0, st.Restarts())
	})
}

func TestRestartPolicyBackoffDefaultsAndCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var delays []time.Duration
		obs := stagefsm.WithObserver(stagefsm.Observer[string, string]{
			OnRestartScheduled: func(_ int, d time.Duration, _ error) { delays = append(delays, d) },
		})
		script := slices.Repeat([]rstStep{rstFail(errFlaky)}, 12)
		script = append(script, rstSucceed)
		st := rstStart(t.Context(), &rstStage{script: script}, "running",
			stagefsm.RestartPolicy{MaxRestarts: -1, BackoffMax: time.Nanosecond}, obs) // max below initial: initial
		require.NoError(t, st.Wait(t.Context()))
		assert.Equal(t, slices.Repeat([]time.Duration{100 * time.Millisecond}, 12), delays)

		delays = nil
		st = rstStart(t.Context(), &rstStage{script: script}, "running", stagefsm.RestartPolicy{MaxRestarts: -1}, obs)
		require.NoError(t, st.Wait(t.Context()))
		want := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000}
		for i := range want {
			want[i] *= time.Millisecond
		}
		assert.Equal(t, want, delays, "default 100ms doubling, capped at 30s")
	})
}

func TestRestartDefaultIntensity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		script := slices.Repeat([]rstStep{rstFail(errFlaky)}, 10)
		st := rstStart(t.Context(), &rstStage{script: script}, "running", stagefsm.RestartPolicy{})
		assert.ErrorIs(t, st.Wait(t.Context()), stagefsm.ErrRestartIntensity)
		assert.Equal(t, 5, st.Restarts(), "default: 5 restarts per minute")
	})
}

// BenchmarkLoopTransitionStartRestart is BenchmarkLoopTransitionStart with a
// restart policy: the policy costs nothing per transition (the supervising
// code runs only between incarnations).
func BenchmarkLoopTransitionStartRestart(b *testing.B) {
	b.ReportAllocs()
	reuse := func(_ context.Context, prev *testing.B) (*testing.B, error) { return prev, nil }
	st := stagefsm.Start(context.Background(), obsBenchStage{}, false, b, stagefsm.WithRestart(stagefsm.RestartPolicy{}, reuse))
	if err := st.Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// nameless is an rstStage whose Name panics.
type nameless struct{ rstStage }

func (*nameless) Name() string { panic("no name") }

func TestRestartSupervisorNamePanicIsAnError(t *testing.T) {
	st := stagefsm.Start(t.Context(), &nameless{}, "running", &rstWork{n: 1}, stagefsm.WithRestart(noJitter, rstFactory))
	err := st.Wait(t.Context())
	var p *stagefsm.PanicError
	assert.ErrorAs(t, err, &p, "a panic in Name ends the stage with an error, as under Run")
	assert.Equal(t, 0, st.Restarts())
}

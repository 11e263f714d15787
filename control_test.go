package stagefsm_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
)

// The fake stage of the control-plane tests: string states and events, a
// transition table, per-state control modes, closure mapping and timeouts,
// and a recorder that logs every call the loop makes, in order.

// ctlRec is the stage context: a log of calls, safe to read while the stage
// runs.
type ctlRec struct {
	mu  sync.Mutex
	log []string
}

func (r *ctlRec) add(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, fmt.Sprintf(format, args...))
}

func (r *ctlRec) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log)
}

// count returns how many lines equal line.
func (r *ctlRec) count(line string) int {
	n := 0
	for _, l := range r.lines() {
		if l == line {
			n++
		}
	}
	return n
}

type ctlAct struct {
	name string
	err  error
}

func (a ctlAct) Execute(_ context.Context, r *ctlRec) error {
	r.add("exec %s", a.name)
	return a.err
}

type ctlEdge struct {
	to      string
	actions []ctlAct
}

// ctlTimeout arms a state timeout: event is fed after the state was entered.
type ctlTimeout struct {
	after time.Duration
	event string
}

type ctlMachine struct {
	state    string
	edges    map[string]map[string]ctlEdge
	timeouts map[string]ctlTimeout

	deadline time.Time
	tevent   string
	armed    bool
}

func (m *ctlMachine) State() string { return m.state }

func (m *ctlMachine) Handle(_ context.Context, event string, r *ctlRec) ([]ctlAct, error) {
	e, ok := m.edges[m.state][event]
	if !ok {
		return nil, fmt.Errorf("%w: %s in %s", stagefsm.ErrUnhandledEvent, event, m.state)
	}
	r.add("handle %s: %s -> %s", event, m.state, e.to)
	m.state = e.to
	m.arm()
	return e.actions, nil
}

func (m *ctlMachine) arm() {
	t, ok := m.timeouts[m.state]
	m.armed = ok
	if ok {
		m.deadline, m.tevent = time.Now().Add(t.after), t.event
	}
}

func (m *ctlMachine) Timeout() (time.Time, string, bool) { return m.deadline, m.tevent, m.armed }

type ctlDispatch func(ctx context.Context, state string, r *ctlRec) (stagefsm.Directive[string], error)

// ctlFake is the supervisor. It implements stagefsm.Controlled; wrap it in
// ctlBare to hide that, in ctlStopper to add a stop event.
type ctlFake struct {
	edges      map[string]map[string]ctlEdge
	timeouts   map[string]ctlTimeout
	modes      map[string]stagefsm.ControlMode // missing: Poll
	closure    map[string]string               // missing: no event
	dispatch   ctlDispatch
	completion error
	asked      int // ControlClosed calls (read after the stage ended)
}

func (f *ctlFake) Name() string                     { return "fake" }
func (f *ctlFake) EventForActionError(error) string { return "fail" }

func (f *ctlFake) BuildStateMachine(initial string) (stagefsm.Machine[string, string, *ctlRec, ctlAct], error) {
	m := &ctlMachine{state: initial, edges: f.edges, timeouts: f.timeouts}
	m.arm()
	return m, nil
}

func (f *ctlFake) DispatchState(ctx context.Context, state string, r *ctlRec) (stagefsm.Directive[string], error) {
	r.add("dispatch %s", state)
	return f.dispatch(ctx, state, r)
}

func (f *ctlFake) WriteCompletionEvent(context.Context) error { return f.completion }

func (f *ctlFake) ControlMode(state string) stagefsm.ControlMode { return f.modes[state] }

func (f *ctlFake) ControlClosed(state string) (string, bool) {
	f.asked++
	e, ok := f.closure[state]
	return e, ok
}

// ctlStopper adds a graceful stop event to a fake.
type ctlStopper struct {
	*ctlFake
	event string
}

func (s ctlStopper) StopEvent() string { return s.event }

// ctlBare hides every optional interface of the supervisor it wraps.
type ctlBare struct {
	stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct]
}

// ctlByState dispatches a fixed directive per state; a state not listed
// terminates.
func ctlByState(m map[string]stagefsm.Directive[string]) ctlDispatch {
	return func(_ context.Context, s string, _ *ctlRec) (stagefsm.Directive[string], error) {
		if d, ok := m[s]; ok {
			return d, nil
		}
		return stagefsm.Terminate[string](), nil
	}
}

var ctlIdle = stagefsm.Idle[string]()

func ctlTo(state string, actions ...ctlAct) ctlEdge { return ctlEdge{to: state, actions: actions} }

// ctlGated is the common shape: a Block gate, a polling stage that idles, a
// drain that ends in a terminal state which ignores control events.
func ctlGated() *ctlFake {
	return &ctlFake{
		edges: map[string]map[string]ctlEdge{
			"gate":     {"open": ctlTo("running"), "abandon": ctlTo("done")},
			"running":  {"drain": ctlTo("draining", ctlAct{name: "flush"}), "ping": ctlTo("running")},
			"draining": {"drained": ctlTo("done", ctlAct{name: "cleanup"})},
		},
		modes:    map[string]stagefsm.ControlMode{"gate": stagefsm.ControlBlock, "done": stagefsm.ControlIgnore},
		dispatch: ctlByState(map[string]stagefsm.Directive[string]{"running": ctlIdle, "draining": stagefsm.Transition("drained")}),
	}
}

// ctlFinish aborts the stage (if still running) and waits for it, so that no
// goroutine outlives the test or its bubble.
func ctlFinish[S, E any](t *testing.T, st *stagefsm.Stage[S, E]) {
	t.Helper()
	st.Abort()
	<-st.Done()
}

func TestBlockTakesEventWithZeroDispatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &ctlRec{}
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlGated()), "gate", r)
		defer ctlFinish(t, st)

		time.Sleep(time.Hour)
		synctest.Wait()
		assert.Equal(t, "gate", st.State())
		assert.Empty(t, r.lines(), "a Block state must not dispatch while it waits")

		require.NoError(t, st.Send(t.Context(), "open"))
		synctest.Wait()
		assert.Equal(t, "running", st.State())
		assert.Equal(t, []string{"handle open: gate -> running", "dispatch running"}, r.lines())
		assert.Zero(t, r.count("dispatch gate"))
	})
}

func TestPollTakesOneEventPerIterationFIFOAheadOfDispatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &ctlFake{
			edges: map[string]map[string]ctlEdge{
				"gate": {"open": ctlTo("p")},
				"p":    {"a": ctlTo("q"), "b": ctlTo("q"), "c": ctlTo("q"), "end": ctlTo("done")},
				"q":    {"back": ctlTo("p")},
			},
			// q ignores control events: whatever is still queued when q is
			// entered shows that p took only one per iteration.
			modes:    map[string]stagefsm.ControlMode{"gate": stagefsm.ControlBlock, "q": stagefsm.ControlIgnore},
			dispatch: ctlByState(map[string]stagefsm.Directive[string]{"p": stagefsm.Transition("end"), "q": stagefsm.Transition("back")}),
		}
		r := &ctlRec{}
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "gate", r)
		defer ctlFinish(t, st)
		for _, e := range []string{"open", "a", "b", "c"} {
			require.NoError(t, st.TrySend(e))
		}

		require.NoError(t, st.Wait(t.Context()))
		assert.Equal(t, []string{
			"handle open: gate -> p",
			"handle a: p -> q", "dispatch q", "handle back: q -> p",
			"handle b: p -> q", "dispatch q", "handle back: q -> p",
			"handle c: p -> q", "dispatch q", "handle back: q -> p",
			"dispatch p", "handle end: p -> done", "dispatch done",
		}, r.lines())
	})
}

func TestIgnoreLeavesEventsQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := ctlGated()
		f.modes["running"] = stagefsm.ControlIgnore
		r := &ctlRec{}
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "running", r,
			stagefsm.WithControlCapacity(2))
		defer ctlFinish(t, st)

		require.NoError(t, st.TrySend("ping"))
		require.NoError(t, st.TrySend("drain"))
		time.Sleep(time.Second)
		synctest.Wait()

		assert.Greater(t, r.count("dispatch running"), 1, "an Ignore state keeps dispatching")
		assert.Zero(t, r.count("handle ping: running -> running"), "an Ignore state takes no event")
		assert.ErrorIs(t, st.TrySend("ping"), stagefsm.ErrControlFull, "the events are still queued")
		assert.Equal(t, "running", st.State())
	})
}

func TestControlEventWakesIdleBackoffAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &ctlRec{}
		var at time.Time
		obs := stagefsm.WithObserver(stagefsm.Observer[string, string]{
			OnTransition: func(_ string, e string, _ string, _ int) {
				if e == "drain" {
					at = time.Now()
				}
			},
		})
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlGated()), "running", r,
			stagefsm.WithIdleBackoff(time.Hour, time.Hour), obs)
		defer ctlFinish(t, st)

		time.Sleep(time.Minute) // the stage is one minute into a one-hour idle wait
		synctest.Wait()
		require.Equal(t, 1, r.count("dispatch running"))
		sent := time.Now()
		require.NoError(t, st.Send(t.Context(), "drain"))

		require.NoError(t, st.Wait(t.Context()))
		assert.Equal(t, sent, at, "the idle wait must end when the event arrives")
	})
}

func TestControlEventWakesStateTimeoutWait(t *testing.T) {
	for _, mode := range []stagefsm.ControlMode{stagefsm.ControlBlock, stagefsm.ControlPoll} {
		t.Run(mode.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := ctlGated()
				f.modes["gate"] = mode
				f.dispatch = ctlByState(map[string]stagefsm.Directive[string]{"gate": ctlIdle, "running": stagefsm.Transition("drain"),
					"draining": stagefsm.Transition("drained")})
				f.timeouts = map[string]ctlTimeout{"gate": {after: time.Hour, event: "abandon"}}
				r := &ctlRec{}
				var opened time.Time
				st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "gate", r,
					stagefsm.WithIdleBackoff(time.Hour, time.Hour),
					stagefsm.WithObserver(stagefsm.Observer[string, string]{
						OnTransition: func(from, _, _ string, _ int) {
							if from == "gate" {
								opened = time.Now()
							}
						},
					}))
				defer ctlFinish(t, st)

				time.Sleep(time.Minute)
				sent := time.Now()
				require.NoError(t, st.Send(t.Context(), "open"))
				require.NoError(t, st.Wait(t.Context()))
				assert.Equal(t, sent, opened, "the wait for the state timeout must end when the event arrives")
				assert.Contains(t, r.lines(), "handle open: gate -> running")
				assert.NotContains(t, r.lines(), "handle abandon: gate -> done")
			})
		})
	}
}

func TestStateTimeoutFiresWhileBlocked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := ctlGated()
		f.timeouts = map[string]ctlTimeout{"gate": {after: time.Hour, event: "abandon"}}
		r := &ctlRec{}
		start := time.Now()
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "gate", r)
		defer ctlFinish(t, st)

		require.NoError(t, st.Wait(t.Context()))
		assert.Equal(t, start.Add(time.Hour), time.Now())
		assert.Equal(t, []string{"handle abandon: gate -> done", "dispatch done"}, r.lines())
	})
}

func TestClosedControl(t *testing.T) {
	const tick = 10 * time.Millisecond // the default maximum idle backoff
	cases := []struct {
		name    string
		mode    stagefsm.ControlMode
		mapping bool // the closure maps to abandon in gate
		timeout bool // gate times out with abandon after a second
		err     error
		state   string
		asked   int // ControlClosed calls
		fed     int // how many times abandon was fed
	}{
		{name: "block maps", mode: stagefsm.ControlBlock, mapping: true, state: "done", asked: 1, fed: 1},
		{name: "block no mapping ends Run", mode: stagefsm.ControlBlock, err: stagefsm.ErrControlClosed, state: "gate", asked: 1},
		{name: "block no mapping waits for the timeout", mode: stagefsm.ControlBlock, timeout: true, state: "done", asked: 1, fed: 1},
		{name: "poll maps", mode: stagefsm.ControlPoll, mapping: true, state: "done", asked: 1, fed: 1},
		{name: "poll no mapping dispatches", mode: stagefsm.ControlPoll, timeout: true, state: "done", asked: 1, fed: 1},
		{name: "ignore", mode: stagefsm.ControlIgnore, mapping: true, timeout: true, state: "done", asked: 0, fed: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := ctlGated()
				f.modes["gate"] = tc.mode
				f.dispatch = ctlByState(map[string]stagefsm.Directive[string]{"gate": ctlIdle})
				if tc.mapping {
					f.closure = map[string]string{"gate": "abandon"}
				}
				if tc.timeout {
					f.timeouts = map[string]ctlTimeout{"gate": {after: time.Second, event: "abandon"}}
				}
				r := &ctlRec{}
				start := time.Now()
				st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "gate", r)
				defer ctlFinish(t, st)
				st.CloseControl()
				st.CloseControl() // idempotent

				err := st.Wait(t.Context())
				if tc.err != nil {
					assert.ErrorIs(t, err, tc.err)
				} else {
					assert.NoError(t, err)
				}
				assert.Equal(t, tc.state, st.State())
				assert.Equal(t, tc.asked, f.asked)
				assert.Equal(t, tc.fed, r.count("handle abandon: gate -> done"))
				if tc.mapping && tc.mode != stagefsm.ControlIgnore {
					assert.Equal(t, start, time.Now(), "the closure is fed at once")
				}
				// No spin: Block never dispatches; Poll and Ignore dispatch
				// once per idle backoff step until the one-second timeout.
				if tc.mode == stagefsm.ControlBlock {
					assert.Zero(t, r.count("dispatch gate"))
				} else {
					assert.LessOrEqual(t, r.count("dispatch gate"), int(time.Second/tick)+10)
				}
				assert.ErrorIs(t, st.TrySend("open"), stagefsm.ErrStageDone)
			})
		})
	}
}

func TestClosedControlDeliversQueuedEventsFirstAndMapsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := ctlGated()
		f.edges["running"]["stop"] = ctlTo("running") // the closure event; stays in running
		f.closure = map[string]string{"running": "stop"}
		r := &ctlRec{}
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "gate", r)
		defer ctlFinish(t, st)
		require.NoError(t, st.TrySend("open"))
		require.NoError(t, st.TrySend("ping"))
		st.CloseControl()
		assert.ErrorIs(t, st.TrySend("ping"), stagefsm.ErrControlClosed)
		assert.ErrorIs(t, st.Send(t.Context(), "ping"), stagefsm.ErrControlClosed)

		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, []string{"handle open: gate -> running", "handle ping: running -> running",
			"handle stop: running -> running"}, r.lines()[:3])
		assert.Equal(t, 1, r.count("handle stop: running -> running"), "a closure is delivered once")
		assert.Equal(t, 1, f.asked, "and asked for once")
		// Polling an idle stage with a closed queue does not spin: one
		// dispatch per backoff step (10ms at most).
		assert.InDelta(t, int(time.Second/(10*time.Millisecond)), r.count("dispatch running"), 10)
	})
}

func TestBareSupervisorPollsEveryState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := ctlGated()
		f.closure = map[string]string{"running": "drain"}
		f.dispatch = ctlByState(map[string]stagefsm.Directive[string]{"gate": ctlIdle, "running": ctlIdle})
		r := &ctlRec{}
		st := stagefsm.Start(t.Context(), ctlBare{f}, "gate", r) // gate would block if the policy were seen
		defer ctlFinish(t, st)
		synctest.Wait()
		assert.Equal(t, 1, r.count("dispatch gate"))
		require.NoError(t, st.Send(t.Context(), "open"))
		synctest.Wait()
		assert.Equal(t, "running", st.State())

		st.CloseControl()
		time.Sleep(time.Second)
		assert.Equal(t, "running", st.State(), "without Controlled a closure maps to no event")
		assert.Zero(t, f.asked)
	})
}

func TestTrySendFullVersusStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := ctlGated()
		f.modes["running"] = stagefsm.ControlIgnore
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "running", &ctlRec{},
			stagefsm.WithControlCapacity(2))
		require.NoError(t, st.TrySend("ping"))
		require.NoError(t, st.TrySend("ping"))
		assert.ErrorIs(t, st.TrySend("ping"), stagefsm.ErrControlFull)

		// Send waits while full, bounded by its ctx.
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		assert.ErrorIs(t, st.Send(ctx, "ping"), context.DeadlineExceeded)

		st.Abort()
		<-st.Done()
		assert.ErrorIs(t, st.TrySend("ping"), stagefsm.ErrStageDone)
		assert.ErrorIs(t, st.Send(t.Context(), "ping"), stagefsm.ErrStageDone)
		assert.NotErrorIs(t, st.TrySend("ping"), stagefsm.ErrControlFull)
	})
}

// Absurd sizes are capped, not allocated: the queue and a Changes buffer
// are made up front, and a huge size must not crash the program.
func TestHugeBufferSizesAreCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := ctlGated()
		f.modes["running"] = stagefsm.ControlIgnore
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "running", &ctlRec{},
			stagefsm.WithControlCapacity(math.MaxInt))
		changes := st.Changes(t.Context(), math.MaxInt)
		assert.Equal(t, 1<<16, cap(changes))
		for range 1 << 16 {
			require.NoError(t, st.TrySend("ping"))
		}
		assert.ErrorIs(t, st.TrySend("ping"), stagefsm.ErrControlFull, "the queue holds 65,536 events")
		st.Abort()
		<-st.Done()
	})
}

func TestSendWaitsForRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// hold ignores control events for an hour, then moves to running,
		// which polls: the full queue drains only then.
		start := time.Now()
		f := ctlGated()
		f.edges["hold"] = map[string]ctlEdge{"go": ctlTo("running")}
		f.modes["hold"] = stagefsm.ControlIgnore
		f.dispatch = func(_ context.Context, s string, _ *ctlRec) (stagefsm.Directive[string], error) {
			switch {
			case s == "hold" && time.Since(start) >= time.Hour:
				return stagefsm.Transition("go"), nil
			case s == "hold", s == "running":
				return ctlIdle, nil
			case s == "draining":
				return stagefsm.Transition("drained"), nil
			}
			return stagefsm.Terminate[string](), nil
		}
		r := &ctlRec{}
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "hold", r,
			stagefsm.WithControlCapacity(1), stagefsm.WithIdleBackoff(time.Minute, time.Minute))
		defer ctlFinish(t, st)
		require.NoError(t, st.TrySend("ping"))
		require.ErrorIs(t, st.TrySend("ping"), stagefsm.ErrControlFull)

		require.NoError(t, st.Send(t.Context(), "drain"))
		assert.GreaterOrEqual(t, time.Since(start), time.Hour, "Send waited for room")
		require.NoError(t, st.Wait(t.Context()))
		assert.Equal(t, []string{"handle go: hold -> running", "handle ping: running -> running",
			"handle drain: running -> draining"}, slices.DeleteFunc(r.lines(), func(l string) bool {
			return l[:4] != "hand"
		})[:3])
	})
}

func TestSendBlockedOnFullQueueEndsWithTheStage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := ctlGated()
		f.modes["running"] = stagefsm.ControlIgnore
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "running", &ctlRec{},
			stagefsm.WithControlCapacity(1))
		require.NoError(t, st.TrySend("ping"))
		errc := make(chan error, 1)
		go func() { errc <- st.Send(context.Background(), "ping") }()
		synctest.Wait()
		st.Abort()
		assert.ErrorIs(t, <-errc, stagefsm.ErrStageDone)
		<-st.Done()
	})
}

func TestSubscribeSeesTerminalState(t *testing.T) {
	t.Run("success", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlGated()), "gate", &ctlRec{})
			defer ctlFinish(t, st)
			sub := st.Subscribe(t.Context())
			assert.Equal(t, "gate", <-sub, "the current state comes first")
			require.NoError(t, st.Send(t.Context(), "open"))
			require.NoError(t, st.Send(t.Context(), "drain"))
			require.NoError(t, st.Wait(t.Context()))

			assert.Equal(t, []string{"done"}, ctlDrain(sub), "a slow reader gets the final state, then the close")
			assert.Equal(t, "done", st.State())
		})
	})
	t.Run("error", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := ctlGated()
			boom := errors.New("boom")
			f.edges["running"]["fail"] = ctlTo("failed")
			f.dispatch = ctlByState(map[string]stagefsm.Directive[string]{"running": ctlIdle})
			f.completion = boom // failed terminates and the completion fails
			st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "running", &ctlRec{})
			defer ctlFinish(t, st)
			sub := st.Subscribe(t.Context())
			changes := st.Changes(t.Context(), 8)
			require.NoError(t, st.Send(t.Context(), "fail"))

			assert.ErrorIs(t, st.Wait(t.Context()), boom)
			assert.Equal(t, []string{"failed"}, ctlDrain(sub), "the terminal state replaced the unread one")
			got := ctlDrain(changes)
			require.Len(t, got, 1)
			assert.Equal(t, stagefsm.Change[string, string]{Seq: 1, From: "running", Event: "fail", To: "failed"}, got[0])
			assert.Equal(t, "failed", st.State())
		})
	})
	t.Run("rejected event", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlGated()), "gate", &ctlRec{})
			defer ctlFinish(t, st)
			sub := st.Subscribe(t.Context())
			require.NoError(t, st.Send(t.Context(), "open"))
			require.NoError(t, st.Send(t.Context(), "bogus"))

			assert.ErrorIs(t, st.Wait(t.Context()), stagefsm.ErrUnhandledEvent)
			assert.Equal(t, []string{"running"}, ctlDrain(sub))
			assert.Equal(t, "running", st.State(), "the last committed state stays readable")
		})
	})
	t.Run("after the stage finished", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlGated()), "gate", &ctlRec{})
			st.CloseControl()
			assert.ErrorIs(t, st.Wait(t.Context()), stagefsm.ErrControlClosed)
			assert.Equal(t, []string{"gate"}, ctlDrain(st.Subscribe(t.Context())))
			assert.Empty(t, ctlDrain(st.Changes(t.Context(), 1)))
		})
	})
}

// ctlDrain reads a channel until it is closed.
func ctlDrain[T any](ch <-chan T) []T {
	var got []T
	for v := range ch {
		got = append(got, v)
	}
	return got
}

func TestSlowReadersNeverBlockTheLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 1000
		i := 0
		f := &ctlFake{
			edges: map[string]map[string]ctlEdge{"a": {"next": ctlTo("b"), "end": ctlTo("done")}, "b": {"next": ctlTo("a")}},
			dispatch: func(_ context.Context, s string, _ *ctlRec) (stagefsm.Directive[string], error) {
				if s == "done" {
					return stagefsm.Terminate[string](), nil
				}
				if i++; i > n {
					return stagefsm.Transition("end"), nil
				}
				return stagefsm.Transition("next"), nil
			},
		}
		r := &ctlRec{}
		st := stagefsm.Start(t.Context(), ctlBare{f}, "a", r, stagefsm.WithControlCapacity(1))
		defer ctlFinish(t, st)
		sub := st.Subscribe(t.Context())      // never read until the end
		changes := st.Changes(t.Context(), 3) // never read until the end

		require.NoError(t, st.Wait(t.Context()), "the stage finishes although nobody reads")
		assert.Equal(t, []string{"done"}, ctlDrain(sub), "only the latest state was kept")
		got := ctlDrain(changes)
		require.Len(t, got, 3, "the oldest changes were dropped")
		assert.Equal(t, []uint64{n - 1, n, n + 1}, []uint64{got[0].Seq, got[1].Seq, got[2].Seq})
		assert.Equal(t, stagefsm.Change[string, string]{Seq: n + 1, From: "a", Event: "end", To: "done"}, got[2])
	})
}

func TestSubscriptionEndsWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlGated()), "gate", &ctlRec{})
		defer ctlFinish(t, st)
		ctx, cancel := context.WithCancel(t.Context())
		sub := st.Subscribe(ctx)
		changes := st.Changes(ctx, 1)
		cancel()
		synctest.Wait()
		assert.Equal(t, []string{"gate"}, ctlDrain(sub))
		assert.Empty(t, ctlDrain(changes))
		require.NoError(t, st.Send(t.Context(), "open"), "the stage runs on without the subscription")
		synctest.Wait()
		assert.Equal(t, "running", st.State())
	})
}

func TestWaitState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := ctlGated()
		f.dispatch = ctlByState(map[string]stagefsm.Directive[string]{"running": stagefsm.Transition("drain"),
			"draining": stagefsm.Transition("drained")})
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "gate", &ctlRec{})
		defer ctlFinish(t, st)

		s, err := st.WaitState(t.Context(), func(s string) bool { return s == "gate" })
		require.NoError(t, err)
		assert.Equal(t, "gate", s, "the current state matches at once")

		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		s, err = st.WaitState(ctx, func(s string) bool { return s == "running" })
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, "gate", s)

		// running and draining last no time at all; WaitState sees them.
		res := make(chan string, 2)
		for _, want := range []string{"running", "draining"} {
			go func() {
				s, err := st.WaitState(t.Context(), func(s string) bool { return s == want })
				assert.NoError(t, err)
				res <- s
			}()
		}
		synctest.Wait()
		require.NoError(t, st.Send(t.Context(), "open"))
		require.NoError(t, st.Wait(t.Context()))
		assert.ElementsMatch(t, []string{"running", "draining"}, []string{<-res, <-res})

		s, err = st.WaitState(t.Context(), func(s string) bool { return s == "gate" })
		assert.ErrorIs(t, err, stagefsm.ErrStageDone)
		assert.Equal(t, "done", s)

		_, err = st.WaitState(t.Context(), func(string) bool { panic("bad predicate") })
		var pe *stagefsm.PanicError
		assert.ErrorAs(t, err, &pe)
		_, err = st.WaitState(t.Context(), nil)
		assert.Error(t, err)
	})
}

func TestWaitStatePendingWhenStageEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlGated()), "gate", &ctlRec{})
		errc := make(chan error, 1)
		go func() {
			_, err := st.WaitState(t.Context(), func(s string) bool { return s == "never" })
			errc <- err
		}()
		synctest.Wait()
		st.Abort()
		assert.ErrorIs(t, <-errc, stagefsm.ErrStageDone)
		<-st.Done()
	})
}

func TestStopDrainsGracefully(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &ctlRec{}
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlStopper{ctlGated(), "drain"}), "gate", r)
		defer ctlFinish(t, st)
		changes := st.Changes(t.Context(), 16)
		require.NoError(t, st.Send(t.Context(), "open"))
		_, err := st.WaitState(t.Context(), func(s string) bool { return s == "running" })
		require.NoError(t, err)

		require.NoError(t, st.Stop(t.Context()))
		assert.Equal(t, "done", st.State())
		assert.Equal(t, []string{"handle drain: running -> draining", "exec flush", "dispatch draining",
			"handle drained: draining -> done", "exec cleanup", "dispatch done"}, r.lines()[2:])
		var path []string
		for c := range changes {
			path = append(path, c.From+" -"+c.Event+"-> "+c.To)
		}
		assert.Equal(t, []string{"gate -open-> running", "running -drain-> draining", "draining -drained-> done"}, path)

		assert.NoError(t, st.Stop(t.Context()), "Stop on a finished stage returns Run's result again")
	})
}

func TestStopErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlGated()), "gate", &ctlRec{})
		assert.ErrorIs(t, st.Stop(t.Context()), stagefsm.ErrNoStopEvent)
		ctlFinish(t, st)

		// The gate does not take drain (it only takes open); Stop's ctx ends
		// the wait, not the stage.
		f := ctlGated()
		f.edges["gate"]["drain"] = ctlTo("gate")
		f.modes["gate"] = stagefsm.ControlIgnore
		f.dispatch = ctlByState(map[string]stagefsm.Directive[string]{"gate": ctlIdle})
		st = stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlStopper{f, "drain"}), "gate", &ctlRec{})
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		assert.ErrorIs(t, st.Stop(ctx), context.DeadlineExceeded)
		select {
		case <-st.Done():
			t.Fatal("Stop's ctx must not end the stage")
		default:
		}
		st.Abort()
		assert.ErrorIs(t, st.Wait(t.Context()), context.Canceled)
	})
}

type ctlPanicStopper struct{ *ctlFake }

func (ctlPanicStopper) StopEvent() string { panic("no stop event today") }

func TestStopEventPanicIsAnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlPanicStopper{ctlGated()}), "gate", &ctlRec{})
		defer ctlFinish(t, st)
		var pe *stagefsm.PanicError
		assert.ErrorAs(t, st.Stop(t.Context()), &pe)
	})
}

func TestAbortReturnsCanceled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		completed := false
		f := ctlGated()
		r := &ctlRec{}
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "running", r,
			stagefsm.WithObserver(stagefsm.Observer[string, string]{OnComplete: func(string, error) { completed = true }}))
		synctest.Wait()
		st.Abort()
		st.Abort() // idempotent
		err := st.Wait(t.Context())
		assert.ErrorIs(t, err, context.Canceled)
		assert.False(t, completed, "an aborted stage writes no completion")
		assert.Equal(t, "running", st.State())
	})
}

func TestStartContextBoundsTheStage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		st := stagefsm.Start(ctx, stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](ctlGated()), "gate", &ctlRec{})
		assert.ErrorIs(t, st.Wait(t.Context()), context.DeadlineExceeded)
	})
}

func TestWaitIsIdempotent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := ctlGated()
		boom := errors.New("boom")
		f.completion = boom
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "gate", &ctlRec{})
		defer ctlFinish(t, st)

		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		assert.ErrorIs(t, st.Wait(ctx), context.Canceled, "a done ctx ends the wait, not the stage")

		require.NoError(t, st.Send(t.Context(), "abandon"))
		first := st.Wait(t.Context())
		assert.ErrorIs(t, first, boom)
		<-st.Done()
		for range 3 {
			assert.Same(t, first, st.Wait(t.Context()))
		}
		st.Abort() // after the end: changes nothing
		assert.Same(t, first, st.Wait(t.Context()))
	})
}

func TestStartWithNilSupervisorFailsInWait(t *testing.T) {
	st := stagefsm.Start[string, string, *ctlRec, ctlAct](t.Context(), nil, "gate", &ctlRec{})
	assert.Error(t, st.Wait(t.Context()))
	assert.Equal(t, "gate", st.State())
	assert.ErrorIs(t, st.Stop(t.Context()), stagefsm.ErrNoStopEvent)
}

func TestBlockWithoutControlPlaneDispatches(t *testing.T) {
	// Run (without Start) has no control queue: the policy is not consulted
	// and a Block state is dispatched like any other.
	f := ctlGated()
	f.dispatch = ctlByState(map[string]stagefsm.Directive[string]{"gate": stagefsm.Transition("abandon")})
	r := &ctlRec{}
	require.NoError(t, stagefsm.Run(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "gate", r))
	assert.Equal(t, []string{"dispatch gate", "handle abandon: gate -> done", "dispatch done"}, r.lines())
}

func TestControlModePolicyErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := ctlGated()
		f.modes["gate"] = stagefsm.ControlMode(42)
		st := stagefsm.Start(t.Context(), stagefsm.HandlerSupervised[string, string, *ctlRec, ctlAct](f), "gate", &ctlRec{})
		assert.Error(t, st.Wait(t.Context()))
		assert.Equal(t, "ControlMode(42)", stagefsm.ControlMode(42).String())
	})
}

package stagefsm_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/stagefsm/stagefsm"
)

// The consumer of the restart examples: its connection is reset on its
// first attempts; then it consumes and finishes.

var errReset = errors.New("connection reset")

// conn is the consumer's context: one per incarnation.
type conn struct{ attempt int }

type consumerAction struct{}

func (consumerAction) Execute(context.Context, *conn) error { return nil }

type consumerMachine struct{ state string }

func (m *consumerMachine) State() string { return m.state }

func (m *consumerMachine) Handle(_ context.Context, e string, _ *conn) ([]consumerAction, error) {
	switch {
	case m.state == "running" && e == "fail":
		m.state = "failed"
	case m.state == "running" && e == "finish":
		m.state = "done"
	default:
		return nil, fmt.Errorf("%w: %s in %s", stagefsm.ErrUnhandledEvent, e, m.state)
	}
	return nil, nil
}

// consumer fails (to its Failed state) while the attempt is at most
// resets, and fails permanently with err, if set.
type consumer struct {
	resets int
	err    error
}

func (consumer) Name() string                               { return "consumer" }
func (consumer) EventForActionError(error) string           { return "fail" }
func (consumer) WriteCompletionEvent(context.Context) error { return nil }

// FailedState makes the stage's Failed state a failure to restart
// (stagefsm.Failable).
func (consumer) FailedState(s string) bool { return s == "failed" }

func (consumer) BuildStateMachine(initial string) (stagefsm.Machine[string, string, *conn, consumerAction], error) {
	return &consumerMachine{state: initial}, nil
}

func (s consumer) DispatchState(_ context.Context, state string, c *conn) (stagefsm.Directive[string], error) {
	switch {
	case state != "running":
		return stagefsm.Terminate[string](), nil
	case s.err != nil:
		return stagefsm.Directive[string]{}, s.err
	case c.attempt <= s.resets:
		return stagefsm.Directive[string]{}, errReset
	default:
		return stagefsm.Transition("finish"), nil
	}
}

// reconnect is the context factory: a new connection for each incarnation.
func reconnect(_ context.Context, prev *conn) (*conn, error) {
	return &conn{attempt: prev.attempt + 1}, nil
}

// Restart a stage whose connection is reset twice: the backoff doubles,
// shortened by a jitter that the seed makes reproducible.
func ExampleWithRestart() {
	policy := stagefsm.RestartPolicy{
		MaxRestarts:    5,
		Period:         time.Minute,
		BackoffInitial: 10 * time.Millisecond,
		Jitter:         0.5,
		Seed:           1,
	}
	obs := stagefsm.Observer[string, string]{
		OnRestartScheduled: func(n int, delay time.Duration, cause error) {
			fmt.Printf("restart %d in %v (reset: %v)\n", n, delay, errors.Is(cause, errReset))
		},
		OnRestarted: func(incarnation int) { fmt.Println("incarnation", incarnation) },
	}
	st := stagefsm.Start(context.Background(), consumer{resets: 2}, "running", &conn{attempt: 1},
		stagefsm.WithRestart(policy, reconnect), stagefsm.WithObserver(obs))

	err := st.Wait(context.Background())
	fmt.Println("result:", err, "state:", st.State(), "restarts:", st.Restarts())
	fmt.Println("last failure was a reset:", errors.Is(st.LastFailure(), errReset))
	// Output:
	// restart 1 in 8.808524ms (reset: true)
	// incarnation 2
	// restart 2 in 10.278528ms (reset: true)
	// incarnation 3
	// result: <nil> state: done restarts: 2
	// last failure was a reset: true
}

// A failure marked with Permanent is not restarted: the stage ends with it.
func ExamplePermanent() {
	errConfig := errors.New("unknown topic")
	st := stagefsm.Start(context.Background(), consumer{err: stagefsm.Permanent(errConfig)}, "running", &conn{attempt: 1},
		stagefsm.WithRestart(stagefsm.RestartPolicy{}, reconnect))

	err := st.Wait(context.Background())
	fmt.Println("permanent:", errors.Is(err, stagefsm.ErrPermanent), "cause:", errors.Is(err, errConfig))
	fmt.Println("restarts:", st.Restarts())
	// Output:
	// permanent: true cause: true
	// restarts: 0
}

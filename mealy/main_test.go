package mealy_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The fixture: states and events that carry data and are routed by kind.

type stateKind int

const (
	created stateKind = iota
	running
	waiting
	done
	failed
	orphan // only in tests of unreachable states
)

func (k stateKind) String() string {
	names := [...]string{"Created", "Running", "Waiting", "Done", "Failed", "Orphan"}
	if k < 0 || int(k) >= len(names) {
		return fmt.Sprintf("stateKind(%d)", int(k))
	}
	return names[k]
}

type state struct {
	kind   stateKind
	reason string // failed only
}

func (s state) Kind() stateKind { return s.kind }

func (s state) String() string {
	if s.reason != "" {
		return fmt.Sprintf("%v(%s)", s.kind, s.reason)
	}
	return s.kind.String()
}

type eventKind int

const (
	start eventKind = iota
	tick
	finish
	fail
	ping
)

func (k eventKind) String() string {
	names := [...]string{"Start", "Tick", "Finish", "Fail", "Ping"}
	if k < 0 || int(k) >= len(names) {
		return fmt.Sprintf("eventKind(%d)", int(k))
	}
	return names[k]
}

type event struct {
	kind eventKind
	err  error // fail only
}

func (e event) Kind() eventKind { return e.kind }

func (e event) String() string {
	if e.err != nil {
		return fmt.Sprintf("%v(%v)", e.kind, e.err)
	}
	return e.kind.String()
}

// action is named by its string; executing it records its name in the
// context.
type action string

func (a action) String() string { return string(a) }

func (a action) Execute(_ context.Context, c *record) error {
	c.log = append(c.log, string(a))
	c.at = append(c.at, time.Now())
	if c.failOn == a {
		return errAction
	}
	return nil
}

var errAction = errors.New("action failed")

// record is the stage context: what ran, when, and what handlers saw.
type record struct {
	log    []string
	at     []time.Time
	failOn action
	seen   []string
}

func newBuilder() *mealy.Builder[state, event, *record, action, stateKind, eventKind] {
	return mealy.New[state, event, *record, action](state.Kind, event.Kind)
}

// failTo is a Choose handler: Failed with the event's error as reason.
func failTo(_ context.Context, _ state, e event, _ *record) (state, error) {
	reason := "unknown"
	if e.err != nil {
		reason = e.err.Error()
	}
	return state{kind: failed, reason: reason}, nil
}

var _ stagefsm.Machine[state, event, *record, action] = (*mealy.Machine[state, event, *record, action])(nil)
var _ stagefsm.Timed[event] = (*mealy.Machine[state, event, *record, action])(nil)

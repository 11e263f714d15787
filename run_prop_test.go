package stagefsm_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
)

// Regression tests for the bugs the properties found, each minimised to a
// plain case.

// timedSup is a stage whose state "waiting" times out timedSupAfter after
// every event the machine handles in it, with the event "timeout". The
// edges out of "waiting" are set per test; every other state terminates.
// Dispatch in "waiting" runs the next function of script (Terminate once
// they are used up).
type timedSup struct {
	script       []func(ctx context.Context) (stagefsm.Directive[string], error)
	afterTimeout string // the state "timeout" enters
	timeoutFails error  // the error of the action "timeout" returns, if any
	afterFailure string // the state a failure enters

	state      string
	deadline   time.Time
	dispatches int
	routed     []error
}

const timedSupAfter = time.Millisecond

// timedAction is the action type of timedSup.
type timedAction struct{ err error }

func (a timedAction) Execute(context.Context, *timedSup) error { return a.err }

func (s *timedSup) Name() string                { return "timed" }
func (s *timedSup) StageID() stagefsm.StageID   { return "timed" }
func (s *timedSup) WriterID() stagefsm.WriterID { return "timed" }
func (s *timedSup) State() string               { return s.state }

func (s *timedSup) BuildStateMachine(initial string) (stagefsm.Machine[string, string, *timedSup, timedAction], error) {
	s.enter(initial)
	return s, nil
}

func (s *timedSup) enter(state string) {
	s.state, s.deadline = state, time.Now().Add(timedSupAfter)
}

func (s *timedSup) Timeout() (time.Time, string, bool) {
	return s.deadline, "timeout", s.state == "waiting"
}

func (s *timedSup) Handle(_ context.Context, event string, _ *timedSup) ([]timedAction, error) {
	switch event {
	case "timeout":
		s.enter(s.afterTimeout)
		if s.timeoutFails != nil {
			return []timedAction{{err: s.timeoutFails}}, nil
		}
	case "failure":
		s.enter(s.afterFailure)
	default:
		return nil, fmt.Errorf("event %q: %w", event, stagefsm.ErrUnhandledEvent)
	}
	return nil, nil
}

func (s *timedSup) DispatchState(ctx context.Context, state string, _ *timedSup) (stagefsm.Directive[string], error) {
	if state != "waiting" || s.dispatches == len(s.script) {
		return stagefsm.Terminate[string](), nil
	}
	s.dispatches++
	return s.script[s.dispatches-1](ctx)
}

func (s *timedSup) EventForActionError(err error) string {
	s.routed = append(s.routed, err)
	return "failure"
}

func (s *timedSup) WriteCompletionEvent(context.Context) error { return nil }

// TestRunRoutesBugsAfterStateDeadline: a dispatch that panicked, or returned
// the zero Directive, after its state's deadline had passed was taken for a
// dispatch that gave up because of the deadline. The bug was dropped without
// a trace and the timeout fired instead. Both are failures whatever the
// time; only an error that dispatch returns may be put down to the deadline.
func TestRunRoutesBugsAfterStateDeadline(t *testing.T) {
	errWork := errors.New("work failed")
	for _, tt := range []struct {
		name      string
		then      func() (stagefsm.Directive[string], error)
		wantState string
		wantCause func(t *testing.T, err error)
	}{
		{
			name:      "panic",
			then:      func() (stagefsm.Directive[string], error) { panic(errWork) },
			wantState: "failed",
			wantCause: func(t *testing.T, err error) {
				var pe *stagefsm.PanicError
				assert.ErrorAs(t, err, &pe)
				assert.ErrorIs(t, err, errWork)
			},
		},
		{
			name:      "zero directive",
			then:      func() (stagefsm.Directive[string], error) { return stagefsm.Directive[string]{}, nil },
			wantState: "failed",
			wantCause: func(t *testing.T, err error) { assert.ErrorIs(t, err, stagefsm.ErrZeroDirective) },
		},
		{
			name:      "returned error (put down to the deadline)",
			then:      func() (stagefsm.Directive[string], error) { return stagefsm.Directive[string]{}, errWork },
			wantState: "timedOut",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &timedSup{
					script: []func(context.Context) (stagefsm.Directive[string], error){
						func(context.Context) (stagefsm.Directive[string], error) {
							time.Sleep(2 * timedSupAfter) // busy past the deadline, not watching ctx
							return tt.then()
						},
					},
					afterTimeout: "timedOut",
					afterFailure: "failed",
				}

				err := stagefsm.Run(t.Context(), s, "waiting", s)

				require.NoError(t, err)
				assert.Equal(t, tt.wantState, s.state)
				if tt.wantCause == nil {
					assert.Empty(t, s.routed)
					return
				}
				require.Len(t, s.routed, 1)
				var de *stagefsm.DispatchError
				require.ErrorAs(t, s.routed[0], &de)
				assert.Equal(t, "waiting", de.State)
				tt.wantCause(t, s.routed[0])
			})
		})
	}
}

// TestRunFailureLoopCountResetByTimedOutDispatch: a dispatch that gave up
// because its state's deadline passed routes no failure, so it ends a run of
// consecutive failures, as Idle does. Run counted across it and reported
// ErrFailureLoop for failures that were a state timeout apart.
func TestRunFailureLoopCountResetByTimedOutDispatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errTimeoutAction := errors.New("timeout action failed")
		s := &timedSup{
			script: []func(context.Context) (stagefsm.Directive[string], error){
				func(context.Context) (stagefsm.Directive[string], error) { return stagefsm.Idle[string](), nil },
				func(ctx context.Context) (stagefsm.Directive[string], error) {
					<-ctx.Done() // blocks until the state's deadline
					return stagefsm.Directive[string]{}, ctx.Err()
				},
			},
			afterTimeout: "waiting",
			timeoutFails: errTimeoutAction,
			afterFailure: "waiting",
		}
		start := time.Now()

		// Idle; the timeout fires at 1ms, its action fails (1 in a row).
		// Dispatch blocks until the deadline at 2ms and gives up (0 in a
		// row); the timeout fires, its action fails (1 in a row).
		err := stagefsm.Run(t.Context(), s, "waiting", s, stagefsm.WithMaxConsecutiveFailures(1))

		require.NoError(t, err)
		require.Len(t, s.routed, 2)
		for _, r := range s.routed {
			assert.ErrorIs(t, r, errTimeoutAction)
		}
		assert.Equal(t, 2*timedSupAfter, time.Since(start))
	})
}

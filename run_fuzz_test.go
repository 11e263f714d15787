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
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/stagefsm/stagefsm"
)

// The fuzz input is a script. Its first byte holds flags:
//
//	bits 0-2  WithMaxConsecutiveFailures(v % 5), 0 meaning unbounded
//	bit 3     the machine has a 5ms state timeout in Running
//	bit 4     the completion writer fails
//	bit 5     WithRecoverPanics(false)
//	bit 6     a Debug logger (zap observer)
//
// Every further byte is one dispatch: the low nibble is an operation (see
// fuzzOp), the high nibble its argument. After the script, dispatch returns
// Terminate, so every run is bounded; time is synctest's fake clock, so idle
// waits, timeouts and blocking are instant.
const (
	flagTimed         = 1 << 3
	flagCompletionErr = 1 << 4
	flagNoRecover     = 1 << 5
	flagDebugLog      = 1 << 6
	maxFuzzSteps      = 256
)

// fuzzOp is what one script byte makes dispatch do.
type fuzzOp byte

const (
	opContinue       fuzzOp = iota
	opIdle                  // Idle
	opWork                  // Transition(work<arg>): arg&3 actions, the last misbehaving per arg>>2
	opFinish                // Transition(finish)
	opTerminate             // Terminate
	opError                 // return an error
	opPanic                 // panic
	opZero                  // the zero Directive
	opCancelContinue        // cancel ctx, then Continue
	opCancelError           // cancel ctx, then return ctx.Err()
	opBogus                 // Transition of an event no state accepts
	opRest                  // Transition(rest): Running -> Waiting
	opBlock                 // block until ctx is done (the state timeout or the 1h limit)
	opDoubleFault           // make the next failure action fail, then Continue
	opSleep                 // work for arg ms, then Continue
	opStart                 // Transition(start)
)

// fuzzPanic is the value fuzz scripts panic with.
type fuzzPanic struct{ where string }

// fuzzActions builds the actions of work<k>: k&3 actions, the last of which
// behaves per k>>2: 0 succeeds, 1 fails, 2 panics, 3 cancels ctx and fails.
func fuzzActions(k int, cancel context.CancelFunc) []*action {
	n := k & 3
	actions := make([]*action, n)
	for i := range actions {
		actions[i] = act(fmt.Sprintf("a%d", i))
	}
	if n == 0 {
		return actions
	}
	switch k >> 2 {
	case 1:
		actions[n-1] = failingAct("fails", errAction)
	case 2:
		actions[n-1] = actFn("panics", func(context.Context, *stageCtx) error { panic(fuzzPanic{"action"}) })
	case 3:
		actions[n-1] = actFn("cancels", func(context.Context, *stageCtx) error { cancel(); return errAction })
	}
	return actions
}

// fuzzEdges is the fuzz stage's table. Created and Done have no failure
// transition (a failure there is fatal); the report action fails once a
// double fault was scripted.
func fuzzEdges(cancel context.CancelFunc) map[edge]to {
	report := actFn("report", func(_ context.Context, c *stageCtx) error {
		if c.n == 1 {
			return errReport
		}
		return nil
	})
	edges := map[edge]to{
		{created, "start"}:  {state: running},
		{running, "finish"}: {state: done},
		{waiting, "finish"}: {state: done},
		{running, "rest"}:   {state: waiting},
		{running, timeout}:  {state: running},
		{running, failure}:  {state: waiting, actions: []*action{report}},
		{waiting, failure}:  {state: failed, actions: []*action{report}},
		{failed, failure}:   {state: failed, actions: []*action{report}},
	}
	for k := range 16 {
		name := fmt.Sprintf("work%d", k)
		edges[edge{running, name}] = to{state: running, actions: fuzzActions(k, cancel)}
		edges[edge{waiting, name}] = to{state: running, actions: fuzzActions(k, cancel)}
	}
	return edges
}

func FuzzRun(f *testing.F) {
	seeds := [][]byte{
		{0},
		{0, byte(opStart), byte(opWork) | 3<<4, byte(opContinue), byte(opFinish)},
		{3, byte(opStart), byte(opIdle), byte(opIdle), byte(opError), byte(opError), byte(opError), byte(opError)},
		{1, byte(opStart), byte(opPanic), byte(opZero), byte(opError)},
		{0, byte(opStart), byte(opWork) | 7<<4, byte(opWork) | 11<<4, byte(opWork) | 15<<4},
		{0, byte(opStart), byte(opCancelContinue)},
		{0, byte(opStart), byte(opCancelError)},
		{0, byte(opBogus)},
		{0, byte(opError)},
		{flagTimed, byte(opStart), byte(opIdle), byte(opBlock), byte(opSleep) | 9<<4, byte(opIdle), byte(opRest), byte(opBlock)},
		{flagCompletionErr, byte(opStart), byte(opTerminate)},
		{flagNoRecover, byte(opStart), byte(opWork) | 9<<4},
		{flagNoRecover, byte(opPanic)},
		{flagDebugLog | 2, byte(opStart), byte(opDoubleFault), byte(opError)},
		{flagDebugLog | flagTimed, byte(opStart), byte(opRest), byte(opError), byte(opError), byte(opFinish), byte(opError)},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		if len(data) > maxFuzzSteps+1 {
			data = data[:maxFuzzSteps+1]
		}
		ignore := goleak.IgnoreCurrent()
		synctest.Test(t, func(t *testing.T) { fuzzRun(t, data[0], data[1:]) })
		goleak.VerifyNone(t, ignore)
	})
}

// fuzzRun runs one script and checks the invariants: Run returns, having
// written at most one completion, and only right after a Terminate; nil means
// the completion was written; nothing is routed once ctx is done, and a done
// ctx shows in the error; only *DispatchError and *ActionError are routed.
func fuzzRun(t *testing.T, flags byte, steps []byte) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
	defer cancel()

	var (
		dispatches       int
		lastWasTerminate bool
		violations       []string
	)
	s, c := newSup(fuzzEdges(cancel), nil)
	if flags&flagTimed != 0 {
		s.after = map[state]time.Duration{running: 5 * time.Millisecond}
	}
	s.dispatch = func(ctx context.Context, st state, c *stageCtx) (stagefsm.Directive[event], error) {
		dispatches++
		lastWasTerminate = false
		if dispatches > len(steps) {
			lastWasTerminate = true
			return stagefsm.Terminate[event](), nil
		}
		b := steps[dispatches-1]
		arg := int(b >> 4)
		switch fuzzOp(b & 15) {
		case opContinue:
			return stagefsm.Continue[event](), nil
		case opIdle:
			return stagefsm.Idle[event](), nil
		case opWork:
			return stagefsm.Transition(ev(fmt.Sprintf("work%d", arg))), nil
		case opFinish:
			return stagefsm.Transition(ev("finish")), nil
		case opTerminate:
			lastWasTerminate = true
			return stagefsm.Terminate[event](), nil
		case opError:
			return stagefsm.Directive[event]{}, errCause
		case opPanic:
			panic(fuzzPanic{"dispatch"})
		case opZero:
			return stagefsm.Directive[event]{}, nil
		case opCancelContinue:
			cancel()
			return stagefsm.Continue[event](), nil
		case opCancelError:
			cancel()
			return stagefsm.Directive[event]{}, ctx.Err()
		case opBogus:
			return stagefsm.Transition(ev("bogus")), nil
		case opRest:
			return stagefsm.Transition(ev("rest")), nil
		case opBlock:
			<-ctx.Done()
			return stagefsm.Directive[event]{}, ctx.Err()
		case opDoubleFault:
			c.n = 1
			return stagefsm.Continue[event](), nil
		case opSleep:
			time.Sleep(time.Duration(arg) * time.Millisecond)
			return stagefsm.Continue[event](), nil
		default: // opStart
			return stagefsm.Transition(ev("start")), nil
		}
	}
	s.onHandle = func(context.Context, event) error {
		lastWasTerminate = false
		return nil
	}
	s.onError = func(err error) {
		if ctx.Err() != nil {
			violations = append(violations, "a failure was routed after ctx was done")
		}
		var de *stagefsm.DispatchError
		var ae *stagefsm.ActionError
		if !errors.As(err, &de) && !errors.As(err, &ae) {
			violations = append(violations, fmt.Sprintf("routed %T, not a *DispatchError or *ActionError", err))
		}
	}
	var completionErr error
	if flags&flagCompletionErr != 0 {
		completionErr = errWrite
	}
	s.completion = func(context.Context) error {
		if !lastWasTerminate {
			violations = append(violations, "completion written without a Terminate just before")
		}
		return completionErr
	}

	opts := []stagefsm.Option{stagefsm.WithMaxConsecutiveFailures(int(flags&7) % 5)}
	if flags&flagNoRecover != 0 {
		opts = append(opts, stagefsm.WithRecoverPanics(false))
	}
	var logs *observer.ObservedLogs
	if flags&flagDebugLog != 0 {
		var core zapcore.Core
		core, logs = observer.New(zapcore.DebugLevel)
		opts = append(opts, stagefsm.WithLogger(zap.New(core)))
	}

	var err error
	panicked := func() (v any) {
		defer func() { v = recover() }()
		err = stagefsm.Run(ctx, s, created, c, opts...)
		return nil
	}()

	require.Empty(t, violations)
	require.LessOrEqual(t, s.completions, 1, "never more than one completion")
	require.LessOrEqual(t, dispatches, len(steps)+1, "Run stops at the first Terminate after the script")
	if panicked != nil {
		require.NotZero(t, flags&flagNoRecover, "a panic escaped Run with recovery on: %v", panicked)
		require.IsType(t, fuzzPanic{}, panicked, "the original value propagates")
		return
	}
	if err == nil {
		assert.Equal(t, 1, s.completions, "nil means the completion was written")
		assert.NoError(t, completionErr)
	}
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		// The only way to end with another error once ctx is done is for
		// Run to have decided before the cancellation: impossible here,
		// since every cancellation happens inside user code whose result
		// Run then checks against ctx.
		t.Fatalf("ctx is done (%v) but Run returned %v", ctx.Err(), err)
	}
	if logs != nil {
		assert.Zero(t, logs.Filter(func(e observer.LoggedEntry) bool { return e.Level >= zapcore.ErrorLevel }).Len(),
			"errors are returned, not logged")
	}
}

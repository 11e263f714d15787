package stagefsm_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/stagefsm/stagefsm"
)

// This file checks Run against its contract with random machines and random
// scripts (pgregory.net/rapid). Every case runs in a testing/synctest bubble,
// so time is fake, instant and exact, and every case is deterministic (rapid
// can shrink a failure to a minimal case).
//
// The fakes share one propHarness, which plays the supervisor, the machine,
// the actions and the stage context, and which is also the oracle: it knows
// at every moment what Run may do next (dispatch, feed an event, run the next
// action, route a failure, write the completion, or return) and records a
// violation for anything else. When Run returns, the harness checks that
// the error is the one the contract names for the situation Run was in.
//
// TestStartProperties runs the same cases under Start, with a control
// script played against the Stage handle (Send, TrySend, CloseControl,
// Stop, Abort at random moments) and a random control policy per state.
//
// Local soak (the package before rapid's flag):
//
//	go test . -run 'TestRunProperties|TestStartProperties' -rapid.checks=10000

// propGrid is the granularity of the durations in a case. Timers that
// fall due at the same instant would make a case nondeterministic (which
// goroutine runs first is up to the scheduler), so: state timeouts and idle
// waits are multiples of propGrid; a sleep in user code is a multiple plus
// propSkew, and a case sleeps at most propMaxSleeps times, so that sleeps
// never end on a deadline; a cancellation by the clock falls half-way
// between grid points; and the i-th operation of a control script falls
// (i+1)·propOpSkew past that, which no sum of sleeps reaches.
const (
	propGrid      = 100 * time.Microsecond
	propSkew      = time.Nanosecond
	propMaxSleeps = 500
	propOpSkew    = time.Microsecond
)

// propHorizon is when the harness cancels a Run that has not returned yet (a
// script may legitimately block until cancellation); propGrace is how long
// Run then has to return before the case fails.
const (
	propHorizon = 5*time.Second + propGrid/4
	propGrace   = time.Second
)

// propCallLimit bounds the calls into user code of one case: past it the
// harness records a runaway loop and cancels.
const propCallLimit = 100_000

var errPropCancel = errors.New("prop: test cancelled the run")

// propState is a state of a random machine.
type propState int

func (s propState) String() string { return fmt.Sprintf("s%d", int(s)) }

// propEvent is an event of a random machine: a normal event n, or the
// failure event with id fail (> 0) that EventForActionError returned. A
// control event carries its send's id ctl (> 0), or stop when Stop sent
// it; a closure event, closure.
type propEvent struct {
	n       int
	fail    int
	ctl     int
	stop    bool
	closure bool
}

func (e propEvent) String() string {
	switch {
	case e.fail > 0:
		return fmt.Sprintf("failure#%d", e.fail)
	case e.ctl > 0:
		return fmt.Sprintf("e%d(control#%d)", e.n, e.ctl)
	case e.stop:
		return fmt.Sprintf("e%d(stop)", e.n)
	case e.closure:
		return fmt.Sprintf("e%d(closure)", e.n)
	}
	return fmt.Sprintf("e%d", e.n)
}

// control reports whether e came through the control queue.
func (e propEvent) control() bool { return e.ctl > 0 || e.stop }

// propOutcome is what a scripted call into user code does after its sleep.
type propOutcome uint8

const (
	propOK       propOutcome = iota
	propErr                  // returns an error of its own
	propPanic                // panics with a value that is not an error
	propPanicErr             // panics with an error of its own
	propBlock                // blocks until its context is done, returns ctx.Err()
)

var propOutcomeNames = [...]string{"ok", "err", "panic", "panic(err)", "block"}

func (o propOutcome) String() string { return propOutcomeNames[o] }

// propCall is the script of one call into user code.
type propCall struct {
	sleep  time.Duration // spent before acting, ignoring ctx (work in progress)
	cancel bool          // cancels the run's context while in the call
	out    propOutcome
}

func (c propCall) String() string {
	var b strings.Builder
	if c.sleep > 0 {
		fmt.Fprintf(&b, "sleep %v, ", c.sleep)
	}
	if c.cancel {
		b.WriteString("cancel, ")
	}
	b.WriteString(c.out.String())
	return b.String()
}

// propDirective is what a scripted dispatch returns when its outcome is ok.
type propDirective uint8

const (
	propContinue propDirective = iota
	propIdle
	propTransition
	propTerminate
	propZero
)

// propStep is one scripted dispatch.
type propStep struct {
	propCall
	directive propDirective
	event     int
}

// propEdge is a row of a random machine's table: reject the event, panic,
// or move to state to and return actions.
type propEdge struct {
	reject  bool
	panic   bool
	to      int
	actions []propCall
}

// propTimeout is a state's timeout; after == 0 means none.
type propTimeout struct {
	after time.Duration
	event int
}

// propCase is one random case: a machine, a dispatch script and the Run
// options.
type propCase struct {
	states, events int
	initial        int
	table          [][]propEdge // [state][event]
	failure        []propEdge   // [state]: the failure event's edge
	timeouts       []propTimeout
	buildErr       bool

	script      []propStep // dispatch k runs script[k]; past its end, Terminate
	completion  propCall
	efaePanicAt int // the call of EventForActionError that panics (1-based), 0: none

	maxFailures int  // the failure-loop limit in force
	setFailures bool // whether it is set by option (else the default)
	idleInitial time.Duration
	idleMax     time.Duration
	setIdle     bool
	cancelAt    time.Duration // a cancellation by the clock, 0: none

	// Under Start only.
	start     bool
	modes     []stagefsm.ControlMode // [state]
	closures  []propClosure          // [state]: what a closed queue means
	stopEvent int
	capacity  int // of the control queue
	ops       []propOp
}

// propClosure is what ControlClosed returns in a state.
type propClosure struct {
	ok    bool
	event int
}

// propOpKind is what the control script does to the Stage.
type propOpKind uint8

const (
	opTrySend propOpKind = iota
	opSend
	opClose
	opStop
	opAbort
)

var propOpNames = [...]string{"TrySend", "Send", "CloseControl", "Stop", "Abort"}

func (k propOpKind) String() string { return propOpNames[k] }

// propOp is one step of the control script, at a time of its own (see
// propGrid), so that it never coincides with any timer of the case, nor
// with one armed after another step, and Run is blocked (in a wait or in
// user code) when it happens.
type propOp struct {
	at    time.Duration
	kind  propOpKind
	event int
}

// propPick draws an index with probability proportional to its weight.
// Rapid shrinks towards index 0, so the benign choice goes first. The
// weights keep fatal outcomes rare enough that most runs go on for many
// iterations.
func propPick(t *rapid.T, label string, weights ...int) int {
	sum := 0
	for _, w := range weights {
		sum += w
	}
	n := rapid.IntRange(0, sum-1).Draw(t, label)
	for i, w := range weights {
		if n < w {
			return i
		}
		n -= w
	}
	panic("unreachable")
}

// propChance draws true with probability about 1/n.
func propChance(t *rapid.T, label string, n int) bool {
	return propPick(t, label, n-1, 1) == 1
}

func drawPropCall(t *rapid.T, label string) propCall {
	return propCall{
		sleep:  rapid.SampledFrom([]time.Duration{0, 0, 0, propSkew, propGrid + propSkew, 10*propGrid + propSkew, 50*propGrid + propSkew}).Draw(t, label+".sleep"),
		cancel: propChance(t, label+".cancel", 80),
		out:    propOutcome(propPick(t, label+".out", 40, 6, 2, 2, 1)), // ok, err, panic, panic(err), block
	}
}

func drawPropEdge(t *rapid.T, label string, states, maxActions int) propEdge {
	return propEdge{
		reject: propChance(t, label+".reject", 15),
		panic:  propChance(t, label+".panic", 100),
		to:     rapid.IntRange(0, states-1).Draw(t, label+".to"),
		actions: rapid.SliceOfN(rapid.Custom(func(t *rapid.T) propCall {
			return drawPropCall(t, "action")
		}), 0, maxActions).Draw(t, label+".actions"),
	}
}

func drawPropCase(t *rapid.T, start bool) *propCase {
	c := &propCase{
		states: rapid.IntRange(1, 4).Draw(t, "states"),
		events: rapid.IntRange(1, 3).Draw(t, "events"),
	}
	c.initial = rapid.IntRange(0, c.states-1).Draw(t, "initial")
	for s := range c.states {
		row := make([]propEdge, c.events)
		for e := range row {
			row[e] = drawPropEdge(t, fmt.Sprintf("edge[s%d,e%d]", s, e), c.states, 3)
		}
		c.table = append(c.table, row)
		c.failure = append(c.failure, drawPropEdge(t, fmt.Sprintf("failure[s%d]", s), c.states, 2))
		var to propTimeout
		if propChance(t, fmt.Sprintf("timed[s%d]", s), 3) {
			to.after = rapid.SampledFrom([]time.Duration{10 * propGrid, 25 * propGrid, 100 * propGrid}).Draw(t, "timeout.after")
			to.event = rapid.IntRange(0, c.events-1).Draw(t, "timeout.event")
		}
		c.timeouts = append(c.timeouts, to)
	}
	c.buildErr = propChance(t, "buildErr", 100)

	// Rapid favours short slices; a drawn minimum length makes long scripts
	// common too (and shrinks to 0).
	minSteps := rapid.SampledFrom([]int{0, 10, 25}).Draw(t, "minSteps")
	c.script = rapid.SliceOfN(rapid.Custom(func(t *rapid.T) propStep {
		s := propStep{propCall: drawPropCall(t, "dispatch")}
		s.directive = propDirective(propPick(t, "directive", 4, 6, 10, 1, 1)) // continue, idle, transition, terminate, zero
		s.event = rapid.IntRange(0, c.events-1).Draw(t, "event")
		return s
	}), minSteps, 40).Draw(t, "script")
	c.completion = drawPropCall(t, "completion")
	if propChance(t, "efaePanic", 15) {
		c.efaePanicAt = rapid.IntRange(1, 5).Draw(t, "efaePanicAt")
	}

	c.maxFailures = 100
	if n := propPick(t, "maxFailures", 4, 1, 2, 2, 1); n > 0 {
		c.setFailures = true
		c.maxFailures = n - 1 // 0 means unbounded
	}
	c.idleInitial, c.idleMax = time.Millisecond, 10*time.Millisecond
	if rapid.Bool().Draw(t, "setIdle") {
		c.setIdle = true
		c.idleInitial = time.Duration(rapid.IntRange(1, 20).Draw(t, "idleInitial")) * propGrid
		c.idleMax = c.idleInitial * time.Duration(rapid.IntRange(1, 8).Draw(t, "idleFactor"))
	}
	if propChance(t, "cancelByClock", 6) {
		c.cancelAt = time.Duration(rapid.IntRange(0, 2000).Draw(t, "cancelAt"))*propGrid + propGrid/2
	}
	if start {
		drawPropControl(t, c)
	}
	return c
}

// drawPropControl draws the control policy and the control script.
func drawPropControl(t *rapid.T, c *propCase) {
	c.start = true
	for s := range c.states {
		mode := propPick(t, fmt.Sprintf("mode[s%d]", s), 6, 2, 2) // poll, block, ignore
		c.modes = append(c.modes, stagefsm.ControlMode(mode))
		cl := propClosure{ok: propChance(t, fmt.Sprintf("closure[s%d]", s), 2)}
		cl.event = rapid.IntRange(0, c.events-1).Draw(t, "closure.event")
		c.closures = append(c.closures, cl)
	}
	c.stopEvent = rapid.IntRange(0, c.events-1).Draw(t, "stopEvent")
	c.capacity = rapid.IntRange(1, 4).Draw(t, "capacity")
	at := time.Duration(0)
	c.ops = rapid.SliceOfN(rapid.Custom(func(t *rapid.T) propOp {
		at += time.Duration(rapid.IntRange(1, 30).Draw(t, "op.after")) * propGrid
		return propOp{
			at:    at + propGrid/2,                                     // plus its own skew: see runPropCase
			kind:  propOpKind(propPick(t, "op.kind", 10, 10, 2, 1, 1)), // TrySend, Send, CloseControl, Stop, Abort
			event: rapid.IntRange(0, c.events-1).Draw(t, "op.event"),
		}
	}), 0, 20).Draw(t, "ops")
}

func (c *propCase) options() []stagefsm.Option {
	var opts []stagefsm.Option
	if c.setFailures {
		opts = append(opts, stagefsm.WithMaxConsecutiveFailures(c.maxFailures))
	}
	if c.setIdle {
		opts = append(opts, stagefsm.WithIdleBackoff(c.idleInitial, c.idleMax))
	}
	if c.start {
		opts = append(opts, stagefsm.WithControlCapacity(c.capacity))
	}
	return opts
}

// propAction is an action returned by the random machine.
type propAction struct {
	list int // the Handle call that returned it
	idx  int
	call propCall
}

func (a *propAction) String() string { return fmt.Sprintf("action %d.%d (%v)", a.list, a.idx, a.call) }

// Execute runs the action's script; the harness is the stage context.
func (a *propAction) Execute(ctx context.Context, h *propHarness) error { return h.execute(ctx, a) }

// propError is the error a scripted call returns or panics with. Each call
// makes its own, so errors.Is tells which call failed.
type propError struct{ call int }

func (e *propError) Error() string { return fmt.Sprintf("scripted failure of call %d", e.call) }

// propPhase is what the harness expects Run to do next.
type propPhase uint8

const (
	phaseIterate      propPhase = iota // dispatch, fire a due timeout, or return if cancelled
	phaseEvent                         // feed the event dispatch asked for
	phaseComplete                      // write the completion (dispatch said Terminate)
	phaseActions                       // run the next action of the list
	phaseRoute                         // route the failure (or give up: failure loop)
	phaseFailureEvent                  // feed the failure event
	phaseReturn                        // return the error that check accepts
)

var propPhaseNames = [...]string{"iterate", "event", "complete", "actions", "route", "failure event", "return"}

func (p propPhase) String() string { return propPhaseNames[p] }

// propHarness is the supervisor, the machine and the stage context of one
// case, and the oracle that checks Run's every call.
type propHarness struct {
	c        *propCase
	t0       time.Time
	ctx      context.Context // the context given to Run or Start
	cancelFn context.CancelCauseFunc
	canceled atomic.Int64 // when the context was first cancelled (UnixNano), 0: not yet
	aborted  atomic.Bool  // Stage.Abort was called
	abortFst bool         // ... before any other cancellation

	// runCtx is the context Run passes to user code: ctx under Run; under
	// Start, Start's own child of ctx, learnt at its first sight.
	runCtx context.Context

	// The control queue as it should be (under Start). The control script
	// and the loop both use it: qmu.
	qmu     sync.Mutex
	queue   []propEvent
	qclosed bool
	closeAt time.Time
	sentAt  map[propEvent]time.Time
	ctlSeq  int

	closedAsked bool // ControlClosed was asked in the current state
	closedSent  bool // a closure event was delivered
	commits     []propCommit

	logMu sync.Mutex // guards violations and trace (the script adds to them)

	// The machine.
	state    int
	armed    bool
	deadline time.Time
	handles  int

	// Counters.
	calls        int
	sleeps       int
	dispatches   int
	efaeCalls    int
	routed       int // EventForActionError calls that returned
	failuresFed  int // failure events the machine received
	completions  int
	consecutive  int // routed failures since the last iteration that routed none
	cancelled    bool
	runawayNoted bool

	// The oracle.
	phase      propPhase
	event      propEvent     // phaseEvent, phaseFailureEvent
	actions    []*propAction // phaseActions
	next       int           // phaseActions: index of the next action
	failureRun bool          // phaseActions: the list is a failure transition's
	cause      func(error) bool
	causeDesc  string
	site       string // phaseRoute: "dispatch" or "action"
	siteState  string // phaseRoute: the state dispatch failed in
	failedIdx  int    // phaseRoute: the failed action's index
	check      func(error) bool
	checkDesc  string

	idleWait   time.Duration // Run's next idle wait, 0 after a reset
	idleUntil  time.Time     // when the idle wait that is going on ends
	idling     bool
	lastReturn time.Time // when the last call into user code returned

	violations []string
	trace      []string
}

// propCommit is a state change the machine committed.
type propCommit struct {
	from, to int
	event    propEvent
	cause    func(error) bool // the failure routed, for a failure event
}

func newPropHarness(c *propCase, ctx context.Context, cancel context.CancelCauseFunc) *propHarness {
	now := time.Now()
	h := &propHarness{c: c, t0: now, ctx: ctx, cancelFn: cancel, lastReturn: now, state: c.initial}
	if !c.start {
		h.runCtx = ctx
	}
	h.sentAt = make(map[propEvent]time.Time)
	return h
}

// done reports whether the context of the Run is done.
func (h *propHarness) done() bool { return h.ctx.Err() != nil || h.aborted.Load() }

// checkCtx checks that user code got the Run's context.
func (h *propHarness) checkCtx(ctx context.Context, what string) {
	switch {
	case h.runCtx == nil:
		h.runCtx = ctx
	case ctx != h.runCtx:
		h.violatef("%s with a context that is not Run's", what)
	}
}

// cancel cancels the Run's context and notes when. The watchdog calls it
// too, from its own goroutine.
func (h *propHarness) cancel() {
	h.canceled.CompareAndSwap(0, time.Now().UnixNano())
	h.cancelFn(errPropCancel)
}

func (h *propHarness) violatef(format string, args ...any) {
	h.logMu.Lock()
	defer h.logMu.Unlock()
	h.violations = append(h.violations, fmt.Sprintf("[call %d, phase %v] ", h.calls, h.phase)+fmt.Sprintf(format, args...))
}

// scriptf and scriptViolatef are the control script's tracef and
// violatef: they read nothing the loop's goroutine writes.
func (h *propHarness) scriptf(format string, args ...any) {
	h.logMu.Lock()
	defer h.logMu.Unlock()
	h.trace = append(h.trace, fmt.Sprintf("  script %-9v ", time.Since(h.t0))+fmt.Sprintf(format, args...))
}

func (h *propHarness) scriptViolatef(format string, args ...any) {
	h.logMu.Lock()
	defer h.logMu.Unlock()
	h.violations = append(h.violations, "[control script] "+fmt.Sprintf(format, args...))
}

func (h *propHarness) tracef(format string, args ...any) {
	h.logMu.Lock()
	defer h.logMu.Unlock()
	if len(h.trace) < 400 {
		h.trace = append(h.trace, fmt.Sprintf("%3d %-9v ", h.calls, time.Since(h.t0))+fmt.Sprintf(format, args...))
	}
}

// enter counts a call into user code and notes a cancellation that
// happened while Run was waiting.
func (h *propHarness) enter(what string) {
	h.calls++
	if h.calls == propCallLimit && !h.runawayNoted {
		h.runawayNoted = true
		h.violatef("runaway: %d calls into user code", h.calls)
		h.cancel()
	}
	h.cancelled = h.cancelled || h.done()
	h.tracef("%s", what)
}

// leave records when a call into user code returned.
func (h *propHarness) leave() {
	h.lastReturn = time.Now()
	h.cancelled = h.cancelled || h.done()
}

// propResult is how a scripted call ends: the error to return (block:
// ctx's error), the value to panic with (nil: none), and what the failure
// must look like in the error tree of the error Run routes or returns.
type propResult struct {
	err   error
	panic any
	cause func(error) bool
	desc  string
}

// perform plays a scripted call: sleep, maybe cancel, then the outcome.
func (h *propHarness) perform(ctx context.Context, c propCall) propResult {
	if c.sleep > 0 && h.sleeps < propMaxSleeps {
		h.sleeps++
		time.Sleep(c.sleep)
	}
	if c.cancel {
		h.tracef("  cancels")
		h.cancel()
	}
	switch c.out {
	case propErr:
		e := &propError{call: h.calls}
		return propResult{err: e, cause: func(err error) bool { return errors.Is(err, e) }, desc: e.Error()}
	case propPanic:
		v := fmt.Sprintf("scripted panic of call %d", h.calls)
		return propResult{panic: v, cause: func(err error) bool { return propHasPanic(err, v) }, desc: v}
	case propPanicErr:
		e := &propError{call: h.calls}
		return propResult{panic: e, cause: func(err error) bool { return errors.Is(err, e) && propHasPanic(err, e) }, desc: "panic(" + e.Error() + ")"}
	case propBlock:
		<-ctx.Done()
		err := ctx.Err()
		return propResult{err: err, cause: func(e error) bool { return errors.Is(e, err) }, desc: "blocked: " + err.Error()}
	}
	return propResult{}
}

// propHasPanic reports whether a *stagefsm.PanicError with value v is in
// err's tree. errors.As stops at the first PanicError, which is not enough
// when an error wraps two of them.
func propHasPanic(err error, v any) bool {
	if err == nil {
		return false
	}
	if pe, ok := err.(*stagefsm.PanicError); ok && pe.Value == v {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return propHasPanic(u.Unwrap(), v)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if propHasPanic(e, v) {
				return true
			}
		}
	}
	return false
}

// expectReturn says Run must return now with an error check accepts.
func (h *propHarness) expectReturn(desc string, check func(error) bool) {
	h.phase, h.check, h.checkDesc = phaseReturn, check, desc
}

// expectCancelled says Run must return now because ctx is done.
func (h *propHarness) expectCancelled() {
	h.expectReturn("cancelled", h.isCancel)
}

// isCancel reports whether err is the cancellation error Run owes: it
// wraps context.Canceled and the cause of the first cancellation (Abort
// cancels with no cause of its own).
func (h *propHarness) isCancel(err error) bool {
	return errors.Is(err, context.Canceled) && (h.abortFst || errors.Is(err, errPropCancel))
}

// failed moves to phaseRoute (or cancellation) after a failing call.
func (h *propHarness) failed(site, desc string, cause func(error) bool) {
	if h.cancelled {
		h.expectCancelled()
		return
	}
	h.phase, h.site, h.cause, h.causeDesc = phaseRoute, site, cause, desc
}

// resetFailures notes an iteration that routed no failure.
func (h *propHarness) resetFailures() { h.consecutive = 0 }

// The supervisor.

func (h *propHarness) Name() string      { return "prop" }
func (h *propHarness) State() propState  { return propState(h.state) }
func (h *propHarness) stateName() string { return propState(h.state).String() }
func (h *propHarness) timedState() (propTimeout, bool) {
	t := h.c.timeouts[h.state]
	return t, t.after > 0
}

func (h *propHarness) BuildStateMachine(initial propState) (stagefsm.Machine[propState, propEvent, *propHarness, *propAction], error) {
	h.enter("build")
	defer h.leave()
	if int(initial) != h.c.initial {
		h.violatef("BuildStateMachine(%v), want s%d", initial, h.c.initial)
	}
	if h.c.buildErr {
		e := &propError{call: h.calls}
		h.expectReturn("build error", func(err error) bool { return errors.Is(err, e) })
		return nil, e
	}
	h.commit(int(initial))
	return h, nil
}

// commit enters state s and arms its timeout, if it has one.
func (h *propHarness) commit(s int) {
	h.state, h.closedAsked = s, false
	to, ok := h.timedState()
	h.armed = ok
	if ok {
		h.deadline = time.Now().Add(to.after)
	}
}

// Timeout implements stagefsm.Timed.
func (h *propHarness) Timeout() (time.Time, propEvent, bool) {
	to, _ := h.timedState()
	return h.deadline, propEvent{n: to.event}, h.armed
}

func (h *propHarness) DispatchState(ctx context.Context, state propState, c *propHarness) (stagefsm.Directive[propEvent], error) {
	h.enter(fmt.Sprintf("dispatch %v", state))
	defer h.leave()
	now := time.Now()
	switch {
	case h.phase != phaseIterate:
		h.violatef("dispatch while Run should %v", h.phase)
	case h.cancelled:
		h.violatef("dispatch after the context was cancelled")
	case int(state) != h.state:
		h.violatef("dispatch with state %v, machine is in s%d", state, h.state)
	case c != h:
		h.violatef("dispatch with a foreign stage context")
	case h.armed && !now.Before(h.deadline):
		h.violatef("dispatch at %v past the armed deadline %v instead of firing the timeout", now, h.deadline)
	case h.idling && !now.Equal(h.idleUntil) && !h.wokenByClosure(now):
		h.violatef("dispatch at %v, the idle wait ended at %v", now, h.idleUntil)
	}
	h.checkControlBeforeDispatch()
	h.idling = false
	if h.armed {
		if dl, ok := ctx.Deadline(); !ok || !dl.Equal(h.deadline) {
			h.violatef("dispatch context deadline %v (%v), want the state's %v", dl, ok, h.deadline)
		}
	} else {
		h.checkCtx(ctx, "dispatch")
	}

	step := propStep{directive: propTerminate}
	if h.dispatches < len(h.c.script) {
		step = h.c.script[h.dispatches]
	}
	h.dispatches++
	r := h.perform(ctx, step.propCall)
	h.cancelled = h.cancelled || h.done()
	h.siteState = h.stateName()
	timedOut := h.armed && !time.Now().Before(h.deadline)
	switch {
	case !h.cancelled && timedOut && (step.out == propErr || step.out == propBlock):
		// An error returned once the state's deadline has passed is taken
		// as dispatch giving up because of it: the iteration routes
		// nothing, and the timeout fires next. A panic, or a zero
		// directive, is a bug whatever the time: it is routed.
		h.resetFailures()
		h.phase = phaseIterate
		return stagefsm.Directive[propEvent]{}, r.err
	case step.out != propOK:
		h.failed("dispatch", r.desc, r.cause)
		if r.panic != nil {
			panic(r.panic)
		}
		return stagefsm.Directive[propEvent]{}, r.err
	}
	switch step.directive {
	case propContinue:
		h.resetFailures()
		h.idleWait = 0
		h.phase = phaseIterate
		return stagefsm.Continue[propEvent](), nil
	case propIdle:
		h.resetFailures()
		switch {
		case h.idleWait == 0:
			h.idleWait = h.c.idleInitial
		default:
			h.idleWait = min(2*h.idleWait, h.c.idleMax)
		}
		h.idling, h.idleUntil = true, time.Now().Add(h.idleWait)
		h.phase = phaseIterate
		return stagefsm.Idle[propEvent](), nil
	case propTransition:
		h.idleWait = 0
		h.phase, h.event = phaseEvent, propEvent{n: step.event}
		return stagefsm.Transition(propEvent{n: step.event}), nil
	case propTerminate:
		h.phase = phaseComplete
		return stagefsm.Terminate[propEvent](), nil
	default:
		h.failed("dispatch", "zero directive", func(err error) bool { return errors.Is(err, stagefsm.ErrZeroDirective) })
		return stagefsm.Directive[propEvent]{}, nil
	}
}

// ControlMode implements stagefsm.Controlled: the case's mode of state.
func (h *propHarness) ControlMode(state propState) stagefsm.ControlMode {
	if !h.c.start {
		h.violatef("ControlMode called under Run")
		return stagefsm.ControlPoll
	}
	if int(state) != h.state {
		h.violatef("ControlMode(%v), machine is in s%d", state, h.state)
	}
	return h.c.modes[state]
}

// ControlClosed implements stagefsm.Controlled: the case's closure event of
// state, if any.
func (h *propHarness) ControlClosed(state propState) (propEvent, bool) {
	h.enter(fmt.Sprintf("ControlClosed(%v)", state))
	defer h.leave()
	if !h.c.start {
		h.violatef("ControlClosed called under Run")
		return propEvent{}, false
	}
	h.qmu.Lock()
	queued, closed, closeAt := len(h.queue), h.qclosed, h.closeAt
	h.qmu.Unlock()
	switch {
	case h.phase != phaseIterate:
		h.violatef("ControlClosed asked while Run should %v", h.phase)
	case !time.Now().Equal(propLater(closeAt, h.lastReturn)):
		// At once: when the queue was closed (the loop wakes), or when the
		// call in progress then returned.
		h.violatef("ControlClosed asked at %v, the queue was closed at %v, the last call returned at %v",
			time.Now(), closeAt, h.lastReturn)
	case h.cancelled:
		h.violatef("ControlClosed asked after the context was cancelled")
	case int(state) != h.state:
		h.violatef("ControlClosed(%v), machine is in s%d", state, h.state)
	case h.c.modes[h.state] == stagefsm.ControlIgnore:
		h.violatef("ControlClosed asked in s%d, which ignores control events", h.state)
	case queued > 0 || !closed:
		h.violatef("ControlClosed asked with %d events queued, closed %v", queued, closed)
	case h.closedAsked:
		h.violatef("ControlClosed asked twice in one state")
	case h.closedSent:
		h.violatef("ControlClosed asked after a closure event was delivered")
	}
	h.closedAsked = true
	cl := h.c.closures[h.state]
	ev := propEvent{n: cl.event, closure: true}
	if cl.ok {
		h.closedSent = true
		h.idling, h.idleWait = false, 0
		h.phase, h.event = phaseEvent, ev
	}
	return ev, cl.ok
}

// StopEvent implements stagefsm.Stoppable.
func (h *propHarness) StopEvent() propEvent { return propEvent{n: h.c.stopEvent, stop: true} }

// takeControl checks a control event the loop feeds: the state takes
// control events, it is the oldest queued, no timeout is due, and it comes
// at once: when the call in progress at its send returned, or at its send
// if Run was waiting.
func (h *propHarness) takeControl(ev propEvent) {
	h.qmu.Lock()
	defer h.qmu.Unlock()
	switch {
	case !h.c.start:
		h.violatef("control event %v fed under Run", ev)
		return
	case h.phase != phaseIterate:
		h.violatef("control event %v fed while Run should %v", ev, h.phase)
	case h.cancelled:
		h.violatef("control event %v fed after the context was cancelled", ev)
	case h.c.modes[h.state] == stagefsm.ControlIgnore:
		h.violatef("control event %v fed in s%d, which ignores control events", ev, h.state)
	case h.armed && !time.Now().Before(h.deadline):
		h.violatef("control event %v fed before the due timeout", ev)
	}
	if len(h.queue) == 0 || h.queue[0] != ev {
		h.violatef("control event %v fed, the queue holds %v", ev, h.queue)
		return
	}
	h.queue = h.queue[1:]
	if want := propLater(h.lastReturn, h.sentAt[ev]); !time.Now().Equal(want) {
		h.violatef("control event %v fed at %v, want %v (sent at %v, last call returned at %v)",
			ev, time.Now(), want, h.sentAt[ev], h.lastReturn)
	}
	h.idling, h.idleWait = false, 0
}

// checkControlBeforeDispatch checks that the loop had nothing to take from
// the control queue before it dispatched.
func (h *propHarness) checkControlBeforeDispatch() {
	if !h.c.start {
		return
	}
	h.qmu.Lock()
	defer h.qmu.Unlock()
	switch mode := h.c.modes[h.state]; {
	case mode == stagefsm.ControlBlock:
		h.violatef("dispatch in s%d, which blocks for control events", h.state)
	case mode == stagefsm.ControlPoll && len(h.queue) > 0:
		h.violatef("dispatch with control events queued: %v", h.queue)
	case mode == stagefsm.ControlPoll && h.qclosed && !h.closedAsked && !h.closedSent:
		h.violatef("dispatch with the control queue closed, ControlClosed not asked")
	}
}

// wokenByClosure reports whether an idle wait in a polling state was cut
// short at now by the closing of the control queue (during the wait, or
// before it began and after the last control event). The loop wakes to ask
// what the closure means; when it means nothing, it dispatches at once
// rather than wait out the backoff. That costs one early dispatch and is
// allowed: the contract makes the idle wait interruptible by the control
// plane.
func (h *propHarness) wokenByClosure(now time.Time) bool {
	h.qmu.Lock()
	defer h.qmu.Unlock()
	start := h.idleUntil.Add(-h.idleWait)
	return h.qclosed && h.closedAsked && now.Equal(propLater(h.closeAt, start)) && now.Before(h.idleUntil)
}

// stuckInBlock reports whether the current state blocks for control events
// that can never come: Run must return ErrControlClosed.
func (h *propHarness) stuckInBlock() bool {
	if !h.c.start || h.cancelled || h.armed || h.c.modes[h.state] != stagefsm.ControlBlock {
		return false
	}
	h.qmu.Lock()
	defer h.qmu.Unlock()
	return h.qclosed && len(h.queue) == 0 && (h.closedAsked || h.closedSent)
}

// Handle is the machine's.
func (h *propHarness) Handle(ctx context.Context, ev propEvent, c *propHarness) ([]*propAction, error) {
	h.enter(fmt.Sprintf("handle %v in s%d", ev, h.state))
	defer h.leave()
	h.handles++
	h.checkCtx(ctx, "Handle")
	if c != h {
		h.violatef("Handle with a foreign stage context")
	}
	var edge propEdge
	switch {
	case ev.fail > 0:
		if h.phase != phaseFailureEvent || ev != h.event {
			h.violatef("failure event %v fed, want phase %v event %v", ev, h.phase, h.event)
		}
		h.failuresFed++
		edge = h.c.failure[h.state]
	case h.phase == phaseEvent:
		if ev != h.event {
			h.violatef("event %v fed, dispatch asked for %v", ev, h.event)
		}
		edge = h.c.table[h.state][ev.n]
	case ev.control():
		h.takeControl(ev)
		edge = h.c.table[h.state][ev.n]
	case h.phase == phaseIterate && h.armed && !time.Now().Before(h.deadline):
		// The state timeout fires: on time, or as soon as the call in
		// progress at the deadline returned.
		to, _ := h.timedState()
		if ev.n != to.event {
			h.violatef("timeout fired event %v, the state's is e%d", ev, to.event)
		}
		if h.cancelled {
			h.violatef("timeout fired after the context was cancelled")
		}
		if want := propLater(h.lastReturn, h.deadline); !time.Now().Equal(want) {
			h.violatef("timeout fired at %v, want %v (due at %v, last call returned at %v)", time.Now(), want, h.deadline, h.lastReturn)
		}
		h.idling = false
		h.idleWait = 0
		edge = h.c.table[h.state][ev.n]
	default:
		h.violatef("event %v fed with nothing asking for it (timeout armed %v at %v)", ev, h.armed, h.deadline)
		edge = h.c.table[h.state][ev.n]
	}
	failure := ev.fail > 0
	cause, causeDesc := h.cause, h.causeDesc

	switch {
	case edge.panic:
		v := fmt.Sprintf("machine panic in call %d", h.calls)
		if h.cancelled {
			h.expectCancelled()
		} else {
			h.expectReturn("machine panic", func(err error) bool { return propHasPanic(err, v) })
		}
		panic(v)
	case edge.reject:
		e := fmt.Errorf("s%d has no edge for %v: %w", h.state, ev, stagefsm.ErrUnhandledEvent)
		switch {
		case h.cancelled:
			h.expectCancelled()
		case failure:
			h.expectReturn("failure event rejected ("+causeDesc+")", func(err error) bool {
				return errors.Is(err, e) && cause(err)
			})
		default:
			h.expectReturn("event rejected", func(err error) bool { return errors.Is(err, e) })
		}
		return nil, e
	}
	h.commits = append(h.commits, propCommit{from: h.state, to: edge.to, event: ev})
	if failure {
		h.commits[len(h.commits)-1].cause = cause
	}
	h.commit(edge.to)
	list := make([]*propAction, len(edge.actions))
	for i, a := range edge.actions {
		list[i] = &propAction{list: h.handles, idx: i, call: a}
	}
	h.phase, h.actions, h.next, h.failureRun = phaseActions, list, 0, failure
	h.endOfList()
	return list, nil
}

// endOfList moves on when the action list is done.
func (h *propHarness) endOfList() {
	if h.phase != phaseActions || h.next < len(h.actions) {
		return
	}
	if !h.failureRun {
		h.resetFailures()
	}
	h.phase = phaseIterate
}

func (h *propHarness) execute(ctx context.Context, a *propAction) error {
	h.enter(fmt.Sprintf("execute %v", a))
	defer h.leave()
	h.checkCtx(ctx, "Execute")
	switch {
	case h.phase != phaseActions:
		h.violatef("%v executed while Run should %v", a, h.phase)
		return nil
	case h.next >= len(h.actions) || h.actions[h.next] != a:
		h.violatef("%v executed, want action %d of list %d", a, h.next, h.handles)
		return nil
	}
	h.next++
	r := h.perform(ctx, a.call)
	h.cancelled = h.cancelled || h.done()
	switch {
	case a.call.out == propOK:
		h.endOfList()
		return nil
	case h.cancelled:
		h.expectCancelled()
	case h.failureRun:
		routing, routingDesc := h.cause, h.causeDesc
		h.expectReturn("failure action failed: "+r.desc+" (routing "+routingDesc+")", func(err error) bool {
			return r.cause(err) && routing(err)
		})
	default:
		h.failed("action", r.desc, r.cause)
		h.failedIdx = a.idx
	}
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

func (h *propHarness) EventForActionError(err error) propEvent {
	h.enter("EventForActionError")
	defer h.leave()
	h.efaeCalls++
	switch {
	case h.phase != phaseRoute:
		h.violatef("failure routed while Run should %v: %v", h.phase, err)
	case h.cancelled:
		h.violatef("failure routed after the context was cancelled: %v", err)
	case !h.cause(err):
		h.violatef("routed %v, want a failure matching %q", err, h.causeDesc)
	}
	h.consecutive++
	if max := h.c.maxFailures; max > 0 && h.consecutive > max {
		h.violatef("failure %d in a row routed, the limit is %d", h.consecutive, max)
	}
	if h.phase == phaseRoute {
		h.checkWhere(err)
	}
	if h.efaeCalls == h.c.efaePanicAt {
		v := fmt.Sprintf("EventForActionError panic in call %d", h.calls)
		h.expectReturn("EventForActionError panic", func(err error) bool { return propHasPanic(err, v) })
		panic(v)
	}
	h.routed++
	h.phase, h.event = phaseFailureEvent, propEvent{fail: h.routed}
	return h.event
}

// checkWhere checks that a routed failure says where it came from.
func (h *propHarness) checkWhere(err error) {
	switch h.site {
	case "dispatch":
		var de *stagefsm.DispatchError
		if !errors.As(err, &de) {
			h.violatef("dispatch failure routed as %T, want *DispatchError", err)
		} else if de.State != h.siteState {
			h.violatef("DispatchError.State = %q, want %q", de.State, h.siteState)
		}
	case "action":
		var ae *stagefsm.ActionError
		if !errors.As(err, &ae) {
			h.violatef("action failure routed as %T, want *ActionError", err)
			return
		}
		if ae.Index != h.failedIdx || ae.Action != any(h.actions[h.failedIdx]) {
			h.violatef("ActionError names action %d (%v), want %d", ae.Index, ae.Action, h.failedIdx)
		}
		rest := h.actions[h.failedIdx+1:]
		if len(ae.Skipped) != len(rest) {
			h.violatef("ActionError.Skipped has %d actions, want %d", len(ae.Skipped), len(rest))
			return
		}
		for i, s := range ae.Skipped {
			if s != any(rest[i]) {
				h.violatef("ActionError.Skipped[%d] = %v, want %v", i, s, rest[i])
			}
		}
	}
}

func (h *propHarness) WriteCompletionEvent(ctx context.Context) error {
	h.enter("complete")
	defer h.leave()
	h.completions++
	if h.phase != phaseComplete {
		h.violatef("completion written while Run should %v", h.phase)
	}
	h.checkCtx(ctx, "WriteCompletionEvent")
	r := h.perform(ctx, h.c.completion)
	h.cancelled = h.cancelled || h.done()
	switch {
	case h.c.completion.out == propOK:
		h.expectReturn("completed", func(err error) bool { return err == nil })
	case h.cancelled:
		h.expectCancelled()
	default:
		h.expectReturn("completion failed: "+r.desc, r.cause)
	}
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

// returned checks Run's result against the situation Run was in.
func (h *propHarness) returned(err error) {
	h.cancelled = h.cancelled || h.done()
	h.tracef("Run returned: %v", err)
	switch {
	case h.phase == phaseReturn:
		if !h.check(err) {
			h.violatef("Run returned %v, want %s", err, h.checkDesc)
		}
		if !time.Now().Equal(h.lastReturn) {
			h.violatef("Run returned at %v, its last call returned at %v", time.Now(), h.lastReturn)
		}
	case h.cancelled && (h.phase == phaseIterate || h.phase == phaseRoute):
		if !h.isCancel(err) {
			h.violatef("Run returned %v after cancellation, want context.Canceled and the cause", err)
		}
		// Promptly: when the call in progress at the cancellation returned,
		// or at once if Run was waiting.
		if want := propLater(time.Unix(0, h.canceled.Load()), h.lastReturn); !time.Now().Equal(want) {
			h.violatef("Run returned at %v after cancellation, want %v", time.Now(), want)
		}
	case h.phase == phaseIterate && h.stuckInBlock():
		if !errors.Is(err, stagefsm.ErrControlClosed) {
			h.violatef("Run returned %v in a Block state with the queue closed and no closure event, want ErrControlClosed", err)
		}
		if want := propLater(h.closeAt, h.lastReturn); !time.Now().Equal(want) {
			h.violatef("Run returned ErrControlClosed at %v, want %v", time.Now(), want)
		}
	case h.phase == phaseRoute:
		max := h.c.maxFailures
		switch {
		case max <= 0 || h.consecutive != max:
			h.violatef("Run returned %v with a failure not routed (%s) after %d in a row, limit %d",
				err, h.causeDesc, h.consecutive, max)
		case !errors.Is(err, stagefsm.ErrFailureLoop) || !h.cause(err):
			h.violatef("Run returned %v, want ErrFailureLoop wrapping %s", err, h.causeDesc)
		}
	default:
		h.violatef("Run returned %v while it should %v", err, h.phase)
	}
	if err != nil && errors.Is(err, context.Canceled) && !h.cancelled {
		h.violatef("Run returned a cancellation error though nothing cancelled: %v", err)
	}
	if h.completions > 1 {
		h.violatef("completion written %d times", h.completions)
	}
	if err == nil && h.completions != 1 {
		h.violatef("Run returned nil with %d completions", h.completions)
	}
}

// TestRunProperties runs random machines under random dispatch scripts and
// checks, call by call, that Run does exactly what its contract says: it
// dispatches only between iterations and with the machine's current state,
// feeds exactly the events asked for (by a Transition, by a due state
// timeout, on time, or by EventForActionError), runs actions in order and
// stops at the first failure, routes every failure exactly once and says
// where it came from, holds the failure-loop limit, honours the idle
// backoff, writes the completion at most once and only after Terminate,
// routes nothing and completes nothing once cancelled, and returns the
// error its doc lists for the situation. goleak (TestMain) checks that no
// goroutine is left.
func TestRunProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		c := drawPropCase(rt, false)
		rapid.SyncTest(rt, func(st *rapid.T) { runPropCase(st, c) })
	})
}

// TestStartProperties runs the cases of TestRunProperties under Start, with
// a random control policy per state (poll, block or ignore; what a closed
// queue means) and a control script played against the Stage at random
// moments: Send, TrySend, CloseControl, Stop, Abort. On top of Run's
// contract it checks that control events reach the machine in order, each
// once, only in states that take them and at once; that TrySend and Send
// return what the queue's state says; that Wait (and Stop) always return,
// with Run's result; that the published final state is the machine's; and
// that every change Changes delivers is the machine's commit of that
// number, the last one included.
func TestStartProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		c := drawPropCase(rt, true)
		rapid.SyncTest(rt, func(st *rapid.T) { runPropCase(st, c) })
	})
}

// play runs the control script against the stage, each operation at its
// time, until the script ends, Stop returns, or the stage finishes. It
// checks each operation's result against the queue as it should be, which
// it updates first: the loop may take an event the moment it is queued.
func (h *propHarness) play(st *stagefsm.Stage[propState, propEvent]) (stopErr error, stopped bool) {
	for i, op := range h.c.ops {
		select {
		case <-st.Done():
			return nil, false
		case <-time.After(time.Until(h.t0.Add(op.at + time.Duration(i+1)*propOpSkew))):
		}
		switch op.kind {
		case opTrySend, opSend:
			h.qmu.Lock()
			h.ctlSeq++
			ev := propEvent{n: op.event, ctl: h.ctlSeq}
			var want error
			switch {
			case h.qclosed:
				want = stagefsm.ErrControlClosed
			case len(h.queue) == h.c.capacity:
				want = stagefsm.ErrControlFull
			}
			h.queue = append(h.queue, ev)
			h.sentAt[ev] = time.Now()
			var err error
			if op.kind == opSend && want == nil {
				err = st.Send(context.Background(), ev)
			} else {
				// Send would wait for room, and get it at a moment that is
				// up to the scheduler.
				err = st.TrySend(ev)
			}
			if err != nil {
				h.queue = h.queue[:len(h.queue)-1]
			}
			h.qmu.Unlock()
			h.scriptf("%v %v: %v", op.kind, ev, err)
			if (want == nil && err != nil) || (want != nil && !errors.Is(err, want)) {
				h.scriptViolatef("%v %v returned %v, want %v", op.kind, ev, err, want)
			}
		case opClose:
			h.qmu.Lock()
			h.qclosed, h.closeAt = true, time.Now()
			st.CloseControl()
			h.qmu.Unlock()
			h.scriptf("CloseControl")
		case opAbort:
			if h.canceled.CompareAndSwap(0, time.Now().UnixNano()) {
				h.abortFst = true
			}
			h.aborted.Store(true)
			h.scriptf("Abort")
			st.Abort()
		case opStop:
			h.qmu.Lock()
			if !h.qclosed && len(h.queue) == h.c.capacity {
				h.qmu.Unlock()
				continue // Stop would wait for room: see Send
			}
			if !h.qclosed {
				ev := h.StopEvent()
				h.queue = append(h.queue, ev)
				h.sentAt[ev] = time.Now()
			}
			h.qmu.Unlock()
			h.scriptf("Stop")
			return st.Stop(context.Background()), true
		}
	}
	return nil, false
}

// checkStage checks what the Stage tells after it finished: its final
// state is the machine's, every change it delivered is the machine's
// commit with that number, the last one included, and it refuses events.
func (h *propHarness) checkStage(t *rapid.T, st *stagefsm.Stage[propState, propEvent], changes <-chan stagefsm.Change[propState, propEvent], err error) {
	assert.Equal(t, propState(h.state), st.State(), "published final state is the machine's")
	final, werr := st.WaitState(context.Background(), func(s propState) bool { return int(s) == h.state })
	assert.NoError(t, werr)
	assert.Equal(t, propState(h.state), final)
	assert.ErrorIs(t, st.TrySend(propEvent{}), stagefsm.ErrStageDone)
	assert.Equal(t, err, st.Wait(context.Background()), "Wait returns the same result each time")

	var last uint64
	for ch := range changes {
		if ch.Seq <= last || ch.Seq > uint64(len(h.commits)) {
			h.violatef("change #%d delivered after #%d, %d committed", ch.Seq, last, len(h.commits))
			continue
		}
		last = ch.Seq
		want := h.commits[ch.Seq-1]
		switch {
		case int(ch.From) != want.from || ch.Event != want.event || int(ch.To) != want.to:
			h.violatef("change #%d is %v -%v-> %v, the machine committed s%d -%v-> s%d",
				ch.Seq, ch.From, ch.Event, ch.To, want.from, want.event, want.to)
		case want.cause == nil && ch.Err != nil:
			h.violatef("change #%d for a normal event carries the error %v", ch.Seq, ch.Err)
		case want.cause != nil && !want.cause(ch.Err):
			h.violatef("change #%d carries %v, not the failure routed", ch.Seq, ch.Err)
		}
	}
	if last != 0 && last != uint64(len(h.commits)) {
		h.violatef("last change delivered #%d, the machine committed %d", last, len(h.commits))
	}
}

func runPropCase(t *rapid.T, c *propCase) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	h := newPropHarness(c, ctx, cancel)

	finished, watched := make(chan struct{}), make(chan struct{})
	var backstop, stuck atomic.Bool
	go func() {
		defer close(watched)
		var clock <-chan time.Time
		if c.cancelAt > 0 {
			clock = time.After(c.cancelAt)
		}
		horizon := time.After(propHorizon)
		var grace <-chan time.Time
		for {
			select {
			case <-finished:
				return
			case <-clock:
				h.cancel()
			case <-horizon:
				backstop.Store(true)
				h.cancel()
				grace = time.After(propGrace)
			case <-grace:
				// Run is still busy a second after its cancellation. If it
				// is blocked for good, synctest reports the deadlock.
				stuck.Store(true)
				return
			}
		}
	}()

	var (
		err     error
		st      *stagefsm.Stage[propState, propEvent]
		changes <-chan stagefsm.Change[propState, propEvent]
		stopErr error
		stopped bool
	)
	if c.start {
		st = stagefsm.Start(ctx, h, propState(c.initial), h, c.options()...)
		changes = st.Changes(context.Background(), 1024)
		stopErr, stopped = h.play(st)
		err = st.Wait(context.Background())
	} else {
		err = stagefsm.Run(ctx, h, propState(c.initial), h, c.options()...)
	}
	close(finished)
	<-watched
	h.returned(err)
	if st != nil {
		h.checkStage(t, st, changes, err)
		if stopped {
			assert.Equal(t, err, stopErr, "Stop returns Run's result")
		}
	}

	assert.False(t, stuck.Load(), "Run did not return within %v of its cancellation", propGrace)
	if backstop.Load() {
		t.Logf("cancelled at the horizon (the script blocks)")
	}
	assert.Equal(t, h.routed, h.failuresFed, "every routed failure reaches the machine exactly once")
	assert.LessOrEqual(t, h.completions, 1, "completion at most once")
	if !assert.Empty(t, h.violations) {
		t.Logf("trace:\n%s", strings.Join(h.trace, "\n"))
	}
}

func propLater(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Regression tests for the bugs the properties found, each minimised to a
// plain case.

// propTimedSup is a stage whose state "waiting" times out propTimedAfter after
// every event the machine handles in it, with the event "timeout". The
// edges out of "waiting" are set per test; every other state terminates.
// Dispatch in "waiting" runs the next function of script (Terminate once
// they are used up).
type propTimedSup struct {
	script       []func(ctx context.Context) (stagefsm.Directive[string], error)
	afterTimeout string // the state "timeout" enters
	timeoutFails error  // the error of the action "timeout" returns, if any
	afterFailure string // the state a failure enters

	state      string
	deadline   time.Time
	dispatches int
	routed     []error
}

const propTimedAfter = time.Millisecond

// propTimedAction is the action type of propTimedSup.
type propTimedAction struct{ err error }

func (a propTimedAction) Execute(context.Context, *propTimedSup) error { return a.err }

func (s *propTimedSup) Name() string  { return "timed" }
func (s *propTimedSup) State() string { return s.state }

func (s *propTimedSup) BuildStateMachine(initial string) (stagefsm.Machine[string, string, *propTimedSup, propTimedAction], error) {
	s.enter(initial)
	return s, nil
}

func (s *propTimedSup) enter(state string) {
	s.state, s.deadline = state, time.Now().Add(propTimedAfter)
}

func (s *propTimedSup) Timeout() (time.Time, string, bool) {
	return s.deadline, "timeout", s.state == "waiting"
}

func (s *propTimedSup) Handle(_ context.Context, event string, _ *propTimedSup) ([]propTimedAction, error) {
	switch event {
	case "timeout":
		s.enter(s.afterTimeout)
		if s.timeoutFails != nil {
			return []propTimedAction{{err: s.timeoutFails}}, nil
		}
	case "failure":
		s.enter(s.afterFailure)
	default:
		return nil, fmt.Errorf("event %q: %w", event, stagefsm.ErrUnhandledEvent)
	}
	return nil, nil
}

func (s *propTimedSup) DispatchState(ctx context.Context, state string, _ *propTimedSup) (stagefsm.Directive[string], error) {
	if state != "waiting" || s.dispatches == len(s.script) {
		return stagefsm.Terminate[string](), nil
	}
	s.dispatches++
	return s.script[s.dispatches-1](ctx)
}

func (s *propTimedSup) EventForActionError(err error) string {
	s.routed = append(s.routed, err)
	return "failure"
}

func (s *propTimedSup) WriteCompletionEvent(context.Context) error { return nil }

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
				s := &propTimedSup{
					script: []func(context.Context) (stagefsm.Directive[string], error){
						func(context.Context) (stagefsm.Directive[string], error) {
							time.Sleep(2 * propTimedAfter) // busy past the deadline, not watching ctx
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
		s := &propTimedSup{
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
		assert.Equal(t, 2*propTimedAfter, time.Since(start))
	})
}

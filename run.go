package stagefsm

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Run drives the stage h from the state initial until it terminates, the
// context is done, or a failure cannot be routed. It is synchronous: it
// returns only when the loop is over, and it starts no goroutine that
// outlives it. It never stores ctx.
//
// Run first builds the machine with h.BuildStateMachine(initial). Then, in
// each iteration, it checks ctx, fires a due state timeout (see [Timed]),
// calls h.DispatchState with the current state and c, and obeys the returned
// [Directive]: [Continue] dispatches again at once; [Idle] waits per
// [WithIdleBackoff]; [Transition] feeds the event to the machine and
// executes the returned actions in order; [Terminate] writes the completion
// event. An error or panic from dispatch or from an action is turned into an
// event by h.EventForActionError and fed back through the machine, whose
// failure actions then run; the loop goes on from the state the machine
// chose.
//
// Run returns:
//   - nil, after [Terminate], when the completion event was written;
//   - an error wrapping the completion writer's error;
//   - an error wrapping the machine's error when it rejects a normal event
//     (a dispatch's [Transition], a state timeout's event or, under
//     [Start], a control event): a bug in the FSM definition, so no failure
//     is routed and no completion is written;
//   - an error wrapping both the original failure and the machine's error
//     when the machine rejects a failure event;
//   - an error wrapping a failure action's error (a double fault, not routed
//     again);
//   - an error wrapping [ErrFailureLoop] when too many consecutive iterations
//     routed a failure (see [WithMaxConsecutiveFailures]);
//   - an error for which errors.Is(err, ctx.Err()) holds, and which also
//     wraps context.Cause(ctx), when ctx is done: at the top of an iteration,
//     during an idle wait or a wait for a control event, or when user code
//     returns an error while ctx is done; no failure is routed and no
//     completion is written;
//   - an error wrapping a [*PanicError] for a panic that cannot be routed (in
//     Handle, State, a [Timed] machine's Timeout, a failure action, Name,
//     BuildStateMachine, EventForActionError or WriteCompletionEvent);
//   - an error wrapping the error of BuildStateMachine, or an error when h is
//     nil or builds a nil machine;
//   - an error, before anything runs, when given [WithRestart], which
//     applies to Start only.
//
// With an [Observer] or under [Start], Run also returns:
//   - an error wrapping a [*PanicError] for a panic in an Observer callback
//     or in a [Controlled] method;
//   - an error, before anything runs, when [WithObserver] was given other
//     state and event types than h's;
//   - under Start, an error wrapping [ErrControlClosed] when a state that
//     blocks for control events can never get one (see [ControlBlock]);
//   - under Start, an error when [Controlled]'s ControlMode returns a value
//     that is not a [ControlMode] constant.
//
// Run calls every method of h, of the machine and of the actions from the
// calling goroutine, one at a time. Calls to Run with different supervisors
// may execute concurrently.
func Run[S, E, C any, A Action[C]](ctx context.Context, h HandlerSupervised[S, E, C, A], initial S, c C, opts ...Option) error {
	o := newOptions(opts)
	return run(ctx, h, initial, c, &o, nil)
}

// run is Run; st is the handle when the stage was started with Start (it
// adds the control plane and state publication), nil otherwise.
func run[S, E, C any, A Action[C]](ctx context.Context, h HandlerSupervised[S, E, C, A], initial S, c C, o *options, st *Stage[S, E]) (err error) {
	l := &loop[S, E, C, A]{h: h, c: c, opts: o, log: o.logger, state: initial}
	if err := l.attach(st); err != nil {
		return err
	}
	if l.obs != nil {
		defer func() { err = l.onExit(err) }()
	}
	if h == nil {
		return errors.New("stagefsm: Run called with a nil supervisor")
	}
	if err := l.start(initial); err != nil {
		return err
	}
	defer l.stop()
	for {
		done, err := l.iterate(ctx)
		if done || err != nil {
			return err
		}
	}
}

// loop is the state of one Run.
type loop[S, E, C any, A Action[C]] struct {
	h     HandlerSupervised[S, E, C, A]
	m     Machine[S, E, C, A]
	timed Timed[E] // m's timeouts, or nil
	c     C
	opts  *options
	name  string
	log   *zap.Logger
	debug bool

	state S // cached: refreshed after every Handle
	// stateOnly is set when refresh would do nothing but read State (no
	// Timed machine): iterate then reads State itself, saving a call on the
	// hot path. Whatever refresh learns to do must clear it.
	stateOnly bool
	failures  int
	idleWait  time.Duration // next idle wait; 0 until the first Idle
	timer     *time.Timer   // reused by every wait

	// The armed state timeout, and the context dispatch receives while it
	// is armed (nil otherwise); both are cached until the deadline changes.
	deadline     time.Time
	timeoutEvent E
	armed        bool
	// preempt is armed || ctl.queue != nil: whether something other than
	// dispatch may supply an iteration's event (see beforeDispatch). It is
	// one flag so that the hot path tests one field; whatever sets armed
	// or ctl.queue must update it.
	preempt       bool
	timeoutCtx    context.Context
	timeoutCancel context.CancelFunc

	// What the recovery boundary of iterate needs to know about the call
	// into user code in progress (see recoverPanic).
	site    site
	actions []A   // the actions being executed
	index   int   // the index in actions of the one being executed
	routing error // the failure being routed, while route runs
	pending error // a routable panic, routed when iterate is called again

	ctl controlPlane[S, E] // control events, when started with Start
	obs *Observer[S, E]    // nil when there is nothing to notify
}

func (l *loop[S, E, C, A]) start(initial S) error {
	name, log, err := describe(l.h, l.log, l.opts.recoverPanics)
	if err != nil {
		return fmt.Errorf(errDescribe, err)
	}
	l.name, l.log = name, log
	l.debug = l.log.Core().Enabled(zapcore.DebugLevel)

	m, err := l.build(initial)
	if err != nil {
		return fmt.Errorf("stagefsm: %s: build state machine: %w", l.name, err)
	}
	if m == nil {
		return fmt.Errorf("stagefsm: %s: BuildStateMachine returned a nil machine and no error", l.name)
	}
	l.m = m
	l.timed, _ = m.(Timed[E])
	l.stateOnly = l.timed == nil && l.ctl.policy == nil
	if err := l.refreshAtStart(); err != nil {
		return err
	}
	if ce := l.log.Check(zapcore.InfoLevel, "stage started"); ce != nil {
		ce.Write(zap.Stringer("state", stateName[S]{l.state}))
	}
	return nil
}

// errDescribe is the format of the error for a panic in Name.
const errDescribe = "stagefsm: supervisor Name: %w"

func (l *loop[S, E, C, A]) stop() {
	if l.timeoutCancel != nil {
		l.timeoutCancel()
	}
	if l.timer != nil {
		l.timer.Stop()
	}
}

// iterate runs iterations of the loop. It loops by itself through
// Continue iterations and through transitions whose actions all succeed —
// the hot path — and returns after any other iteration. done reports that
// the loop is over; err is then Run's result (nil after a successful
// Terminate).
//
// An iteration checks ctx, then picks the event to feed the machine: the
// state timeout's if it is due, else a control event the state takes
// (under Start; see control, which may also wait or end the loop), else
// the one of the Transition that dispatch returned (the other directives
// are obeyed on the spot). Feeding
// it commits the next state (see refresh) and executes the actions in
// order; the first that fails is routed from the state just entered.
//
// iterate is also the recovery boundary of the calls into user code it
// makes, directly or through route and refresh: one deferred recover per
// call of iterate rather than one per user call keeps the hot path free of
// defers. Each such call records its site first, which tells recoverPanic
// what a panic means. A routable panic (in dispatch or a normal action) ends
// the call with the failure pending, and the next call routes it first.
func (l *loop[S, E, C, A]) iterate(ctx context.Context) (done bool, err error) {
	if l.opts.recoverPanics {
		defer l.recoverPanic(ctx, &done, &err)
	}
	if cause := l.pending; cause != nil {
		l.pending = nil
		return l.route(ctx, cause)
	}
	for {
		if ctx.Err() != nil {
			return true, l.canceled(ctx, nil)
		}

		var event E
		source, dctx := sourceDispatch, ctx
		if l.preempt {
			var done bool
			var err error
			if event, source, dctx, done, err = l.beforeDispatch(ctx); source == sourceNone {
				return done, err
			}
		}
		if source == sourceDispatch {
			l.site = siteDispatch
			d, err := l.h.DispatchState(dctx, l.state, l.c)
			if err != nil || d.kind == kindInvalid {
				l.site = siteNone
				zero := err == nil
				if zero {
					err = ErrZeroDirective
				}
				cause, done, err := l.dispatchFailed(ctx, dctx, err, zero)
				if cause == nil {
					return done, err
				}
				return l.route(ctx, cause)
			}
			if l.debug {
				l.logDispatch(d)
			}
			switch d.kind {
			case kindContinue:
				l.site, l.failures, l.idleWait = siteNone, 0, 0
				continue
			case kindIdle:
				l.site, l.failures = siteNone, 0
				return false, l.idle(ctx)
			case kindTerminate:
				l.site = siteNone
				return true, l.complete(ctx)
			}
			event = d.event
		}

		// Transition.
		l.idleWait = 0
		from := l.state
		m := l.m
		l.site = siteHandle
		actions, err := m.Handle(ctx, event, l.c)
		if err == nil {
			if l.stateOnly { // refresh inlined
				l.site = siteState
				l.state = m.State()
			} else {
				err = l.refresh()
			}
		}
		if err != nil {
			l.site = siteNone
			return true, l.rejected(ctx, from, source, event, err)
		}
		if l.debug {
			l.logTransition(from, event, len(actions))
		}
		if l.obs != nil {
			l.site = siteNone
			if err := l.onTransition(from, event, len(actions)); err != nil {
				return true, err
			}
		}
		l.actions = actions // for recoverPanic; a stale slice is harmless
		l.site = siteAction
		for i, a := range actions {
			l.index = i
			if err := a.Execute(ctx, l.c); err != nil {
				l.site = siteNone
				cause, done, err := l.actionFailed(ctx, i, err)
				if cause == nil {
					return done, err
				}
				return l.route(ctx, cause)
			}
		}
		l.site, l.failures = siteNone, 0
	}
}

// beforeDispatch picks the event of an iteration that needs no dispatch:
// a due state timeout's (sourceTimeout), else a control event the state
// takes under Start (sourceControl, sourceClosure; see control). It returns
// sourceNone when control waited or ended the loop (done, err), and
// sourceDispatch, with the context dispatch receives, when the iteration
// dispatches.
func (l *loop[S, E, C, A]) beforeDispatch(ctx context.Context) (event E, source eventSource, dctx context.Context, done bool, err error) {
	dctx = ctx
	if l.armed {
		var due bool
		if due, dctx = l.timeoutDue(ctx); due {
			return l.timeoutEvent, sourceTimeout, ctx, false, nil
		}
	}
	if l.ctl.queue != nil && l.ctl.mode != ControlIgnore {
		if event, source, done, err = l.control(ctx); source != sourceDispatch {
			return event, source, dctx, done, err
		}
	}
	return event, sourceDispatch, dctx, false, nil
}

func (l *loop[S, E, C, A]) logDispatch(d Directive[E]) {
	l.site = siteNone
	if ce := l.log.Check(zapcore.DebugLevel, "dispatched"); ce != nil {
		ce.Write(zap.Stringer("state", stateName[S]{l.state}), zap.Stringer("directive", d))
	}
}

// dispatchFailed sorts out an error of dispatch, which received dctx (zero
// says dispatch returned the zero Directive): cancellation ends Run; an
// error returned while only the state timeout's deadline has passed is
// dropped (the next iteration fires the timeout); any other is the cause to
// route.
func (l *loop[S, E, C, A]) dispatchFailed(ctx, dctx context.Context, err error, zero bool) (cause error, done bool, runErr error) {
	if ctx.Err() != nil {
		return nil, true, l.canceled(ctx, err)
	}
	var pe *PanicError
	if dctx != ctx && dctx.Err() != nil && !zero && !errors.As(err, &pe) {
		// Dispatch gave up because the state timed out: not a failure, so
		// the iteration ends a run of failures. A panic or a zero directive
		// is a bug whenever it happens: it is routed.
		l.failures = 0
		return nil, false, nil
	}
	return &DispatchError{State: stateName[S]{l.state}.String(), Err: err}, false, nil
}

// rejected is Run's error when the machine rejects the normal event (or
// refresh fails after it).
func (l *loop[S, E, C, A]) rejected(ctx context.Context, from S, source eventSource, event E, err error) error {
	if ctx.Err() != nil {
		return l.canceled(ctx, err)
	}
	return fmt.Errorf("stagefsm: %s: machine rejected %s event %v in state %s: %w",
		l.name, source, event, stateName[S]{from}, err)
}

// eventSource is where the event an iteration feeds the machine came from.
type eventSource uint8

const (
	sourceNone     eventSource = iota // no event: the iteration is over
	sourceDispatch                    // a Transition directive
	sourceTimeout                     // the state timeout
	sourceControl                     // a control event (under Start)
	sourceClosure                     // the closed control queue's event
)

var eventSourceNames = [...]string{"no", "transition", "state timeout", "control", "control closure"}

// String names the source in error messages, or "eventSource(n)" for an
// unknown value.
func (s eventSource) String() string {
	if int(s) < len(eventSourceNames) {
		return eventSourceNames[s]
	}
	return fmt.Sprintf("eventSource(%d)", uint8(s))
}

func (l *loop[S, E, C, A]) logTransition(from S, event E, actions int) {
	l.site = siteNone
	if ce := l.log.Check(zapcore.DebugLevel, "transitioned"); ce != nil {
		ce.Write(zap.Stringer("from", stateName[S]{from}), zap.Stringer("state", stateName[S]{l.state}),
			zap.Stringer("event", stateName[E]{event}), zap.Int("actions", actions))
	}
}

// actionFailed sorts out an error of the normal action at index i of
// l.actions: cancellation ends Run; any other is the cause to route, which
// reports the actions skipped after it.
func (l *loop[S, E, C, A]) actionFailed(ctx context.Context, i int, err error) (cause error, done bool, runErr error) {
	actions := l.actions
	l.actions = nil
	if ctx.Err() != nil {
		return nil, true, l.canceled(ctx, err)
	}
	skipped := make([]any, 0, len(actions)-i-1)
	for _, s := range actions[i+1:] {
		skipped = append(skipped, s)
	}
	return &ActionError{Index: i, Action: actions[i], Skipped: skipped, Err: err}, false, nil
}

// route feeds the failure cause back through the machine as the event the
// supervisor chooses, and executes the failure actions.
func (l *loop[S, E, C, A]) route(ctx context.Context, cause error) (bool, error) {
	l.failures++
	if max := l.opts.maxFailures; max > 0 && l.failures > max {
		return true, fmt.Errorf("stagefsm: %s: %w (%d in a row, last in state %s): %w",
			l.name, ErrFailureLoop, l.failures, stateName[S]{l.state}, cause)
	}
	from := l.state
	l.routing = cause
	event, err := l.failureEvent(cause)
	if err != nil {
		return true, fmt.Errorf("stagefsm: %s: EventForActionError in state %s: %w (routing: %w)",
			l.name, stateName[S]{from}, err, cause)
	}
	actions, err := l.handle(ctx, event)
	if err != nil {
		if ctx.Err() != nil {
			return true, l.canceled(ctx, err)
		}
		return true, fmt.Errorf("stagefsm: %s: no failure transition in state %s for event %v: %w (routing: %w)",
			l.name, stateName[S]{from}, event, err, cause)
	}
	// Logged once the machine took it: a failure it rejects is returned
	// instead, and an error is logged or returned, not both.
	if ce := l.log.Check(zapcore.WarnLevel, "routing failure through the FSM"); ce != nil {
		ce.Write(zap.Stringer("state", stateName[S]{from}), zap.Stringer("event", stateName[E]{event}), zap.Error(cause))
	}
	if l.obs != nil {
		if err := l.onFailure(from, event, cause); err != nil {
			return true, err
		}
	}
	l.actions = actions
	for i, a := range actions {
		l.index = i
		if err := l.execute(ctx, a); err != nil {
			return true, l.doubleFault(ctx, i, err)
		}
	}
	l.routing, l.actions = nil, nil
	return false, nil
}

// doubleFault is Run's error when the failure action at index i of
// l.actions fails while l.routing is routed.
func (l *loop[S, E, C, A]) doubleFault(ctx context.Context, i int, err error) error {
	if ctx.Err() != nil {
		return l.canceled(ctx, err)
	}
	return fmt.Errorf("stagefsm: %s: failure action %d (%v) failed in state %s: %w (routing: %w)",
		l.name, i, l.actions[i], stateName[S]{l.state}, err, l.routing)
}

// complete writes the completion event after a Terminate directive.
func (l *loop[S, E, C, A]) complete(ctx context.Context) error {
	err := l.writeCompletion(ctx)
	if l.obs != nil {
		if oerr := l.onComplete(err); oerr != nil {
			return oerr
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return l.canceled(ctx, err)
		}
		return fmt.Errorf("stagefsm: %s: write completion event in state %s: %w", l.name, stateName[S]{l.state}, err)
	}
	if ce := l.log.Check(zapcore.InfoLevel, "stage terminated"); ce != nil {
		ce.Write(zap.Stringer("state", stateName[S]{l.state}))
	}
	return nil
}

// idle waits per the idle backoff, cut short by ctx, a due state timeout or
// a control event the current state polls for.
func (l *loop[S, E, C, A]) idle(ctx context.Context) error {
	switch {
	case l.idleWait == 0:
		l.idleWait = l.opts.idleInitial
	case l.idleWait < l.opts.idleMax:
		if l.idleWait > l.opts.idleMax/2 { // doubling would pass max, or overflow
			l.idleWait = l.opts.idleMax
		} else {
			l.idleWait *= 2
		}
	}
	wait := l.idleWait
	if l.armed {
		wait = min(wait, time.Until(l.deadline))
	}
	if wait <= 0 {
		return nil
	}
	select {
	case <-l.startTimer(wait):
		return nil
	case <-l.controlWake():
		l.timer.Stop()
		return nil
	case <-ctx.Done():
		l.timer.Stop()
		return l.canceled(ctx, nil)
	}
}

// startTimer starts the loop's one timer (made on first use, reused by
// every wait of the idle backoff and of a blocking control state) to fire
// after wait, and returns its channel.
func (l *loop[S, E, C, A]) startTimer(wait time.Duration) <-chan time.Time {
	if l.timer == nil {
		l.timer = time.NewTimer(wait)
	} else {
		l.timer.Reset(wait)
	}
	return l.timer.C
}

// timeoutDue reports whether the armed state timeout is due, and else
// returns the context dispatch receives meanwhile.
func (l *loop[S, E, C, A]) timeoutDue(ctx context.Context) (bool, context.Context) {
	if !time.Now().Before(l.deadline) {
		return true, ctx
	}
	return false, l.dispatchContext(ctx)
}

// dispatchContext returns the context dispatch receives while a state
// timeout is armed: done at the deadline. It is made once per deadline.
func (l *loop[S, E, C, A]) dispatchContext(ctx context.Context) context.Context {
	if l.timeoutCtx == nil {
		l.timeoutCtx, l.timeoutCancel = context.WithDeadline(ctx, l.deadline)
	}
	return l.timeoutCtx
}

// refresh reads the machine's state, its timeout if it has any, and the
// state's control mode under Start, after a Handle call.
func (l *loop[S, E, C, A]) refresh() error {
	l.site = siteState
	l.state = l.m.State()
	l.site = siteNone
	if l.ctl.policy != nil {
		if err := l.refreshControl(); err != nil {
			return err
		}
	}
	if l.timed == nil {
		return nil
	}
	return l.refreshTimeout()
}

// refreshTimeout reads the timeout of the machine's new state.
func (l *loop[S, E, C, A]) refreshTimeout() error {
	l.site = siteTimeout
	deadline, event, ok := l.timed.Timeout()
	l.site = siteNone
	if ok == l.armed && (!ok || deadline.Equal(l.deadline)) {
		l.timeoutEvent = event
		return nil
	}
	if l.timeoutCancel != nil {
		l.timeoutCancel()
		l.timeoutCtx, l.timeoutCancel = nil, nil
	}
	l.deadline, l.timeoutEvent, l.armed = deadline, event, ok
	l.preempt = ok || l.ctl.queue != nil
	return nil
}

// canceled is the error Run returns when ctx is done; userErr is the error
// user code returned because of it, if any.
func (l *loop[S, E, C, A]) canceled(ctx context.Context, userErr error) error {
	ctxErr, cause := ctx.Err(), context.Cause(ctx)
	msg := fmt.Sprintf("stagefsm: %s: stopped in state %s", l.name, stateName[S]{l.state})
	switch {
	case userErr != nil && !errors.Is(userErr, ctxErr) && cause != ctxErr:
		return fmt.Errorf("%s: %w (cause: %w; returned: %w)", msg, ctxErr, cause, userErr)
	case userErr != nil && !errors.Is(userErr, ctxErr):
		return fmt.Errorf("%s: %w (returned: %w)", msg, ctxErr, userErr)
	case cause != ctxErr:
		return fmt.Errorf("%s: %w (cause: %w)", msg, ctxErr, cause)
	default:
		return fmt.Errorf("%s: %w", msg, ctxErr)
	}
}

// The calls into user code. Those made once per Run or only on the failure
// path are each a recovery boundary (unless panics are not to be recovered):
// a panic becomes a *PanicError returned as the call's error, and the caller
// decides whether it is routed or ends Run. The calls of the hot path —
// dispatch, Handle, State, an action's Execute — only record their site; the
// boundary is iterate's (see recoverPanic), or start's for the first State.

// describe returns h's name, and log with h's name added to every line
// (log itself when it is disabled). A panic in Name becomes a *PanicError
// returned as err, with log unchanged, when recoverPanics is set. Run and
// the restarter of Start share it so that both identify a stage alike.
func describe[S, E, C any, A Action[C]](h HandlerSupervised[S, E, C, A], log *zap.Logger, recoverPanics bool) (name string, named *zap.Logger, err error) {
	named = log
	if recoverPanics {
		defer recoverTo(&err)
	}
	name = h.Name()
	if log.Core().Enabled(zapcore.ErrorLevel) {
		named = log.With(zap.String("supervisor", name))
	}
	return name, named, nil
}

func (l *loop[S, E, C, A]) build(initial S) (m Machine[S, E, C, A], err error) {
	if l.opts.recoverPanics {
		defer recoverTo(&err)
	}
	return l.h.BuildStateMachine(initial)
}

// handle feeds event to the machine and refreshes the cached state.
func (l *loop[S, E, C, A]) handle(ctx context.Context, event E) ([]A, error) {
	actions, err := l.callHandle(ctx, event)
	if err != nil {
		return nil, err
	}
	return actions, l.refresh()
}

func (l *loop[S, E, C, A]) callHandle(ctx context.Context, event E) ([]A, error) {
	l.site = siteHandle
	actions, err := l.m.Handle(ctx, event, l.c)
	l.site = siteNone
	return actions, err
}

func (l *loop[S, E, C, A]) execute(ctx context.Context, a A) error {
	l.site = siteAction
	err := a.Execute(ctx, l.c)
	l.site = siteNone
	return err
}

func (l *loop[S, E, C, A]) failureEvent(cause error) (e E, err error) {
	if l.opts.recoverPanics {
		defer recoverTo(&err)
	}
	return l.h.EventForActionError(cause), nil
}

func (l *loop[S, E, C, A]) writeCompletion(ctx context.Context) (err error) {
	if l.opts.recoverPanics {
		defer recoverTo(&err)
	}
	return l.h.WriteCompletionEvent(ctx)
}

// site is the call into user code in progress on the hot path, which tells
// the recovery boundary what a panic means.
type site uint8

const (
	siteNone     site = iota // not in a hot-path call into user code
	siteDispatch             // DispatchState
	siteHandle               // Handle: of a failure event while l.routing != nil
	siteState                // State
	siteTimeout              // Timeout of a Timed machine
	siteAction               // Execute of l.actions[l.index]: a failure action while l.routing != nil
)

// recoverPanic, deferred by iterate, turns a panic in a hot-path call into
// user code into what the call returning a *PanicError as its error would
// have led to: the failure path for dispatch and a normal action (the cause
// is left pending for the next iterate), else the end of Run. A panic outside
// those calls is not user code's: it propagates.
func (l *loop[S, E, C, A]) recoverPanic(ctx context.Context, done *bool, err *error) {
	v := recover()
	if v == nil {
		return
	}
	at := l.site
	l.site = siteNone
	if at == siteNone {
		panic(v)
	}
	pe := &PanicError{Value: v, Stack: debug.Stack()}
	switch {
	case at == siteDispatch:
		dctx := ctx
		if l.armed && l.timeoutCtx != nil {
			dctx = l.timeoutCtx
		}
		l.pending, *done, *err = l.dispatchFailed(ctx, dctx, pe, false)
	case at == siteAction && l.routing == nil:
		l.pending, *done, *err = l.actionFailed(ctx, l.index, pe)
	case at == siteAction:
		*done, *err = true, l.doubleFault(ctx, l.index, pe)
	case at == siteState:
		*done, *err = true, fmt.Errorf("stagefsm: %s: machine State: %w", l.name, pe)
	case at == siteTimeout:
		*done, *err = true, fmt.Errorf("stagefsm: %s: machine Timeout in state %s: %w", l.name, stateName[S]{l.state}, pe)
	case ctx.Err() != nil: // Handle
		*done, *err = true, l.canceled(ctx, pe)
	case l.routing != nil:
		*done, *err = true, fmt.Errorf("stagefsm: %s: machine Handle of the failure event in state %s: %w (routing: %w)",
			l.name, stateName[S]{l.state}, pe, l.routing)
	default:
		*done, *err = true, fmt.Errorf("stagefsm: %s: machine Handle in state %s: %w", l.name, stateName[S]{l.state}, pe)
	}
}

// refreshAtStart is refresh for start, which runs before iterate's recovery
// boundary exists.
func (l *loop[S, E, C, A]) refreshAtStart() (err error) {
	if l.opts.recoverPanics {
		defer func() {
			if v := recover(); v != nil {
				if l.site == siteNone {
					panic(v)
				}
				what := "State"
				if l.site == siteTimeout {
					what = "Timeout"
				}
				l.site = siteNone
				err = fmt.Errorf("stagefsm: %s: machine %s: %w", l.name, what, &PanicError{Value: v, Stack: debug.Stack()})
			}
		}()
	}
	return l.refresh()
}

// recoverTo, deferred, turns a panic into a *PanicError stored in *err.
func recoverTo(err *error) {
	if v := recover(); v != nil {
		*err = &PanicError{Value: v, Stack: debug.Stack()}
	}
}

// stateName formats a state or event for logs and errors: its String method
// when it has one, else its %v form. It is a fmt.Stringer so that zap
// formats it only when a line is written. Like fmt, it turns a panic in the
// String method into text instead of letting it escape Run.
type stateName[T any] struct{ v T }

func (n stateName[T]) String() (name string) {
	s, ok := any(n.v).(fmt.Stringer)
	if !ok {
		return fmt.Sprint(n.v)
	}
	defer func() {
		if v := recover(); v != nil {
			name = fmt.Sprintf("%%!v(PANIC=String method: %v)", v)
		}
	}()
	return s.String()
}

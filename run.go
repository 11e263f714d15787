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
//     (a bug in the FSM definition: no failure is routed, no completion
//     written);
//   - an error wrapping both the original failure and the machine's error
//     when the machine rejects a failure event;
//   - an error wrapping a failure action's error (a double fault, not routed
//     again);
//   - an error wrapping [ErrFailureLoop] when too many consecutive iterations
//     routed a failure (see [WithMaxConsecutiveFailures]);
//   - an error for which errors.Is(err, ctx.Err()) holds, and which also
//     wraps context.Cause(ctx), when ctx is done: at the top of an iteration,
//     during an idle wait, or when user code returns an error while ctx is
//     done; no failure is routed and no completion is written;
//   - an error wrapping a [*PanicError] for a panic that cannot be routed (in
//     Handle, State, a failure action, BuildStateMachine,
//     EventForActionError or WriteCompletionEvent);
//   - an error wrapping the error of BuildStateMachine, or an error when h is
//     nil or builds a nil machine.
//
// With an [Observer] or under [Start], Run also returns:
//   - an error wrapping a [*PanicError] for a panic in an Observer callback
//     or in a [Controlled] method;
//   - an error, before anything runs, when [WithObserver] was given other
//     state and event types than h's;
//   - under Start, an error wrapping [ErrControlClosed] when a state that
//     blocks for control events can never get one (see [ControlBlock]).
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

	state    S // cached: refreshed after every Handle
	failures int
	idleWait time.Duration // next idle wait; 0 until the first Idle
	timer    *time.Timer   // reused by every wait

	// The armed state timeout, and the context dispatch receives while it
	// is armed (nil otherwise); both are cached until the deadline changes.
	deadline      time.Time
	timeoutEvent  E
	armed         bool
	timeoutCtx    context.Context
	timeoutCancel context.CancelFunc

	ctl controlPlane[S, E] // control events, when started with Start
	obs *Observer[S, E]    // nil when there is nothing to notify
}

func (l *loop[S, E, C, A]) start(initial S) error {
	l.name = l.h.Name()
	if l.log.Core().Enabled(zapcore.ErrorLevel) {
		l.log = l.log.With(
			zap.String("supervisor", l.name),
			zap.String("stage_id", string(l.h.StageID())),
			zap.String("writer_id", string(l.h.WriterID())),
		)
	}
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
	if err := l.refresh(); err != nil {
		return err
	}
	if ce := l.log.Check(zapcore.InfoLevel, "stage started"); ce != nil {
		ce.Write(zap.Stringer("state", stateName[S]{l.state}))
	}
	return nil
}

func (l *loop[S, E, C, A]) stop() {
	if l.timeoutCancel != nil {
		l.timeoutCancel()
	}
	if l.timer != nil {
		l.timer.Stop()
	}
}

// iterate runs one iteration of the loop. done reports that the loop is
// over; err is then Run's result (nil after a successful Terminate).
func (l *loop[S, E, C, A]) iterate(ctx context.Context) (done bool, err error) {
	if ctx.Err() != nil {
		return true, l.canceled(ctx, nil)
	}
	if l.armed && !time.Now().Before(l.deadline) {
		l.idleWait = 0
		return l.transition(ctx, l.timeoutEvent, "state timeout")
	}
	if l.ctl.queue != nil && l.ctl.mode != ControlIgnore {
		if took, done, err := l.control(ctx); took {
			return done, err
		}
	}

	dctx := ctx
	if l.armed {
		dctx = l.dispatchContext(ctx)
	}
	d, err := l.dispatch(dctx)
	if err == nil && d.kind == kindInvalid {
		err = ErrZeroDirective
	}
	if err != nil {
		if ctx.Err() != nil {
			return true, l.canceled(ctx, err)
		}
		if dctx != ctx && dctx.Err() != nil {
			// Dispatch gave up because the state timed out: not a failure.
			// The next iteration fires the timeout.
			return false, nil
		}
		return l.route(ctx, &DispatchError{State: stateName[S]{l.state}.String(), Err: err})
	}
	if l.debug {
		if ce := l.log.Check(zapcore.DebugLevel, "dispatched"); ce != nil {
			ce.Write(zap.Stringer("state", stateName[S]{l.state}), zap.Stringer("directive", d))
		}
	}

	switch d.kind {
	case kindContinue:
		l.failures, l.idleWait = 0, 0
		return false, nil
	case kindIdle:
		l.failures = 0
		return false, l.idle(ctx)
	case kindTransition:
		l.idleWait = 0
		return l.transition(ctx, d.event, "transition")
	default: // kindTerminate
		return true, l.complete(ctx)
	}
}

// transition feeds a normal event to the machine and executes its actions.
func (l *loop[S, E, C, A]) transition(ctx context.Context, event E, what string) (bool, error) {
	from := l.state
	actions, err := l.handle(ctx, event)
	if err != nil {
		if ctx.Err() != nil {
			return true, l.canceled(ctx, err)
		}
		return true, fmt.Errorf("stagefsm: %s: machine rejected %s event %v in state %s: %w",
			l.name, what, event, stateName[S]{from}, err)
	}
	if l.debug {
		if ce := l.log.Check(zapcore.DebugLevel, "transitioned"); ce != nil {
			ce.Write(zap.Stringer("from", stateName[S]{from}), zap.Stringer("state", stateName[S]{l.state}),
				zap.Stringer("event", stateName[E]{event}), zap.Int("actions", len(actions)))
		}
	}
	if l.obs != nil {
		if err := l.onTransition(from, event, len(actions)); err != nil {
			return true, err
		}
	}
	for i, a := range actions {
		if err := l.execute(ctx, a); err != nil {
			if ctx.Err() != nil {
				return true, l.canceled(ctx, err)
			}
			skipped := make([]any, 0, len(actions)-i-1)
			for _, s := range actions[i+1:] {
				skipped = append(skipped, s)
			}
			return l.route(ctx, &ActionError{Index: i, Action: a, Skipped: skipped, Err: err})
		}
	}
	l.failures = 0
	return false, nil
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
	event, err := l.failureEvent(cause)
	if err != nil {
		return true, fmt.Errorf("stagefsm: %s: EventForActionError in state %s: %w (routing: %w)",
			l.name, stateName[S]{from}, err, cause)
	}
	if ce := l.log.Check(zapcore.WarnLevel, "routing failure through the FSM"); ce != nil {
		ce.Write(zap.Stringer("state", stateName[S]{from}), zap.Stringer("event", stateName[E]{event}), zap.Error(cause))
	}

	actions, err := l.handle(ctx, event)
	if err != nil {
		if ctx.Err() != nil {
			return true, l.canceled(ctx, err)
		}
		return true, fmt.Errorf("stagefsm: %s: no failure transition in state %s for event %v: %w (routing: %w)",
			l.name, stateName[S]{from}, event, err, cause)
	}
	if l.obs != nil {
		if err := l.onFailure(from, event, cause); err != nil {
			return true, err
		}
	}
	for i, a := range actions {
		if err := l.execute(ctx, a); err != nil {
			if ctx.Err() != nil {
				return true, l.canceled(ctx, err)
			}
			return true, fmt.Errorf("stagefsm: %s: failure action %d (%v) failed in state %s: %w (routing: %w)",
				l.name, i, a, stateName[S]{l.state}, err, cause)
		}
	}
	return false, nil
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
	if l.timer == nil {
		l.timer = time.NewTimer(wait)
	} else {
		l.timer.Reset(wait)
	}
	select {
	case <-l.timer.C:
		return nil
	case <-l.controlWake():
		l.timer.Stop()
		return nil
	case <-ctx.Done():
		l.timer.Stop()
		return l.canceled(ctx, nil)
	}
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
	s, err := l.readState()
	if err != nil {
		return fmt.Errorf("stagefsm: %s: machine State: %w", l.name, err)
	}
	l.state = s
	if l.ctl.policy != nil {
		if err := l.refreshControl(); err != nil {
			return err
		}
	}
	if l.timed == nil {
		return nil
	}
	deadline, event, ok, err := l.readTimeout()
	if err != nil {
		return fmt.Errorf("stagefsm: %s: machine Timeout in state %s: %w", l.name, stateName[S]{s}, err)
	}
	if ok == l.armed && (!ok || deadline.Equal(l.deadline)) {
		l.timeoutEvent = event
		return nil
	}
	if l.timeoutCancel != nil {
		l.timeoutCancel()
		l.timeoutCtx, l.timeoutCancel = nil, nil
	}
	l.deadline, l.timeoutEvent, l.armed = deadline, event, ok
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

// The calls into user code. Each is a recovery boundary (unless panics are
// not to be recovered): a panic becomes a *PanicError returned as the call's
// error, and the caller decides whether it is routed or ends Run.

func (l *loop[S, E, C, A]) build(initial S) (m Machine[S, E, C, A], err error) {
	if l.opts.recoverPanics {
		defer recoverTo(&err)
	}
	return l.h.BuildStateMachine(initial)
}

func (l *loop[S, E, C, A]) dispatch(ctx context.Context) (d Directive[E], err error) {
	if l.opts.recoverPanics {
		defer recoverTo(&err)
	}
	return l.h.DispatchState(ctx, l.state, l.c)
}

// handle feeds event to the machine and refreshes the cached state.
func (l *loop[S, E, C, A]) handle(ctx context.Context, event E) ([]A, error) {
	actions, err := l.callHandle(ctx, event)
	if err != nil {
		return nil, err
	}
	return actions, l.refresh()
}

func (l *loop[S, E, C, A]) callHandle(ctx context.Context, event E) (actions []A, err error) {
	if l.opts.recoverPanics {
		defer recoverTo(&err)
	}
	return l.m.Handle(ctx, event, l.c)
}

func (l *loop[S, E, C, A]) readState() (s S, err error) {
	if l.opts.recoverPanics {
		defer recoverTo(&err)
	}
	return l.m.State(), nil
}

func (l *loop[S, E, C, A]) readTimeout() (deadline time.Time, event E, ok bool, err error) {
	if l.opts.recoverPanics {
		defer recoverTo(&err)
	}
	deadline, event, ok = l.timed.Timeout()
	return deadline, event, ok, nil
}

func (l *loop[S, E, C, A]) execute(ctx context.Context, a A) (err error) {
	if l.opts.recoverPanics {
		defer recoverTo(&err)
	}
	return a.Execute(ctx, l.c)
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

// recoverTo, deferred, turns a panic into a *PanicError stored in *err.
func recoverTo(err *error) {
	if v := recover(); v != nil {
		*err = &PanicError{Value: v, Stack: debug.Stack()}
	}
}

// stateName formats a state or event for logs and errors: its String method
// when it has one, else its %v form. It is a fmt.Stringer so that zap
// formats it only when a line is written.
type stateName[T any] struct{ v T }

func (n stateName[T]) String() string {
	if s, ok := any(n.v).(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprint(n.v)
}

package stagefsm

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// Defaults of the options, documented on each option.
const (
	defaultIdleInitial = time.Millisecond
	defaultIdleMax     = 10 * time.Millisecond
	defaultMaxFailures = 100

	// maxBuffer caps the buffers a caller sizes (the control queue, a
	// Changes stream): they are allocated up front, and an absurd size
	// must not crash the program.
	maxBuffer         = 1 << 16
	defaultControlCap = 16
)

// An Option configures [Run] and [Start]. Options apply in order, so a later
// option overrides an earlier one of the same kind; a nil Option is ignored.
type Option interface {
	apply(*options)
}

type options struct {
	logger        *zap.Logger
	idleInitial   time.Duration
	idleMax       time.Duration
	maxFailures   int
	recoverPanics bool
	controlCap    int
	observer      any            // *Observer[S, E], asserted once when Run starts
	restart       *restartConfig // nil: Start runs the stage once
}

// nopLogger is the logger of every Run given none. A zap.Logger is
// immutable and safe for concurrent use, so one serves all; making one per
// Run would cost each stage two allocations (about 140 bytes) it keeps for
// its whole life.
var nopLogger = zap.NewNop()

func newOptions(opts []Option) options {
	o := options{
		logger:        nopLogger,
		idleInitial:   defaultIdleInitial,
		idleMax:       defaultIdleMax,
		maxFailures:   defaultMaxFailures,
		recoverPanics: true,
		controlCap:    defaultControlCap,
	}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	return o
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithLogger sets the logger [Run] writes to. Run adds the supervisor name,
// stage id and writer id to every line. It logs the stage's start and end at
// Info, each routed failure at Warn, and per-iteration detail at Debug only;
// with Debug disabled the loop does not allocate for logging. Errors that
// Run returns are not also logged. A nil logger means no logging.
//
// Default: zap.NewNop().
func WithLogger(l *zap.Logger) Option {
	return optionFunc(func(o *options) {
		if l == nil {
			l = nopLogger
		}
		o.logger = l
	})
}

// WithIdleBackoff sets how long [Run] waits after dispatch returns [Idle]:
// the k-th consecutive Idle waits min(initial·2^(k-1), max). Any other
// directive resets the sequence. A value ≤ 0 falls back to its default; max
// smaller than initial means max = initial. The wait ends early when the
// context is done or a state timeout falls due.
//
// Default: 1ms initial, 10ms max.
func WithIdleBackoff(initial, max time.Duration) Option {
	return optionFunc(func(o *options) {
		if initial <= 0 {
			initial = defaultIdleInitial
		}
		if max <= 0 {
			max = defaultIdleMax
		}
		if max < initial {
			max = initial
		}
		o.idleInitial, o.idleMax = initial, max
	})
}

// WithMaxConsecutiveFailures bounds how many loop iterations in a row may
// end in a routed failure. With a limit of n, the (n+1)-th consecutive
// failure is not routed: [Run] returns an error wrapping [ErrFailureLoop] and
// that failure. An iteration that routes no failure resets the count.
// n ≤ 0 means unbounded.
//
// Default: 100.
func WithMaxConsecutiveFailures(n int) Option {
	return optionFunc(func(o *options) { o.maxFailures = n })
}

// WithRecoverPanics says whether [Run] recovers panics in user code and turns
// each into a [*PanicError]. Turn it off to let a panic crash the program with
// its original stack, for debugging.
//
// Default: true.
func WithRecoverPanics(enabled bool) Option {
	return optionFunc(func(o *options) { o.recoverPanics = enabled })
}

// WithControlCapacity sets how many control events the queue of a [Stage]
// holds before [Stage.Send] waits and [Stage.TrySend] returns
// [ErrControlFull]; events are never dropped. The queue is allocated when
// the stage starts, so n < 1 falls back to the default and n above 65,536
// is capped there (a control queue is for a handful of lifecycle events,
// not for data). [Run] without [Start] has no control queue and ignores it.
//
// Default: 16.
func WithControlCapacity(n int) Option {
	return optionFunc(func(o *options) {
		if n < 1 {
			n = defaultControlCap
		}
		n = min(n, maxBuffer)
		o.controlCap = n
	})
}

// WithObserver sets the [Observer] whose callbacks [Run] calls for every
// committed transition, routed failure, completion and exit. The type
// arguments must be the stage's state and event types; if they are not, Run
// returns an error at once (before building the machine) and calls nothing.
// The observer is copied; an Observer with no callback set is the same as
// none. A later WithObserver replaces an earlier one.
//
// Default: none (no call, no allocation).
func WithObserver[S, E any](obs Observer[S, E]) Option {
	return optionFunc(func(o *options) {
		if obs.OnTransition == nil && obs.OnFailure == nil && obs.OnComplete == nil && obs.OnExit == nil &&
			obs.OnRestartScheduled == nil && obs.OnRestarted == nil && obs.OnGaveUp == nil {
			o.observer = nil
			return
		}
		o.observer = &obs
	})
}

// WithRestart makes [Start] restart the stage after a failure, per policy,
// behind the same [Stage] handle. It applies to Start only: [Run] given it
// returns an error at once.
//
// A failure is Run returning an error, or Run returning nil in a state the
// supervisor reports as failed ([Failable]; the failure then wraps
// [ErrFailedState]). Each restart waits the policy's backoff, then builds
// a fresh machine from the initial state given to Start, with the context
// newContext(ctx, prev) returns (prev is the previous incarnation's; the
// first incarnation uses the one given to Start; ctx is Start's). A
// factory error is a failure of the restart: it counts against the
// intensity and is retried after the next backoff.
//
// The supervised stage ends, and [Stage.Wait] returns:
//   - nil, when an incarnation terminates without error in a state that is
//     not failed (a graceful [Stage.Stop] included);
//   - the failure, when it wraps [ErrPermanent] (or a [*PanicError] with
//     [RestartPolicy.PanicIsPermanent]), or when it happens after
//     [Stage.Stop] or [Stage.CloseControl] asked the stage to finish — also
//     while it waits to restart: no new incarnation starts then;
//   - an error wrapping [ErrRestartIntensity] and the failure, when the
//     failure would exceed the policy's intensity;
//   - an error for which errors.Is(err, context.Canceled) (or
//     DeadlineExceeded) holds, when Start's ctx is done or [Stage.Abort]
//     was called: a cancellation is never restarted; when it interrupts a
//     backoff, the error also wraps the failure;
//   - an error wrapping a [*PanicError] for a panic in [Failable]'s
//     FailedState, in a restart callback of the [Observer], or in the
//     supervisor's Name;
//   - at once, without running anything, an error for a nil newContext, a
//     newContext whose type does not match the stage's context, or a
//     policy with a negative duration or a Jitter outside [0, 1]; and Run's
//     own set-up errors (a nil supervisor, a mismatched [WithObserver]) are
//     not restarted.
//
// Across restarts the handle keeps working: [Stage.Send] reaches the
// current incarnation, and the state published through [Stage.State],
// [Stage.Subscribe] and [Stage.WaitState] becomes the initial state when
// an incarnation starts ([Stage.Changes] goes on, see [Change.Restarts]);
// [Stage.Wait] and [Stage.Done] report the end of the last incarnation.
// The control queue outlives incarnations, but each time a restart is
// scheduled the events still queued are discarded (they were meant for a
// machine that is gone, or for a restart that failed; the restart's Warn
// line counts them): events sent from then on, during the backoff
// included, go to the next incarnation. Control events are not replayed: a
// stage whose initial state waits for one (a gate) must be sent it again —
// sent from [Observer.OnRestartScheduled] with [Stage.TrySend], it is the
// first event the next incarnation takes.
//
// Each restart is logged at Warn and reported to the [Observer]
// (OnRestartScheduled, OnRestarted, OnGaveUp); the handle reports
// [Stage.Restarts] and [Stage.LastFailure]. The observer's other callbacks
// are called for every incarnation, each of which is a Run.
//
// Default: none (a failed stage stays failed).
func WithRestart[C any](policy RestartPolicy, newContext func(ctx context.Context, prev C) (C, error)) Option {
	return optionFunc(func(o *options) {
		cfg := &restartConfig{factory: newContext}
		cfg.policy, cfg.err = policy.normalize()
		if newContext == nil {
			cfg.err = errors.Join(cfg.err, errors.New("stagefsm: WithRestart was given a nil context factory"))
		}
		o.restart = cfg
	})
}

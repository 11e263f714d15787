package stagefsm

import (
	"time"

	"go.uber.org/zap"
)

// Defaults of the options, documented on each option.
const (
	defaultIdleInitial = time.Millisecond
	defaultIdleMax     = 10 * time.Millisecond
	defaultMaxFailures = 100
	defaultControlCap  = 16
)

// An Option configures [Run].
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
	observer      any // *Observer[S, E], asserted once when Run starts
}

func newOptions(opts []Option) options {
	o := options{
		logger:        zap.NewNop(),
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
			l = zap.NewNop()
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
// them into [*PanicError]s. Turn it off to let a panic crash the program with
// its original stack, for debugging.
//
// Default: true.
func WithRecoverPanics(enabled bool) Option {
	return optionFunc(func(o *options) { o.recoverPanics = enabled })
}

// WithControlCapacity sets how many control events the queue of a [Stage]
// holds before [Stage.Send] waits and [Stage.TrySend] returns
// [ErrControlFull]; events are never dropped. n < 1 falls back to the
// default. [Run] without [Start] has no control queue and ignores it.
//
// Default: 16.
func WithControlCapacity(n int) Option {
	return optionFunc(func(o *options) {
		if n < 1 {
			n = defaultControlCap
		}
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
		if obs.OnTransition == nil && obs.OnFailure == nil && obs.OnComplete == nil && obs.OnExit == nil {
			o.observer = nil
			return
		}
		o.observer = &obs
	})
}

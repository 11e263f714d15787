package stagefsm

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Defaults of a [RestartPolicy], documented on its fields.
const (
	defaultMaxRestarts    = 5
	defaultRestartPeriod  = time.Minute
	defaultBackoffInitial = 100 * time.Millisecond
	defaultBackoffMax     = 30 * time.Second
	defaultHealthyAfter   = time.Minute
)

// Permanent returns err marked as permanent: errors.Is(result, ErrPermanent)
// and errors.Is(result, err) both hold, and its message is ErrPermanent's
// followed by err's. It returns err itself when err is nil or already
// permanent.
func Permanent(err error) error {
	if err == nil || errors.Is(err, ErrPermanent) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrPermanent, err)
}

// RestartPolicy says when and how fast a stage started with [WithRestart]
// is restarted after a failure. Its zero value is a usable policy: every
// field documents its default.
//
// # Intensity
//
// As in an Erlang/OTP supervisor, at most MaxRestarts restarts may happen
// within any window of length Period (a sliding window; a restart counts at
// the instant of the failure that causes it). A failure that would exceed
// it is not restarted: the stage ends with an error wrapping
// [ErrRestartIntensity] and that failure.
//
// # Backoff
//
// Unlike OTP, a restart waits first. The k-th restart since the stage was
// last healthy waits base = min(BackoffInitial·2^(k-1), BackoffMax); with
// Jitter j the wait is drawn uniformly from (base·(1-j), base], so
// BackoffMax is a hard cap. An incarnation that ran for at least
// HealthyAfter before failing was healthy: the next wait is BackoffInitial
// again. The wait ends early when the stage's context is done (the stage
// ends, cancelled) or when [Stage.Stop] or [Stage.CloseControl] asks it to
// finish (the stage ends with the failure, and no new incarnation starts).
type RestartPolicy struct {
	// MaxRestarts is the intensity: how many restarts may happen within
	// Period. A negative value means no limit. Default (0): 5.
	MaxRestarts int

	// Period is the length of the intensity's sliding window.
	// Default (0): 1 minute.
	Period time.Duration

	// BackoffInitial is the wait before the first restart, doubled for each
	// further restart until the stage is healthy again.
	// Default (0): 100ms.
	BackoffInitial time.Duration

	// BackoffMax caps the wait. A value below BackoffInitial means
	// BackoffInitial. Default (0): 30s.
	BackoffMax time.Duration

	// Jitter, in [0, 1], is the fraction of each wait that is random: the
	// wait is shortened by up to that fraction, so that stages failing
	// together do not restart in lockstep. Default (0): no jitter.
	Jitter float64

	// Seed seeds the jitter's random source (a PCG, math/rand/v2), so that
	// a given seed always produces the same waits. Default (0): a random
	// seed.
	Seed uint64

	// HealthyAfter is how long an incarnation must run before failing for
	// the backoff to start again from BackoffInitial.
	// Default (0): 1 minute.
	HealthyAfter time.Duration

	// PanicIsPermanent makes a failure caused by a panic (one that wraps a
	// [*PanicError]) permanent: the stage is not restarted after it.
	// Default: false (a panic is retryable, like any other failure).
	PanicIsPermanent bool
}

// normalize applies the defaults and checks the values.
func (p RestartPolicy) normalize() (RestartPolicy, error) {
	var errs []error
	check := func(name string, d *time.Duration, def time.Duration) {
		switch {
		case *d < 0:
			errs = append(errs, fmt.Errorf("stagefsm: RestartPolicy.%s is negative (%v)", name, *d))
		case *d == 0:
			*d = def
		}
	}
	if p.MaxRestarts == 0 {
		p.MaxRestarts = defaultMaxRestarts
	}
	check("Period", &p.Period, defaultRestartPeriod)
	check("BackoffInitial", &p.BackoffInitial, defaultBackoffInitial)
	check("BackoffMax", &p.BackoffMax, defaultBackoffMax)
	check("HealthyAfter", &p.HealthyAfter, defaultHealthyAfter)
	p.BackoffMax = max(p.BackoffMax, p.BackoffInitial)
	if math.IsNaN(p.Jitter) || p.Jitter < 0 || p.Jitter > 1 {
		errs = append(errs, fmt.Errorf("stagefsm: RestartPolicy.Jitter is %v, not in [0, 1]", p.Jitter))
	}
	return p, errors.Join(errs...)
}

// backoff returns the wait before the k-th restart (k ≥ 1) since the stage
// was last healthy, before jitter: min(initial·2^(k-1), max), without
// overflow.
func (p *RestartPolicy) backoff(k int) time.Duration {
	d := p.BackoffInitial
	for i := 1; i < k && d < p.BackoffMax; i++ {
		if d > p.BackoffMax/2 {
			d = p.BackoffMax
		} else {
			d *= 2
		}
	}
	return min(d, p.BackoffMax)
}

// restartConfig is what WithRestart stores in the options.
type restartConfig struct {
	policy  RestartPolicy // normalized
	factory any           // func(context.Context, C) (C, error), asserted by Start
	err     error         // a bad policy or a nil factory: Wait's error
}

// restartState is the part of a Stage that a restart needs beyond
// publication: whether the stage was asked to finish, and whether it is
// between incarnations. Stop and CloseControl talk to the supervising
// goroutine through it.
type restartState struct {
	mu        sync.Mutex
	finishing bool          // Stop or CloseControl was called
	between   bool          // an incarnation ended; the next has not started
	finish    chan struct{} // closed when finishing becomes true
}

func newRestartState() *restartState {
	return &restartState{finish: make(chan struct{})}
}

// requestFinish records that the stage was asked to finish and wakes a
// backoff wait. It reports whether an incarnation is running (so the stop
// event is worth sending).
func (r *restartState) requestFinish() (running bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.finishing {
		r.finishing = true
		close(r.finish)
	}
	return !r.between
}

// setBetween marks the stage as between incarnations (or not) unless it was
// asked to finish, which it reports.
func (r *restartState) setBetween(between bool) (finishing bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.finishing {
		r.between = between
	}
	return r.finishing
}

// Restarts returns how many times the stage has been restarted so far: 0
// for a stage started without [WithRestart], and until its first restart.
func (s *Stage[S, E]) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

// LastFailure returns the failure of the stage's latest incarnation that
// failed (see [WithRestart]), whether or not it was restarted, or nil if
// none has failed. It is always nil for a stage started without
// WithRestart: read [Stage.Wait] for Run's result.
func (s *Stage[S, E]) LastFailure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastFailure
}

// restarted publishes the start of a new incarnation in state initial and
// returns the new restart count. The incarnation's changes continue the
// stage's Seq.
func (s *Stage[S, E]) restarted(initial S) int {
	s.mu.Lock()
	s.restarts++
	n := s.restarts
	s.seq0 = s.seq
	s.setState(initial)
	s.mu.Unlock()
	s.notifyWaiters(initial)
	return n
}

func (s *Stage[S, E]) setLastFailure(err error) {
	s.mu.Lock()
	s.lastFailure = err
	s.mu.Unlock()
}

// discard empties the control queue when a restart is scheduled, and
// returns how many events it dropped. Later events are for the next
// incarnation.
func (q *controlQueue[E]) discard() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.n
	clear(q.buf)
	q.head, q.n = 0, 0
	q.drain()
	if q.space != nil {
		close(q.space)
		q.space = nil
	}
	return n
}

// restarter runs the incarnations of a stage started with WithRestart, on
// the stage's goroutine.
type restarter[S, E, C any, A Action[C]] struct {
	h          HandlerSupervised[S, E, C, A]
	initial    S
	newContext func(context.Context, C) (C, error)
	policy     *RestartPolicy
	opts       options         // Start's, with the observer that records causes
	user       *Observer[S, E] // the caller's observer, or nil
	st         *Stage[S, E]
	name       string
	log        *zap.Logger
	rng        *rand.Rand

	window  []time.Time // instants of the restarts within the last Period
	attempt int         // restarts since the stage was last healthy
	cause   error       // the last failure the current incarnation routed
}

// supervise is what Start runs instead of run when WithRestart is set: run,
// and after a failure restart, until the stage ends for good.
func supervise[S, E, C any, A Action[C]](ctx context.Context, h HandlerSupervised[S, E, C, A], initial S, c C, o *options, st *Stage[S, E]) error {
	cfg := o.restart
	if cfg.err != nil {
		return cfg.err
	}
	newContext, ok := cfg.factory.(func(context.Context, C) (C, error))
	if !ok {
		return fmt.Errorf("stagefsm: WithRestart was given the context factory %T but the stage's context type makes %T",
			cfg.factory, newContext)
	}
	user, ok := o.observer.(*Observer[S, E])
	if h == nil || (o.observer != nil && !ok) {
		return run(ctx, h, initial, c, o, st) // reports the misuse; nothing to restart
	}
	name, log, err := describe(h, o.logger, o.recoverPanics)
	if err != nil {
		return fmt.Errorf(errDescribe, err)
	}
	seed := cfg.policy.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	r := &restarter[S, E, C, A]{
		h:          h,
		initial:    initial,
		newContext: newContext,
		policy:     &cfg.policy,
		opts:       *o,
		user:       user,
		st:         st,
		name:       name,
		log:        log,
		rng:        rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
	r.opts.observer = r.recorder()
	return r.loop(ctx, c)
}

// recorder returns the observer an incarnation runs with: the caller's,
// with OnFailure also recording the routed cause.
func (r *restarter[S, E, C, A]) recorder() *Observer[S, E] {
	var obs Observer[S, E]
	if r.user != nil {
		obs = *r.user
	}
	onFailure := obs.OnFailure
	obs.OnFailure = func(from S, event E, to S, cause error) {
		r.cause = cause
		if onFailure != nil {
			onFailure(from, event, to, cause)
		}
	}
	return &obs
}

// loop runs incarnations until one ends in something other than a failure
// to restart.
func (r *restarter[S, E, C, A]) loop(ctx context.Context, c C) error {
	for {
		began := time.Now()
		failure, err := r.incarnation(ctx, c)
		if failure == nil {
			return err
		}
		for {
			if err := r.backoff(ctx, failure, time.Since(began)); err != nil {
				return err
			}
			next, err := r.makeContext(ctx, c)
			if err == nil {
				c = next
				break
			}
			if ctx.Err() != nil {
				return r.canceled(ctx, err)
			}
			failure, began = err, time.Now() // a failed restart: no uptime
		}
		if r.st.restart.setBetween(false) {
			return r.gaveUp(failure) // asked to finish as the wait ended
		}
		n := r.st.restarted(r.initial)
		if err := r.notify("OnRestarted", func(o *Observer[S, E]) {
			if o.OnRestarted != nil {
				o.OnRestarted(n + 1)
			}
		}); err != nil {
			return errors.Join(failure, err)
		}
	}
}

// incarnation runs the stage once with c. It returns the failure to
// consider restarting, or nil and the supervised stage's result.
func (r *restarter[S, E, C, A]) incarnation(ctx context.Context, c C) (failure, result error) {
	r.cause = nil
	err := run(ctx, r.h, r.initial, c, &r.opts, r.st)
	if err == nil {
		failed, ferr := r.failedState()
		if ferr != nil || failed == nil {
			return nil, ferr
		}
		err = failed
	}
	if ctx.Err() != nil { // cancellation is never restarted
		if errors.Is(err, ctx.Err()) {
			return nil, err // Run stopped because of ctx: not a failure
		}
		r.st.setLastFailure(err) // failed as ctx ended
		return nil, r.canceled(ctx, err)
	}
	return err, nil
}

// failedState returns the failure of an incarnation that ended without
// error in a state the supervisor reports as failed, or nil.
func (r *restarter[S, E, C, A]) failedState() (failure, err error) {
	f, ok := r.h.(Failable[S])
	if !ok {
		return nil, nil
	}
	state := r.st.State()
	failed, err := r.callFailedState(f, state)
	switch {
	case err != nil:
		return nil, fmt.Errorf("stagefsm: %s: FailedState in state %s: %w", r.name, stateName[S]{state}, err)
	case !failed:
		return nil, nil
	case r.cause == nil:
		return fmt.Errorf("stagefsm: %s: %w (%s)", r.name, ErrFailedState, stateName[S]{state}), nil
	default:
		return fmt.Errorf("stagefsm: %s: %w (%s), last routed failure: %w",
			r.name, ErrFailedState, stateName[S]{state}, r.cause), nil
	}
}

func (r *restarter[S, E, C, A]) callFailedState(f Failable[S], state S) (failed bool, err error) {
	if r.opts.recoverPanics {
		defer recoverTo(&err)
	}
	return f.FailedState(state), nil
}

// backoff decides whether failure is restarted, and if so empties the
// control queue (its events were meant for a machine that is gone) and
// waits the backoff. A non-nil result ends the supervised stage with it.
func (r *restarter[S, E, C, A]) backoff(ctx context.Context, failure error, uptime time.Duration) error {
	r.st.setLastFailure(failure)
	if r.st.restart.setBetween(true) {
		return r.gaveUp(failure) // asked to finish: a failure now is the end
	}
	if r.permanent(failure) {
		return r.gaveUp(failure)
	}
	now := time.Now()
	if !r.allow(now) {
		return r.gaveUp(fmt.Errorf("stagefsm: %s: %w (%d restarts within %v): %w",
			r.name, ErrRestartIntensity, len(r.window), r.policy.Period, failure))
	}
	delay := r.delay(uptime)
	discarded := r.st.queue.discard()
	restart := r.st.Restarts() + 1
	if ce := r.log.Check(zapcore.WarnLevel, "restarting stage after failure"); ce != nil {
		ce.Write(zap.Int("restart", restart), zap.Duration("delay", delay),
			zap.Int("discarded_control_events", discarded), zap.Error(failure))
	}
	if err := r.notify("OnRestartScheduled", func(o *Observer[S, E]) {
		if o.OnRestartScheduled != nil {
			o.OnRestartScheduled(restart, delay, failure)
		}
	}); err != nil {
		return errors.Join(failure, err)
	}

	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-r.st.restart.finish:
		return r.gaveUp(failure)
	case <-ctx.Done():
		return r.canceled(ctx, failure)
	}
}

// permanent reports whether failure must not be restarted.
func (r *restarter[S, E, C, A]) permanent(failure error) bool {
	if errors.Is(failure, ErrPermanent) {
		return true
	}
	var p *PanicError
	return r.policy.PanicIsPermanent && errors.As(failure, &p)
}

// allow applies the intensity at now: it reports whether one more restart
// fits in the window, and records it if so.
func (r *restarter[S, E, C, A]) allow(now time.Time) bool {
	if r.policy.MaxRestarts < 0 {
		return true
	}
	kept := r.window[:0]
	for _, t := range r.window {
		if now.Sub(t) < r.policy.Period {
			kept = append(kept, t)
		}
	}
	r.window = kept
	if len(r.window) >= r.policy.MaxRestarts {
		return false
	}
	r.window = append(r.window, now)
	return true
}

// delay returns the wait before the next restart, given how long the
// failed incarnation ran.
func (r *restarter[S, E, C, A]) delay(uptime time.Duration) time.Duration {
	if uptime >= r.policy.HealthyAfter {
		r.attempt = 0
	}
	r.attempt++
	d := r.policy.backoff(r.attempt)
	if j := r.policy.Jitter; j > 0 {
		d -= time.Duration(j * r.rng.Float64() * float64(d))
	}
	return d
}

// makeContext asks the caller's factory for the next incarnation's context.
// Its error, or a *PanicError for a panic, is wrapped to name the factory.
func (r *restarter[S, E, C, A]) makeContext(ctx context.Context, prev C) (c C, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("stagefsm: %s: restart context factory: %w", r.name, err)
		}
	}()
	if r.opts.recoverPanics {
		defer recoverTo(&err)
	}
	return r.newContext(ctx, prev)
}

// gaveUp ends the supervised stage with err after a failure that is not
// restarted.
func (r *restarter[S, E, C, A]) gaveUp(err error) error {
	if oerr := r.notify("OnGaveUp", func(o *Observer[S, E]) {
		if o.OnGaveUp != nil {
			o.OnGaveUp(err)
		}
	}); oerr != nil {
		return errors.Join(err, oerr)
	}
	return err
}

// canceled is the result when ctx ended the stage between incarnations or
// as one failed.
func (r *restarter[S, E, C, A]) canceled(ctx context.Context, failure error) error {
	if cause := context.Cause(ctx); cause != ctx.Err() {
		return fmt.Errorf("stagefsm: %s: stopped while restarting: %w (cause: %w; failure: %w)", r.name, ctx.Err(), cause, failure)
	}
	return fmt.Errorf("stagefsm: %s: stopped while restarting: %w (failure: %w)", r.name, ctx.Err(), failure)
}

// notify calls one of the caller's restart callbacks, turning a panic into
// an error (unless panics are not to be recovered).
func (r *restarter[S, E, C, A]) notify(callback string, call func(*Observer[S, E])) error {
	if r.user == nil {
		return nil
	}
	if err := r.callObserver(call); err != nil {
		return fmt.Errorf("stagefsm: %s: observer %s: %w", r.name, callback, err)
	}
	return nil
}

func (r *restarter[S, E, C, A]) callObserver(call func(*Observer[S, E])) (err error) {
	if r.opts.recoverPanics {
		defer recoverTo(&err)
	}
	call(r.user)
	return nil
}

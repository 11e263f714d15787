package stagefsmtest

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stagefsm/stagefsm"
)

// ErrRunReturned is returned by [Stepper.Step] once Run has returned and
// that end has been reported (by an earlier Step or by [Stepper.Finish]).
var ErrRunReturned = errors.New("stagefsmtest: Run has returned")

// Iteration is what one [Stepper.Step] saw Run do: the dispatch it let
// through and everything Run did until it called dispatch again or
// returned.
type Iteration[S, E any] struct {
	// From is the state the dispatch was called in.
	From S
	// Directive is what the dispatch returned, and DispatchErr its error.
	// A dispatch that panicked leaves both zero; its failure is in
	// Failures, as a [*stagefsm.DispatchError] wrapping a
	// [*stagefsm.PanicError].
	Directive   stagefsm.Directive[E]
	DispatchErr error
	// Transitions lists every Handle call since the previous Step returned,
	// in order: the directive's event, routed failure events, and state
	// timeouts fired before the next dispatch (or, in the first Step,
	// before the first dispatch).
	Transitions []Transition[S, E]
	// Failures lists the failures routed through the machine.
	Failures []Failure[E]
	// Completed reports that WriteCompletionEvent was called.
	Completed bool
	// To is the machine's state when the Step returned: the state of the
	// next dispatch, or the final state.
	To S
	// Done reports that Run returned; Err is then its result.
	Done bool
	Err  error
}

// Stepper runs [stagefsm.Run] one loop iteration at a time, so that a test
// can walk a stage through its states one directive at a time and look at
// each iteration. It runs the real Run — not a copy of the loop — in a
// goroutine it owns, with the supervisor wrapped so that each DispatchState
// waits at a gate until [Stepper.Step] lets it through.
//
// While the Stepper holds the stage at the gate nothing happens in it: the
// gate does not watch the dispatch's context, so a state timeout that falls
// due meanwhile fires in the next Step (after the dispatch it lets through,
// which sees an expired context). Only cancellation, by the context given to
// [NewStepper] or by [Stepper.Close], ends Run while it waits at the gate.
//
// The methods that drive the stage (Step, Finish) are serialized; State and
// Close may be called from any goroutine. Close is registered with
// t.Cleanup, so the goroutine always ends with the test.
type Stepper[S, E any] struct {
	ctx      context.Context // Run's context
	cancel   context.CancelFunc
	arrivals chan struct{} // a dispatch waits at the gate
	release  chan struct{} // lets the waiting dispatch through
	free     chan struct{} // closed by Finish: the gate stays open
	freeOnce sync.Once
	done     chan struct{} // closed when Run has returned
	err      error         // Run's result, written before done is closed

	stepMu   sync.Mutex // serializes Step and Finish; guards the fields below
	parked   bool       // a dispatch waits at the gate
	inFlight bool       // an iteration was let through and not reported
	ended    bool       // Run's end was reported

	mu         sync.Mutex // guards the fields below, written by Run's goroutine
	cur        Iteration[S, E]
	letThrough bool // cur let a dispatch through
	state      S
}

// NewStepper starts [stagefsm.Run](ctx, h, initial, c, opts...) in a new
// goroutine, held before its first dispatch, and returns its Stepper. Run
// builds the machine at once; the first [Stepper.Step] lets the first
// dispatch through. t.Cleanup closes the Stepper (see [Stepper.Close]); with
// a nil t the caller must call Close. A nil ctx means context.Background().
//
// Call NewStepper inside the [testing/synctest] bubble the test runs in, if
// any, so that Run's goroutine and timers belong to the bubble.
func NewStepper[S, E, C any, A stagefsm.Action[C]](ctx context.Context, t testing.TB, h stagefsm.HandlerSupervised[S, E, C, A], initial S, c C, opts ...stagefsm.Option) *Stepper[S, E] {
	if ctx == nil {
		ctx = context.Background()
	}
	s := &Stepper[S, E]{
		arrivals: make(chan struct{}),
		release:  make(chan struct{}),
		free:     make(chan struct{}),
		done:     make(chan struct{}),
		state:    initial,
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	if t != nil {
		t.Helper()
		t.Cleanup(func() { _ = s.Close() })
	}
	wrapped := wrap(h, probe[S, E](s))
	go func() {
		defer close(s.done)
		s.err = stagefsm.Run(s.ctx, wrapped, initial, c, opts...)
	}()
	return s
}

// Step lets one dispatch through and waits until Run calls dispatch again
// or returns, then reports what Run did in between. It returns an error only
// when ctx is done first — the iteration then goes on, and the next Step
// waits for it and reports it instead of letting another dispatch through —
// or, after Run's end was reported, [ErrRunReturned].
//
// When Run returns before or during the Step (the stage terminated, failed,
// or its context was cancelled), the Iteration has Done set and Err holding
// Run's result.
func (s *Stepper[S, E]) Step(ctx context.Context) (Iteration[S, E], error) {
	s.stepMu.Lock()
	defer s.stepMu.Unlock()
	if s.ended {
		return Iteration[S, E]{}, ErrRunReturned
	}
	if !s.inFlight {
		if !s.parked {
			select {
			case <-s.arrivals:
				s.parked = true
			case <-s.done:
				return s.end(), nil
			case <-ctx.Done():
				return Iteration[S, E]{}, ctx.Err()
			}
		}
		select {
		case s.release <- struct{}{}:
			s.parked, s.inFlight = false, true
		case <-s.done:
			return s.end(), nil
		case <-ctx.Done():
			return Iteration[S, E]{}, ctx.Err()
		}
	}
	select {
	case <-s.arrivals:
		s.parked, s.inFlight = true, false
		return s.take(), nil
	case <-s.done:
		return s.end(), nil
	case <-ctx.Done():
		return Iteration[S, E]{}, ctx.Err()
	}
}

// Finish opens the gate for good, lets Run go on without stepping, and
// waits for it to return. It returns Run's result, or ctx.Err() if ctx is
// done first (Run then goes on unheld). After Finish, Step returns
// [ErrRunReturned].
func (s *Stepper[S, E]) Finish(ctx context.Context) error {
	s.stepMu.Lock()
	defer s.stepMu.Unlock()
	s.freeOnce.Do(func() { close(s.free) })
	select {
	case <-s.done:
		s.ended = true
		return s.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// State returns the machine's current state: the initial state until the
// machine is built, then its state after the latest Handle.
func (s *Stepper[S, E]) State() S {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Close cancels Run's context, waits for Run to return and returns its
// result: an error matching [context.Canceled] if Run was still running,
// else Run's own result. Close is idempotent and safe to call from any
// goroutine, also while a Step waits (that Step then reports Run's end).
func (s *Stepper[S, E]) Close() error {
	s.cancel()
	<-s.done
	return s.err
}

// take returns the iteration recorded so far and starts a new one. Called
// when a dispatch has arrived at the gate.
func (s *Stepper[S, E]) take() Iteration[S, E] {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.cur
	it.To = s.state
	if !s.letThrough {
		it.From = it.To
	}
	s.cur, s.letThrough = Iteration[S, E]{}, false
	return it
}

// end reports Run's end, with what was recorded since the last Step.
func (s *Stepper[S, E]) end() Iteration[S, E] {
	s.ended, s.inFlight = true, false
	it := s.take()
	it.Done, it.Err = true, s.err
	return it
}

// The probe, called from Run's goroutine.

func (s *Stepper[S, E]) built(state S) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state = state
}

func (s *Stepper[S, E]) gate(state S) error {
	select {
	case s.arrivals <- struct{}{}:
		select {
		case <-s.release:
			// A release may race the cancellation it should lose to
			// (select picks at random among ready cases).
			if err := s.ctx.Err(); err != nil {
				return err
			}
		case <-s.free:
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
	case <-s.free:
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur.From, s.letThrough = state, true
	return nil
}

func (s *Stepper[S, E]) dispatched(_ S, d stagefsm.Directive[E], err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur.Directive, s.cur.DispatchErr = d, err
}

func (s *Stepper[S, E]) handled(t Transition[S, E]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur.Transitions = append(s.cur.Transitions, t)
	s.state = t.To
}

func (s *Stepper[S, E]) routed(f Failure[E]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur.Failures = append(s.cur.Failures, f)
}

func (s *Stepper[S, E]) completed(error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur.Completed = true
}

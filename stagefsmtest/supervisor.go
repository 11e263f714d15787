package stagefsmtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stagefsm/stagefsm"
)

// ErrScriptExhausted is wrapped by the error a [Supervisor]'s DispatchState
// returns when no scripted step is left for the state it is called in. Run
// routes it like any dispatch failure; the Supervisor also fails the test.
var ErrScriptExhausted = errors.New("stagefsmtest: no scripted step left")

type stepKind uint8

const (
	stepZero stepKind = iota
	stepReturn
	stepFail
	stepPanic
	stepBlock
)

// Step is one scripted reply of a [Supervisor]'s DispatchState. Make one
// with [Returns], [Fails], [Panics] or [BlocksUntil]; by default a step is
// used once, see [Step.Times] and [Step.Forever].
//
// The zero Step returns the zero [stagefsm.Directive] and no error, which
// Run routes as a failure wrapping [stagefsm.ErrZeroDirective].
type Step[E any] struct {
	kind    stepKind
	d       stagefsm.Directive[E]
	err     error
	value   any
	release <-chan struct{}
	times   int // uses; 0 means once, -1 forever
}

// Returns is a step that returns d and no error.
func Returns[E any](d stagefsm.Directive[E]) Step[E] {
	return Step[E]{kind: stepReturn, d: d}
}

// Fails is a step that returns err (and the zero directive), which Run
// routes through the machine as a dispatch failure. Fails(nil) returns the
// zero directive and no error, which Run routes as a failure wrapping
// [stagefsm.ErrZeroDirective]. Write the type argument: Fails[Event](err).
func Fails[E any](err error) Step[E] {
	return Step[E]{kind: stepFail, err: err}
}

// Panics is a step that panics with v, which Run recovers and routes as a
// dispatch failure wrapping a [*stagefsm.PanicError]. Write the type
// argument: Panics[Event]("boom").
func Panics[E any](v any) Step[E] {
	return Step[E]{kind: stepPanic, value: v}
}

// BlocksUntil is a step that blocks until it receives from release (a value
// or a close), then returns d. If the dispatch's context is done first it
// returns ctx.Err() instead, as a well-behaved dispatch does: Run then stops
// (the stage's context was cancelled) or fires the state's timeout (see
// [stagefsm.Timed]). A nil release blocks until the context is done.
//
// In a [testing/synctest] bubble, call synctest.Wait to know that the
// dispatch is blocked.
func BlocksUntil[E any](release <-chan struct{}, d stagefsm.Directive[E]) Step[E] {
	return Step[E]{kind: stepBlock, release: release, d: d}
}

// Times returns a copy of s that is used n times in a row before the next
// step. n ≤ 0 means the step is never used.
func (s Step[E]) Times(n int) Step[E] {
	s.times = n
	if n <= 0 {
		s.times = -2 // never
	}
	return s
}

// Forever returns a copy of s that is used for every dispatch it is
// reached by: steps scripted after it are never reached (and reported as
// unused).
func (s Step[E]) Forever() Step[E] {
	s.times = -1
	return s
}

// String describes the step as written, such as "Returns(Continue)" or
// "Fails(boom).Times(3)".
func (s Step[E]) String() string {
	var b strings.Builder
	switch s.kind {
	case stepReturn:
		fmt.Fprintf(&b, "Returns(%v)", s.d)
	case stepFail:
		fmt.Fprintf(&b, "Fails(%v)", s.err)
	case stepPanic:
		fmt.Fprintf(&b, "Panics(%v)", s.value)
	case stepBlock:
		fmt.Fprintf(&b, "BlocksUntil(release, %v)", s.d)
	default:
		b.WriteString("Step{}")
	}
	switch {
	case s.times == -1:
		b.WriteString(".Forever()")
	case s.times == -2:
		b.WriteString(".Times(0)")
	case s.times > 1:
		fmt.Fprintf(&b, ".Times(%d)", s.times)
	}
	return b.String()
}

// run performs the step for a dispatch.
func (s Step[E]) run(ctx context.Context) (stagefsm.Directive[E], error) {
	switch s.kind {
	case stepReturn:
		return s.d, nil
	case stepFail:
		return stagefsm.Directive[E]{}, s.err
	case stepPanic:
		panic(s.value)
	case stepBlock:
		select {
		case <-s.release:
			return s.d, nil
		case <-ctx.Done():
			return stagefsm.Directive[E]{}, ctx.Err()
		}
	default:
		return stagefsm.Directive[E]{}, nil
	}
}

// script is a queue of steps, each with the uses it has left.
type script[E any] struct {
	desc  string
	steps []Step[E]
	left  []int // per step: uses left; -1 forever
}

func (q *script[E]) add(steps []Step[E]) {
	for _, s := range steps {
		n := s.times
		switch n {
		case -2:
			continue
		case 0:
			n = 1
		}
		q.steps = append(q.steps, s)
		q.left = append(q.left, n)
	}
}

func (q *script[E]) next() (Step[E], bool) {
	if len(q.steps) == 0 {
		return Step[E]{}, false
	}
	s := q.steps[0]
	if q.left[0] > 0 {
		q.left[0]--
		if q.left[0] == 0 {
			q.steps, q.left = q.steps[1:], q.left[1:]
		}
	}
	return s, true
}

// unused describes the steps never used; steps used forever count as used.
func (q *script[E]) unused() []string {
	var out []string
	for i, s := range q.steps {
		if q.left[i] == -1 {
			continue
		}
		desc := s.String()
		if s.times > 1 {
			desc = fmt.Sprintf("%s (%d of %d uses left)", desc, q.left[i], s.times)
		}
		out = append(out, q.desc+": "+desc)
	}
	return out
}

// rule is the script for the states match accepts. A rule made by In
// also holds its state, so that In(state) again extends it.
type rule[S comparable, E any] struct {
	match   func(S) bool
	state   S
	byState bool
	script[E]
}

// Supervisor is a scripted fake [stagefsm.HandlerSupervised]: its
// DispatchState replies with the steps ([Step]) a test scripts, per state or
// in sequence, and it records every call. Use it to test a machine and its
// actions under the real [stagefsm.Run], or to drive Run itself.
//
// # Scripting
//
// [Supervisor.In] and [Supervisor.When] script the steps for a state (or
// the states a predicate accepts); [Supervisor.Script] appends steps to a
// sequence. A dispatch uses the next step of the first rule, in the order
// the rules were added, that accepts the state and has steps left; if none
// has, the next step of the sequence. When no step is left at all, the
// dispatch fails the test (once, with t.Errorf) and returns an error
// wrapping [ErrScriptExhausted], which Run routes through the machine.
//
// When the test ends, a Supervisor fails it if scripted steps were never
// used (steps marked [Step.Forever] excepted), listing them.
//
// # Recording
//
// [Supervisor.Calls], [Supervisor.States], [Supervisor.Failures] and
// [Supervisor.Completions] report the calls Run made. A Supervisor is safe
// for concurrent use: it may be scripted and inspected while Run runs it,
// and after Run returns.
//
// Name returns "stagefsmtest". EventForActionError
// returns the failure function's event; WriteCompletionEvent returns the
// error set with [Supervisor.CompleteWith] (nil by default). A Supervisor
// has no control policy and no stop event; to test a stage under
// [stagefsm.Start] with them, embed the *Supervisor in a type that adds
// ControlMode and ControlClosed ([stagefsm.Controlled]) or StopEvent
// ([stagefsm.Stoppable]).
type Supervisor[S comparable, E, C any, A stagefsm.Action[C]] struct {
	t       testing.TB
	build   func(initial S) (stagefsm.Machine[S, E, C, A], error)
	failure func(err error) E

	mu            sync.Mutex
	rules         []*rule[S, E]
	seq           script[E]
	states        []S
	failures      []error
	completions   int
	completionErr error
	exhausted     bool
}

// NewSupervisor returns a Supervisor with no steps scripted. Its
// BuildStateMachine returns build(initial), and its EventForActionError
// returns failure(err). t is the test the Supervisor fails when its script
// runs out or is not used up; a nil t reports nothing. A nil build or
// failure function is reported by the call that needs it: BuildStateMachine
// returns an error, EventForActionError fails the test and returns the zero
// event.
func NewSupervisor[S comparable, E, C any, A stagefsm.Action[C]](t testing.TB, build func(initial S) (stagefsm.Machine[S, E, C, A], error), failure func(err error) E) *Supervisor[S, E, C, A] {
	s := &Supervisor[S, E, C, A]{t: t, build: build, failure: failure}
	s.seq.desc = "Script"
	if t != nil {
		t.Helper()
		t.Cleanup(s.checkUsed)
	}
	return s
}

// In adds steps for dispatches in the state state (compared with ==);
// calling In again for the same state appends to its steps. It returns s,
// so calls can be chained.
func (s *Supervisor[S, E, C, A]) In(state S, steps ...Step[E]) *Supervisor[S, E, C, A] {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.rules {
		if r.byState && r.state == state {
			r.add(steps)
			return s
		}
	}
	r := &rule[S, E]{match: func(x S) bool { return x == state }, state: state, byState: true}
	r.desc = fmt.Sprintf("In(%v)", state)
	r.add(steps)
	s.rules = append(s.rules, r)
	return s
}

// When adds steps for dispatches in the states match accepts, for states
// that carry data (a Failed{Reason} state). A nil match accepts no state.
// It returns s.
func (s *Supervisor[S, E, C, A]) When(match func(S) bool, steps ...Step[E]) *Supervisor[S, E, C, A] {
	if match == nil {
		match = func(S) bool { return false }
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &rule[S, E]{match: match}
	r.desc = fmt.Sprintf("When(#%d)", len(s.rules)+1)
	r.add(steps)
	s.rules = append(s.rules, r)
	return s
}

// Script appends steps to the sequence used in any state whose own steps
// (see [Supervisor.In], [Supervisor.When]) are used up. It returns s.
func (s *Supervisor[S, E, C, A]) Script(steps ...Step[E]) *Supervisor[S, E, C, A] {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq.add(steps)
	return s
}

// CompleteWith sets the error WriteCompletionEvent returns from now on. It
// returns s.
func (s *Supervisor[S, E, C, A]) CompleteWith(err error) *Supervisor[S, E, C, A] {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.completionErr = err
	return s
}

// Calls returns the number of DispatchState calls so far.
func (s *Supervisor[S, E, C, A]) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.states)
}

// States returns the state of every DispatchState call so far, in order.
func (s *Supervisor[S, E, C, A]) States() []S {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]S(nil), s.states...)
}

// Failures returns the errors passed to EventForActionError so far, in
// order: each a [*stagefsm.DispatchError] or [*stagefsm.ActionError].
func (s *Supervisor[S, E, C, A]) Failures() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.failures...)
}

// Completions returns the number of WriteCompletionEvent calls so far.
func (s *Supervisor[S, E, C, A]) Completions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.completions
}

// Name returns "stagefsmtest".
func (s *Supervisor[S, E, C, A]) Name() string { return "stagefsmtest" }

// BuildStateMachine returns build(initial), or an error if build is nil.
func (s *Supervisor[S, E, C, A]) BuildStateMachine(initial S) (stagefsm.Machine[S, E, C, A], error) {
	if s.build == nil {
		return nil, errors.New("stagefsmtest: NewSupervisor was given a nil build function")
	}
	return s.build(initial)
}

// DispatchState records the call and performs the next scripted step for
// state (see [Supervisor]).
func (s *Supervisor[S, E, C, A]) DispatchState(ctx context.Context, state S, _ C) (stagefsm.Directive[E], error) {
	step, ok := s.next(state)
	if !ok {
		return stagefsm.Directive[E]{}, fmt.Errorf("%w for dispatch %d in state %v", ErrScriptExhausted, s.Calls(), state)
	}
	return step.run(ctx)
}

func (s *Supervisor[S, E, C, A]) next(state S) (Step[E], bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states = append(s.states, state)
	for _, r := range s.rules {
		if r.match(state) {
			if step, ok := r.next(); ok {
				return step, true
			}
		}
	}
	if step, ok := s.seq.next(); ok {
		return step, true
	}
	if !s.exhausted && s.t != nil {
		s.exhausted = true
		s.t.Errorf("stagefsmtest: Supervisor: dispatch %d in state %v: no scripted step left (add one with In, When or Script)",
			len(s.states), state)
	}
	return Step[E]{}, false
}

// EventForActionError records err and returns failure(err).
func (s *Supervisor[S, E, C, A]) EventForActionError(err error) E {
	s.mu.Lock()
	s.failures = append(s.failures, err)
	s.mu.Unlock()
	if s.failure == nil {
		if s.t != nil {
			s.t.Errorf("stagefsmtest: Supervisor: failure routed with no failure function (NewSupervisor was given nil): %v", err)
		}
		var zero E
		return zero
	}
	return s.failure(err)
}

// WriteCompletionEvent records the call and returns the error set with
// [Supervisor.CompleteWith].
func (s *Supervisor[S, E, C, A]) WriteCompletionEvent(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.completions++
	return s.completionErr
}

// checkUsed fails the test if scripted steps were never used.
func (s *Supervisor[S, E, C, A]) checkUsed() {
	s.mu.Lock()
	var unused []string
	for _, r := range s.rules {
		unused = append(unused, r.unused()...)
	}
	unused = append(unused, s.seq.unused()...)
	s.mu.Unlock()
	switch len(unused) {
	case 0:
	case 1:
		s.t.Errorf("stagefsmtest: Supervisor: 1 scripted step never used:\n\t%s", unused[0])
	default:
		s.t.Errorf("stagefsmtest: Supervisor: %d scripted steps never used:\n\t%s", len(unused), strings.Join(unused, "\n\t"))
	}
}

package stagefsmtest

import (
	"context"
	"sync"

	"github.com/stagefsm/stagefsm"
)

// Recorder records what a stage did: the states its machine went through,
// every event the machine handled, the actions made with [NewAction] that
// ran, the failures routed through the machine and the completion calls.
// [Record] feeds it from any supervisor; [NewAction] actions add to it when
// they execute. Check it with [RequireTimeline], [RequireActions],
// [RequireFailures] and [RequireCompletions], or read it with its methods.
//
// The zero Recorder is ready to use. A Recorder is safe for concurrent use:
// it may be read while the stage runs, and every method returns a copy.
type Recorder[S comparable, E any] struct {
	mu          sync.Mutex
	timeline    []S
	transitions []Transition[S, E]
	actions     []ActionRecord
	failures    []Failure[E]
	completions []error
}

// Transition is one call of a machine's Handle: the event, the states before
// and after, the actions Handle returned (in order, not yet executed) and its
// error. When Err is not nil the machine rejected the event; To is then the
// state the machine reported afterwards, which the machine contract says is
// From.
type Transition[S, E any] struct {
	From    S
	Event   E
	To      S
	Actions []any
	Err     error
}

// Failure is one failure routed through the machine: Err is what Run passed
// to EventForActionError (a [*stagefsm.DispatchError] or
// [*stagefsm.ActionError] wrapping the cause) and Event what it returned.
type Failure[E any] struct {
	Err   error
	Event E
}

// ActionRecord is one execution of an [Action]: its name and the error it
// returned. A panicking action is recorded, before it panics, with a
// [*stagefsm.PanicError] holding the panic value (and no stack).
type ActionRecord struct {
	Name string
	Err  error
}

// Timeline returns the states the machine was in, in order: the state it
// was built in, then each state a successful Handle moved it to.
// Consecutive repeats are collapsed, so a self-transition adds nothing; see
// [Recorder.Transitions] for every Handle call.
func (r *Recorder[S, E]) Timeline() []S {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]S(nil), r.timeline...)
}

// Transitions returns every Handle call in order, rejected events included.
func (r *Recorder[S, E]) Transitions() []Transition[S, E] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Transition[S, E](nil), r.transitions...)
}

// Actions returns the executions of actions made with [NewAction] for r, in
// order, failed ones included.
func (r *Recorder[S, E]) Actions() []ActionRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ActionRecord(nil), r.actions...)
}

// Failures returns the failures routed through the machine, in order.
func (r *Recorder[S, E]) Failures() []Failure[E] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Failure[E](nil), r.failures...)
}

// Completions returns the result of each WriteCompletionEvent call, in
// order (nil for a successful one). Run calls it at most once per run.
func (r *Recorder[S, E]) Completions() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.completions...)
}

// Record returns a supervisor that behaves exactly as h and records into
// rec every state its machines enter, every event they handle, every failure
// routed and every completion call. Pass the result to [stagefsm.Run] (or
// [NewStepper]) in place of h.
//
// The result works with [stagefsm.Start] as well, and keeps the optional
// interfaces Run and Start look for: it is [stagefsm.Stoppable] when h is,
// it forwards h's [stagefsm.Controlled] policy (and behaves as having none
// when h has none), and the machines it builds keep their
// [stagefsm.Timed] timeouts. It calls h's methods from Run's goroutine as
// Run would, plus one extra State call before and after each Handle; panics
// pass through unchanged. A nil h gives a nil supervisor, which Run rejects;
// a nil rec gives h itself.
func Record[S comparable, E, C any, A stagefsm.Action[C]](rec *Recorder[S, E], h stagefsm.HandlerSupervised[S, E, C, A]) stagefsm.HandlerSupervised[S, E, C, A] {
	if rec == nil {
		return h
	}
	return wrap(h, probe[S, E](rec))
}

func (r *Recorder[S, E]) enter(s S) {
	if n := len(r.timeline); n == 0 || r.timeline[n-1] != s {
		r.timeline = append(r.timeline, s)
	}
}

func (r *Recorder[S, E]) built(state S) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.enter(state)
}

func (r *Recorder[S, E]) gate(S) error { return nil }

func (r *Recorder[S, E]) dispatched(S, stagefsm.Directive[E], error) {}

func (r *Recorder[S, E]) handled(t Transition[S, E]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.transitions = append(r.transitions, t)
	if t.Err == nil {
		r.enter(t.To)
	}
}

func (r *Recorder[S, E]) routed(f Failure[E]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, f)
}

func (r *Recorder[S, E]) completed(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.completions = append(r.completions, err)
}

func (r *Recorder[S, E]) executed(a ActionRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.actions = append(r.actions, a)
}

// actionLog is where an Action records its executions.
type actionLog interface{ executed(ActionRecord) }

// Action is a recording action for machines under test: executing it adds
// an [ActionRecord] to its [Recorder], then returns the scripted error or
// panics with the scripted value. Use it as the action type A of a test
// machine, and check the executions with [RequireActions].
//
// An Action is a small immutable value: [Action.Fails] and [Action.Panics]
// return modified copies. The zero Action has an empty name, records
// nothing and succeeds.
type Action[C any] struct {
	name   string
	log    actionLog
	err    error
	panics bool
	value  any
}

// NewAction returns an action named name that records its executions in
// rec and succeeds. C is the stage context type of the machine, which
// cannot be inferred: write NewAction[*MyCtx](rec, "Cleanup"). A nil rec
// records nothing.
func NewAction[C any, S comparable, E any](rec *Recorder[S, E], name string) Action[C] {
	a := Action[C]{name: name}
	if rec != nil {
		a.log = rec
	}
	return a
}

// Fails returns a copy of a that returns err when executed (after recording
// the execution). Fails(nil) makes it succeed again.
func (a Action[C]) Fails(err error) Action[C] {
	a.err, a.panics, a.value = err, false, nil
	return a
}

// Panics returns a copy of a that panics with v when executed (after
// recording the execution).
func (a Action[C]) Panics(v any) Action[C] {
	a.err, a.panics, a.value = nil, true, v
	return a
}

// Execute records the execution, then returns the scripted error or panics
// with the scripted value. It does not look at ctx or c.
func (a Action[C]) Execute(context.Context, C) error {
	if a.panics {
		if a.log != nil {
			a.log.executed(ActionRecord{Name: a.name, Err: &stagefsm.PanicError{Value: a.value}})
		}
		panic(a.value)
	}
	if a.log != nil {
		a.log.executed(ActionRecord{Name: a.name, Err: a.err})
	}
	return a.err
}

// String returns the action's name.
func (a Action[C]) String() string { return a.name }

package stagefsmtest

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// The fake handlers for package [github.com/stagefsm/stagefsm/stage]. They
// implement its Source, Transform and Sink interfaces (and the optional
// Opener, Drainer, Flusher and io.Closer) by their method sets alone: this
// package does not import stage, so stage's own tests can use it too.

// fault is what a handler call does besides its normal work: wait, then
// fail or panic.
type fault struct {
	sleep  time.Duration
	err    error
	panics bool
	value  any
}

// apply waits f.sleep (or until ctx is done), then panics or returns f.err.
func (f fault) apply(ctx context.Context) error {
	if f.sleep > 0 {
		t := time.NewTimer(f.sleep)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if f.panics {
		panic(f.value)
	}
	return f.err
}

// hooks records the lifecycle calls of a handler and scripts Open's error.
type hooks struct {
	mu        sync.Mutex
	lifecycle []string
	openErr   error
}

func (h *hooks) hook(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lifecycle = append(h.lifecycle, name)
}

func (h *hooks) open() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lifecycle = append(h.lifecycle, "Open")
	return h.openErr
}

func (h *hooks) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.lifecycle...)
}

// faults are the faults scripted per call number.
type faults map[int]fault

func (fs *faults) edit(n int, f func(*fault)) {
	if n < 1 {
		return
	}
	if *fs == nil {
		*fs = make(faults)
	}
	x := (*fs)[n]
	f(&x)
	(*fs)[n] = x
}

// Source is a fake [github.com/stagefsm/stagefsm/stage.Source]: each call
// of Next performs the next scripted call — emit items, fail, panic, or
// sleep — and once the script is used up Next reports end of input
// (io.EOF). Script it with [Source.Emit], [Source.Fail], [Source.Panic] and
// [Source.Sleep], in the order the calls happen.
//
// It records what it emitted, how often Next was called and its lifecycle
// hooks (Open, Close); it is safe to script and inspect while a pipeline
// runs it.
type Source[T any] struct {
	hooks
	script  []sourceCall[T]
	calls   int
	emitted []T
}

type sourceCall[T any] struct {
	items []T
	fault fault
}

// NewSource returns a Source with an empty script: its first Next reports
// end of input.
func NewSource[T any]() *Source[T] { return &Source[T]{} }

func (s *Source[T]) add(c sourceCall[T]) *Source[T] {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, c)
	return s
}

// Emit adds a call that emits items (in one call, so they may share a
// batch) and returns nil. It returns s.
func (s *Source[T]) Emit(items ...T) *Source[T] {
	return s.add(sourceCall[T]{items: append([]T(nil), items...)})
}

// Fail adds a call that returns err. The source stage turns a plain error
// into one error item that ends dead-lettered, and fails on an error made
// with stage.Fatal. A nil err makes a call that emits nothing. It returns
// s.
func (s *Source[T]) Fail(err error) *Source[T] {
	return s.add(sourceCall[T]{fault: fault{err: err}})
}

// Panic adds a call that panics with v; the source stage recovers it as a
// non-fatal error. It returns s.
func (s *Source[T]) Panic(v any) *Source[T] {
	return s.add(sourceCall[T]{fault: fault{panics: true, value: v}})
}

// Sleep adds a call that waits d, emits nothing and returns nil: a slow
// input. If the stage's context is done first, the call returns ctx.Err().
// In a [testing/synctest] bubble the wait takes no real time. It returns s.
func (s *Source[T]) Sleep(d time.Duration) *Source[T] {
	return s.add(sourceCall[T]{fault: fault{sleep: d}})
}

// OpenFails makes Open return err. It returns s.
func (s *Source[T]) OpenFails(err error) *Source[T] {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.openErr = err
	return s
}

// Next performs the next scripted call, or returns io.EOF when none is
// left.
func (s *Source[T]) Next(ctx context.Context, emit func(T)) error {
	s.mu.Lock()
	s.calls++
	if len(s.script) == 0 {
		s.mu.Unlock()
		return io.EOF
	}
	c := s.script[0]
	s.script = s.script[1:]
	s.emitted = append(s.emitted, c.items...)
	s.mu.Unlock()
	for _, it := range c.items {
		emit(it)
	}
	return c.fault.apply(ctx)
}

// Open records the call and returns the error set with
// [Source.OpenFails].
func (s *Source[T]) Open(context.Context) error { return s.open() }

// Close records the call and returns nil.
func (s *Source[T]) Close() error {
	s.hook("Close")
	return nil
}

// Calls returns how many times Next was called.
func (s *Source[T]) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Emitted returns the items emitted so far, in order.
func (s *Source[T]) Emitted() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]T(nil), s.emitted...)
}

// Lifecycle returns the hooks called so far, in order: "Open", "Close".
func (s *Source[T]) Lifecycle() []string { return s.hooks.list() }

// Transform is a fake [github.com/stagefsm/stagefsm/stage.Transform]: its
// Process maps each item with a function and emits the result, except for
// the calls scripted by number (1 for the first call) with
// [Transform.FailAt], [Transform.PanicAt] and [Transform.SleepAt].
//
// It records the items it delivered (processed without error), how often
// Process was called and its lifecycle hooks (Open, Drain, Close); it is
// safe to script and inspect while a pipeline runs it.
type Transform[I, O any] struct {
	hooks
	f         func(I) O
	faults    faults
	calls     int
	delivered []I
}

// NewTransform returns a Transform that emits f(in) for each item in. A
// nil f makes every call fail with an error.
func NewTransform[I, O any](f func(in I) O) *Transform[I, O] {
	return &Transform[I, O]{f: f}
}

// FailAt makes the n-th call of Process return err (after any sleep
// scripted for it), emitting nothing. The transform stage passes the item
// on as an error item, or fails on an error made with stage.Fatal. n < 1 is
// ignored. It returns t.
func (t *Transform[I, O]) FailAt(n int, err error) *Transform[I, O] {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.faults.edit(n, func(f *fault) { f.err, f.panics, f.value = err, false, nil })
	return t
}

// PanicAt makes the n-th call of Process panic with v (after any sleep
// scripted for it); the stage recovers it as a non-fatal error. n < 1 is
// ignored. It returns t.
func (t *Transform[I, O]) PanicAt(n int, v any) *Transform[I, O] {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.faults.edit(n, func(f *fault) { f.err, f.panics, f.value = nil, true, v })
	return t
}

// SleepAt makes the n-th call of Process wait d first; if the stage's
// context is done first, the call returns ctx.Err(). n < 1 is ignored. It
// returns t.
func (t *Transform[I, O]) SleepAt(n int, d time.Duration) *Transform[I, O] {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.faults.edit(n, func(f *fault) { f.sleep = d })
	return t
}

// OpenFails makes Open return err. It returns t.
func (t *Transform[I, O]) OpenFails(err error) *Transform[I, O] {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.openErr = err
	return t
}

var errNilFunc = errors.New("stagefsmtest: NewTransform was given a nil function")

// Process performs the call's scripted fault, if any, else emits f(in).
func (t *Transform[I, O]) Process(ctx context.Context, in I, emit func(O)) error {
	t.mu.Lock()
	t.calls++
	f := t.faults[t.calls]
	t.mu.Unlock()
	if err := f.apply(ctx); err != nil {
		return err
	}
	if t.f == nil {
		return errNilFunc
	}
	emit(t.f(in))
	t.mu.Lock()
	t.delivered = append(t.delivered, in)
	t.mu.Unlock()
	return nil
}

// Open records the call and returns the error set with
// [Transform.OpenFails].
func (t *Transform[I, O]) Open(context.Context) error { return t.open() }

// Drain records the call, emits nothing and returns nil.
func (t *Transform[I, O]) Drain(context.Context, func(O)) error {
	t.hook("Drain")
	return nil
}

// Close records the call and returns nil.
func (t *Transform[I, O]) Close() error {
	t.hook("Close")
	return nil
}

// Calls returns how many times Process was called.
func (t *Transform[I, O]) Calls() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.calls
}

// Delivered returns the items processed without error, in order.
func (t *Transform[I, O]) Delivered() []I {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]I(nil), t.delivered...)
}

// Lifecycle returns the hooks called so far, in order: "Open", "Drain",
// "Close".
func (t *Transform[I, O]) Lifecycle() []string { return t.hooks.list() }

// Sink is a fake [github.com/stagefsm/stagefsm/stage.Sink]: its Consume
// accepts every item, except for the calls scripted by number (1 for the
// first call) with [Sink.FailAt], [Sink.PanicAt] and [Sink.SleepAt].
//
// It records the items it delivered (consumed without error), how often
// Consume was called and its lifecycle hooks (Open, Flush, Close); it is
// safe to script and inspect while a pipeline runs it.
type Sink[T any] struct {
	hooks
	faults    faults
	calls     int
	delivered []T
}

// NewSink returns a Sink that accepts every item.
func NewSink[T any]() *Sink[T] { return &Sink[T]{} }

// FailAt makes the n-th call of Consume return err (after any sleep
// scripted for it). The sink stage dead-letters the item, or fails on an
// error made with stage.Fatal. n < 1 is ignored. It returns s.
func (s *Sink[T]) FailAt(n int, err error) *Sink[T] {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.edit(n, func(f *fault) { f.err, f.panics, f.value = err, false, nil })
	return s
}

// PanicAt makes the n-th call of Consume panic with v (after any sleep
// scripted for it); the stage recovers it and dead-letters the item. n < 1
// is ignored. It returns s.
func (s *Sink[T]) PanicAt(n int, v any) *Sink[T] {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.edit(n, func(f *fault) { f.err, f.panics, f.value = nil, true, v })
	return s
}

// SleepAt makes the n-th call of Consume wait d first: a slow consumer.
// If the stage's context is done first, the call returns ctx.Err(). n < 1
// is ignored. It returns s.
func (s *Sink[T]) SleepAt(n int, d time.Duration) *Sink[T] {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.edit(n, func(f *fault) { f.sleep = d })
	return s
}

// OpenFails makes Open return err. It returns s.
func (s *Sink[T]) OpenFails(err error) *Sink[T] {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.openErr = err
	return s
}

// Consume performs the call's scripted fault, if any, else accepts in.
func (s *Sink[T]) Consume(ctx context.Context, in T) error {
	s.mu.Lock()
	s.calls++
	f := s.faults[s.calls]
	s.mu.Unlock()
	if err := f.apply(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	s.delivered = append(s.delivered, in)
	s.mu.Unlock()
	return nil
}

// Open records the call and returns the error set with [Sink.OpenFails].
func (s *Sink[T]) Open(context.Context) error { return s.open() }

// Flush records the call and returns nil.
func (s *Sink[T]) Flush(context.Context) error {
	s.hook("Flush")
	return nil
}

// Close records the call and returns nil.
func (s *Sink[T]) Close() error {
	s.hook("Close")
	return nil
}

// Calls returns how many times Consume was called.
func (s *Sink[T]) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Delivered returns the items consumed without error, in order.
func (s *Sink[T]) Delivered() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]T(nil), s.delivered...)
}

// Lifecycle returns the hooks called so far, in order: "Open", "Flush",
// "Close".
func (s *Sink[T]) Lifecycle() []string { return s.hooks.list() }

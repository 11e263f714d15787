package stage_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/stagefsm/stagefsm/stage"
)

var (
	errBad   = errors.New("bad item")
	errFatal = errors.New("disk on fire")
)

// numbers is a source of the ints 1..n (n < 0: endless). It is scripted:
// bad(i) makes the call for i return a non-fatal error instead of emitting
// it, and fatalAt fails the stage on item fatalAt.
type numbers struct {
	n       int
	bad     func(i int) bool
	fatalAt int
	i       int
	closed  atomic.Int32
	opened  atomic.Int32
	openErr error
}

func (s *numbers) Open(context.Context) error { s.opened.Add(1); return s.openErr }
func (s *numbers) Close() error               { s.closed.Add(1); return nil }

func (s *numbers) Next(_ context.Context, emit func(int)) error {
	if s.i == s.n {
		return io.EOF
	}
	s.i++
	switch {
	case s.i == s.fatalAt:
		return stage.Fatal(errFatal)
	case s.bad != nil && s.bad(s.i):
		return errBad
	}
	emit(s.i)
	return nil
}

// mapper is a transform scripted per input: fail returns the error to
// return for an input (nil: emit f(in)); it counts its calls.
type mapper[I, O any] struct {
	f      func(I) O
	fail   func(I) error
	calls  atomic.Int64
	closed atomic.Int32
}

func (m *mapper[I, O]) Close() error { m.closed.Add(1); return nil }

func (m *mapper[I, O]) Process(_ context.Context, in I, emit func(O)) error {
	m.calls.Add(1)
	if m.fail != nil {
		if err := m.fail(in); err != nil {
			return err
		}
	}
	emit(m.f(in))
	return nil
}

// collector is a sink that records what it consumes; fail scripts errors.
type collector[T any] struct {
	fail    func(T) error
	onItem  func(n int) // called after each consumed item with the count
	mu      sync.Mutex
	got     []T
	flushed atomic.Int32
	closed  atomic.Int32
}

func (c *collector[T]) Consume(_ context.Context, in T) error {
	if c.fail != nil {
		if err := c.fail(in); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.got = append(c.got, in)
	n := len(c.got)
	c.mu.Unlock()
	if c.onItem != nil {
		c.onItem(n)
	}
	return nil
}

func (c *collector[T]) Flush(context.Context) error { c.flushed.Add(1); return nil }
func (c *collector[T]) Close() error                { c.closed.Add(1); return nil }

func (c *collector[T]) items() []T {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]T(nil), c.got...)
}

// letters collects dead letters.
type letters struct {
	mu  sync.Mutex
	all []stage.Item[any]
}

func (l *letters) add(it stage.Item[any]) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, it)
}

func (l *letters) items() []stage.Item[any] {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]stage.Item[any](nil), l.all...)
}

func double(i int) int { return 2 * i }

// completions returns, per stage name ("" for the pipeline), the completion
// entries of a journal.
func completions(entries []stage.Entry) map[string][]stage.Entry {
	m := map[string][]stage.Entry{}
	for _, e := range entries {
		if e.Kind == stage.EntryCompleted {
			m[e.Stage] = append(m[e.Stage], e)
		}
	}
	return m
}

// kinds returns the state kinds of a timeline.
func kinds(steps []stage.Step) []stage.StateKind {
	out := make([]stage.StateKind, len(steps))
	for i, s := range steps {
		out[i] = s.State.Kind
	}
	return out
}

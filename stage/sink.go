package stage

import (
	"context"
	"errors"
	"time"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/checkpoint"
)

// sinkCore runs a [Sink] on each ok item of its input batches and
// dead-letters the error items.
type sinkCore[T any] struct {
	u       *unit
	h       Sink[T]
	flusher Flusher // nil if the handler has no Flush hook
	in      input[T]

	held []Item[T] // the input batch being consumed
	next int       // index in held of the next item
}

func newSinkCore[T any](u *unit, h Sink[T], in *edge[T]) *sinkCore[T] {
	s := &sinkCore[T]{u: u, h: h, in: input[T]{edge: in}}
	s.flusher, _ = h.(Flusher)
	return s
}

func (s *sinkCore[T]) handler() any { return s.h }

func (s *sinkCore[T]) open(ctx context.Context) error {
	if o, ok := s.h.(Opener); ok {
		return o.Open(ctx)
	}
	return nil
}

// consumeOK runs the handler on the ok items of b from s.next on, until a
// call fails (its error returned, s.next at its item), an error item comes
// or b ends. One recover covers the whole run of calls: a panic is the
// failure of the call it happened in.
func (s *sinkCore[T]) consumeOK(ctx context.Context, b []Item[T]) (delivered uint64, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = newPanicError(r)
		}
	}()
	for s.next < len(b) && b[s.next].Err == nil {
		if err := s.h.Consume(ctx, b[s.next].Payload); err != nil {
			return delivered, err
		}
		delivered++
		s.next++
	}
	return delivered, nil
}

func (s *sinkCore[T]) running(ctx context.Context) (stagefsm.Directive[event], error) {
	return s.consume(ctx, evReceivedEOF)
}

func (s *sinkCore[T]) draining(ctx context.Context) (stagefsm.Directive[event], error) {
	if s.in.exhausted() {
		return stagefsm.Transition(event{kind: evDrainComplete}), nil
	}
	return s.consume(ctx, evDrainComplete)
}

// consume waits for one input batch and consumes it. At end of input it
// returns the transition eof.
func (s *sinkCore[T]) consume(ctx context.Context, eof eventKind) (stagefsm.Directive[event], error) {
	b, ok, err := s.in.receive(ctx, s.u)
	if err != nil {
		return stagefsm.Directive[event]{}, err
	}
	if !ok {
		return stagefsm.Transition(event{kind: eof}), nil
	}
	if s.u.lat != nil {
		defer s.u.lat.since(time.Now())
	}
	s.held, s.next = b, 0
	var delivered uint64
	defer func() { s.u.stats.delivered.Add(delivered) }()
	for s.next < len(b) {
		n, err := s.consumeOK(ctx, b)
		delivered += n
		if s.next == len(b) {
			break
		}
		it := &b[s.next]
		if err != nil {
			if ctx.Err() != nil { // aborted: the item stays held, for the sweep
				return stagefsm.Directive[event]{}, err
			}
			it.Err = &ItemError{Stage: s.u.name, Err: err}
			if errors.Is(err, ErrFatal) {
				return stagefsm.Directive[event]{}, err
			}
		}
		deadLetter(s.u, *it, nil)
		s.next++
	}
	s.held = nil
	s.in.put(b)
	return stagefsm.Continue[event](), nil
}

func (s *sinkCore[T]) finish(ctx context.Context) error {
	if s.flusher != nil {
		return s.flusher.Flush(ctx)
	}
	return nil
}

func (s *sinkCore[T]) closeOutput() {}

func (s *sinkCore[T]) shed(ctx context.Context, stop <-chan struct{}, cause error, parkable bool) (bool, error) {
	return s.in.shed(ctx, s.u, stop, cause, parkable)
}

func (s *sinkCore[T]) park() {
	s.held, s.next = parkHeld(s.u, &s.in, s.held, s.next)
}

func (s *sinkCore[T]) sweepHeld(cause error) {
	if s.held != nil {
		for _, it := range s.held[s.next:] {
			deadLetter(s.u, it, cause)
		}
		s.held = nil
	}
	s.in.sweepParked(s.u, cause)
}

func (s *sinkCore[T]) sweep(cause error) {
	s.sweepHeld(cause)
	s.in.sweep(s.u, cause)
}

func (s *sinkCore[T]) writers() int { return int(s.in.writers.Load()) }

// capture flushes the sink and returns its position, if it is [Resumable].
func (s *sinkCore[T]) capture(ctx context.Context) (checkpoint.StageUpdate, error) {
	var part checkpoint.StageUpdate
	err := safeCall(func() error {
		if s.flusher != nil {
			if err := s.flusher.Flush(ctx); err != nil {
				return err
			}
		}
		if r, ok := s.h.(Resumable); ok {
			pos, err := r.Position()
			if err == nil && pos == nil {
				pos = []byte{}
			}
			part.Position = pos
			return err
		}
		return nil
	})
	return part, err
}

func (s *sinkCore[T]) forward(context.Context, uint64) error { return nil }

func (s *sinkCore[T]) restore(checkpoint.Stage) error { return nil }

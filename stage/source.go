package stage

import (
	"context"
	"errors"
	"fmt"
	"io"

	"go.uber.org/zap"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/checkpoint"
)

// sourceCore runs a [Source]: it fills a batch by calling Next and sends
// it downstream.
type sourceCore[T any] struct {
	u   *unit
	h   Source[T]
	out *edge[T]

	cur         []Item[T] // the batch being filled or sent: held by the stage
	seq         uint64
	unpublished uint64 // items emitted but not yet added to the counters
	eof         bool
	outClosed   bool
	emitFn      func(T)
	pausedFor   uint64 // the latest cut the source paused for
}

func newSourceCore[T any](u *unit, h Source[T], out *edge[T]) *sourceCore[T] {
	s := &sourceCore[T]{u: u, h: h, out: out}
	s.emitFn = s.emit
	return s
}

func (s *sourceCore[T]) handler() any { return s.h }

func (s *sourceCore[T]) emit(v T) {
	s.seq++
	s.unpublished++
	s.cur = append(s.cur, Item[T]{Payload: v, Origin: s.u.name, Seq: s.seq})
}

func (s *sourceCore[T]) open(ctx context.Context) error {
	if o, ok := s.h.(Opener); ok {
		return o.Open(ctx)
	}
	return nil
}

// fill calls Next until the batch is full, a call emits nothing (empty)
// or a call fails (its error returned). One recover covers the whole run
// of calls: a panic is the failure of the call it happened in.
func (s *sourceCore[T]) fill(ctx context.Context) (empty bool, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = newPanicError(v)
		}
	}()
	for len(s.cur) < s.out.batch {
		n := len(s.cur)
		if err := s.h.Next(ctx, s.emitFn); err != nil {
			return false, err
		}
		if len(s.cur) == n {
			return true, nil
		}
	}
	return false, nil
}

// running fills one batch and sends it. A call that emits nothing ends the
// batch early; when the whole dispatch emitted nothing the stage idles (the
// loop's backoff) rather than spin on a source that has nothing yet.
func (s *sourceCore[T]) running(ctx context.Context) (stagefsm.Directive[event], error) {
	if ck := s.u.p.ck; ck != nil {
		s.commitNow(ctx)
		if id := ck.pauseID.Load(); id > s.pausedFor {
			s.pausedFor = id
			return s.pause(ctx, ck, id)
		}
	}
	if s.cur == nil {
		s.cur = s.out.get()
	}
	for len(s.cur) < s.out.batch && !s.eof {
		empty, err := s.fill(ctx)
		switch {
		case err == nil:
			if empty {
				goto send
			}
		case errors.Is(err, io.EOF):
			s.eof = true
		case ctx.Err() != nil:
			return stagefsm.Directive[event]{}, err
		case errors.Is(err, ErrFatal):
			// What the source emitted before the failure goes on.
			if ferr := s.flush(ctx); ferr != nil {
				return stagefsm.Directive[event]{}, ferr
			}
			return stagefsm.Directive[event]{}, err
		default: // a bad record: one error item carries it downstream
			s.seq++
			s.unpublished++
			s.cur = append(s.cur, Item[T]{Err: &ItemError{Stage: s.u.name, Err: err}, Origin: s.u.name, Seq: s.seq})
		}
	}
send:
	if len(s.cur) == 0 && !s.eof {
		return stagefsm.Idle[event](), nil
	}
	if err := s.flush(ctx); err != nil {
		return stagefsm.Directive[event]{}, err
	}
	if s.eof {
		return stagefsm.Transition(event{kind: evCompleted}), nil
	}
	return stagefsm.Continue[event](), nil
}

// draining sends what the source holds, then completes.
func (s *sourceCore[T]) draining(ctx context.Context) (stagefsm.Directive[event], error) {
	if err := s.flush(ctx); err != nil {
		return stagefsm.Directive[event]{}, err
	}
	return stagefsm.Transition(event{kind: evCompleted}), nil
}

// flush sends the held batch, if any.
func (s *sourceCore[T]) flush(ctx context.Context) error {
	if len(s.cur) == 0 {
		return nil
	}
	s.publish()
	if err := s.out.send(ctx, s.cur); err != nil {
		return err
	}
	s.u.stats.out.Add(uint64(len(s.cur)))
	s.cur = nil
	return nil
}

func (s *sourceCore[T]) publish() {
	if s.unpublished > 0 {
		s.u.stats.emitted.Add(s.unpublished)
		s.unpublished = 0
	}
}

func (s *sourceCore[T]) finish(context.Context) error { return nil }

func (s *sourceCore[T]) closeOutput() {
	if !s.outClosed {
		s.outClosed = true
		s.out.close()
	}
}

// shed reports done at once: a source has no input.
func (s *sourceCore[T]) shed(context.Context, <-chan struct{}, error, bool) (bool, error) {
	return true, nil
}

// park keeps the batch being filled, for the next incarnation to send.
func (s *sourceCore[T]) park() {}

func (s *sourceCore[T]) sweepHeld(cause error) {
	s.publish()
	for _, it := range s.cur {
		deadLetter(s.u, it, cause)
	}
	s.cur = nil
}

func (s *sourceCore[T]) sweep(cause error) { s.sweepHeld(cause) }

// pause is the source's part of cut id (see [WithCheckpoint]): it sends
// what it holds, captures its position, and waits, sending the barrier
// when the cut asks, until the cut lets the sources go on.
func (s *sourceCore[T]) pause(ctx context.Context, ck *checkpointer, id uint64) (stagefsm.Directive[event], error) {
	if err := s.flush(ctx); err != nil {
		return stagefsm.Directive[event]{}, err
	}
	part, err := s.capture(ctx)
	k := ck.paused(s.u, id, part, err)
	if k == nil {
		return stagefsm.Continue[event](), nil // the cut was given up
	}
	select {
	case <-k.barrier:
		if err := s.forward(ctx, id); err != nil {
			return stagefsm.Directive[event]{}, err
		}
	case <-k.resume:
		return stagefsm.Continue[event](), nil
	case <-ctx.Done():
		return stagefsm.Directive[event]{}, ctx.Err()
	}
	select {
	case <-k.resume:
		return stagefsm.Continue[event](), nil
	case <-ctx.Done():
		return stagefsm.Directive[event]{}, ctx.Err()
	}
}

// commitNow passes the position of the latest checkpoint stored to a
// source that is a [Committer].
func (s *sourceCore[T]) commitNow(ctx context.Context) {
	pos := s.u.commitPos.Swap(nil)
	if pos == nil {
		return
	}
	c, ok := s.h.(Committer)
	if !ok {
		return
	}
	if err := safeCall(func() error { return c.Commit(ctx, *pos) }); err != nil {
		s.u.p.opts.logger.Warn("stage: a source's commit failed; the next one covers its input",
			zap.String("stage", s.u.name), zap.Error(err))
	}
}

func (s *sourceCore[T]) prepare() error {
	if _, ok := s.h.(Resumable); !ok {
		return fmt.Errorf("the source %T is not a stage.Resumable: it cannot go back to a checkpoint's position", s.h)
	}
	return nil
}

func (s *sourceCore[T]) writers() int { return 0 }

func (s *sourceCore[T]) capture(context.Context) (checkpoint.StageUpdate, error) {
	var pos []byte
	err := safeCall(func() error {
		var err error
		pos, err = s.h.(Resumable).Position()
		return err
	})
	if err == nil && pos == nil {
		pos = []byte{} // a position, if an empty one: nil would keep the last
	}
	return checkpoint.StageUpdate{Position: pos, Set: seqUpdate(s.seq)}, err
}

func (s *sourceCore[T]) forward(ctx context.Context, id uint64) error {
	return s.out.send(ctx, barrierBatch[T](id))
}

func (s *sourceCore[T]) restore(st checkpoint.Stage) error { return restoreSeq(st, &s.seq) }

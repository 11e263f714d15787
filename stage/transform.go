package stage

import (
	"context"
	"errors"

	"github.com/stagefsm/stagefsm"
)

// transformCore runs a [Transform] on each ok item of its input batches
// and sends the outputs, with the error items it passes on, downstream.
type transformCore[I, O any] struct {
	u       *unit
	h       Transform[I, O]
	drainer Drainer[O] // nil if the handler has no Drain hook
	in      *edge[I]
	out     *edge[O]

	held        []Item[I] // the input batch being processed
	next        int       // index in held of the next item to process
	cur         []Item[O] // outputs not yet sent
	seq         uint64
	unpublished uint64 // emitted but not yet added to the counters
	inputDone   bool
	outClosed   bool
	emitFn      func(O)
}

func newTransformCore[I, O any](u *unit, h Transform[I, O], in *edge[I], out *edge[O]) *transformCore[I, O] {
	t := &transformCore[I, O]{u: u, h: h, in: in, out: out}
	t.drainer, _ = h.(Drainer[O])
	t.emitFn = t.emit
	return t
}

func (t *transformCore[I, O]) handler() any { return t.h }

func (t *transformCore[I, O]) emit(v O) {
	if t.cur == nil {
		t.cur = t.out.get()
	}
	t.seq++
	t.unpublished++
	t.cur = append(t.cur, Item[O]{Payload: v, Origin: t.u.name, Seq: t.seq})
}

func (t *transformCore[I, O]) open(ctx context.Context) error {
	if o, ok := t.h.(Opener); ok {
		return o.Open(ctx)
	}
	return nil
}

func (t *transformCore[I, O]) call(ctx context.Context, v I) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = newPanicError(r)
		}
	}()
	return t.h.Process(ctx, v, t.emitFn)
}

func (t *transformCore[I, O]) running(ctx context.Context) (stagefsm.Directive[event], error) {
	return t.consume(ctx, evReceivedEOF)
}

func (t *transformCore[I, O]) draining(ctx context.Context) (stagefsm.Directive[event], error) {
	if t.inputDone {
		return stagefsm.Transition(event{kind: evDrainComplete}), nil
	}
	return t.consume(ctx, evDrainComplete)
}

// consume waits for one input batch, processes it and sends the outputs.
// At end of input it returns the transition eof.
func (t *transformCore[I, O]) consume(ctx context.Context, eof eventKind) (stagefsm.Directive[event], error) {
	var b []Item[I]
	var ok bool
	select {
	case b, ok = <-t.in.ch:
	case <-ctx.Done():
		return stagefsm.Directive[event]{}, ctx.Err()
	}
	if !ok {
		t.inputDone = true
		return stagefsm.Transition(event{kind: eof}), nil
	}
	t.held, t.next = b, 0
	t.u.stats.in.Add(uint64(len(b)))
	var delivered uint64
	defer func() { t.u.stats.delivered.Add(delivered) }()
	for t.next < len(b) {
		it := &b[t.next]
		if it.Err == nil {
			mark, seq := len(t.cur), t.seq
			err := t.call(ctx, it.Payload)
			if err == nil {
				delivered++
				t.next++
				if len(t.cur) >= t.out.batch {
					if err := t.flush(ctx); err != nil {
						return stagefsm.Directive[event]{}, err
					}
				}
				continue
			}
			// The outputs of a failed call are discarded: they never existed.
			clear(t.cur[mark:])
			t.cur = t.cur[:mark]
			t.unpublished -= t.seq - seq
			t.seq = seq
			if ctx.Err() != nil { // aborted: the item stays held, for the sweep
				return stagefsm.Directive[event]{}, err
			}
			it.Err = &ItemError{Stage: t.u.name, Err: err}
			if errors.Is(err, ErrFatal) {
				// What the stage produced before the failure goes on; the
				// inputs it did not process are dead-lettered when it fails.
				if ferr := t.flush(ctx); ferr != nil {
					return stagefsm.Directive[event]{}, ferr
				}
				return stagefsm.Directive[event]{}, err
			}
		}
		if t.cur == nil {
			t.cur = t.out.get()
		}
		t.cur = append(t.cur, passOn[I, O](*it)) // an error item passes through
		t.next++
	}
	t.held = nil
	t.in.put(b)
	if err := t.flush(ctx); err != nil {
		return stagefsm.Directive[event]{}, err
	}
	return stagefsm.Continue[event](), nil
}

// flush sends the pending outputs, if any.
func (t *transformCore[I, O]) flush(ctx context.Context) error {
	if len(t.cur) == 0 {
		return nil
	}
	t.publish()
	if err := t.out.send(ctx, t.cur); err != nil {
		return err
	}
	t.u.stats.out.Add(uint64(len(t.cur)))
	t.cur = nil
	return nil
}

func (t *transformCore[I, O]) publish() {
	if t.unpublished > 0 {
		t.u.stats.emitted.Add(t.unpublished)
		t.unpublished = 0
	}
}

// finish runs the Drain hook and sends what it emitted.
func (t *transformCore[I, O]) finish(ctx context.Context) error {
	if t.drainer != nil {
		if err := t.drainer.Drain(ctx, t.emitFn); err != nil {
			return err
		}
	}
	return t.flush(ctx)
}

func (t *transformCore[I, O]) closeOutput() {
	if !t.outClosed {
		t.outClosed = true
		close(t.out.ch)
	}
}

func (t *transformCore[I, O]) failed(ctx context.Context) (bool, error) {
	t.sweepHeld(ErrStageFailed)
	if t.inputDone {
		return true, nil
	}
	select {
	case b, ok := <-t.in.ch:
		if !ok {
			t.inputDone = true
			return true, nil
		}
		t.u.stats.in.Add(uint64(len(b)))
		for _, it := range b {
			deadLetter(t.u, it, ErrStageFailed)
		}
		t.in.put(b)
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

func (t *transformCore[I, O]) sweepHeld(cause error) {
	t.publish()
	if t.held != nil {
		for _, it := range t.held[t.next:] {
			deadLetter(t.u, it, cause)
		}
		t.held = nil
	}
	for _, it := range t.cur {
		deadLetter(t.u, it, cause)
	}
	t.cur = nil
}

func (t *transformCore[I, O]) sweep(cause error) {
	t.sweepHeld(cause)
	sweepInput(t.u, t.in, cause)
}

// sweepInput dead-letters, without waiting, the batches queued on in.
func sweepInput[T any](u *unit, in *edge[T], cause error) {
	for {
		select {
		case b, ok := <-in.ch:
			if !ok {
				return
			}
			u.stats.in.Add(uint64(len(b)))
			for _, it := range b {
				deadLetter(u, it, cause)
			}
		default:
			return
		}
	}
}

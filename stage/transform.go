package stage

import (
	"context"
	"errors"
	"time"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/checkpoint"
)

// transformCore runs a [Transform] on each ok item of its input batches
// and sends the outputs, with the error items it passes on, downstream.
type transformCore[I, O any] struct {
	u       *unit
	h       Transform[I, O]
	drainer Drainer[O] // nil if the handler has no Drain hook
	in      input[I]
	out     *edge[O]

	held        []Item[I] // the input batch being processed
	next        int       // index in held of the next item to process
	cur         []Item[O] // outputs not yet sent
	seq         uint64
	unpublished uint64 // emitted but not yet added to the counters
	mark        int    // where the outputs of the call in progress start in cur
	markSeq     uint64 // seq before that call
	outClosed   bool
	emitFn      func(O)
}

func newTransformCore[I, O any](u *unit, h Transform[I, O], in *edge[I], out *edge[O]) *transformCore[I, O] {
	t := &transformCore[I, O]{u: u, h: h, in: input[I]{edge: in}, out: out}
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

// process runs the handler on the ok items of b from t.next on, until a
// call fails (its error returned, t.next at its item, t.mark and t.markSeq
// where its outputs start), an error item comes, b ends or the outputs
// fill a batch. One recover covers the whole run of calls: a panic is the
// failure of the call it happened in.
func (t *transformCore[I, O]) process(ctx context.Context, b []Item[I]) (delivered uint64, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = newPanicError(r)
		}
	}()
	for t.next < len(b) && b[t.next].Err == nil {
		t.mark, t.markSeq = len(t.cur), t.seq
		if err := t.h.Process(ctx, b[t.next].Payload, t.emitFn); err != nil {
			return delivered, err
		}
		delivered++
		t.next++
		if len(t.cur) >= t.out.batch {
			break
		}
	}
	return delivered, nil
}

func (t *transformCore[I, O]) running(ctx context.Context) (stagefsm.Directive[event], error) {
	return t.consume(ctx, evReceivedEOF)
}

func (t *transformCore[I, O]) draining(ctx context.Context) (stagefsm.Directive[event], error) {
	if t.in.exhausted() {
		return stagefsm.Transition(event{kind: evDrainComplete}), nil
	}
	return t.consume(ctx, evDrainComplete)
}

// consume waits for one input batch, processes it and sends the outputs.
// At end of input it returns the transition eof.
func (t *transformCore[I, O]) consume(ctx context.Context, eof eventKind) (stagefsm.Directive[event], error) {
	b, ok, err := t.in.receive(ctx, t.u)
	if err != nil {
		return stagefsm.Directive[event]{}, err
	}
	if !ok {
		return stagefsm.Transition(event{kind: eof}), nil
	}
	if t.u.lat != nil {
		defer t.u.lat.since(time.Now())
	}
	t.held, t.next = b, 0
	var delivered uint64
	defer func() { t.u.stats.delivered.Add(delivered) }()
	for t.next < len(b) {
		n, err := t.process(ctx, b)
		delivered += n
		if err != nil {
			// The outputs of the failed call are discarded: they never existed.
			clear(t.cur[t.mark:])
			t.cur = t.cur[:t.mark]
			t.unpublished -= t.seq - t.markSeq
			t.seq = t.markSeq
			if ctx.Err() != nil { // aborted: the item stays held, for the sweep
				return stagefsm.Directive[event]{}, err
			}
			b[t.next].Err = &ItemError{Stage: t.u.name, Err: err}
			if errors.Is(err, ErrFatal) {
				// What the stage produced before the failure goes on; the
				// inputs it did not process are dead-lettered when it fails.
				if ferr := t.flush(ctx); ferr != nil {
					return stagefsm.Directive[event]{}, ferr
				}
				return stagefsm.Directive[event]{}, err
			}
		} else if len(t.cur) >= t.out.batch {
			if err := t.flush(ctx); err != nil {
				return stagefsm.Directive[event]{}, err
			}
			continue
		}
		if t.next == len(b) {
			break
		}
		if t.cur == nil {
			t.cur = t.out.get()
		}
		t.cur = append(t.cur, passOn[I, O](b[t.next])) // an error item passes through
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
	if t.drainer != nil && t.u.drainAgain() {
		if err := t.drainer.Drain(ctx, t.emitFn); err != nil {
			return err
		}
	}
	return t.flush(ctx)
}

func (t *transformCore[I, O]) closeOutput() {
	if !t.outClosed {
		t.outClosed = true
		t.out.close()
	}
}

func (t *transformCore[I, O]) shed(ctx context.Context, stop <-chan struct{}, cause error, parkable bool) (bool, error) {
	return t.in.shed(ctx, t.u, stop, cause, parkable)
}

// park keeps the outputs not yet sent, for the next incarnation to send.
func (t *transformCore[I, O]) park() {
	t.held, t.next = parkHeld(t.u, &t.in, t.held, t.next)
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
	t.in.sweepParked(t.u, cause)
}

func (t *transformCore[I, O]) sweep(cause error) {
	t.sweepHeld(cause)
	t.in.sweep(t.u, cause)
}

// parkHeld prepares the input of a failed stage for its restart: the item
// whose handler failed (at next, already marked) is dead-lettered with its
// error, and the rest of the batch, which the stage never tried, is parked
// for the next incarnation. It returns the new held and next: none.
func parkHeld[T any](u *unit, in *input[T], held []Item[T], next int) ([]Item[T], int) {
	if held == nil {
		return nil, 0
	}
	if next < len(held) && held[next].Err != nil {
		deadLetter(u, held[next], nil)
		next++
	}
	in.park(held[next:])
	return nil, 0
}

// stateful is the optional interface of a transform handler whose state
// a checkpoint saves: the handler of an [Aggregate].
type stateful interface {
	saveState() ([]byte, error)
	loadState(b []byte) error
}

// stateKey is the state key of a stateful handler's state.
const stateKey = "state"

func (t *transformCore[I, O]) writers() int { return int(t.in.writers.Load()) }

func (t *transformCore[I, O]) capture(context.Context) (checkpoint.StageUpdate, error) {
	part := checkpoint.StageUpdate{Set: seqUpdate(t.seq)}
	if h, ok := t.h.(stateful); ok {
		b, err := h.saveState()
		if err != nil {
			return part, err
		}
		part.Set[stateKey] = b
	}
	return part, nil
}

func (t *transformCore[I, O]) forward(ctx context.Context, id uint64) error {
	return t.out.send(ctx, barrierBatch[O](id))
}

func (t *transformCore[I, O]) restore(st checkpoint.Stage) error {
	if err := restoreSeq(st, &t.seq); err != nil {
		return err
	}
	if h, ok := t.h.(stateful); ok {
		if b, ok := st.State[stateKey]; ok {
			if err := h.loadState(b); err != nil {
				return &checkpoint.DecodeError{Stage: t.u.name, Key: stateKey, Err: err}
			}
		}
	}
	return nil
}

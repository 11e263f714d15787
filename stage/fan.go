package stage

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/checkpoint"
)

// ErrNoRoute is the cause of the dead letter of an item that a [Route]
// function sent to no branch: it returned an index out of range, or
// panicked (the error then also wraps the
// [*github.com/stagefsm/stagefsm.PanicError]).
var ErrNoRoute = errors.New("stage: the route function named no branch")

// Broadcast adds the stage name, which sends every item of in to each of n
// branches, and returns the n Streams, one per branch. Each branch gets its
// own copy of the item (a copy of the value: payloads that hold pointers,
// maps or slices are shared, and must not be changed by a branch). An item
// counts once per branch: the broadcast delivers it and emits n new ones.
// Backpressure is end to end: a slow branch slows the broadcast and so
// everything that feeds it. n < 1 is an error of [Graph.Build].
func Broadcast[T any](in *Stream[T], name string, n int) []*Stream[T] {
	return fan(in, name, "broadcast", n, nil)
}

// Route adds the stage name, which sends every item of in to exactly one of
// n branches: the one whose index pick returns. An item that pick sends to
// no branch (an index out of range, or a panic) is a per-item failure: it
// is dead-lettered with [ErrNoRoute], never dropped silently. n < 1 or a
// nil pick is an error of [Graph.Build].
func Route[T any](in *Stream[T], name string, n int, pick func(T) int) []*Stream[T] {
	if pick == nil {
		if g := graphOf(in); g != nil {
			g.misuse("route %q has a nil pick function", name)
		}
		pick = func(T) int { return -1 }
	}
	return fan(in, name, "route", n, pick)
}

func fan[T any](in *Stream[T], name, label string, n int, pick func(T) int) []*Stream[T] {
	g := graphOf(in)
	if g == nil {
		g = nilStream[T](name).g
	}
	if n < 1 {
		g.misuse("%s %q has %d branches; it needs at least 1", label, name, n)
		n = 0
	}
	outs := make([]*Stream[T], n)
	edges := make([]*edge[T], n)
	for i := range outs {
		outs[i] = newStream[T](g, name, strconv.Itoa(i))
		edges[i] = outs[i].edge
	}
	u := g.unit(name, kindTransform, label, false)
	u.core = newFanCore(u, read(g, in, name), edges, pick)
	return outs
}

// Merge adds the stage name, which forwards the items of every Stream of ins
// to one Stream, in the order they arrive. It drains once all of its inputs
// have ended. No input is an error of [Graph.Build].
func Merge[T any](name string, ins ...*Stream[T]) *Stream[T] {
	var g *Graph
	for _, in := range ins {
		if g = graphOf(in); g != nil {
			break
		}
	}
	if g == nil {
		s := nilStream[T](name)
		s.g.misuse("merge %q has no input Stream", name)
		return s
	}
	// Every input writes into one edge, which closes when all have ended.
	shared := newEdge[T](&g.p.opts)
	shared.writers.Store(0)
	for _, in := range ins {
		e := read(g, in, name)
		if in == nil || e != in.edge {
			continue // an input the build rejects
		}
		shared.writers.Add(1)
		e.join(shared)
	}
	if shared.writers.Load() == 0 {
		close(shared.ch)
	}
	out := newStream[T](g, name, "")
	u := g.unit(name, kindTransform, "merge", false)
	u.depth = func() int { return len(shared.ch) }
	u.core = newTransformCore[T, T](u, TransformFunc[T, T](func(_ context.Context, v T, emit func(T)) error {
		emit(v)
		return nil
	}), shared, out.edge)
	return out
}

// fanCore is the core of [Broadcast] (pick nil) and [Route]: one input,
// several outputs.
type fanCore[T any] struct {
	u    *unit
	in   input[T]
	outs []*edge[T]
	pick func(T) int

	held      []Item[T] // the input batch being sent
	cur       [][]Item[T]
	seq       uint64
	outClosed bool
}

func newFanCore[T any](u *unit, in *edge[T], outs []*edge[T], pick func(T) int) *fanCore[T] {
	return &fanCore[T]{u: u, in: input[T]{edge: in}, outs: outs, pick: pick, cur: make([][]Item[T], len(outs))}
}

func (f *fanCore[T]) handler() any                 { return nil }
func (f *fanCore[T]) open(context.Context) error   { return nil }
func (f *fanCore[T]) finish(context.Context) error { return nil }

func (f *fanCore[T]) running(ctx context.Context) (stagefsm.Directive[event], error) {
	return f.consume(ctx, evReceivedEOF)
}

func (f *fanCore[T]) draining(ctx context.Context) (stagefsm.Directive[event], error) {
	if f.in.exhausted() {
		return stagefsm.Transition(event{kind: evDrainComplete}), nil
	}
	return f.consume(ctx, evDrainComplete)
}

// choose returns the branch of v, or an error for a route that names none.
func (f *fanCore[T]) choose(v T) (i int, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %w", ErrNoRoute, newPanicError(r))
		}
	}()
	i = f.pick(v)
	if i < 0 || i >= len(f.outs) {
		return 0, fmt.Errorf("%w: index %d of %d branches", ErrNoRoute, i, len(f.outs))
	}
	return i, nil
}

// consume takes one input batch, splits or copies it into one batch per
// branch, and sends those. An error item ends here, dead-lettered: it has
// failed already and no branch would process it.
func (f *fanCore[T]) consume(ctx context.Context, eof eventKind) (stagefsm.Directive[event], error) {
	if f.held == nil {
		b, ok, err := f.in.receive(ctx, f.u)
		if err != nil {
			return stagefsm.Directive[event]{}, err
		}
		if !ok {
			return stagefsm.Transition(event{kind: eof}), nil
		}
		var delivered, emitted uint64
		for _, it := range b {
			if it.Err != nil {
				deadLetter(f.u, it, nil)
				continue
			}
			if f.pick == nil {
				for i := range f.outs {
					f.append(i, it.Payload)
				}
				emitted += uint64(len(f.outs))
				delivered++
				continue
			}
			i, err := f.choose(it.Payload)
			if err != nil {
				deadLetter(f.u, it, err)
				continue
			}
			f.append(i, it.Payload)
			emitted++
			delivered++
		}
		// Emitted before the items become visible, delivered with them
		// (see counters).
		f.u.stats.emitted.Add(emitted)
		f.u.stats.delivered.Add(delivered)
		f.held = b
	}
	for i, b := range f.cur {
		if len(b) == 0 {
			continue
		}
		if err := f.outs[i].send(ctx, b); err != nil {
			return stagefsm.Directive[event]{}, err // what is not sent stays in cur, for the sweep
		}
		f.u.stats.out.Add(uint64(len(b)))
		f.cur[i] = nil
	}
	f.in.put(f.held)
	f.held = nil
	return stagefsm.Continue[event](), nil
}

func (f *fanCore[T]) append(i int, v T) {
	if f.cur[i] == nil {
		f.cur[i] = f.outs[i].get()
	}
	f.seq++
	f.cur[i] = append(f.cur[i], Item[T]{Payload: v, Origin: f.u.name, Seq: f.seq})
}

func (f *fanCore[T]) closeOutput() {
	if !f.outClosed {
		f.outClosed = true
		for _, o := range f.outs {
			o.close()
		}
	}
}

func (f *fanCore[T]) shed(ctx context.Context, stop <-chan struct{}, cause error, parkable bool) (bool, error) {
	return f.in.shed(ctx, f.u, stop, cause, parkable)
}

// park keeps the outputs not sent yet, for the next incarnation to send:
// the input batch they came from was delivered already.
func (f *fanCore[T]) park() {}

func (f *fanCore[T]) sweepHeld(cause error) {
	for i, b := range f.cur {
		for _, it := range b {
			deadLetter(f.u, it, cause)
		}
		f.cur[i] = nil
	}
	if f.held != nil {
		f.in.put(f.held)
		f.held = nil
	}
	f.in.sweepParked(f.u, cause)
}

func (f *fanCore[T]) sweep(cause error) {
	f.sweepHeld(cause)
	f.in.sweep(f.u, cause)
}

func (f *fanCore[T]) writers() int { return int(f.in.writers.Load()) }

func (f *fanCore[T]) capture(context.Context) (checkpoint.StageUpdate, error) {
	return checkpoint.StageUpdate{Set: seqUpdate(f.seq)}, nil
}

func (f *fanCore[T]) forward(ctx context.Context, id uint64) error {
	for _, out := range f.outs {
		if err := out.send(ctx, barrierBatch[T](id)); err != nil {
			return err
		}
	}
	return nil
}

func (f *fanCore[T]) restore(st checkpoint.Stage) error { return restoreSeq(st, &f.seq) }

package stage

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/checkpoint"
)

// ErrUnmatched is the cause of the dead letter of a stream item that a
// [Join] with the [Strict] strategy found no reference for.
var ErrUnmatched = errors.New("stage: no reference matches the stream item")

// JoinStrategy says what a [Join] does with a stream item that no reference
// matches. Every such item is counted in [Stats].Unmatched.
type JoinStrategy uint8

const (
	// Inner drops an unmatched stream item, counted in [Counts].Dropped:
	// dropped is not lost, the count is reported.
	Inner JoinStrategy = iota
	// Left passes an unmatched stream item on, combined with the zero
	// reference and matched false.
	Left
	// Strict fails an unmatched stream item: it is dead-lettered with
	// [ErrUnmatched].
	Strict
)

// String returns "Inner", "Left", "Strict", or "JoinStrategy(n)".
func (s JoinStrategy) String() string {
	switch s {
	case Inner:
		return "Inner"
	case Left:
		return "Left"
	case Strict:
		return "Strict"
	}
	return fmt.Sprintf("JoinStrategy(%d)", uint8(s))
}

// ReferenceMode says how a [Join] reads its reference input.
type ReferenceMode uint8

const (
	// Finite: the join first hydrates — reads the reference input to its
	// end into a table, in state [Hydrating] — and only then reads the
	// stream input. Stream items that arrive meanwhile wait in their
	// bounded channel (backpressure). So the reference and the stream must
	// not come from a common upstream stage, which would block on the full
	// stream side before the reference ends: [Graph.Build] refuses such a
	// graph. A drain ([Pipeline.Drain]) drains the reference's source too:
	// a join still hydrating then enriches with the part of the table it
	// has.
	Finite ReferenceMode = iota
	// Live: the reference input need not end; its items update the table
	// while stream items are enriched, interleaved, and at most
	// [JoinSpec].Fairness reference batches are taken in a row while a
	// stream batch waits. The end of the stream input ends the join: it
	// then asks the pipeline to drain (see [Pipeline.Drain]), so that the
	// reference's source stops too, and takes the reference input to its
	// end.
	Live
)

// defaultFairness is JoinSpec.Fairness when it is not set.
const defaultFairness = 4

// String returns "Finite", "Live", or "ReferenceMode(n)".
func (m ReferenceMode) String() string {
	switch m {
	case Finite:
		return "Finite"
	case Live:
		return "Live"
	}
	return fmt.Sprintf("ReferenceMode(%d)", uint8(m))
}

// JoinSpec configures a [Join] of reference items R and stream items S,
// matched by a key K, into outputs O. The functions are called from the
// join's goroutine, one at a time; a panic in one fails that item (it is
// dead-lettered with the panic), never the stage.
type JoinSpec[K comparable, R, S, O any] struct {
	// RefKey is the key of a reference item. A later reference item with
	// the same key replaces the earlier one. Required.
	RefKey func(R) K
	// StreamKey is the key of a stream item. Required.
	StreamKey func(S) K
	// Combine makes the output of a stream item and its reference; matched
	// is false (and r the zero R) for an unmatched item under [Left].
	// Required.
	Combine func(s S, r R, matched bool) O
	// Strategy: Default: [Inner].
	Strategy JoinStrategy
	// Mode: Default: [Finite].
	Mode ReferenceMode
	// Fairness is, in [Live] mode, how many reference batches the join takes
	// in a row while stream items wait. Default: 4.
	Fairness int
	// Codec encodes the table's references in a checkpoint (see
	// [WithCheckpoint]). Default: [checkpoint.Gob].
	Codec checkpoint.Codec[R]
}

// Join adds the join stage name, which enriches the items of stream with
// the items of ref that share their key (see [JoinSpec], [ReferenceMode]
// and [JoinStrategy]), and returns the Stream of its outputs. Reference
// items end at the join, delivered into its table; a stream item is
// delivered when it is combined, dropped under [Inner] when it matches
// nothing, dead-lettered when it fails. A nil key or combine function is an
// error of [Graph.Build].
func Join[K comparable, R, S, O any](ref *Stream[R], stream *Stream[S], name string, spec JoinSpec[K, R, S, O]) *Stream[O] {
	g := graphOf(ref)
	if g == nil {
		g = graphOf(stream)
	}
	if g == nil {
		return nilStream[O](name)
	}
	if spec.RefKey == nil || spec.StreamKey == nil || spec.Combine == nil {
		g.misuse("join %q needs RefKey, StreamKey and Combine", name)
	}
	if spec.Strategy > Strict || spec.Mode > Live {
		g.misuse("join %q has an unknown strategy (%d) or mode (%d)", name, spec.Strategy, spec.Mode)
	}
	if spec.Fairness < 1 {
		spec.Fairness = defaultFairness
	}
	out := newStream[O](g, name, "")
	u := g.unit(name, kindJoin, kindJoin.String(), false)
	j := &joinCore[K, R, S, O]{u: u, spec: spec, out: out.edge, table: make(map[K]R)}
	j.ref.edge = read(g, ref, name)
	j.str.edge = read(g, stream, name)
	if spec.Mode == Finite && ref != nil && stream != nil && ref.g == g && stream.g == g {
		g.finite = append(g.finite, finiteJoin{name: name, ref: ref.id, stream: stream.id})
	}
	u.core = j
	return out
}

// joinCore is the core of a [Join]: two inputs, one output, a table.
type joinCore[K comparable, R, S, O any] struct {
	u    *unit
	spec JoinSpec[K, R, S, O]
	ref  input[R]
	str  input[S]
	out  *edge[O]

	table     map[K]R
	held      []Item[S] // the stream batch being processed
	next      int
	cur       []Item[O]
	seq       uint64
	streak    int // reference batches taken in a row (Live)
	drainAsk  bool
	outClosed bool
	unmatched atomic.Uint64

	// In a checkpointing pipeline: the keys of the table set since the
	// last capture (Live), or whether the table was captured (Finite).
	dirty      map[K]struct{}
	tableSaved bool
}

func (j *joinCore[K, R, S, O]) handler() any                 { return nil }
func (j *joinCore[K, R, S, O]) open(context.Context) error   { return nil }
func (j *joinCore[K, R, S, O]) finish(context.Context) error { return nil }

// hydrating reads one reference batch into the table; at the end of the
// reference input the join is hydrated. In Live mode there is nothing to
// wait for.
func (j *joinCore[K, R, S, O]) hydrating(ctx context.Context) (stagefsm.Directive[event], error) {
	if j.spec.Mode == Live {
		return stagefsm.Transition(event{kind: evHydrated}), nil
	}
	b, ok, err := j.ref.receive(ctx, j.u)
	if err != nil {
		return stagefsm.Directive[event]{}, err
	}
	if !ok {
		return stagefsm.Transition(event{kind: evHydrated}), nil
	}
	j.absorb(b)
	return stagefsm.Continue[event](), nil
}

func (j *joinCore[K, R, S, O]) running(ctx context.Context) (stagefsm.Directive[event], error) {
	if j.spec.Mode == Live && !j.ref.exhausted() {
		return j.interleave(ctx)
	}
	return j.consume(ctx, evReceivedEOF)
}

// draining finishes the reference input (a finite one that a drain
// interrupted, or a live one whose stream ended) and the stream input.
func (j *joinCore[K, R, S, O]) draining(ctx context.Context) (stagefsm.Directive[event], error) {
	if !j.str.exhausted() && (j.spec.Mode == Live || j.ref.exhausted()) {
		if j.held != nil || j.spec.Mode == Finite || j.ref.exhausted() {
			return j.consume(ctx, evDrainComplete)
		}
		return j.interleave(ctx)
	}
	if !j.ref.exhausted() {
		if j.spec.Mode == Live && !j.drainAsk {
			j.drainAsk = true
			j.u.p.Drain() // the stream ended: the live reference must stop too
		}
		b, ok, err := j.ref.receive(ctx, j.u)
		if err != nil {
			return stagefsm.Directive[event]{}, err
		}
		if ok {
			j.absorb(b)
		}
		return stagefsm.Continue[event](), nil
	}
	if j.str.exhausted() {
		return stagefsm.Transition(event{kind: evDrainComplete}), nil
	}
	return j.consume(ctx, evDrainComplete)
}

// interleave takes a reference batch or a stream batch, whichever comes,
// but no more than Fairness reference batches in a row while a stream
// batch is waiting.
func (j *joinCore[K, R, S, O]) interleave(ctx context.Context) (stagefsm.Directive[event], error) {
	if j.held != nil || len(j.str.parked) > 0 {
		return j.consume(ctx, evReceivedEOF)
	}
	if j.streak >= j.spec.Fairness {
		j.streak = 0
		select {
		case b, ok := <-j.str.ch:
			return j.streamBatch(ctx, b, ok, evReceivedEOF)
		default:
		}
	}
	select {
	case b, ok := <-j.ref.ch:
		if !ok {
			j.ref.ended = true
			return stagefsm.Continue[event](), nil
		}
		if b, _, err := j.ref.take(ctx, j.u, b); b == nil {
			return stagefsm.Continue[event](), err
		}
		j.streak++
		j.absorb(b)
		return stagefsm.Continue[event](), nil
	case b, ok := <-j.str.ch:
		j.streak = 0
		return j.streamBatch(ctx, b, ok, evReceivedEOF)
	case <-ctx.Done():
		return stagefsm.Directive[event]{}, ctx.Err()
	}
}

// streamBatch handles a stream batch received by interleave.
func (j *joinCore[K, R, S, O]) streamBatch(ctx context.Context, b []Item[S], ok bool, eof eventKind) (stagefsm.Directive[event], error) {
	if !ok {
		j.str.ended = true
		return stagefsm.Transition(event{kind: eof}), nil
	}
	b, _, err := j.str.take(ctx, j.u, b)
	if b == nil {
		return stagefsm.Continue[event](), err
	}
	j.held, j.next = b, 0
	return j.process(ctx)
}

// absorb puts a reference batch into the table.
func (j *joinCore[K, R, S, O]) absorb(b []Item[R]) {
	var delivered uint64
	for _, it := range b {
		if it.Err != nil {
			deadLetter(j.u, it, nil)
			continue
		}
		k, err := callKey(j.spec.RefKey, it.Payload)
		if err != nil {
			deadLetter(j.u, it, err)
			continue
		}
		j.table[k] = it.Payload
		if j.dirty != nil {
			j.dirty[k] = struct{}{}
		}
		delivered++
	}
	j.u.stats.delivered.Add(delivered)
	j.ref.put(b)
}

// consume receives one stream batch and processes it.
func (j *joinCore[K, R, S, O]) consume(ctx context.Context, eof eventKind) (stagefsm.Directive[event], error) {
	if j.held == nil {
		b, ok, err := j.str.receive(ctx, j.u)
		if err != nil {
			return stagefsm.Directive[event]{}, err
		}
		if !ok {
			return stagefsm.Transition(event{kind: eof}), nil
		}
		j.held, j.next = b, 0
	}
	return j.process(ctx)
}

// process enriches the held stream batch and sends the outputs.
func (j *joinCore[K, R, S, O]) process(ctx context.Context) (stagefsm.Directive[event], error) {
	var delivered, dropped, emitted uint64
	for ; j.next < len(j.held); j.next++ {
		it := j.held[j.next]
		if it.Err != nil {
			deadLetter(j.u, it, nil)
			continue
		}
		k, err := callKey(j.spec.StreamKey, it.Payload)
		if err != nil {
			deadLetter(j.u, it, err)
			continue
		}
		r, matched := j.table[k]
		if !matched {
			j.unmatched.Add(1)
			switch j.spec.Strategy {
			case Inner:
				dropped++
				continue
			case Strict:
				deadLetter(j.u, it, fmt.Errorf("%w (key %v)", ErrUnmatched, k))
				continue
			}
		}
		o, err := j.combine(it.Payload, r, matched)
		if err != nil {
			deadLetter(j.u, it, err)
			continue
		}
		if j.cur == nil {
			j.cur = j.out.get()
		}
		j.seq++
		j.cur = append(j.cur, Item[O]{Payload: o, Origin: j.u.name, Seq: j.seq})
		emitted++
		delivered++
	}
	j.u.stats.emitted.Add(emitted)
	j.u.stats.delivered.Add(delivered)
	j.u.stats.dropped.Add(dropped)
	j.str.put(j.held)
	j.held, j.next = nil, 0
	if len(j.cur) > 0 {
		if err := j.out.send(ctx, j.cur); err != nil {
			return stagefsm.Directive[event]{}, err // cur stays, for the sweep
		}
		j.u.stats.out.Add(uint64(len(j.cur)))
		j.cur = nil
	}
	return stagefsm.Continue[event](), nil
}

func (j *joinCore[K, R, S, O]) combine(s S, r R, matched bool) (o O, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = newPanicError(v)
		}
	}()
	return j.spec.Combine(s, r, matched), nil
}

// callKey calls a key function, turning a panic into an error.
func callKey[T, K any](key func(T) K, v T) (k K, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("stage: the key function panicked: %w", newPanicError(r))
		}
	}()
	return key(v), nil
}

func (j *joinCore[K, R, S, O]) closeOutput() {
	if !j.outClosed {
		j.outClosed = true
		j.out.close()
	}
}

// shed takes the reference input to its end, then the stream input.
func (j *joinCore[K, R, S, O]) shed(ctx context.Context, stop <-chan struct{}, cause error, parkable bool) (bool, error) {
	if !j.ref.ended {
		done, err := j.ref.shed(ctx, j.u, stop, cause, false)
		if err != nil || !done || !j.ref.ended {
			return done, err
		}
	}
	return j.str.shed(ctx, j.u, stop, cause, parkable)
}

func (j *joinCore[K, R, S, O]) park() {
	j.held, j.next = parkHeld(j.u, &j.str, j.held, j.next)
	j.streak = 0
}

func (j *joinCore[K, R, S, O]) sweepHeld(cause error) {
	if j.held != nil {
		for _, it := range j.held[j.next:] {
			deadLetter(j.u, it, cause)
		}
		j.held, j.next = nil, 0
	}
	for _, it := range j.cur {
		deadLetter(j.u, it, cause)
	}
	j.cur = nil
	j.str.sweepParked(j.u, cause)
	j.ref.sweepParked(j.u, cause)
}

func (j *joinCore[K, R, S, O]) sweep(cause error) {
	j.sweepHeld(cause)
	j.ref.sweep(j.u, cause)
	j.str.sweep(j.u, cause)
}

// unmatchedCount reports Stats.Unmatched.
func (j *joinCore[K, R, S, O]) unmatchedCount() uint64 { return j.unmatched.Load() }

func (j *joinCore[K, R, S, O]) prepare() error {
	if j.spec.Codec == nil {
		j.spec.Codec = checkpoint.Gob[R]{}
	}
	if j.spec.Mode == Live {
		j.dirty = make(map[K]struct{})
	}
	return nil
}

func (j *joinCore[K, R, S, O]) writers() int {
	return int(j.ref.writers.Load()) + int(j.str.writers.Load())
}

// capture returns the table's changes: in Live mode the keys set since
// the last capture, in Finite mode the whole table, once (it is complete
// before the first cut: no cut is taken while a join hydrates).
func (j *joinCore[K, R, S, O]) capture(context.Context) (checkpoint.StageUpdate, error) {
	part := checkpoint.StageUpdate{Set: seqUpdate(j.seq)}
	put := func(k K) error {
		key, err := encodeKey(k)
		if err != nil {
			return err
		}
		b, err := j.spec.Codec.Encode(j.table[k])
		if err != nil {
			return fmt.Errorf("encoding the reference of key %v: %w", k, err)
		}
		part.Set[key] = b
		return nil
	}
	if j.dirty != nil {
		for k := range j.dirty {
			if err := put(k); err != nil {
				return part, err
			}
		}
		clear(j.dirty)
		return part, nil
	}
	if !j.tableSaved {
		for k := range j.table {
			if err := put(k); err != nil {
				return part, err
			}
		}
		j.tableSaved = true
	}
	return part, nil
}

func (j *joinCore[K, R, S, O]) forward(ctx context.Context, id uint64) error {
	return j.out.send(ctx, barrierBatch[O](id))
}

func (j *joinCore[K, R, S, O]) restore(st checkpoint.Stage) error {
	if err := restoreSeq(st, &j.seq); err != nil {
		return err
	}
	for key, b := range st.State {
		if !isKeyState(key) {
			continue
		}
		k, err := decodeKey[K](key)
		if err != nil {
			return &checkpoint.DecodeError{Stage: j.u.name, Key: key, Err: err}
		}
		r, err := j.spec.Codec.Decode(b)
		if err != nil {
			return &checkpoint.DecodeError{Stage: j.u.name, Key: key, Err: err}
		}
		j.table[k] = r
	}
	j.tableSaved = true
	return nil
}

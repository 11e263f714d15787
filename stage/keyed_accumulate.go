package stage

import (
	"context"
	"fmt"
	"time"

	"github.com/stagefsm/stagefsm/checkpoint"
)

// KeyedAccumulator declares a keyed accumulator stage (see
// [KeyedAccumulate]): a plain state S per key, into which Fold folds the
// key's items, and Emit, which turns a key's state into outputs when one
// of three triggers fires:
//
//   - after each item, when EmitWhen (if not nil) reports true;
//   - Every (if > 0) after the key's first item since its last emit: each
//     key has its own tumbling processing-time window, started by the
//     item that creates its state;
//   - at end of input, for every key still holding a state (drain).
//
// After an emit, whichever trigger fired it, the key's state is removed:
// its next item starts again from the zero S, and an idle key costs
// nothing. A key whose window saw no item has no state, so an interval
// never emits an empty window.
//
// Key, Fold and Emit are required.
type KeyedAccumulator[I any, K comparable, S, O any] struct {
	// Key returns the key of an item. A panic fails that item only.
	Key func(I) K
	// Fold folds item v into its key's state, the zero S on the key's
	// first item. An error or a panic fails the item, and the key's state
	// is put back as it was before the call (a shallow copy: a Fold that
	// changes a map or slice of S before failing must undo that itself).
	Fold func(s *S, v I) error
	// Emit turns the state of key into outputs, passed to emit. When it
	// fails (an error or a panic) its outputs are discarded: after an
	// item, the item fails and the state is put back as it was before the
	// item; on the interval or at drain, the state itself is dead-lettered
	// (its payload the S, its error an [ItemError] wrapping Emit's) and
	// the key is removed.
	Emit func(key K, s S, emit func(O)) error
	// EmitWhen, if not nil, is asked after each item folded whether to
	// emit the key's state now. A panic fails the item, as Fold's does.
	EmitWhen func(key K, s S) bool
	// Every, if > 0, emits a key's state that long after the item that
	// created it.
	Every time.Duration
	// Workers, when more than 1, runs the stage on that many workers, as
	// [KeyedSpec.Workers] does; Fold, Emit and EmitWhen must then be safe
	// to call for different keys at once.
	Workers int
	// Codec encodes the keys' states in a checkpoint (see
	// [WithCheckpoint]). Default: [checkpoint.Gob].
	Codec checkpoint.Codec[S]
}

func (a *KeyedAccumulator[I, K, S, O]) check() error {
	if a.Key == nil || a.Fold == nil || a.Emit == nil {
		return fmt.Errorf("%w: KeyedAccumulator needs Key, Fold and Emit", ErrKeyedSpec)
	}
	return checkWorkers(a.Workers)
}

// accRec is one key's state: a slot of the shard's slab.
type accRec[K comparable, S any] struct {
	state    S
	key      K
	deadline int64  // UnixNano of the interval's end, if armed
	gen      uint32 // bumped when the slot's timer is disarmed
	armed    bool
	live     bool
	dirty    bool // changed since the last capture (in a checkpointing pipeline)
	saved    bool // captured at least once: a checkpoint may hold it
}

// keyedAccs is a shard of a [KeyedAccumulate] stage: a slab of per-key
// states and the deadline heap of their intervals.
type keyedAccs[I any, K comparable, S, O any] struct {
	u      *unit
	spec   *KeyedAccumulator[I, K, S, O]
	counts *keyedCounts
	index  map[K]int32
	slab   slab[accRec[K, S]]
	free   []int32
	timers timerHeap
	w      *keyedOut[O]
	emitFn func(O)
	pre    []int32 // by index in the batch last warmed: the key's slot, or -1
	sink   int32   // what warm read, so that the reads stay

	// In a checkpointing pipeline: the slots changed and the keys removed
	// since the last capture.
	track   bool
	dirty   []int32
	removed []K
}

func newKeyedAccs[I any, K comparable, S, O any](u *unit, spec *KeyedAccumulator[I, K, S, O], counts *keyedCounts) *keyedAccs[I, K, S, O] {
	s := &keyedAccs[I, K, S, O]{u: u, spec: spec, counts: counts, index: make(map[K]int32)}
	s.emitFn = func(v O) { s.w.emit(v) }
	s.timers.valid = func(e timerEnt) bool {
		r := s.slab.at(e.slot)
		return r.armed && r.gen == e.gen
	}
	return s
}

func (s *keyedAccs[I, K, S, O]) item(ctx context.Context, j int, key K, v I, w *keyedOut[O]) error {
	r, ok := s.slot(j, key)
	if !ok {
		r = s.create(key)
	}
	rec := s.slab.at(r)
	before := rec.state
	err := s.fold(&rec.state, v)
	if err == nil && s.spec.EmitWhen != nil {
		var now bool
		if now, err = s.when(key, rec.state); err == nil && now {
			if err = s.emit(ctx, key, rec.state, w); err == nil {
				s.remove(r)
				return nil
			}
		}
	}
	if err != nil {
		if !ok {
			s.remove(r)
		} else {
			rec.state = before
		}
		return err
	}
	if s.track && !rec.dirty {
		rec.dirty = true
		s.dirty = append(s.dirty, r)
	}
	if !ok && s.spec.Every > 0 {
		rec.deadline, rec.armed = time.Now().Add(s.spec.Every).UnixNano(), true
		s.timers.armed++
		s.timers.push(timerEnt{at: rec.deadline, slot: r, gen: rec.gen})
	}
	return nil
}

func (s *keyedAccs[I, K, S, O]) create(key K) int32 {
	var r int32
	if n := len(s.free); n > 0 {
		r, s.free = s.free[n-1], s.free[:n-1]
	} else {
		r = s.slab.add()
	}
	rec := s.slab.at(r)
	rec.key, rec.live = key, true
	s.index[key] = r
	s.counts.keys.Add(1)
	return r
}

func (s *keyedAccs[I, K, S, O]) remove(r int32) {
	rec := s.slab.at(r)
	if rec.armed {
		s.timers.armed--
	}
	delete(s.index, rec.key)
	if s.track && rec.saved {
		s.removed = append(s.removed, rec.key) // else no checkpoint holds it
	}
	*rec = accRec[K, S]{gen: rec.gen + 1}
	s.free = append(s.free, r)
	s.counts.keys.Add(-1)
}

// fold calls Fold, turning a panic into an error.
func (s *keyedAccs[I, K, S, O]) fold(st *S, v I) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("stage: fold function: %w", newPanicError(p))
		}
	}()
	return s.spec.Fold(st, v)
}

// when calls EmitWhen, turning a panic into an error.
func (s *keyedAccs[I, K, S, O]) when(key K, st S) (now bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("stage: emit predicate: %w", newPanicError(p))
		}
	}()
	return s.spec.EmitWhen(key, st), nil
}

// emit calls Emit with outputs to w, turning a panic into an error and
// discarding the outputs of a call that fails.
func (s *keyedAccs[I, K, S, O]) emit(_ context.Context, key K, st S, w *keyedOut[O]) (err error) {
	n, emitted := w.mark()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("stage: emit function: %w", newPanicError(p))
		}
		if err != nil {
			w.undo(n, emitted)
		}
	}()
	s.w = w
	return s.spec.Emit(key, st, s.emitFn)
}

// flushKey emits the state of slot r for trigger and removes it; a state
// whose emit fails is dead-lettered.
func (s *keyedAccs[I, K, S, O]) flushKey(ctx context.Context, r int32, trigger string, w *keyedOut[O]) {
	rec := s.slab.at(r)
	if err := s.emit(ctx, rec.key, rec.state, w); err != nil {
		s.u.stats.emitted.Add(1) // the dead letter is an item the stage made
		deadLetter(s.u, Item[S]{Payload: rec.state, Origin: s.u.name},
			fmt.Errorf("stage: emitting the state of key %v (%s): %w", rec.key, trigger, err))
	}
	s.remove(r)
}

// warm looks the keys up, then reads each state's record, as the machine
// shard's warm does.
func (s *keyedAccs[I, K, S, O]) warm(keys []K, idx []int) {
	if len(s.pre) < len(keys) {
		s.pre = make([]int32, len(keys))
	}
	for _, j := range idx {
		r, ok := s.index[keys[j]]
		if !ok {
			r = -1
		}
		s.pre[j] = r
	}
	var n int32
	for _, j := range idx {
		if r := s.pre[j]; r >= 0 && s.slab.at(r).live {
			n++
		}
	}
	s.sink = n
}

// slot returns the slot of key, found by warm for item j if it still holds
// the key.
func (s *keyedAccs[I, K, S, O]) slot(j int, key K) (int32, bool) {
	if j >= 0 && j < len(s.pre) {
		if r := s.pre[j]; r >= 0 {
			if rec := s.slab.at(r); rec.live && rec.key == key {
				return r, true
			}
		}
	}
	r, ok := s.index[key]
	return r, ok
}

func (s *keyedAccs[I, K, S, O]) next() (int64, bool) {
	e, ok := s.timers.head()
	return e.at, ok
}

// fireDue emits the state of every key whose interval has ended.
func (s *keyedAccs[I, K, S, O]) fireDue(ctx context.Context, now int64, w *keyedOut[O]) error {
	for {
		t, ok := s.timers.head()
		if !ok || t.at > now {
			return nil
		}
		s.timers.pop()
		s.counts.timeouts.Add(1)
		s.flushKey(ctx, t.slot, "interval", w)
		if err := w.full(ctx); err != nil {
			return err
		}
	}
}

// drain emits the state of every key, in slot order.
func (s *keyedAccs[I, K, S, O]) drain(ctx context.Context, w *keyedOut[O]) error {
	for r := range s.slab.len() {
		if !s.slab.at(r).live {
			continue
		}
		s.flushKey(ctx, r, "drain", w)
		if err := w.full(ctx); err != nil {
			return err
		}
	}
	return nil
}

// KeyedAccumulate adds the keyed accumulator stage name, which reads in:
// each ok item is folded into the state of its key (spec.Key), and a key's
// state is emitted, then removed, when spec.EmitWhen says so after an
// item, when spec.Every has passed since the key's first item, and at end
// of input (see [KeyedAccumulator]). Items of one key are folded in
// arrival order. A failure (Fold, EmitWhen or Emit returning an error or
// panicking, a key function that panics) fails that item only, which goes
// on downstream as an error item to be dead-lettered, or, for an emit on
// the interval or at drain, dead-letters that key's state; other keys go
// on, and an error matching [ErrFatal] fails the stage. Intervals share one
// heap per worker and one timer per stage, fired by the stage's loop;
// spec.Workers shards the keys as for [Keyed]. [Stats] reports Keys (keys
// holding a state) and Timeouts (interval emits). A spec that cannot run
// fails the build with [ErrKeyedSpec].
//
// [Aggregate] is the one-key case with neither predicate nor interval.
func KeyedAccumulate[I any, K comparable, S, O any](in *Stream[I], name string, spec KeyedAccumulator[I, K, S, O]) *Stream[O] {
	g := graphOf(in)
	if g == nil {
		return nilStream[O](name)
	}
	out := newStream[O](g, name, "")
	u := g.unit(name, kindTransform, "keyed", false)
	if err := spec.check(); err != nil {
		g.errs = append(g.errs, fmt.Errorf("stage: keyed stage %q: %w", name, err))
	}
	counts := new(keyedCounts)
	shards := make([]keyedShard[I, K, O], max(spec.Workers, 1))
	for i := range shards {
		shards[i] = newKeyedAccs(u, &spec, counts)
	}
	u.core = newKeyedCore(u, spec.Key, shards, counts, read(g, in, name), out.edge)
	return out
}

// ThenKeyedAccumulate appends the keyed accumulator stage name to c: the
// [Chain] form of [KeyedAccumulate]. Problems are reported by
// [Pipeline.Start].
func ThenKeyedAccumulate[I any, K comparable, S, O any](c *Chain[I], name string, spec KeyedAccumulator[I, K, S, O]) *Chain[O] {
	return &Chain[O]{add: func(g *Graph) *Stream[O] { return KeyedAccumulate(chainStream(g, c), name, spec) }}
}

func (s *keyedAccs[I, K, S, O]) prepare() error {
	if s.spec.Codec == nil {
		s.spec.Codec = checkpoint.Gob[S]{}
	}
	s.track = true
	return nil
}

func (s *keyedAccs[I, K, S, O]) capture(part *checkpoint.StageUpdate) error {
	var err error
	if s.removed, err = captureRemoved(part, s.removed, s.index); err != nil {
		return err
	}
	for _, r := range s.dirty {
		rec := s.slab.at(r)
		if !rec.live || !rec.dirty {
			continue
		}
		rec.dirty, rec.saved = false, true
		var deadline int64
		if rec.armed {
			deadline = rec.deadline
		}
		if err := captureKey(part, s.spec.Codec, rec.key, deadline, rec.state); err != nil {
			return err
		}
	}
	s.dirty = s.dirty[:0]
	return nil
}

func (s *keyedAccs[I, K, S, O]) restore(key K, b []byte, shift int64) error {
	deadline, enc, err := getTimed(b, shift)
	if err != nil {
		return err
	}
	st, err := s.spec.Codec.Decode(enc)
	if err != nil {
		return err
	}
	r, ok := s.index[key]
	if !ok {
		r = s.create(key)
	}
	rec := s.slab.at(r)
	if rec.armed {
		s.timers.armed--
	}
	rec.state, rec.armed, rec.deadline, rec.saved = st, false, 0, true
	rec.gen++
	if deadline != 0 {
		rec.deadline, rec.armed = deadline, true
		s.timers.armed++
		s.timers.push(timerEnt{at: deadline, slot: r, gen: rec.gen})
	}
	return nil
}

package stage

import (
	"context"
	"errors"
	"fmt"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/checkpoint"
)

// Scope is the context (the C) of one key's machine in a keyed stage (see
// [Keyed]): the key and the way to emit outputs. The stage passes the same
// Scope to every key in turn, set to that key, so a machine or an action
// must not keep it beyond the call it receives it in.
type Scope[K comparable, O any] struct {
	key K
	out *keyedOut[O]
}

// Key returns the key of the instance being handled.
func (s *Scope[K, O]) Key() K { return s.key }

// Emit sends v downstream as an output of the stage. Outputs of a call
// that fails are discarded, as a transform's are.
func (s *Scope[K, O]) Emit(v O) { s.out.emit(v) }

// KeyedSpec declares a keyed stateful stage (see [Keyed]): how an item is
// routed to its key, and the machine each key runs.
//
// Key, Event, New, Act and Terminal are required. Each key's instance is a
// [stagefsm.Machine] with context *[Scope]; if it implements
// [stagefsm.Timed] (a [github.com/stagefsm/stagefsm/mealy.Machine] does),
// its state timeouts are fired by the stage.
type KeyedSpec[I any, K comparable, S, E, A, O any] struct {
	// Key returns the key of an item. A panic fails that item only.
	Key func(I) K
	// Event turns an item into the event fed to its key's machine.
	Event func(I) E
	// New creates the instance of a key, on the key's first item. An error
	// fails that item; the key has no instance until a later item.
	New func(K) (stagefsm.Machine[S, E, *Scope[K, O], A], error)
	// Act executes one action the machine returned for event e.
	Act func(ctx context.Context, a A, e E, s *Scope[K, O]) error
	// Terminal reports a terminal state: an instance that reaches one is
	// removed after its actions ran (use the Terminal method of a
	// [github.com/stagefsm/stagefsm/mealy.Definition]).
	Terminal func(S) bool
	// Failure, if not nil, returns the event fed to a key's machine when
	// handling one of its events failed (Handle or an action returned an
	// error or panicked). When Failure is nil, or the failure event fails
	// too, the key's instance is removed.
	Failure func(err error) (E, bool)
	// Drain, if not nil, returns the event fed to every live instance at
	// end of input, before the stage drains. A drain event that fails is
	// handled like any failure, without an item to dead-letter.
	Drain func(K) (E, bool)
	// Workers, when more than 1, runs the stage on that many workers (see
	// [Keyed]); 0 and 1 run it on the stage's own goroutine.
	Workers int
	// Restore, required in a pipeline that checkpoints (see
	// [WithCheckpoint]), creates the instance of a key in state s, as a
	// checkpoint saved it (for a mealy definition: its New(s)). Its
	// timeout, if it was armed, is armed again for the time it had left;
	// the machine's own deadline is not used for it.
	Restore func(key K, s S) (stagefsm.Machine[S, E, *Scope[K, O], A], error)
	// Codec encodes the instances' states in a checkpoint. Default:
	// [checkpoint.Gob].
	Codec checkpoint.Codec[S]
}

// ErrKeyedSpec is the build error, matched with errors.Is, of a keyed
// stage whose [KeyedSpec] or [KeyedAccumulator] cannot run: a required
// function is missing, or Workers is negative. [Pipeline.Start] and
// [Graph.Build] return it, wrapped with the stage's name and the reason.
var ErrKeyedSpec = errors.New("stage: invalid keyed stage")

func (s *KeyedSpec[I, K, S, E, A, O]) check() error {
	if s.Key == nil || s.Event == nil || s.New == nil || s.Act == nil || s.Terminal == nil {
		return fmt.Errorf("%w: KeyedSpec needs Key, Event, New, Act and Terminal", ErrKeyedSpec)
	}
	return checkWorkers(s.Workers)
}

func checkWorkers(n int) error {
	if n < 0 {
		return fmt.Errorf("%w: Workers is %d, want 0 or more", ErrKeyedSpec, n)
	}
	return nil
}

// keyedRec is one key's instance: a slot of the shard's slab.
type keyedRec[K comparable, S, E, A, O any] struct {
	m     stagefsm.Machine[S, E, *Scope[K, O], A]
	timed stagefsm.Timed[E] // m, if it has timeouts
	key   K
	// deadline is the UnixNano of the deadline armed (or of the one that
	// fired: the same deadline is not armed again); 0 when none.
	deadline int64
	// at and gen are the slot's valid heap entry, if gen is not 0. The
	// entry is lazy: an instance whose deadline moves later, or is
	// disarmed, keeps it; when it comes due it is pushed again for the
	// later deadline, or dropped. So the common re-arm (the same timeout,
	// from a later now) and a disarm cost no heap operation and leave no
	// stale entry behind.
	at    int64
	gen   uint32
	live  bool
	dirty bool // changed since the last capture (in a checkpointing pipeline)
	saved bool // captured at least once: a checkpoint may hold it
}

// keyedStater is the optional interface of a core that reports keys and
// timeouts in Stats.
type keyedStater interface {
	keyedStats() (keys int, timeouts uint64)
}

// keyedMachines is a shard of a [Keyed] stage: a slab of per-key machines,
// their index by key and their deadline heap.
type keyedMachines[I any, K comparable, S, E, A, O any] struct {
	spec   *KeyedSpec[I, K, S, E, A, O]
	counts *keyedCounts
	index  map[K]int32
	slab   slab[keyedRec[K, S, E, A, O]]
	free   []int32
	timers timerHeap
	gen    uint32 // the last generation given to a heap entry
	scope  Scope[K, O]
	pre    []int32 // by index in the batch last warmed: the key's slot, or -1
	sink   uint32  // what warm read, so that the reads stay

	// In a checkpointing pipeline: the slots changed and the keys removed
	// since the last capture.
	track   bool
	dirty   []int32
	removed []K
}

func newKeyedMachines[I any, K comparable, S, E, A, O any](spec *KeyedSpec[I, K, S, E, A, O], counts *keyedCounts) *keyedMachines[I, K, S, E, A, O] {
	s := &keyedMachines[I, K, S, E, A, O]{spec: spec, counts: counts, index: make(map[K]int32)}
	s.timers.valid = func(e timerEnt) bool {
		r := s.slab.at(e.slot)
		return r.live && r.gen == e.gen
	}
	return s
}

// warm looks the keys up, then reads each instance's record, then its
// machine: each loop is short enough for the processor to overlap the
// cache misses of many keys, which handling them one by one cannot.
func (s *keyedMachines[I, K, S, E, A, O]) warm(keys []K, idx []int) {
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
	var sum uint32
	for _, j := range idx {
		if r := s.pre[j]; r >= 0 {
			sum += s.slab.at(r).gen
		}
	}
	for _, j := range idx {
		if r := s.pre[j]; r >= 0 {
			s.slab.at(r).m.State()
		}
	}
	s.sink = sum
}

// slot returns the slot of key, found by warm for item j if it still holds
// the key (a slot removed and reused for the same key holds the key's new
// instance: what a lookup would find).
func (s *keyedMachines[I, K, S, E, A, O]) slot(j int, key K) (int32, bool) {
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

func (s *keyedMachines[I, K, S, E, A, O]) item(ctx context.Context, j int, key K, v I, w *keyedOut[O]) error {
	s.scope.out = w
	r, ok := s.slot(j, key)
	if !ok {
		var err error
		if r, err = s.create(key); err != nil {
			return err
		}
	}
	n, emitted := w.mark()
	if err := s.step(ctx, r, v); err != nil {
		w.undo(n, emitted)
		s.fail(ctx, r, err)
		s.settle(r)
		return err
	}
	s.settle(r)
	return nil
}

// step feeds item v's event to instance r and executes its actions, with
// one recover for the event function, the machine and the actions.
func (s *keyedMachines[I, K, S, E, A, O]) step(ctx context.Context, r int32, v I) (err error) {
	inEvent := true
	defer func() {
		if p := recover(); p != nil {
			err = newPanicError(p)
			if inEvent {
				err = fmt.Errorf("stage: event function: %w", err)
			}
		}
	}()
	e := s.spec.Event(v)
	inEvent = false
	return s.run(ctx, r, e)
}

// create makes the instance of key in a free slot of the slab.
func (s *keyedMachines[I, K, S, E, A, O]) create(key K) (int32, error) {
	m, err := s.newMachine(key)
	if err == nil && m == nil {
		err = errors.New("stage: KeyedSpec.New returned a nil machine")
	}
	if err != nil {
		return 0, fmt.Errorf("stage: creating the instance of key %v: %w", key, err)
	}
	var r int32
	if n := len(s.free); n > 0 {
		r, s.free = s.free[n-1], s.free[:n-1]
	} else {
		r = s.slab.add()
	}
	timed, _ := m.(stagefsm.Timed[E])
	*s.slab.at(r) = keyedRec[K, S, E, A, O]{m: m, timed: timed, key: key, live: true}
	s.index[key] = r
	s.counts.keys.Add(1)
	return r, nil
}

// newMachine calls New, turning a panic into an error.
func (s *keyedMachines[I, K, S, E, A, O]) newMachine(key K) (m stagefsm.Machine[S, E, *Scope[K, O], A], err error) {
	defer func() {
		if p := recover(); p != nil {
			m, err = nil, newPanicError(p)
		}
	}()
	return s.spec.New(key)
}

// feed feeds e to instance r and executes its actions.
func (s *keyedMachines[I, K, S, E, A, O]) feed(ctx context.Context, r int32, e E) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = newPanicError(p)
		}
	}()
	return s.run(ctx, r, e)
}

// run is feed without the recover.
func (s *keyedMachines[I, K, S, E, A, O]) run(ctx context.Context, r int32, e E) error {
	rec := s.slab.at(r)
	s.scope.key = rec.key
	acts, err := rec.m.Handle(ctx, e, &s.scope)
	if err != nil {
		return err
	}
	for _, a := range acts {
		if err := s.spec.Act(ctx, a, e, &s.scope); err != nil {
			return err
		}
	}
	return nil
}

// fail is the failure path of one key: its failure event, if any; an
// instance without one, or whose failure event fails too, is removed.
func (s *keyedMachines[I, K, S, E, A, O]) fail(ctx context.Context, r int32, cause error) {
	if s.spec.Failure != nil {
		if e, ok := s.spec.Failure(cause); ok {
			w := s.scope.out
			n, emitted := w.mark()
			if s.feed(ctx, r, e) == nil {
				return
			}
			w.undo(n, emitted)
		}
	}
	s.remove(r)
}

// settle removes instance r if it is terminal, else (re)arms its timeout.
func (s *keyedMachines[I, K, S, E, A, O]) settle(r int32) {
	rec := s.slab.at(r)
	if !rec.live {
		return
	}
	if s.track && !rec.dirty {
		rec.dirty = true
		s.dirty = append(s.dirty, r)
	}
	if s.spec.Terminal(rec.m.State()) {
		s.remove(r)
		return
	}
	if rec.timed == nil {
		return
	}
	dl, _, ok := rec.timed.Timeout()
	switch at := dl.UnixNano(); {
	case !ok:
		rec.deadline = 0 // the entry, if any, is dropped when it comes due
	case at == rec.deadline:
		// unchanged, or the deadline that just fired
	default:
		rec.deadline = at
		if rec.gen == 0 || at < rec.at {
			if rec.gen == 0 {
				s.timers.armed++
			}
			s.gen++
			if s.gen == 0 { // 0 marks no entry
				s.gen++
			}
			rec.at, rec.gen = at, s.gen
			s.timers.push(timerEnt{at: at, slot: r, gen: s.gen})
		}
	}
}

// consume marks the valid heap entry of rec as gone.
func (s *keyedMachines[I, K, S, E, A, O]) consume(rec *keyedRec[K, S, E, A, O]) {
	if rec.gen != 0 {
		rec.gen = 0
		s.timers.armed--
	}
}

func (s *keyedMachines[I, K, S, E, A, O]) remove(r int32) {
	rec := s.slab.at(r)
	if !rec.live {
		return
	}
	s.consume(rec)
	delete(s.index, rec.key)
	if s.track && rec.saved {
		s.removed = append(s.removed, rec.key) // else no checkpoint holds it
	}
	*rec = keyedRec[K, S, E, A, O]{}
	s.free = append(s.free, r)
	s.counts.keys.Add(-1)
}

func (s *keyedMachines[I, K, S, E, A, O]) next() (int64, bool) {
	e, ok := s.timers.head()
	return e.at, ok
}

// fireDue feeds the timeout event of every instance whose deadline has
// passed, earliest first.
func (s *keyedMachines[I, K, S, E, A, O]) fireDue(ctx context.Context, now int64, w *keyedOut[O]) error {
	s.scope.out = w
	for {
		t, ok := s.timers.head()
		if !ok || t.at > now {
			return nil
		}
		s.timers.pop()
		rec := s.slab.at(t.slot)
		switch {
		case rec.deadline > t.at: // the deadline moved later: wait for it
			rec.at = rec.deadline
			s.timers.push(timerEnt{at: rec.at, slot: t.slot, gen: rec.gen})
			continue
		case rec.deadline != t.at: // disarmed
			s.consume(rec)
			continue
		}
		s.consume(rec) // fired: rec.deadline stays, not to be armed again
		if _, e, ok := rec.timed.Timeout(); ok {
			s.counts.timeouts.Add(1)
			n, emitted := w.mark()
			if err := s.feed(ctx, t.slot, e); err != nil {
				w.undo(n, emitted)
				s.fail(ctx, t.slot, err)
			}
		}
		s.settle(t.slot)
		if err := w.full(ctx); err != nil {
			return err
		}
	}
}

// drain feeds the drain event to every live instance, in slot order.
// Timeouts still armed are not fired.
func (s *keyedMachines[I, K, S, E, A, O]) drain(ctx context.Context, w *keyedOut[O]) error {
	if s.spec.Drain == nil {
		return nil
	}
	s.scope.out = w
	for r := range s.slab.len() {
		rec := s.slab.at(r)
		if !rec.live {
			continue
		}
		if e, ok := s.spec.Drain(rec.key); ok {
			n, emitted := w.mark()
			if err := s.feed(ctx, r, e); err != nil {
				w.undo(n, emitted)
				s.fail(ctx, r, err)
			}
			s.settle(r)
			if err := w.full(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// Keyed adds the keyed stateful stage name, which reads in: each ok item
// is routed by spec.Key to its key's instance, created on the key's first
// item and removed when it reaches a terminal state. Items of one key are
// handled in arrival order. A key's failure (its event rejected, an
// action's error, a panic, a key function that panics) fails that item
// only, which goes on downstream as an error item to be dead-lettered;
// other keys go on. An error matching [ErrFatal] fails the stage, as in a
// transform. The outputs of a call that fails are discarded. Per-key
// timeouts share one heap per worker and one timer per stage, fired by the
// stage's loop. At end of input every live instance gets spec.Drain's
// event, then the stage drains. [Stats] reports Keys and Timeouts. A spec
// that cannot run fails the build with [ErrKeyedSpec].
//
// # Workers
//
// With spec.Workers = N > 1 the keys are sharded by a hash of the key
// across N workers, each owning its keys' instances and its own part of
// the deadline heap, so that a key's items keep their order; New, Event,
// Act, Terminal and Failure must then be safe to call for different keys
// at once. Each input batch is split between the workers, which exist for
// that batch only: the stage's goroutine joins them before it takes the
// next batch, so no worker outlives the stage, and the stage's state
// machine stays one. Outputs leave shard after shard, a key's in order.
// The Key function runs on the stage's goroutine. Timeouts and the drain
// run there too, one worker's keys after the other. A Fatal error (or a
// panic in Terminal or Failure) stops the other workers at their next
// item; what the batch did not process is dead-lettered, or parked for
// the next incarnation under [WithRestart], as with [ThenParallel].
// Parallelism is bounded by the batch size (see [WithBatchSize]).
func Keyed[I any, K comparable, S, E, A, O any](in *Stream[I], name string, spec KeyedSpec[I, K, S, E, A, O]) *Stream[O] {
	g := graphOf(in)
	if g == nil {
		return nilStream[O](name)
	}
	out := newStream[O](g, name, "")
	u := g.unit(name, kindTransform, "keyed", false)
	if err := spec.check(); err != nil {
		g.errs = append(g.errs, fmt.Errorf("stage: keyed stage %q: %w", name, err))
	}
	u.core = newKeyedMachinesCore(u, &spec, read(g, in, name), out.edge)
	return out
}

// newKeyedMachinesCore returns the core of a [Keyed] stage.
func newKeyedMachinesCore[I any, K comparable, S, E, A, O any](u *unit, spec *KeyedSpec[I, K, S, E, A, O], in *edge[I], out *edge[O]) *keyedCore[I, K, O] {
	counts := new(keyedCounts)
	shards := make([]keyedShard[I, K, O], max(spec.Workers, 1))
	for i := range shards {
		shards[i] = newKeyedMachines(spec, counts)
	}
	return newKeyedCore(u, spec.Key, shards, counts, in, out)
}

// ThenKeyed appends the keyed stateful stage name to c: the [Chain] form
// of [Keyed]. Problems are reported by [Pipeline.Start].
func ThenKeyed[I any, K comparable, S, E, A, O any](c *Chain[I], name string, spec KeyedSpec[I, K, S, E, A, O]) *Chain[O] {
	return &Chain[O]{add: func(g *Graph) *Stream[O] { return Keyed(chainStream(g, c), name, spec) }}
}

func (s *keyedMachines[I, K, S, E, A, O]) prepare() error {
	if s.spec.Restore == nil {
		return fmt.Errorf("%w: KeyedSpec needs Restore in a pipeline that checkpoints", ErrKeyedSpec)
	}
	if s.spec.Codec == nil {
		s.spec.Codec = checkpoint.Gob[S]{}
	}
	s.track = true
	return nil
}

func (s *keyedMachines[I, K, S, E, A, O]) capture(part *checkpoint.StageUpdate) error {
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
		if rec.gen != 0 { // a heap entry: the deadline is armed
			deadline = rec.deadline
		}
		if err := captureKey(part, s.spec.Codec, rec.key, deadline, rec.m.State()); err != nil {
			return err
		}
	}
	s.dirty = s.dirty[:0]
	return nil
}

func (s *keyedMachines[I, K, S, E, A, O]) restore(key K, b []byte, shift int64) error {
	deadline, enc, err := getTimed(b, shift)
	if err != nil {
		return err
	}
	st, err := s.spec.Codec.Decode(enc)
	if err != nil {
		return err
	}
	m, err := s.spec.Restore(key, st)
	if err == nil && m == nil {
		err = errors.New("KeyedSpec.Restore returned a nil machine")
	}
	if err != nil {
		return fmt.Errorf("restoring the instance: %w", err)
	}
	r, ok := s.index[key]
	if !ok {
		if n := len(s.free); n > 0 {
			r, s.free = s.free[n-1], s.free[:n-1]
		} else {
			r = s.slab.add()
		}
		s.counts.keys.Add(1)
	}
	timed, _ := m.(stagefsm.Timed[E])
	rec := s.slab.at(r)
	*rec = keyedRec[K, S, E, A, O]{m: m, timed: timed, key: key, live: true, saved: true}
	s.index[key] = r
	if deadline != 0 && timed != nil {
		s.timers.armed++
		s.gen++
		if s.gen == 0 {
			s.gen++
		}
		rec.deadline, rec.at, rec.gen = deadline, deadline, s.gen
		s.timers.push(timerEnt{at: deadline, slot: r, gen: s.gen})
	}
	return nil
}

// aggregate is the one-key accumulator of [Aggregate].
type aggregate[I, S, O any] struct {
	state S
	fold  func(*S, I)
	out   func(S, func(O))
}

func (a *aggregate[I, S, O]) Process(_ context.Context, v I, _ func(O)) error {
	a.fold(&a.state, v)
	return nil
}

func (a *aggregate[I, S, O]) Drain(_ context.Context, emit func(O)) error {
	a.out(a.state, emit)
	return nil
}

func (a *aggregate[I, S, O]) saveState() ([]byte, error) { return checkpoint.Gob[S]{}.Encode(a.state) }

func (a *aggregate[I, S, O]) loadState(b []byte) error {
	s, err := checkpoint.Gob[S]{}.Decode(b)
	if err != nil {
		return err
	}
	a.state = s
	return nil
}

// Aggregate adds the stage name, an unkeyed aggregate reading in: fold
// folds each ok item into one state S, starting from its zero value, and at
// end of input emit turns the state into the stage's outputs. A nil fold or
// emit is an error of [Graph.Build].
func Aggregate[I, S, O any](in *Stream[I], name string, fold func(*S, I), emit func(S, func(O))) *Stream[O] {
	return Apply(in, name, newAggregate[I, S, O](fold, emit))
}

// ThenAggregate appends the unkeyed aggregate name to c: the [Chain] form
// of [Aggregate].
func ThenAggregate[I, S, O any](c *Chain[I], name string, fold func(*S, I), emit func(S, func(O))) *Chain[O] {
	return Then(c, name, newAggregate[I, S, O](fold, emit))
}

func newAggregate[I, S, O any](fold func(*S, I), emit func(S, func(O))) Transform[I, O] {
	if fold == nil || emit == nil {
		return nil
	}
	return &aggregate[I, S, O]{fold: fold, out: emit}
}

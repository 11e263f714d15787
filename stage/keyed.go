package stage

import (
	"context"
	"errors"
	"fmt"

	"github.com/stagefsm/stagefsm"
)

// Scope is the context (the C) of one key's machine in a keyed stage (see
// [Keyed]): the key and the way to emit outputs. The stage passes the same
// Scope to every key in turn, set to that key, so a machine or an action
// must not keep it beyond the call it receives it in.
type Scope[K comparable, O any] struct {
	key  K
	emit func(O)
}

// Key returns the key of the instance being handled.
func (s *Scope[K, O]) Key() K { return s.key }

// Emit sends v downstream as an output of the stage. Outputs of a call
// that fails are discarded, as a transform's are.
func (s *Scope[K, O]) Emit(v O) { s.emit(v) }

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

// keyedInst is one key's instance, the value of the shard's index: all an
// item of the key needs, so that handling it touches the index and the
// machine, and nothing else.
type keyedInst[K comparable, S, E, A, O any] struct {
	m stagefsm.Machine[S, E, *Scope[K, O], A]
	// deadline is the UnixNano of the deadline armed (or of the one that
	// fired: the same deadline is not armed again); 0 when none.
	deadline int64
	slot     int32 // the key's slot in the slab; -1 once removed
}

// keyedSlot is a slot of a shard's slab: the key a heap entry or the drain
// finds the instance by, and the key's valid heap entry, if any. The entry
// is lazy: an instance whose deadline moves later, or is disarmed, keeps
// it; when it comes due it is pushed again for the later deadline, or
// dropped. So the common re-arm (the same timeout, from a later now) and a
// disarm cost no heap operation, and leave no stale entry behind.
type keyedSlot[K comparable] struct {
	key  K
	at   int64  // the deadline of the valid entry, at most the instance's
	gen  uint32 // the generation of the valid entry; 0: none
	live bool
}

// keyedStater is the optional interface of a core that reports keys and
// timeouts in Stats.
type keyedStater interface {
	keyedStats() (keys int, timeouts uint64)
}

// keyedMachines is a shard of a [Keyed] stage: the per-key machines, by
// key, a slab of their keys and their deadline heap.
type keyedMachines[I any, K comparable, S, E, A, O any] struct {
	spec   *KeyedSpec[I, K, S, E, A, O]
	counts *keyedCounts
	index  map[K]keyedInst[K, S, E, A, O]
	slab   []keyedSlot[K]
	free   []int32
	timers timerHeap
	gen    uint32 // the last generation given to a heap entry
	scope  Scope[K, O]
	w      *keyedOut[O] // where the machine's outputs go, during a call
	warmed []stagefsm.Machine[S, E, *Scope[K, O], A]
}

func newKeyedMachines[I any, K comparable, S, E, A, O any](spec *KeyedSpec[I, K, S, E, A, O], counts *keyedCounts) *keyedMachines[I, K, S, E, A, O] {
	s := &keyedMachines[I, K, S, E, A, O]{spec: spec, counts: counts, index: make(map[K]keyedInst[K, S, E, A, O])}
	s.scope.emit = func(v O) { s.w.emit(v) }
	s.timers.valid = func(e timerEnt) bool {
		sl := &s.slab[e.slot]
		return sl.live && sl.gen == e.gen
	}
	return s
}

func (s *keyedMachines[I, K, S, E, A, O]) item(ctx context.Context, key K, v I, w *keyedOut[O]) error {
	s.w = w
	in, ok := s.index[key]
	if !ok {
		var err error
		if in, err = s.create(key); err != nil {
			return err
		}
	}
	n, emitted := w.mark()
	e, err := s.event(v)
	if err == nil {
		err = s.feed(ctx, key, in.m, e)
	}
	if err != nil {
		w.undo(n, emitted)
		s.fail(ctx, key, &in, err)
	}
	s.settle(key, &in)
	return err
}

// event calls the event function, turning a panic into an error.
func (s *keyedMachines[I, K, S, E, A, O]) event(v I) (e E, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("stage: event function: %w", newPanicError(p))
		}
	}()
	return s.spec.Event(v), nil
}

// create makes the instance of key, in a free slot of the slab.
func (s *keyedMachines[I, K, S, E, A, O]) create(key K) (keyedInst[K, S, E, A, O], error) {
	var m stagefsm.Machine[S, E, *Scope[K, O], A]
	err := safeCall(func() error {
		var err error
		m, err = s.spec.New(key)
		return err
	})
	if err == nil && m == nil {
		err = errors.New("stage: KeyedSpec.New returned a nil machine")
	}
	if err != nil {
		return keyedInst[K, S, E, A, O]{}, fmt.Errorf("stage: creating the instance of key %v: %w", key, err)
	}
	var r int32
	if n := len(s.free); n > 0 {
		r, s.free = s.free[n-1], s.free[:n-1]
	} else {
		s.slab = append(s.slab, keyedSlot[K]{})
		r = int32(len(s.slab) - 1)
	}
	s.slab[r] = keyedSlot[K]{key: key, live: true}
	in := keyedInst[K, S, E, A, O]{m: m, slot: r}
	s.index[key] = in
	s.counts.keys.Add(1)
	return in, nil
}

// feed feeds e to machine m of key and executes its actions.
func (s *keyedMachines[I, K, S, E, A, O]) feed(ctx context.Context, key K, m stagefsm.Machine[S, E, *Scope[K, O], A], e E) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = newPanicError(p)
		}
	}()
	s.scope.key = key
	acts, err := m.Handle(ctx, e, &s.scope)
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
func (s *keyedMachines[I, K, S, E, A, O]) fail(ctx context.Context, key K, in *keyedInst[K, S, E, A, O], cause error) {
	if s.spec.Failure != nil {
		if e, ok := s.spec.Failure(cause); ok {
			n, emitted := s.w.mark()
			if s.feed(ctx, key, in.m, e) == nil {
				return
			}
			s.w.undo(n, emitted)
		}
	}
	s.remove(key, in)
}

// settle removes instance in of key if it is terminal, else (re)arms its
// timeout, and stores what changed.
func (s *keyedMachines[I, K, S, E, A, O]) settle(key K, in *keyedInst[K, S, E, A, O]) {
	dirty := false
	if in.slot < 0 {
		return
	}
	if s.spec.Terminal(in.m.State()) {
		s.remove(key, in)
		return
	}
	if timed, ok := in.m.(stagefsm.Timed[E]); ok {
		dl, _, ok := timed.Timeout()
		switch at := dl.UnixNano(); {
		case !ok:
			if in.deadline != 0 {
				in.deadline, dirty = 0, true // the entry, if any, is dropped when due
			}
		case at == in.deadline:
			// unchanged, or the deadline that just fired
		default:
			in.deadline, dirty = at, true
			if sl := &s.slab[in.slot]; sl.gen == 0 || at < sl.at {
				if sl.gen == 0 {
					s.timers.armed++
				}
				s.push(sl, in.slot, at)
			}
		}
	}
	if dirty {
		s.index[key] = *in
	}
}

// push gives slot r, whose slab entry is sl, a new valid heap entry.
func (s *keyedMachines[I, K, S, E, A, O]) push(sl *keyedSlot[K], r int32, at int64) {
	s.gen++
	if s.gen == 0 { // 0 marks no entry
		s.gen++
	}
	sl.at, sl.gen = at, s.gen
	s.timers.push(timerEnt{at: at, slot: r, gen: s.gen})
}

// consume marks the valid heap entry of slot sl as gone.
func (s *keyedMachines[I, K, S, E, A, O]) consume(sl *keyedSlot[K]) {
	if sl.gen != 0 {
		sl.gen = 0
		s.timers.armed--
	}
}

func (s *keyedMachines[I, K, S, E, A, O]) remove(key K, in *keyedInst[K, S, E, A, O]) {
	if in.slot < 0 {
		return
	}
	s.consume(&s.slab[in.slot])
	delete(s.index, key)
	s.slab[in.slot] = keyedSlot[K]{}
	s.free = append(s.free, in.slot)
	s.counts.keys.Add(-1)
	*in = keyedInst[K, S, E, A, O]{slot: -1}
}

func (s *keyedMachines[I, K, S, E, A, O]) warm(keys []K) {
	ms := s.warmed[:0]
	for _, key := range keys {
		if in, ok := s.index[key]; ok {
			ms = append(ms, in.m)
		}
	}
	for _, m := range ms {
		m.State()
	}
	clear(ms)
	s.warmed = ms
}

func (s *keyedMachines[I, K, S, E, A, O]) next() (int64, bool) {
	e, ok := s.timers.head()
	return e.at, ok
}

// fireDue feeds the timeout event of every instance whose deadline has
// passed, earliest first.
func (s *keyedMachines[I, K, S, E, A, O]) fireDue(ctx context.Context, now int64, w *keyedOut[O]) error {
	s.w = w
	for {
		t, ok := s.timers.head()
		if !ok || t.at > now {
			return nil
		}
		s.timers.pop()
		sl := &s.slab[t.slot]
		key := sl.key
		in := s.index[key]
		switch {
		case in.deadline > t.at: // the deadline moved later: wait for it
			sl.at = in.deadline
			s.timers.push(timerEnt{at: sl.at, slot: t.slot, gen: sl.gen})
			continue
		case in.deadline != t.at: // disarmed
			s.consume(sl)
			continue
		}
		s.consume(sl) // fired: in.deadline stays, not to be armed again
		timed, _ := in.m.(stagefsm.Timed[E])
		_, e, ok := timed.Timeout()
		if ok {
			s.counts.timeouts.Add(1)
			n, emitted := w.mark()
			if err := s.feed(ctx, key, in.m, e); err != nil {
				w.undo(n, emitted)
				s.fail(ctx, key, &in, err)
			}
		}
		s.settle(key, &in)
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
	s.w = w
	for r := range s.slab {
		sl := s.slab[r]
		if !sl.live {
			continue
		}
		if e, ok := s.spec.Drain(sl.key); ok {
			in := s.index[sl.key]
			n, emitted := w.mark()
			if err := s.feed(ctx, sl.key, in.m, e); err != nil {
				w.undo(n, emitted)
				s.fail(ctx, sl.key, &in, err)
			}
			s.settle(sl.key, &in)
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

package stage

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

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
}

// ErrKeyedSpec is the build error of a keyed stage whose [KeyedSpec] lacks
// a required function; [Pipeline.Start] returns it, wrapped.
var ErrKeyedSpec = errors.New("stage: KeyedSpec needs Key, Event, New, Act and Terminal")

func (s *KeyedSpec[I, K, S, E, A, O]) check() error {
	if s.Key == nil || s.Event == nil || s.New == nil || s.Act == nil || s.Terminal == nil {
		return ErrKeyedSpec
	}
	return nil
}

// keyedRec is one key's instance: a slot of the core's slab.
type keyedRec[K comparable, S, E, A, O any] struct {
	m        stagefsm.Machine[S, E, *Scope[K, O], A]
	timed    stagefsm.Timed[E] // m, if it has timeouts
	key      K
	deadline int64 // UnixNano of the armed timeout, if hi >= 0
	hi       int32 // index in the deadline heap, -1 if not armed
	live     bool
}

// keyedStater is the optional interface of a core that reports keys and
// timeouts in Stats.
type keyedStater interface {
	keyedStats() (keys int, timeouts uint64)
}

// keyedCore routes each ok item to its key's machine, fires per-key
// timeouts from one heap and one timer, and sends the outputs downstream.
// It runs under the transform machine (no state of its own).
type keyedCore[I any, K comparable, S, E, A, O any] struct {
	u    *unit
	spec KeyedSpec[I, K, S, E, A, O]
	in   input[I]
	out  *edge[O]

	index map[K]int32
	slab  []keyedRec[K, S, E, A, O]
	free  []int32
	heap  []int32 // slab indices ordered by deadline
	timer *time.Timer
	scope Scope[K, O]

	held        []Item[I]
	next        int
	cur         []Item[O]
	seq         uint64
	unpublished uint64
	outClosed   bool

	keys     atomic.Int64
	timeouts atomic.Uint64
}

func newKeyedCore[I any, K comparable, S, E, A, O any](u *unit, spec KeyedSpec[I, K, S, E, A, O], in *edge[I], out *edge[O]) core {
	k := &keyedCore[I, K, S, E, A, O]{u: u, spec: spec, in: input[I]{edge: in}, out: out, index: make(map[K]int32)}
	k.scope.emit = k.emit
	return k
}

func (k *keyedCore[I, K, S, E, A, O]) keyedStats() (int, uint64) {
	return int(k.keys.Load()), k.timeouts.Load()
}

func (k *keyedCore[I, K, S, E, A, O]) handler() any { return nil }

func (k *keyedCore[I, K, S, E, A, O]) open(context.Context) error { return nil }

func (k *keyedCore[I, K, S, E, A, O]) emit(v O) {
	if k.cur == nil {
		k.cur = k.out.get()
	}
	k.seq++
	k.unpublished++
	k.cur = append(k.cur, Item[O]{Payload: v, Origin: k.u.name, Seq: k.seq})
}

func (k *keyedCore[I, K, S, E, A, O]) running(ctx context.Context) (stagefsm.Directive[event], error) {
	return k.consume(ctx, evReceivedEOF)
}

func (k *keyedCore[I, K, S, E, A, O]) draining(ctx context.Context) (stagefsm.Directive[event], error) {
	if k.in.exhausted() {
		return stagefsm.Transition(event{kind: evDrainComplete}), nil
	}
	return k.consume(ctx, evDrainComplete)
}

// consume fires the due timeouts, then waits for one input batch or the
// next deadline, whichever comes first, and handles it.
func (k *keyedCore[I, K, S, E, A, O]) consume(ctx context.Context, eof eventKind) (stagefsm.Directive[event], error) {
	if err := k.fireDue(ctx); err != nil {
		return stagefsm.Directive[event]{}, err
	}
	b, ok, err := k.receive(ctx)
	if err != nil {
		return stagefsm.Directive[event]{}, err
	}
	if b == nil && ok { // the timer fired
		return stagefsm.Continue[event](), k.fireDue(ctx)
	}
	if !ok {
		return stagefsm.Transition(event{kind: eof}), nil
	}
	k.held, k.next = b, 0
	var delivered uint64
	defer func() { k.u.stats.delivered.Add(delivered) }()
	for k.next < len(b) {
		it := &b[k.next]
		if it.Err == nil {
			err := k.item(ctx, it.Payload)
			if err == nil {
				delivered++
				k.next++
				if len(k.cur) >= k.out.batch {
					if err := k.flush(ctx); err != nil {
						return stagefsm.Directive[event]{}, err
					}
				}
				continue
			}
			if ctx.Err() != nil {
				return stagefsm.Directive[event]{}, err
			}
			it.Err = &ItemError{Stage: k.u.name, Err: err}
		}
		if k.cur == nil {
			k.cur = k.out.get()
		}
		k.cur = append(k.cur, passOn[I, O](*it))
		k.next++
	}
	k.held = nil
	k.in.put(b)
	if err := k.flush(ctx); err != nil {
		return stagefsm.Directive[event]{}, err
	}
	return stagefsm.Continue[event](), nil
}

// receive returns a parked batch, else waits for a batch, the timer (nil
// batch, ok) or ctx. ok is false at end of input.
func (k *keyedCore[I, K, S, E, A, O]) receive(ctx context.Context) ([]Item[I], bool, error) {
	in := &k.in
	if len(in.parked) > 0 || in.ended {
		return in.receive(ctx, k.u)
	}
	var tc <-chan time.Time
	if len(k.heap) > 0 {
		d := time.Duration(k.slab[k.heap[0]].deadline - time.Now().UnixNano())
		if k.timer == nil {
			k.timer = time.NewTimer(d)
		} else {
			k.timer.Reset(d)
		}
		tc = k.timer.C
	}
	select {
	case b, ok := <-in.ch:
		if !ok {
			in.ended = true
			return nil, false, nil
		}
		k.u.stats.in.Add(uint64(len(b)))
		return b, true, nil
	case <-tc:
		return nil, true, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// item routes one ok item to its key's instance. A non-nil error fails
// the item; the outputs of the failed call are discarded.
func (k *keyedCore[I, K, S, E, A, O]) item(ctx context.Context, v I) error {
	key, err := k.key(v)
	if err != nil {
		return err
	}
	r, ok := k.index[key]
	if !ok {
		if r, err = k.create(key); err != nil {
			return err
		}
	}
	mark, seq := len(k.cur), k.seq
	e, err := k.event(v)
	if err == nil {
		err = k.feed(ctx, r, e)
	}
	if err != nil {
		clear(k.cur[mark:])
		k.cur = k.cur[:mark]
		k.unpublished -= k.seq - seq
		k.seq = seq
		k.fail(ctx, r, err)
	}
	k.settle(r)
	return err
}

// event calls the event function, turning a panic into an error.
func (k *keyedCore[I, K, S, E, A, O]) event(v I) (e E, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("stage: event function: %w", newPanicError(p))
		}
	}()
	return k.spec.Event(v), nil
}

// key calls the key function, turning a panic into an error.
func (k *keyedCore[I, K, S, E, A, O]) key(v I) (key K, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("stage: key function: %w", newPanicError(p))
		}
	}()
	return k.spec.Key(v), nil
}

// create makes the instance of key in a free slot of the slab.
func (k *keyedCore[I, K, S, E, A, O]) create(key K) (int32, error) {
	var m stagefsm.Machine[S, E, *Scope[K, O], A]
	err := safeCall(func() error {
		var err error
		m, err = k.spec.New(key)
		return err
	})
	if err == nil && m == nil {
		err = errors.New("stage: KeyedSpec.New returned a nil machine")
	}
	if err != nil {
		return 0, fmt.Errorf("stage: creating the instance of key %v: %w", key, err)
	}
	var r int32
	if n := len(k.free); n > 0 {
		r, k.free = k.free[n-1], k.free[:n-1]
	} else {
		k.slab = append(k.slab, keyedRec[K, S, E, A, O]{})
		r = int32(len(k.slab) - 1)
	}
	rec := &k.slab[r]
	rec.m, rec.key, rec.hi, rec.live = m, key, -1, true
	rec.timed, _ = m.(stagefsm.Timed[E])
	k.index[key] = r
	k.keys.Add(1)
	return r, nil
}

// feed feeds e to instance r and executes its actions.
func (k *keyedCore[I, K, S, E, A, O]) feed(ctx context.Context, r int32, e E) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = newPanicError(p)
		}
	}()
	m := k.slab[r].m
	k.scope.key = k.slab[r].key
	acts, err := m.Handle(ctx, e, &k.scope)
	if err != nil {
		return err
	}
	for _, a := range acts {
		if err := k.spec.Act(ctx, a, e, &k.scope); err != nil {
			return err
		}
	}
	return nil
}

// fail is the failure path of one key: its failure event, if any; an
// instance without one, or whose failure event fails too, is removed.
func (k *keyedCore[I, K, S, E, A, O]) fail(ctx context.Context, r int32, cause error) {
	if k.spec.Failure != nil {
		if e, ok := k.spec.Failure(cause); ok && k.feed(ctx, r, e) == nil {
			return
		}
	}
	k.remove(r)
}

// settle removes instance r if it is terminal, else (re)arms its timeout.
func (k *keyedCore[I, K, S, E, A, O]) settle(r int32) {
	rec := &k.slab[r]
	if !rec.live {
		return
	}
	if k.spec.Terminal(rec.m.State()) {
		k.remove(r)
		return
	}
	if rec.timed == nil {
		return
	}
	dl, _, ok := rec.timed.Timeout()
	switch {
	case !ok:
		k.unarm(r)
	case rec.hi < 0:
		rec.deadline = dl.UnixNano()
		rec.hi = int32(len(k.heap))
		k.heap = append(k.heap, r)
		k.up(int(rec.hi))
	case rec.deadline != dl.UnixNano():
		rec.deadline = dl.UnixNano()
		k.fix(int(rec.hi))
	}
}

func (k *keyedCore[I, K, S, E, A, O]) remove(r int32) {
	rec := &k.slab[r]
	if !rec.live {
		return
	}
	k.unarm(r)
	delete(k.index, rec.key)
	*rec = keyedRec[K, S, E, A, O]{hi: -1}
	k.free = append(k.free, r)
	k.keys.Add(-1)
}

// fireDue feeds the timeout event of every instance whose deadline has
// passed, earliest first, and sends the outputs.
func (k *keyedCore[I, K, S, E, A, O]) fireDue(ctx context.Context) error {
	if len(k.heap) == 0 {
		return nil
	}
	now := time.Now().UnixNano()
	for len(k.heap) > 0 && k.slab[k.heap[0]].deadline <= now {
		r := k.heap[0]
		k.unarm(r)
		rec := &k.slab[r]
		_, e, ok := rec.timed.Timeout()
		if !ok {
			continue
		}
		k.timeouts.Add(1)
		if err := k.feed(ctx, r, e); err != nil {
			k.fail(ctx, r, err)
		}
		k.settle(r)
		if len(k.cur) >= k.out.batch {
			if err := k.flush(ctx); err != nil {
				return err
			}
		}
	}
	return k.flush(ctx)
}

// Heap of slab indices ordered by deadline; each record knows its index.

func (k *keyedCore[I, K, S, E, A, O]) less(i, j int) bool {
	return k.slab[k.heap[i]].deadline < k.slab[k.heap[j]].deadline
}

func (k *keyedCore[I, K, S, E, A, O]) swap(i, j int) {
	k.heap[i], k.heap[j] = k.heap[j], k.heap[i]
	k.slab[k.heap[i]].hi = int32(i)
	k.slab[k.heap[j]].hi = int32(j)
}

func (k *keyedCore[I, K, S, E, A, O]) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !k.less(i, p) {
			return
		}
		k.swap(i, p)
		i = p
	}
}

func (k *keyedCore[I, K, S, E, A, O]) down(i int) {
	n := len(k.heap)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if c+1 < n && k.less(c+1, c) {
			c++
		}
		if !k.less(c, i) {
			return
		}
		k.swap(i, c)
		i = c
	}
}

func (k *keyedCore[I, K, S, E, A, O]) fix(i int) {
	k.up(i)
	k.down(i)
}

// unarm takes instance r out of the heap, if it is in it.
func (k *keyedCore[I, K, S, E, A, O]) unarm(r int32) {
	i := int(k.slab[r].hi)
	if i < 0 {
		return
	}
	last := len(k.heap) - 1
	if i != last {
		k.swap(i, last)
	}
	k.heap = k.heap[:last]
	k.slab[r].hi = -1
	if i != last {
		k.fix(i)
	}
}

func (k *keyedCore[I, K, S, E, A, O]) flush(ctx context.Context) error {
	if len(k.cur) == 0 {
		return nil
	}
	k.publish()
	if err := k.out.send(ctx, k.cur); err != nil {
		return err
	}
	k.u.stats.out.Add(uint64(len(k.cur)))
	k.cur = nil
	return nil
}

func (k *keyedCore[I, K, S, E, A, O]) publish() {
	if k.unpublished > 0 {
		k.u.stats.emitted.Add(k.unpublished)
		k.unpublished = 0
	}
}

// finish feeds the drain event to every live instance, in key creation
// slot order, and sends the outputs. Timeouts still armed are not fired.
func (k *keyedCore[I, K, S, E, A, O]) finish(ctx context.Context) error {
	if k.spec.Drain != nil {
		for r := range k.slab {
			rec := &k.slab[r]
			if !rec.live {
				continue
			}
			if e, ok := k.spec.Drain(rec.key); ok {
				if err := k.feed(ctx, int32(r), e); err != nil {
					k.fail(ctx, int32(r), err)
				}
				k.settle(int32(r))
			}
		}
	}
	return k.flush(ctx)
}

func (k *keyedCore[I, K, S, E, A, O]) closeOutput() {
	if !k.outClosed {
		k.outClosed = true
		k.out.close() // one writer of a Merge, perhaps
	}
}

func (k *keyedCore[I, K, S, E, A, O]) shed(ctx context.Context, stop <-chan struct{}, cause error, parkable bool) (bool, error) {
	return k.in.shed(ctx, k.u, stop, cause, parkable)
}

func (k *keyedCore[I, K, S, E, A, O]) park() {
	k.held, k.next = parkHeld(k.u, &k.in, k.held, k.next)
}

func (k *keyedCore[I, K, S, E, A, O]) sweepHeld(cause error) {
	k.publish()
	if k.held != nil {
		for _, it := range k.held[k.next:] {
			deadLetter(k.u, it, cause)
		}
		k.held = nil
	}
	for _, it := range k.cur {
		deadLetter(k.u, it, cause)
	}
	k.cur = nil
	k.in.sweepParked(k.u, cause)
}

func (k *keyedCore[I, K, S, E, A, O]) sweep(cause error) {
	k.sweepHeld(cause)
	k.in.sweep(k.u, cause)
}

// Keyed adds the keyed stateful stage name, which reads in: each ok item is routed by
// spec.Key to its key's instance, created on the key's first item and
// removed when it reaches a terminal state. Items of one key are handled in
// arrival order. A key's failure (its event rejected, an action's error, a
// panic, a key function that panics) fails that item only, which goes on
// downstream as an error item to be dead-lettered; other keys go on. Per-key
// timeouts share one heap and one timer, fired by the stage's loop. At end
// of input every live instance gets spec.Drain's event, then the stage
// drains. [Stats] reports Keys and Timeouts. An incomplete spec fails the
// stage's start.
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
	u.core = newKeyedCore(u, spec, read(g, in, name), out.edge)
	return out
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

package stage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/checkpoint"
)

// keyedShard is one worker's part of a keyed stage: the instances of the
// keys hashed to it and their timeouts. One goroutine at a time uses a
// shard: a worker during a dispatch, the stage's loop otherwise.
type keyedShard[I any, K comparable, O any] interface {
	// item hands the ok item v of key to its instance, outputs to w; j is
	// the item's index in the batch last warmed, or -1. On error the
	// outputs of the call are discarded and the item fails; the key's own
	// failure path has run.
	item(ctx context.Context, j int, key K, v I, w *keyedOut[O]) error
	// next returns the earliest armed deadline, in UnixNano.
	next() (int64, bool)
	// fireDue fires the timeouts due at now, earliest first.
	fireDue(ctx context.Context, now int64, w *keyedOut[O]) error
	// drain runs the end-of-input trigger of every live instance.
	drain(ctx context.Context, w *keyedOut[O]) error
	// prepare readies the shard for checkpoints: it starts tracking the
	// keys that change, or says why it cannot checkpoint.
	prepare() error
	// capture adds to part the keys changed since the last capture.
	capture(part *checkpoint.StageUpdate) error
	// restore gives key its state from a checkpoint, b as capture made it,
	// its deadline moved by shift.
	restore(key K, b []byte, shift int64) error
	// warm looks up the instances of the items idx of a batch, whose keys
	// are keys (by index in the batch), before they are handled, bringing
	// them into the cache in loops short enough for the processor to
	// overlap their cache misses. It changes no instance.
	warm(keys []K, idx []int)
}

// keyedCounts are the live Stats of a keyed stage, shared by its shards.
type keyedCounts struct {
	keys     atomic.Int64
	timeouts atomic.Uint64
}

// keyedOut collects the outputs of a shard. The stage's own keyedOut holds
// what it has not sent yet and sends full batches (flush); a worker's only
// collects, for the stage to take after the dispatch.
type keyedOut[O any] struct {
	items   []Item[O]
	emitted uint64 // outputs in items not yet added to the counters
	origin  string
	pool    *edge[O]                        // where empty batches come from; nil in a worker
	flush   func(ctx context.Context) error // nil in a worker
}

func (w *keyedOut[O]) emit(v O) {
	if w.items == nil && w.pool != nil {
		w.items = w.pool.get()
	}
	w.emitted++
	w.items = append(w.items, Item[O]{Payload: v, Origin: w.origin})
}

func (w *keyedOut[O]) pass(it Item[O]) {
	if w.items == nil && w.pool != nil {
		w.items = w.pool.get()
	}
	w.items = append(w.items, it)
}

// mark and undo discard the outputs of a call that failed.
func (w *keyedOut[O]) mark() (int, uint64) { return len(w.items), w.emitted }

func (w *keyedOut[O]) undo(n int, emitted uint64) {
	clear(w.items[n:])
	w.items, w.emitted = w.items[:n], emitted
}

// full sends the outputs when a batch is full, in the stage's own keyedOut.
func (w *keyedOut[O]) full(ctx context.Context) error {
	if w.flush != nil && w.pool != nil && len(w.items) >= w.pool.batch {
		return w.flush(ctx)
	}
	return nil
}

// keyedCore is the core of a keyed stage ([Keyed], [KeyedAccumulate]): it
// routes each ok item by its key to a shard, fires the shards' timeouts
// from one timer and sends the outputs downstream. It runs under the
// transform machine (no state of its own). With one shard everything runs
// on the stage's loop; with more, each input batch is one dispatch: the
// items are split by the hash of their key, each shard's share runs on a
// goroutine of its own, and the dispatch joins them all before it returns,
// so that no worker outlives it. Timeouts and drain run on the loop, one
// shard after the other, with no worker running.
type keyedCore[I any, K comparable, O any] struct {
	u      *unit
	key    func(I) K
	in     input[I]
	out    *edge[O]
	shards []keyedShard[I, K, O]
	counts *keyedCounts
	timer  *time.Timer

	w         keyedOut[O] // outputs not yet sent
	seq       uint64
	held      []Item[I]
	next      int
	outClosed bool

	// Per batch:
	keys  []K   // the key of each ok item of the batch, by index
	okIdx []int // the indexes of the ok items

	// With workers (len(shards) > 1), per dispatch:
	seed  maphash.Seed
	jobs  [][]int       // per shard: the indexes of its items in the batch
	outs  []keyedOut[O] // per shard: its outputs
	done  []int         // per shard: items of its job processed
	fatal []int         // per shard: index of the item whose Fatal error stopped it, or -1
	ok    []uint64      // per shard: ok items delivered
}

func newKeyedCore[I any, K comparable, O any](u *unit, key func(I) K, shards []keyedShard[I, K, O], counts *keyedCounts, in *edge[I], out *edge[O]) *keyedCore[I, K, O] {
	k := &keyedCore[I, K, O]{u: u, key: key, in: input[I]{edge: in}, out: out, shards: shards, counts: counts}
	k.w = keyedOut[O]{origin: u.name, pool: out, flush: k.flush}
	if n := len(shards); n > 1 {
		k.seed = maphash.MakeSeed()
		k.jobs = make([][]int, n)
		k.outs = make([]keyedOut[O], n)
		for i := range k.outs {
			k.outs[i].origin = u.name
		}
		k.done, k.fatal, k.ok = make([]int, n), make([]int, n), make([]uint64, n)
	}
	return k
}

func (k *keyedCore[I, K, O]) keyedStats() (int, uint64) {
	return int(k.counts.keys.Load()), k.counts.timeouts.Load()
}

func (k *keyedCore[I, K, O]) handler() any { return nil }

func (k *keyedCore[I, K, O]) open(context.Context) error { return nil }

func (k *keyedCore[I, K, O]) running(ctx context.Context) (stagefsm.Directive[event], error) {
	return k.consume(ctx, evReceivedEOF)
}

func (k *keyedCore[I, K, O]) draining(ctx context.Context) (stagefsm.Directive[event], error) {
	if k.in.exhausted() {
		return stagefsm.Transition(event{kind: evDrainComplete}), nil
	}
	return k.consume(ctx, evDrainComplete)
}

// consume fires the due timeouts, then waits for one input batch or the
// next deadline, whichever comes first, and handles it.
func (k *keyedCore[I, K, O]) consume(ctx context.Context, eof eventKind) (stagefsm.Directive[event], error) {
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
	if k.u.lat != nil {
		defer k.u.lat.since(time.Now())
	}
	if len(k.shards) > 1 {
		return k.dispatch(ctx, b)
	}
	return k.serial(ctx, b)
}

// serial handles batch b on the stage's loop, with the one shard.
func (k *keyedCore[I, K, O]) serial(ctx context.Context, b []Item[I]) (stagefsm.Directive[event], error) {
	k.held, k.next = b, 0
	delivered, err := k.handle(ctx, b)
	k.u.stats.delivered.Add(delivered)
	if err != nil {
		return stagefsm.Directive[event]{}, err
	}
	k.held = nil
	k.in.put(b)
	if err := k.flush(ctx); err != nil {
		return stagefsm.Directive[event]{}, err
	}
	return stagefsm.Continue[event](), nil
}

// handle hands the items of b to the one shard, in order, sending full
// batches of outputs through k.w. It returns the number of ok items
// delivered. On a Fatal error it sends what the stage produced before and
// returns the error; the failed item, marked, stays at k.next.
func (k *keyedCore[I, K, O]) handle(ctx context.Context, b []Item[I]) (delivered uint64, err error) {
	sh := k.shards[0]
	sh.warm(k.keys, k.keysOf(b))
	for k.next < len(b) {
		it := &b[k.next]
		if it.Err == nil {
			err := sh.item(ctx, k.next, k.keys[k.next], it.Payload, &k.w)
			if err == nil {
				delivered++
				k.next++
				if err := k.w.full(ctx); err != nil {
					return delivered, err
				}
				continue
			}
			if ctx.Err() != nil { // aborted: the item stays held, for the sweep
				return delivered, err
			}
			it.Err = &ItemError{Stage: k.u.name, Err: err}
			if errors.Is(err, ErrFatal) {
				if ferr := k.w.flush(ctx); ferr != nil {
					return delivered, ferr
				}
				return delivered, err
			}
		}
		k.w.pass(passOn[I, O](*it))
		k.next++
	}
	return delivered, nil
}

// keysOf computes the key of every ok item of b into k.keys, by index,
// and returns the indexes of the ok items. An item whose key function
// panics fails.
func (k *keyedCore[I, K, O]) keysOf(b []Item[I]) []int {
	clear(k.keys)
	k.keys = slices.Grow(k.keys[:0], len(b))[:len(b)]
	k.okIdx = k.okIdx[:0]
	for i := 0; i < len(b); {
		i = k.keysFrom(b, i)
	}
	return k.okIdx
}

// keysFrom computes the keys of b from item i on, up to the end or to an
// item whose key function panics, which it fails. It returns where to go
// on from. (One recover for a run of items, rather than one per item.)
func (k *keyedCore[I, K, O]) keysFrom(b []Item[I], i int) (next int) {
	defer func() {
		if p := recover(); p != nil {
			b[i].Err = &ItemError{Stage: k.u.name, Err: fmt.Errorf("stage: key function: %w", newPanicError(p))}
			next = i + 1
		}
	}()
	for ; i < len(b); i++ {
		if b[i].Err == nil {
			k.keys[i] = k.key(b[i].Payload)
			k.okIdx = append(k.okIdx, i)
		}
	}
	return i
}

// dispatch handles batch b on the workers: each ok item goes to the shard
// of its key's hash, so that the items of a key keep their order; the
// error items (and those whose key function panicked) go with shard 0's.
// It joins every worker, then sends the outputs, shard after shard.
func (k *keyedCore[I, K, O]) dispatch(ctx context.Context, b []Item[I]) (stagefsm.Directive[event], error) {
	k.held, k.next = b, 0
	n := uint64(len(k.shards))
	for i := range k.jobs {
		k.jobs[i], k.done[i], k.fatal[i], k.ok[i] = k.jobs[i][:0], 0, -1, 0
	}
	k.keysOf(b)
	for i := range b {
		w := 0
		if b[i].Err == nil {
			w = int(maphash.Comparable(k.seed, k.keys[i]) % n)
		}
		k.jobs[w] = append(k.jobs[w], i)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for i := range k.shards {
		if len(k.jobs[i]) > 0 {
			wg.Go(func() { k.work(ctx, b, i, &stop) })
		}
	}
	wg.Wait()

	var delivered uint64
	var sendErr error
	fatal, rest := -1, false
	for i := range k.shards {
		delivered += k.ok[i]
		o := &k.outs[i]
		k.w.emitted += o.emitted
		for _, it := range o.items {
			k.w.pass(it)
			if sendErr == nil {
				sendErr = k.w.full(ctx)
			}
		}
		clear(o.items)
		o.items, o.emitted = o.items[:0], 0
		if f := k.fatal[i]; f >= 0 && (fatal < 0 || f < fatal) {
			fatal = f
		}
		rest = rest || k.done[i] < len(k.jobs[i])
	}
	k.u.stats.delivered.Add(delivered)
	if rest || fatal >= 0 {
		// The job did not finish: what it did not process stays held, in
		// input order, the failed item first (see parkHeld).
		k.held, k.next = k.unprocessed(b, fatal), 0
	} else {
		k.held = nil
		k.in.put(b)
	}
	switch {
	case sendErr != nil:
		return stagefsm.Directive[event]{}, sendErr
	case fatal >= 0:
		if err := k.flush(ctx); err != nil {
			return stagefsm.Directive[event]{}, err
		}
		return stagefsm.Directive[event]{}, k.held[0].Err.(*ItemError).Err
	case ctx.Err() != nil:
		return stagefsm.Directive[event]{}, ctx.Err()
	}
	if k.held != nil {
		// Unreachable (a worker stops early only on a Fatal error or when
		// ctx is done), but what was not processed must not be lost.
		k.in.park(k.held)
		k.held = nil
	}
	if err := k.flush(ctx); err != nil {
		return stagefsm.Directive[event]{}, err
	}
	return stagefsm.Continue[event](), nil
}

// work processes shard i's share of batch b on a worker goroutine. It
// stops at the first Fatal error (its own or, through stop, another
// worker's) and when ctx is done; the items it did not process stay in
// the batch, unmarked. A panic outside the user functions the shard
// recovers (Terminal, Failure) fails the stage like a Fatal error.
func (k *keyedCore[I, K, O]) work(ctx context.Context, b []Item[I], i int, stop *atomic.Bool) {
	job, o, sh := k.jobs[i], &k.outs[i], k.shards[i]
	defer func() {
		if p := recover(); p != nil {
			j := job[k.done[i]]
			b[j].Err = &ItemError{Stage: k.u.name, Err: Fatal(newPanicError(p))}
			k.fatal[i] = j
			stop.Store(true)
		}
	}()
	sh.warm(k.keys, job)
	for k.done[i] < len(job) {
		if stop.Load() || ctx.Err() != nil {
			return
		}
		j := job[k.done[i]]
		it := &b[j]
		if it.Err != nil {
			o.items = append(o.items, passOn[I, O](*it))
			k.done[i]++
			continue
		}
		err := sh.item(ctx, j, k.keys[j], it.Payload, o)
		if err == nil {
			k.ok[i]++
			k.done[i]++
			continue
		}
		if ctx.Err() != nil {
			return // aborted: the item stays unprocessed, for the sweep
		}
		it.Err = &ItemError{Stage: k.u.name, Err: err}
		if errors.Is(err, ErrFatal) {
			k.fatal[i] = j
			stop.Store(true)
			return
		}
		o.items = append(o.items, passOn[I, O](*it))
		k.done[i]++
	}
}

// unprocessed returns the items of b that no worker processed, in input
// order, with the item that failed with a Fatal error (fatal, or -1) first.
func (k *keyedCore[I, K, O]) unprocessed(b []Item[I], fatal int) []Item[I] {
	var left []int
	for i, job := range k.jobs {
		for _, j := range job[k.done[i]:] {
			if j != fatal {
				left = append(left, j)
			}
		}
	}
	held := heldAfterFatal(b, fatal, left) // before b is cleared for reuse
	k.in.put(b)
	return held
}

// receive returns a parked batch, else waits for a batch, the timer (nil
// batch, ok) or ctx. ok is false at end of input.
func (k *keyedCore[I, K, O]) receive(ctx context.Context) ([]Item[I], bool, error) {
	in := &k.in
	if len(in.parked) > 0 || in.ended {
		return in.receive(ctx, k.u)
	}
	var tc <-chan time.Time
	if at, ok := k.nextDeadline(); ok {
		d := time.Duration(at - time.Now().UnixNano())
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
		b, _, err := in.take(ctx, k.u, b)
		return b, true, err // a barrier: nil, as if the timer fired
	case <-tc:
		return nil, true, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

func (k *keyedCore[I, K, O]) nextDeadline() (int64, bool) {
	var at int64
	found := false
	for _, s := range k.shards {
		if t, ok := s.next(); ok && (!found || t < at) {
			at, found = t, true
		}
	}
	return at, found
}

// fireDue fires the due timeouts of every shard and sends the outputs.
func (k *keyedCore[I, K, O]) fireDue(ctx context.Context) error {
	at, ok := k.nextDeadline()
	if !ok {
		return nil
	}
	now := time.Now().UnixNano()
	if at > now {
		return nil
	}
	for _, s := range k.shards {
		if err := s.fireDue(ctx, now, &k.w); err != nil {
			return err
		}
	}
	return k.flush(ctx)
}

// flush numbers the pending outputs and sends them, if any.
func (k *keyedCore[I, K, O]) flush(ctx context.Context) error {
	if len(k.w.items) == 0 {
		return nil
	}
	for i := range k.w.items {
		if it := &k.w.items[i]; it.Err == nil {
			k.seq++
			it.Seq = k.seq
		}
	}
	k.publish()
	if err := k.out.send(ctx, k.w.items); err != nil {
		return err
	}
	k.u.stats.out.Add(uint64(len(k.w.items)))
	k.w.items = nil
	return nil
}

func (k *keyedCore[I, K, O]) publish() {
	if k.w.emitted > 0 {
		k.u.stats.emitted.Add(k.w.emitted)
		k.w.emitted = 0
	}
}

// finish runs the drain trigger of every shard, one after the other, and
// sends the outputs.
func (k *keyedCore[I, K, O]) finish(ctx context.Context) error {
	if !k.u.drainAgain() {
		return nil
	}
	for _, s := range k.shards {
		if err := s.drain(ctx, &k.w); err != nil {
			return err
		}
	}
	return k.flush(ctx)
}

func (k *keyedCore[I, K, O]) closeOutput() {
	if !k.outClosed {
		k.outClosed = true
		k.out.close() // one writer of a Merge, perhaps
	}
}

func (k *keyedCore[I, K, O]) shed(ctx context.Context, stop <-chan struct{}, cause error, parkable bool) (bool, error) {
	return k.in.shed(ctx, k.u, stop, cause, parkable)
}

func (k *keyedCore[I, K, O]) park() {
	k.held, k.next = parkHeld(k.u, &k.in, k.held, k.next)
}

func (k *keyedCore[I, K, O]) sweepHeld(cause error) {
	k.publish()
	if k.held != nil {
		for _, it := range k.held[k.next:] {
			deadLetter(k.u, it, cause)
		}
		k.held = nil
	}
	for _, it := range k.w.items {
		deadLetter(k.u, it, cause)
	}
	k.w.items = nil
	k.in.sweepParked(k.u, cause)
}

func (k *keyedCore[I, K, O]) sweep(cause error) {
	k.sweepHeld(cause)
	k.in.sweep(k.u, cause)
}

// timerEnt is an entry of a shard's deadline heap: the deadline armed for
// a slot, valid while the slot's generation is still gen.
type timerEnt struct {
	at   int64
	slot int32
	gen  uint32
}

// timerHeap is a shard's deadline heap. It is lazy: re-arming a slot
// pushes a new entry and leaves the old one in place, to be skipped when
// it reaches the top (its gen is stale), so that arming costs a push —
// O(1) when deadlines come in increasing order, as one timeout duration
// gives them — and disarming costs nothing. Stale entries are compacted
// away when they outnumber the armed ones.
type timerHeap struct {
	ents  []timerEnt
	armed int                   // slots armed: valid entries
	valid func(e timerEnt) bool // whether e is the slot's current deadline
}

func (h *timerHeap) push(e timerEnt) {
	if len(h.ents) > 2*h.armed+64 {
		h.compact()
	}
	h.ents = append(h.ents, e)
	h.up(len(h.ents) - 1)
}

// head returns the earliest valid entry, dropping the stale ones above it.
func (h *timerHeap) head() (timerEnt, bool) {
	for len(h.ents) > 0 {
		if e := h.ents[0]; h.valid(e) {
			return e, true
		}
		h.pop()
	}
	return timerEnt{}, false
}

func (h *timerHeap) pop() {
	last := len(h.ents) - 1
	h.ents[0] = h.ents[last]
	h.ents = h.ents[:last]
	if last > 0 {
		h.down(0)
	}
}

func (h *timerHeap) compact() {
	h.ents = slices.DeleteFunc(h.ents, func(e timerEnt) bool { return !h.valid(e) })
	for i := len(h.ents)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *timerHeap) up(i int) {
	e := h.ents[i]
	for i > 0 {
		p := (i - 1) / 2
		if h.ents[p].at <= e.at {
			break
		}
		h.ents[i] = h.ents[p]
		i = p
	}
	h.ents[i] = e
}

func (h *timerHeap) down(i int) {
	n := len(h.ents)
	e := h.ents[i]
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if c+1 < n && h.ents[c+1].at < h.ents[c].at {
			c++
		}
		if e.at <= h.ents[c].at {
			break
		}
		h.ents[i] = h.ents[c]
		i = c
	}
	h.ents[i] = e
}

// slabPage is the number of records of a full page of a slab.
const slabPage = 1024

// slab is a shard's array of records, indexed by slot, grown by pages so
// that growing never copies the records there (nor makes the GC scan them
// again): the first page grows as a slice does up to slabPage records,
// the next ones are made full size.
type slab[T any] struct {
	pages [][]T
	n     int32
}

func (s *slab[T]) at(r int32) *T { return &s.pages[uint32(r)/slabPage][uint32(r)%slabPage] }

func (s *slab[T]) len() int32 { return s.n }

// add appends a zero record and returns its slot.
func (s *slab[T]) add() int32 {
	if len(s.pages) == 0 || len(s.pages[len(s.pages)-1]) == slabPage {
		c := slabPage
		if len(s.pages) == 0 {
			c = 8
		}
		s.pages = append(s.pages, make([]T, 0, c))
	}
	last := &s.pages[len(s.pages)-1]
	var zero T
	*last = append(*last, zero)
	r := s.n
	s.n++
	return r
}

func (k *keyedCore[I, K, O]) prepare() error {
	for _, s := range k.shards {
		if err := s.prepare(); err != nil {
			return err
		}
	}
	return nil
}

func (k *keyedCore[I, K, O]) writers() int { return int(k.in.writers.Load()) }

func (k *keyedCore[I, K, O]) capture(context.Context) (checkpoint.StageUpdate, error) {
	part := checkpoint.StageUpdate{Set: seqUpdate(k.seq)}
	now := time.Now().UnixNano()
	part.Set[nowKey] = fmt.Appendf(nil, "%d", now)
	for _, s := range k.shards {
		if err := s.capture(&part); err != nil {
			return part, err
		}
	}
	return part, nil
}

func (k *keyedCore[I, K, O]) forward(ctx context.Context, id uint64) error {
	return k.out.send(ctx, barrierBatch[O](id))
}

// restore gives each key of the checkpoint to its shard.
func (k *keyedCore[I, K, O]) restore(st checkpoint.Stage) error {
	if err := restoreSeq(st, &k.seq); err != nil {
		return err
	}
	var shift int64
	if b, ok := st.State[nowKey]; ok {
		var then int64
		if _, err := fmt.Sscanf(string(b), "%d", &then); err != nil {
			return &checkpoint.DecodeError{Stage: k.u.name, Key: nowKey, Err: err}
		}
		shift = time.Now().UnixNano() - then
	}
	n := uint64(len(k.shards))
	for key, b := range st.State {
		if !isKeyState(key) {
			continue
		}
		kk, err := decodeKey[K](key)
		if err != nil {
			return &checkpoint.DecodeError{Stage: k.u.name, Key: key, Err: err}
		}
		sh := 0
		if n > 1 {
			sh = int(maphash.Comparable(k.seed, kk) % n)
		}
		if err := k.shards[sh].restore(kk, b, shift); err != nil {
			return &checkpoint.DecodeError{Stage: k.u.name, Key: key, Err: err}
		}
	}
	return nil
}

// captureRemoved adds to part a Delete for each key of removed that is not
// live again (in index: it is set instead), and returns removed emptied.
func captureRemoved[K comparable](part *checkpoint.StageUpdate, removed []K, index map[K]int32) ([]K, error) {
	for _, k := range removed {
		if _, live := index[k]; live {
			continue
		}
		key, err := encodeKey(k)
		if err != nil {
			return removed, err
		}
		part.Delete = append(part.Delete, key)
	}
	clear(removed)
	return removed[:0], nil
}

// captureKey sets in part the saved value of key k: its deadline (0: none)
// and its state, encoded by codec.
func captureKey[K comparable, S any](part *checkpoint.StageUpdate, codec checkpoint.Codec[S], k K, deadline int64, st S) error {
	key, err := encodeKey(k)
	if err != nil {
		return err
	}
	b, err := codec.Encode(st)
	if err != nil {
		return fmt.Errorf("encoding the state of key %v: %w", k, err)
	}
	part.Set[key] = putTimed(deadline, b)
	return nil
}

// putTimed encodes a key's saved value: its deadline (UnixNano, 0 for
// none) and its encoded state.
func putTimed(deadline int64, state []byte) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(state)), uint64(deadline))
	return append(b, state...)
}

// getTimed decodes what putTimed encoded, the deadline moved by shift.
func getTimed(b []byte, shift int64) (deadline int64, state []byte, err error) {
	if len(b) < 8 {
		return 0, nil, fmt.Errorf("a saved value of %d bytes, want at least 8", len(b))
	}
	if deadline = int64(binary.BigEndian.Uint64(b)); deadline != 0 {
		deadline += shift
	}
	return deadline, b[8:], nil
}

// nowKey is the state key of the time of a keyed stage's last capture.
// The deadlines saved are of the clock then; on restore they move by the
// time since, so that a timeout has the time it had left at the last cut
// and the time the pipeline was down does not count.
const nowKey = "now"

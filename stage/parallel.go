package stage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/stagefsm/stagefsm"
)

// Order is the output order of a parallel transform (see [Parallel]).
type Order uint8

const (
	// InputOrder, the zero value, sends the outputs in input order: those
	// of an item leave after those of every item that arrived before it,
	// as from a transform on one worker.
	InputOrder Order = iota
	// AnyOrder sends the outputs of each worker's share of a batch as soon
	// as that share is done: the same items leave, in any order.
	AnyOrder
	// KeyOrder sends every item with the same [Parallel.Key] to the same
	// worker, so that the outputs of one key leave in input order; keys
	// interleave in any order.
	KeyOrder
)

func (o Order) String() string {
	switch o {
	case InputOrder:
		return "InputOrder"
	case AnyOrder:
		return "AnyOrder"
	case KeyOrder:
		return "KeyOrder"
	}
	return fmt.Sprintf("Order(%d)", uint8(o))
}

// ErrParallel is the error, matched with errors.Is, of a [Parallel]
// configuration that cannot run: Workers < 1, an unknown Order, or
// KeyOrder without a Key. [Pipeline.Start] reports it.
var ErrParallel = errors.New("stage: invalid Parallel")

// ErrKey is the cause, matched with errors.Is, of an item whose
// [Parallel.Key] panicked: the item is dead-lettered with it (the
// [ItemError]'s error wraps the recovered panic's [stagefsm.PanicError]).
var ErrKey = errors.New("stage: the Key of a parallel stage panicked")

// Parallel configures a transform stage that runs its handler on several
// workers (see [ThenParallel]).
//
// The stage takes its input one batch at a time (see [WithBatchSize]); a
// batch is one job, split between at most Workers goroutines, which live
// for that job only: no worker outlives the dispatch that started it, so
// a stage that fails, is aborted or restarts leaves no goroutine behind,
// and the items of an unfinished job are dead-lettered (or parked for a
// restart) like those of any transform. With InputOrder and AnyOrder a
// batch is cut into Workers contiguous shares; with KeyOrder each ok item
// goes to worker Key(item) % Workers.
//
// The handler's Process is called concurrently, from up to Workers
// goroutines at once: it must be safe for concurrent use. Its Open, Drain
// and Close hooks are called as for [Then], on the stage's goroutine, with
// no worker running. Per-item results are those of [Transform]: an error
// or a panic fails the item (its outputs are discarded); a [Fatal] error
// fails the stage, whose single state machine is unchanged — the workers
// have no states of their own. After a Fatal error the other workers stop
// at their next item and the rest of the batch is dead-lettered (or, under
// [WithRestart], parked for the next incarnation). With InputOrder what
// goes downstream stays a prefix of the input: the outputs of the items
// after the failed one are discarded, and those items are dead-lettered
// (or processed again after a restart) although the handler ran on them;
// with AnyOrder and KeyOrder the outputs of every item finished go on.
//
// Parallelism is bounded by the batch size: a batch of one item runs on
// one worker.
type Parallel[T any] struct {
	// Workers is the number of goroutines per batch; at least 1.
	Workers int
	// Order is the output order; the zero value is InputOrder.
	Order Order
	// Key maps an item to its key, for KeyOrder (required then, unused
	// otherwise). It is called on the stage's goroutine; a Key that panics
	// dead-letters that item with [ErrKey].
	Key func(T) uint64
}

// validate reports why the configuration cannot run, wrapping ErrParallel.
func (p Parallel[T]) validate() error {
	switch {
	case p.Workers < 1:
		return fmt.Errorf("%w: Workers is %d, want at least 1", ErrParallel, p.Workers)
	case p.Order > KeyOrder:
		return fmt.Errorf("%w: unknown %v", ErrParallel, p.Order)
	case p.Order == KeyOrder && p.Key == nil:
		return fmt.Errorf("%w: KeyOrder needs a Key", ErrParallel)
	}
	return nil
}

// share is one worker's part of a job: the indexes in the batch of the
// items it processes, in order, and what came of them.
type share[O any] struct {
	idx  []int
	done int       // items of idx processed (ended ok or failed)
	out  []Item[O] // their outputs and error items, in order
	ok   uint64    // ok items delivered
	emit uint64    // outputs emitted
	// fatal is the index in the batch of the item whose Fatal error stops
	// the job, or -1.
	fatal int
}

// parallelCore is a [transformCore] whose items are processed by workers:
// one input, one output, the same counters and the same sweeps. Workers
// exist only inside consume, which joins them before it returns.
type parallelCore[I, O any] struct {
	*transformCore[I, O]
	par    Parallel[I]
	shares []share[O]
	ready  chan int // indexes of the shares done, one per worker
	taken  []bool   // per share: received from ready
}

// newParallelCore returns the core of a parallel transform stage. par must
// be valid (see Parallel.validate): a bad one is reported at build time; if
// one reaches here anyway, Workers is taken as at least 1 and a KeyOrder
// without Key as InputOrder, so that the stage runs rather than hangs.
func newParallelCore[I, O any](u *unit, t Transform[I, O], par Parallel[I], in *edge[I], out *edge[O]) core {
	par.Workers = max(par.Workers, 1)
	if par.Order > KeyOrder || (par.Order == KeyOrder && par.Key == nil) {
		par.Order = InputOrder
	}
	p := &parallelCore[I, O]{
		transformCore: newTransformCore(u, t, in, out),
		par:           par,
		shares:        make([]share[O], par.Workers),
		ready:         make(chan int, par.Workers),
		taken:         make([]bool, par.Workers),
	}
	return p
}

func (p *parallelCore[I, O]) running(ctx context.Context) (stagefsm.Directive[event], error) {
	return p.consume(ctx, evReceivedEOF)
}

func (p *parallelCore[I, O]) draining(ctx context.Context) (stagefsm.Directive[event], error) {
	if p.in.exhausted() {
		return stagefsm.Transition(event{kind: evDrainComplete}), nil
	}
	return p.consume(ctx, evDrainComplete)
}

// split assigns the items of b to the shares and returns how many shares
// have work. Error items (and items whose Key panicked) go to the share
// of the item before them, or the first, so that InputOrder keeps them in
// place.
func (p *parallelCore[I, O]) split(b []Item[I]) int {
	n := len(p.shares)
	for i := range p.shares {
		s := &p.shares[i]
		s.idx, s.done, s.out, s.ok, s.emit, s.fatal = s.idx[:0], 0, nil, 0, 0, -1
	}
	if p.par.Order != KeyOrder {
		per := (len(b) + n - 1) / n
		used := 0
		for i := 0; i < len(b); i += per {
			s := &p.shares[used]
			for j := i; j < min(i+per, len(b)); j++ {
				s.idx = append(s.idx, j)
			}
			used++
		}
		return used
	}
	for i := range b {
		w := 0
		if b[i].Err == nil {
			k, err := p.key(b[i].Payload)
			if err != nil {
				b[i].Err = &ItemError{Stage: p.u.name, Err: err}
			} else {
				w = int(k % uint64(n))
			}
		}
		p.shares[w].idx = append(p.shares[w].idx, i)
	}
	used := 0
	for i := range p.shares {
		if len(p.shares[i].idx) > 0 {
			p.shares[used], p.shares[i] = p.shares[i], p.shares[used]
			used++
		}
	}
	return used
}

// key calls the Key func, turning a panic into an error wrapping ErrKey.
func (p *parallelCore[I, O]) key(v I) (k uint64, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %w", ErrKey, newPanicError(r))
		}
	}()
	return p.par.Key(v), nil
}

// work processes share s of batch b on a worker goroutine. It stops at the
// first Fatal error (its own or, through stop, another worker's) and when
// ctx is done; the items it did not process stay in the batch, unmarked.
func (p *parallelCore[I, O]) work(ctx context.Context, b []Item[I], s *share[O], stop *atomic.Bool) {
	emit := func(v O) {
		s.emit++
		s.out = append(s.out, Item[O]{Payload: v})
	}
	for s.done < len(s.idx) {
		if stop.Load() || ctx.Err() != nil {
			return
		}
		it := &b[s.idx[s.done]]
		if it.Err != nil {
			s.out = append(s.out, passOn[I, O](*it))
			s.done++
			continue
		}
		mark, emitted := len(s.out), s.emit
		err := p.call(ctx, it.Payload, emit)
		if err == nil {
			s.ok++
			s.done++
			continue
		}
		clear(s.out[mark:]) // the outputs of a failed call never existed
		s.out, s.emit = s.out[:mark], emitted
		if ctx.Err() != nil {
			return // aborted: the item stays unprocessed, for the sweep
		}
		it.Err = &ItemError{Stage: p.u.name, Err: err}
		if errors.Is(err, ErrFatal) {
			s.fatal = s.idx[s.done]
			stop.Store(true)
			return
		}
		s.out = append(s.out, passOn[I, O](*it))
		s.done++
	}
}

// call runs the handler on one item with the worker's emit.
func (p *parallelCore[I, O]) call(ctx context.Context, v I, emit func(O)) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = newPanicError(r)
		}
	}()
	return p.h.Process(ctx, v, emit)
}

// consume waits for one input batch, runs it as a job on the workers,
// joins them and sends the outputs: in share order for InputOrder, as the
// shares finish otherwise. At end of input it returns the transition eof.
func (p *parallelCore[I, O]) consume(ctx context.Context, eof eventKind) (stagefsm.Directive[event], error) {
	b, ok, err := p.in.receive(ctx, p.u)
	if err != nil {
		return stagefsm.Directive[event]{}, err
	}
	if !ok {
		return stagefsm.Transition(event{kind: eof}), nil
	}
	p.held, p.next = b, 0
	used := p.split(b)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for i := range used {
		wg.Go(func() {
			defer func() { p.ready <- i }()
			p.work(ctx, b, &p.shares[i], &stop)
		})
	}
	// Collect every share, in the order the mode wants, before anything can
	// return: no worker outlives this call.
	var sendErr error
	taken := p.taken[:used]
	clear(taken)
	nextShare, cut := 0, false
	for range used {
		i := <-p.ready
		taken[i] = true
		if p.par.Order == InputOrder {
			for nextShare < used && taken[nextShare] {
				s := &p.shares[nextShare]
				if cut {
					// An earlier share stopped short (a Fatal error): what
					// this one did never existed, so downstream gets a
					// prefix of the input.
					clear(s.out)
					s.out, s.done, s.ok, s.emit = nil, 0, 0, 0 // fatal stays: the stage fails
				} else {
					sendErr = p.take(ctx, s, sendErr)
					// A share that stopped early (a Fatal error here or in
					// a later share) ends the prefix too.
					cut = s.fatal >= 0 || s.done < len(s.idx)
				}
				nextShare++
			}
			continue
		}
		sendErr = p.take(ctx, &p.shares[i], sendErr)
	}
	wg.Wait()
	fatal, rest := -1, false
	var fatalErr error
	for i := range used {
		s := &p.shares[i]
		if s.fatal >= 0 && (fatal < 0 || s.fatal < fatal) {
			fatal = s.fatal
		}
		rest = rest || s.done < len(s.idx)
	}
	if fatal >= 0 {
		fatalErr = b[fatal].Err.(*ItemError).Err
	}
	if rest || fatal >= 0 {
		// The job did not finish: what it did not process stays held, in
		// input order, the failed item first (see parkHeld).
		p.held, p.next = p.unprocessed(b, used, fatal), 0
	} else {
		p.held = nil
		p.in.put(b)
	}
	switch {
	case sendErr != nil:
		return stagefsm.Directive[event]{}, sendErr
	case fatal >= 0:
		if err := p.flush(ctx); err != nil {
			return stagefsm.Directive[event]{}, err
		}
		return stagefsm.Directive[event]{}, fatalErr
	case ctx.Err() != nil:
		return stagefsm.Directive[event]{}, ctx.Err()
	}
	if p.held != nil {
		// Unreachable (a worker stops early only on a Fatal error or when
		// ctx is done), but what was not processed must not be lost.
		p.in.park(p.held)
		p.held = nil
	}
	if err := p.flush(ctx); err != nil {
		return stagefsm.Directive[event]{}, err
	}
	return stagefsm.Continue[event](), nil
}

// take moves what share s produced into the pending outputs, numbering
// them, counts its delivered items and sends full batches. After a send
// failed (sendErr) it only keeps the outputs pending, for the sweep.
func (p *parallelCore[I, O]) take(ctx context.Context, s *share[O], sendErr error) error {
	p.u.stats.delivered.Add(s.ok)
	p.unpublished += s.emit
	for _, it := range s.out {
		if it.Err == nil {
			p.seq++
			it.Origin, it.Seq = p.u.name, p.seq
		}
		if p.cur == nil {
			p.cur = p.out.get()
		}
		p.cur = append(p.cur, it)
		if sendErr == nil && len(p.cur) >= p.out.batch {
			sendErr = p.flush(ctx)
		}
	}
	clear(s.out)
	s.out = nil
	return sendErr
}

// unprocessed returns the items of b that no worker processed, in input
// order, with the item that failed with a Fatal error (fatal, or -1) first.
func (p *parallelCore[I, O]) unprocessed(b []Item[I], used, fatal int) []Item[I] {
	var left []int
	for i := range used {
		s := &p.shares[i]
		for _, j := range s.idx[s.done:] {
			if j != fatal {
				left = append(left, j)
			}
		}
	}
	held := heldAfterFatal(b, fatal, left) // before b is cleared for reuse
	p.in.put(b)
	return held
}

// ThenParallel appends the transform stage name, which runs t on the items
// of c on par.Workers workers, in par.Order (see [Parallel]). t's Process
// must be safe for concurrent use. Problems (a nil c or t, an empty or
// duplicate name, a Parallel matching [ErrParallel]) are reported by
// [Pipeline.Start].
func ThenParallel[I, O any](c *Chain[I], name string, t Transform[I, O], par Parallel[I]) *Chain[O] {
	return &Chain[O]{add: func(g *Graph) *Stream[O] { return ApplyParallel(chainStream(g, c), name, t, par) }}
}

// ApplyParallel adds the transform stage name, which runs t on the items of
// in on par.Workers workers (see [Parallel] and [Order]), and returns the
// Stream it writes. A bad par is an error of [Graph.Build].
func ApplyParallel[I, O any](in *Stream[I], name string, t Transform[I, O], par Parallel[I]) *Stream[O] {
	g := graphOf(in)
	if g == nil {
		return nilStream[O](name)
	}
	out := newStream[O](g, name, "")
	u := g.unit(name, kindTransform, "parallel", t == nil)
	if err := par.validate(); err != nil {
		g.errs = append(g.errs, fmt.Errorf("stage: transform %q: %w", name, err))
	}
	u.core = newParallelCore(u, t, par, read(g, in, name), out.edge)
	return out
}

// heldAfterFatal returns what a stage of several workers holds after a
// Fatal error: the failed item at fatal (if any) first, then the items at
// left — the ones no worker finished — in input order, copied out of b.
func heldAfterFatal[I any](b []Item[I], fatal int, left []int) []Item[I] {
	slices.Sort(left)
	held := make([]Item[I], 0, len(left)+1)
	if fatal >= 0 {
		held = append(held, b[fatal])
	}
	for _, j := range left {
		held = append(held, b[j])
	}
	return held
}

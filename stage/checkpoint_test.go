package stage_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/checkpoint"
	"github.com/stagefsm/stagefsm/stage"
)

// replay is a Resumable source over a slice: its position is the index of
// the next item. Every gap-th item it returns nothing once (the stage
// idles, so that cuts come between items); from hold on it returns nothing
// until release is called. Commit records the positions committed.
type replay[T any] struct {
	items []T
	gap   int

	mu        sync.Mutex
	next      int
	idle      bool
	hold      int           // -1: none
	held      chan struct{} // closed when the source reaches hold
	commits   []int
	resumedAt int // -1: not resumed
}

func newReplay[T any](items []T, gap int) *replay[T] {
	return &replay[T]{items: items, gap: gap, hold: -1, held: make(chan struct{}), resumedAt: -1}
}

func (r *replay[T]) Next(_ context.Context, emit func(T)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hold >= 0 && r.next >= r.hold {
		select {
		case <-r.held:
		default:
			close(r.held)
		}
		return nil
	}
	if r.next >= len(r.items) {
		return errEOF
	}
	if r.gap > 0 && r.next%r.gap == 0 && !r.idle {
		r.idle = true
		return nil
	}
	r.idle = false
	emit(r.items[r.next])
	r.next++
	return nil
}

func (r *replay[T]) Position() ([]byte, error) {
	return strconv.AppendInt(nil, int64(r.next), 10), nil
}

func (r *replay[T]) Resume(_ context.Context, pos []byte) error {
	n, err := strconv.Atoi(string(pos))
	if err != nil || n < 0 || n > len(r.items) {
		return fmt.Errorf("bad position %q", pos)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next, r.resumedAt = n, n
	return nil
}

func (r *replay[T]) Commit(_ context.Context, pos []byte) error {
	n, err := strconv.Atoi(string(pos))
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.commits = append(r.commits, n)
	return nil
}

// holdAt makes the source hold at item n (-1: not at all) and returns the
// channel closed when it gets there.
func (r *replay[T]) holdAt(n int) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hold, r.held = n, make(chan struct{})
	return r.held
}

// tape is a Resumable sink that appends to a durable slice, as a file
// would: its position is the slice's length and Resume truncates it.
type tape[T any] struct {
	mu        sync.Mutex
	out       []T
	resumedAt int
}

func newTape[T any](durable []T) *tape[T] {
	return &tape[T]{out: slices.Clone(durable), resumedAt: -1}
}

func (t *tape[T]) Consume(_ context.Context, v T) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.out = append(t.out, v)
	return nil
}

func (t *tape[T]) Position() ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strconv.AppendInt(nil, int64(len(t.out)), 10), nil
}

func (t *tape[T]) Resume(_ context.Context, pos []byte) error {
	n, err := strconv.Atoi(string(pos))
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil || n < 0 || n > len(t.out) {
		return fmt.Errorf("bad position %q of %d", pos, len(t.out))
	}
	t.out, t.resumedAt = t.out[:n], n
	return nil
}

func (t *tape[T]) items() []T {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.out)
}

// breakable is a store that fails every Save once broken.
type breakable struct {
	checkpoint.Store
	broken atomic.Bool
	fails  atomic.Int64
}

var errDiskFull = errors.New("injected: disk full")

func (b *breakable) Save(ctx context.Context, u *checkpoint.Update) (uint64, error) {
	if b.broken.Load() {
		b.fails.Add(1)
		return 0, errDiskFull
	}
	return b.Store.Save(ctx, u)
}

// The graph of the resume tests: orders joined with their customers'
// regions, an order lifecycle per order ID (keyed, with a timeout), a
// count per region (keyed accumulator) and a count of lifecycle outputs
// (aggregate).
type (
	ckCustomer struct{ ID, Region string }
	ckPlaced   struct{ Order, Customer, Ev string }
	ckEnriched struct{ Order, Region, Ev string }
)

type ckptSinks struct {
	log     *tape[string]
	regions *tape[string]
	total   *tape[int]
}

func resumeGraph(t *testing.T, mode stage.ReferenceMode, custs *replay[ckCustomer], orders *replay[ckPlaced], sinks ckptSinks, opts ...stage.Option) *stage.Pipeline {
	t.Helper()
	def := orderDef(t)
	g := stage.NewGraph(opts...)
	ref := stage.Read(g, "customers", stage.Source[ckCustomer](custs))
	str := stage.Read(g, "orders", stage.Source[ckPlaced](orders))
	joined := stage.Join(ref, str, "enrich", stage.JoinSpec[string, ckCustomer, ckPlaced, ckEnriched]{
		RefKey:    func(c ckCustomer) string { return c.ID },
		StreamKey: func(p ckPlaced) string { return p.Customer },
		Combine: func(p ckPlaced, c ckCustomer, ok bool) ckEnriched {
			if !ok {
				c.Region = "unknown"
			}
			return ckEnriched{Order: p.Order, Region: c.Region, Ev: p.Ev}
		},
		Strategy: stage.Left,
		Mode:     mode,
	})
	fan := stage.Broadcast(joined, "fan", 2)
	spec := stage.KeyedSpec[ckEnriched, string, string, string, act, string]{
		Key:   func(e ckEnriched) string { return e.Order },
		Event: func(e ckEnriched) string { return e.Ev },
		New:   func(string) (stagefsm.Machine[string, string, *orderScope, act], error) { return def.New("open") },
		Restore: func(_ string, s string) (stagefsm.Machine[string, string, *orderScope, act], error) {
			return def.New(s)
		},
		Act: func(_ context.Context, a act, _ string, s *orderScope) error {
			s.Emit(s.Key() + ":" + string(a))
			return nil
		},
		Terminal: def.Terminal,
		Workers:  2,
	}
	life := stage.Keyed(fan[0], "lifecycle", spec)
	lf := stage.Broadcast(life, "life-fan", 2)
	stage.Write(lf[0], "log", stage.Sink[string](sinks.log))
	stage.Write(stage.Aggregate(lf[1], "count", func(n *int, _ string) { *n++ }, func(n int, emit func(int)) { emit(n) }),
		"total", stage.Sink[int](sinks.total))
	regions := stage.KeyedAccumulate(fan[1], "regions", stage.KeyedAccumulator[ckEnriched, string, int, string]{
		Key:  func(e ckEnriched) string { return e.Region },
		Fold: func(n *int, _ ckEnriched) error { *n++; return nil },
		Emit: func(k string, n int, emit func(string)) error { emit(fmt.Sprintf("%s=%d", k, n)); return nil },
	})
	stage.Write(regions, "regions-out", stage.Sink[string](sinks.regions))
	p, err := g.Build()
	require.NoError(t, err)
	return p
}

// startLoaded starts p with its orders held until the join has taken every
// customer (a Live join's table is otherwise timing-dependent), then holds
// them at hold (-1: not at all).
func startLoaded(t *testing.T, p *stage.Pipeline, orders *replay[ckPlaced], ncust, hold int) <-chan struct{} {
	t.Helper()
	held := orders.holdAt(0)
	require.NoError(t, p.Start(t.Context()))
	<-held
	require.Eventually(t, func() bool {
		for _, s := range p.Stats().Stages {
			if s.Name == "enrich" {
				return s.Counts.Delivered >= uint64(ncust)
			}
		}
		return false
	}, 10*time.Second, time.Millisecond)
	return orders.holdAt(hold)
}

func resumeInput(n int) ([]ckCustomer, []ckPlaced) {
	var cs []ckCustomer
	for i := range 20 {
		cs = append(cs, ckCustomer{ID: fmt.Sprint("c", i), Region: fmt.Sprint("r", i%3)})
	}
	var ps []ckPlaced
	for i := range n {
		o := fmt.Sprint("o", i)
		c := fmt.Sprint("c", i%23) // c20-c22 are unknown
		ps = append(ps, ckPlaced{o, c, "add"})
		if i >= 2 {
			prev := fmt.Sprint("o", i-2)
			ps = append(ps, ckPlaced{prev, fmt.Sprint("c", (i-2)%23), "pay"})
		}
		if i >= 4 && i%2 == 0 {
			prev := fmt.Sprint("o", i-4)
			ps = append(ps, ckPlaced{prev, fmt.Sprint("c", (i-4)%23), "close"})
		}
	}
	return cs, ps
}

func sortedCopy[T any](s []T, less func(a, b T) int) []T {
	s = slices.Clone(s)
	slices.SortStableFunc(s, less)
	return s
}

// TestCheckpointResumeExact crashes a run after a checkpoint taken mid-
// stream (its store breaks, so nothing later is saved) and resumes it from
// that checkpoint, with the sinks' outputs as the crash left them: the
// resumed run's outputs equal an uninterrupted run's, item by item — keyed
// instances, the accumulator's counts, the aggregate and the join table
// were restored, nothing counted twice or lost. The source was never
// acknowledged past the checkpoint stored.
func TestCheckpointResumeExact(t *testing.T) {
	for _, mode := range []stage.ReferenceMode{stage.Finite, stage.Live} {
		t.Run(mode.String(), func(t *testing.T) {
			custs, orders := resumeInput(300)
			ctx := t.Context()

			// The uninterrupted run, without checkpoints.
			want := ckptSinks{newTape[string](nil), newTape[string](nil), newTape[int](nil)}
			src := newReplay(orders, 0)
			p := resumeGraph(t, mode, newReplay(custs, 0), src, want)
			startLoaded(t, p, src, len(custs), -1)
			require.NoError(t, p.Wait(ctx))

			dir := t.TempDir()
			d, err := checkpoint.OpenDir(dir)
			require.NoError(t, err)
			store := &breakable{Store: d}
			hold := len(orders) / 2
			src = newReplay(orders, 7)
			got := ckptSinks{newTape[string](nil), newTape[string](nil), newTape[int](nil)}
			p = resumeGraph(t, mode, newReplay(custs, 5), src, got, stage.WithCheckpoint(store, time.Millisecond))
			<-startLoaded(t, p, src, len(custs), hold)
			n0 := p.Stats().Checkpoints
			require.Eventually(t, func() bool { return p.Stats().Checkpoints >= n0+2 }, 10*time.Second, time.Millisecond)
			store.broken.Store(true) // the crash: nothing from here on is saved
			src.holdAt(-1)
			err = p.Wait(ctx)
			require.ErrorIs(t, err, stage.ErrCheckpoint, "the final checkpoint failed")
			require.ErrorIs(t, err, errDiskFull)
			st := p.Stats()
			assert.Positive(t, st.CheckpointFailures)
			assert.ErrorIs(t, st.CheckpointErr, errDiskFull)
			for _, c := range src.commits {
				assert.LessOrEqual(t, c, hold, "a commit past the last checkpoint stored")
			}
			assert.Contains(t, src.commits, hold)
			require.NoError(t, d.Close())
			crashed := ckptSinks{got.log, got.regions, got.total}

			// The restart: the same store, the sinks' outputs as they are.
			d, err = checkpoint.OpenDir(dir)
			require.NoError(t, err)
			defer d.Close()
			src = newReplay(orders, 3)
			again := ckptSinks{newTape(crashed.log.items()), newTape(crashed.regions.items()), newTape(crashed.total.items())}
			p = resumeGraph(t, mode, newReplay(custs, 0), src, again, stage.WithCheckpoint(d, time.Millisecond))
			require.NoError(t, p.Start(ctx))
			require.NoError(t, p.Wait(ctx))
			assert.Equal(t, hold, src.resumedAt)
			assert.Less(t, again.log.resumedAt, len(crashed.log.items()), "the log sink dropped what it wrote after the checkpoint")

			// Workers: 2 interleaves keys across shards, so the log is compared as a multiset.
			assert.Equal(t, sortedCopy(want.log.items(), cmpString), sortedCopy(again.log.items(), cmpString))
			assert.Equal(t, want.total.items(), again.total.items())
			assert.Equal(t, sortedCopy(want.regions.items(), cmpString), sortedCopy(again.regions.items(), cmpString))
			assert.NotEmpty(t, want.regions.items())
		})
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

var _ = synctest.Test

// timeoutGraph: one order machine per key, whose "open" state times out
// after a minute, writing its outputs to log.
func timeoutGraph(t *testing.T, src *replay[order], log *tape[string], opts ...stage.Option) *stage.Pipeline {
	t.Helper()
	def := orderDef(t)
	spec := orderSpec(def)
	spec.Restore = func(_ string, s string) (stagefsm.Machine[string, string, *orderScope, act], error) {
		return def.New(s)
	}
	p := stage.To(stage.ThenKeyed(stage.From("orders", stage.Source[order](src)), "lifecycle", spec),
		"log", stage.Sink[string](log), opts...)
	return p
}

// TestCheckpointTimeoutResumes: an armed timeout is saved with the time it
// had left and fires that long after the resume; the time the pipeline was
// down does not count.
func TestCheckpointTimeoutResumes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		d, err := checkpoint.OpenDir(dir)
		require.NoError(t, err)
		src := newReplay([]order{{"a", "add"}}, 0)
		held := src.holdAt(1)
		log := newTape[string](nil)
		p := timeoutGraph(t, src, log, stage.WithCheckpoint(d, time.Second))
		require.NoError(t, p.Start(t.Context()))
		<-held
		time.Sleep(20*time.Second + time.Millisecond) // 20 checkpoints
		require.GreaterOrEqual(t, p.Stats().Checkpoints, uint64(19))
		p.Abort() // the crash
		require.ErrorIs(t, p.Wait(t.Context()), stage.ErrAborted)
		require.NoError(t, d.Close())
		assert.Equal(t, []string{"a:added"}, log.items())

		time.Sleep(time.Hour) // down for longer than the timeout
		d, err = checkpoint.OpenDir(dir)
		require.NoError(t, err)
		defer d.Close()
		src = newReplay([]order{{"a", "add"}}, 0)
		src.holdAt(1)
		log = newTape(log.items())
		p = timeoutGraph(t, src, log, stage.WithCheckpoint(d, time.Second))
		resumed := time.Now()
		require.NoError(t, p.Start(t.Context()))
		for !slices.Contains(log.items(), "a:abandoned") {
			time.Sleep(10 * time.Millisecond)
		}
		left := time.Since(resumed)
		// Saved at the last cut before the crash, 20 s after the item:
		// about 40 s were left.
		assert.InDelta(t, time.Minute-20*time.Second, left, float64(1100*time.Millisecond), "fired %v after the resume", left)
		src.holdAt(-1)
		require.NoError(t, p.Wait(t.Context()))
		assert.Equal(t, []string{"a:added", "a:abandoned"}, log.items())
		assert.Equal(t, 1, src.resumedAt)
	})
}

// TestCheckpointRefusesAtBuild: a source that cannot go back to a position
// and a keyed stage that cannot restore its instances fail the build.
func TestCheckpointRefusesAtBuild(t *testing.T) {
	d, err := checkpoint.OpenDir(t.TempDir())
	require.NoError(t, err)
	defer d.Close()
	p := stage.To(stage.From("numbers", stage.Source[int](upTo(3))), "out", stage.Sink[int](&collector[int]{}), stage.WithCheckpoint(d, time.Second))
	err = p.Start(t.Context())
	require.ErrorIs(t, err, stage.ErrCheckpoint)
	assert.ErrorContains(t, err, `stage "numbers"`)
	assert.ErrorContains(t, err, "not a stage.Resumable")

	def := orderDef(t)
	p = stage.To(stage.ThenKeyed(stage.From("orders", stage.Source[order](newReplay([]order{{"a", "add"}}, 0))), "lifecycle", orderSpec(def)),
		"log", stage.Sink[string](newTape[string](nil)), stage.WithCheckpoint(d, time.Second))
	err = p.Start(t.Context())
	require.ErrorIs(t, err, stage.ErrCheckpoint)
	require.ErrorIs(t, err, stage.ErrKeyedSpec)
	assert.ErrorContains(t, err, "Restore")
}

// TestCheckpointRefusesAtStart: a checkpoint of another graph, and one
// whose state no longer decodes, fail the start with an error naming what
// is wrong; nothing runs.
func TestCheckpointRefusesAtStart(t *testing.T) {
	dir := t.TempDir()
	d, err := checkpoint.OpenDir(dir)
	require.NoError(t, err)
	defer d.Close()
	_, err = d.Save(t.Context(), &checkpoint.Update{Graph: []string{"orders", "lifecycle", "log"}, Stages: map[string]checkpoint.StageUpdate{
		"lifecycle": {Set: map[string][]byte{"ka": []byte("not a saved value")}},
	}})
	require.NoError(t, err)
	log := newTape[string](nil)
	p := timeoutGraph(t, newReplay([]order{{"a", "add"}}, 0), log, stage.WithCheckpoint(d, time.Second))
	err = p.Start(t.Context())
	require.ErrorIs(t, err, stage.ErrCheckpoint)
	var de *checkpoint.DecodeError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, "lifecycle", de.Stage)
	assert.Equal(t, "ka", de.Key)
	assert.Empty(t, log.items())

	g := stage.NewGraph(stage.WithCheckpoint(d, time.Second))
	stage.Write(stage.Read(g, "renamed", stage.Source[int](newReplay([]int{1}, 0))), "log", stage.Sink[int](newTape[int](nil)))
	p, err = g.Build()
	require.NoError(t, err)
	err = p.Start(t.Context())
	require.ErrorIs(t, err, stage.ErrCheckpoint)
	var ge *checkpoint.GraphError
	require.ErrorAs(t, err, &ge)
	assert.Contains(t, ge.Added, "renamed")
	assert.Contains(t, ge.Missing, "orders")
}

// mergeGraph: two sources merged, a parallel transform, a route to two
// sinks; stages with several writers (the merge) and workers (parallel).
func mergeGraph(t *testing.T, a, b *replay[int], even, odd *tape[int], opts ...stage.Option) *stage.Pipeline {
	t.Helper()
	g := stage.NewGraph(opts...)
	m := stage.Merge("both", stage.Read(g, "a", stage.Source[int](a)), stage.Read(g, "b", stage.Source[int](b)))
	sq := stage.ApplyParallel(m, "square", stage.TransformFunc[int, int](func(_ context.Context, v int, emit func(int)) error {
		emit(v * v)
		return nil
	}), stage.Parallel[int]{Workers: 3, Order: stage.InputOrder})
	r := stage.Route(sq, "parity", 2, func(v int) int { return v % 2 })
	stage.Write(r[0], "even", stage.Sink[int](even))
	stage.Write(r[1], "odd", stage.Sink[int](odd))
	p, err := g.Build()
	require.NoError(t, err)
	return p
}

// TestCheckpointMergeResumes: barriers are counted per writer of a merged
// input and go through a parallel stage; a crash after a checkpoint, then a
// resume, gives each sink exactly its outputs, once. It also resumes past
// a corrupt newest checkpoint file, from the one before.
func TestCheckpointMergeResumes(t *testing.T) {
	t.Run("newest", func(t *testing.T) { testMergeResumes(t, false) })
	t.Run("corrupt-newest", func(t *testing.T) { testMergeResumes(t, true) })
}

func testMergeResumes(t *testing.T, corrupt bool) {
	var as, bs []int
	for i := range 400 {
		as, bs = append(as, 2*i), append(bs, 2*i+1)
	}
	dir := t.TempDir()
	d, err := checkpoint.OpenDir(dir)
	require.NoError(t, err)
	store := &breakable{Store: d}
	a, b := newReplay(as, 5), newReplay(bs, 9)
	heldA, heldB := a.holdAt(150), b.holdAt(250)
	even, odd := newTape[int](nil), newTape[int](nil)
	p := mergeGraph(t, a, b, even, odd, stage.WithCheckpoint(store, time.Millisecond))
	require.NoError(t, p.Start(t.Context()))
	<-heldA
	<-heldB
	n0 := p.Stats().Checkpoints
	require.Eventually(t, func() bool { return p.Stats().Checkpoints >= n0+2 }, 10*time.Second, time.Millisecond)
	store.broken.Store(true)
	a.holdAt(-1)
	b.holdAt(-1)
	require.ErrorIs(t, p.Wait(t.Context()), errDiskFull)
	require.NoError(t, d.Close())
	assert.Len(t, even.items(), 400)
	assert.Len(t, odd.items(), 400)
	if corrupt {
		files, err := filepath.Glob(filepath.Join(dir, "*"))
		require.NoError(t, err)
		slices.Sort(files)
		newest := files[len(files)-1]
		data, err := os.ReadFile(newest)
		require.NoError(t, err)
		data[len(data)/2] ^= 0x40
		require.NoError(t, os.WriteFile(newest, data, 0o600))
	}

	d, err = checkpoint.OpenDir(dir)
	require.NoError(t, err)
	defer d.Close()
	a, b = newReplay(as, 0), newReplay(bs, 0)
	even, odd = newTape(even.items()), newTape(odd.items())
	p = mergeGraph(t, a, b, even, odd, stage.WithCheckpoint(d, time.Millisecond))
	require.NoError(t, p.Start(t.Context()))
	require.NoError(t, p.Wait(t.Context()))
	if corrupt {
		assert.LessOrEqual(t, a.resumedAt, 150, "resumed from an older checkpoint")
		assert.LessOrEqual(t, b.resumedAt, 250)
	} else {
		assert.Equal(t, 150, a.resumedAt)
		assert.Equal(t, 250, b.resumedAt)
	}
	var want []int
	for _, v := range as {
		want = append(want, v*v)
	}
	assert.Equal(t, want, even.items(), "each a's square once, in order")
	want = want[:0]
	for _, v := range bs {
		want = append(want, v*v)
	}
	assert.Equal(t, want, odd.items())
}

// TestCheckpointStageFailsDuringRun: a stage that fails while the pipeline
// checkpoints ends the run with its error and no final checkpoint; the last
// one stored stands, and nothing hangs.
func TestCheckpointStageFailsDuringRun(t *testing.T) {
	dir := t.TempDir()
	d, err := checkpoint.OpenDir(dir)
	require.NoError(t, err)
	defer d.Close()
	var items []int
	for i := range 2000 {
		items = append(items, i)
	}
	src := newReplay(items, 3)
	g := stage.NewGraph(stage.WithCheckpoint(d, time.Millisecond))
	boom := stage.Apply(stage.Read(g, "numbers", stage.Source[int](src)), "boom", stage.TransformFunc[int, int](func(_ context.Context, v int, emit func(int)) error {
		if v == 1500 {
			return stage.Fatal(errors.New("injected"))
		}
		emit(v)
		return nil
	}))
	out := newTape[int](nil)
	stage.Write(boom, "out", stage.Sink[int](out))
	p, err := g.Build()
	require.NoError(t, err)
	held := src.holdAt(1000)
	require.NoError(t, p.Start(t.Context()))
	<-held
	require.Eventually(t, func() bool { return p.Stats().Checkpoints >= 2 }, 10*time.Second, time.Millisecond)
	src.holdAt(-1)
	err = p.Wait(t.Context())
	require.ErrorIs(t, err, stage.ErrFatal)
	assert.NotErrorIs(t, err, stage.ErrCheckpoint)
	snap, err := d.Load(t.Context())
	require.NoError(t, err)
	pos, err := strconv.Atoi(string(snap.Stages["numbers"].Position))
	require.NoError(t, err)
	assert.GreaterOrEqual(t, pos, 1000)
	assert.LessOrEqual(t, pos, 1500, "no checkpoint covers the failed item")
	for _, c := range src.commits {
		assert.LessOrEqual(t, c, pos)
	}
}

// TestCheckpointDrain: Drain during a checkpointing run ends it with a
// final checkpoint at the position the sources stopped at.
func TestCheckpointDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, err := checkpoint.OpenDir(t.TempDir())
		require.NoError(t, err)
		defer d.Close()
		src := newReplay([]order{{"a", "add"}, {"b", "add"}, {"a", "pay"}}, 0)
		held := src.holdAt(3)
		log := newTape[string](nil)
		p := timeoutGraph(t, src, log, stage.WithCheckpoint(d, time.Second))
		require.NoError(t, p.Start(t.Context()))
		<-held
		time.Sleep(2500 * time.Millisecond)
		p.Drain()
		require.NoError(t, p.Wait(t.Context()))
		assert.GreaterOrEqual(t, p.Stats().Checkpoints, uint64(3), "two while running, one at the end")
		snap, err := d.Load(t.Context())
		require.NoError(t, err)
		assert.Equal(t, "3", string(snap.Stages["orders"].Position))
		assert.Equal(t, "5", string(snap.Stages["log"].Position), "the sink's last position")
		assert.Equal(t, []string{"a:added", "b:added", "a:paid", "a:drained", "b:drained"}, log.items())
		assert.Equal(t, []int{3}, src.commits[len(src.commits)-1:], "the final commit")
	})
}

// TestCheckpointCrashRounds crashes the same run several times at seeded
// random points — after a checkpoint, with outputs written past it that the
// sinks must drop on resume — with random batch sizes and channel
// capacities, and resumes it each time from the same store. The final
// outputs equal an uninterrupted run's.
func TestCheckpointCrashRounds(t *testing.T) {
	for seed := range int64(3) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 7))
			custs, orders := resumeInput(200)
			opts := []stage.Option{stage.WithBatchSize(1 + rng.IntN(40)), stage.WithCapacity(1 + rng.IntN(4))}

			want := ckptSinks{newTape[string](nil), newTape[string](nil), newTape[int](nil)}
			src := newReplay(orders, 0)
			p := resumeGraph(t, stage.Finite, newReplay(custs, 0), src, want, opts...)
			startLoaded(t, p, src, len(custs), -1)
			require.NoError(t, p.Wait(t.Context()))

			dir := t.TempDir()
			sinks := ckptSinks{newTape[string](nil), newTape[string](nil), newTape[int](nil)}
			at := 0
			for round := range 3 {
				d, err := checkpoint.OpenDir(dir)
				require.NoError(t, err)
				store := &breakable{Store: d}
				at += 1 + rng.IntN((len(orders)-at)/3)
				more := at + 1 + rng.IntN(20)
				src := newReplay(orders, 1+rng.IntN(10))
				sinks = ckptSinks{newTape(sinks.log.items()), newTape(sinks.regions.items()), newTape(sinks.total.items())}
				p := resumeGraph(t, stage.Finite, newReplay(custs, 0), src, sinks, append(opts, stage.WithCheckpoint(store, time.Millisecond))...)
				held := src.holdAt(at)
				require.NoError(t, p.Start(t.Context()))
				<-held
				n0 := p.Stats().Checkpoints
				require.Eventually(t, func() bool { return p.Stats().Checkpoints >= n0+2 }, 10*time.Second, time.Millisecond)
				store.broken.Store(true)
				written := len(sinks.log.items())
				held = src.holdAt(more) // outputs past the checkpoint, then the crash
				<-held
				require.Eventually(t, func() bool { return len(sinks.log.items()) > written }, 10*time.Second, time.Millisecond, "round %d", round)
				p.Abort()
				require.ErrorIs(t, p.Wait(t.Context()), stage.ErrAborted)
				require.NoError(t, d.Close())
			}
			d, err := checkpoint.OpenDir(dir)
			require.NoError(t, err)
			defer d.Close()
			src = newReplay(orders, 0)
			sinks = ckptSinks{newTape(sinks.log.items()), newTape(sinks.regions.items()), newTape(sinks.total.items())}
			p = resumeGraph(t, stage.Finite, newReplay(custs, 0), src, sinks, append(opts, stage.WithCheckpoint(d, time.Millisecond))...)
			require.NoError(t, p.Start(t.Context()))
			require.NoError(t, p.Wait(t.Context()))
			assert.Equal(t, at, src.resumedAt)
			assert.Equal(t, sortedCopy(want.log.items(), cmpString), sortedCopy(sinks.log.items(), cmpString))
			assert.Equal(t, want.total.items(), sinks.total.items())
			assert.Equal(t, sortedCopy(want.regions.items(), cmpString), sortedCopy(sinks.regions.items(), cmpString))
		})
	}
}

// TestCheckpointFinishedRunRestarts: a run restarted from the final
// checkpoint of a run that drained (a kill after the last save, or a
// second run on the same input) writes nothing again: its stages drained
// already and have no new input. With new input they drain again, with
// the state of both runs.
func TestCheckpointFinishedRunRestarts(t *testing.T) {
	d, err := checkpoint.OpenDir(t.TempDir())
	require.NoError(t, err)
	defer d.Close()
	custs, orders := resumeInput(60)
	var durable ckptSinks
	run := func(orders []ckPlaced) ckptSinks {
		sinks := ckptSinks{newTape[string](nil), newTape[string](nil), newTape[int](nil)}
		if durable.log != nil {
			sinks = ckptSinks{newTape(durable.log.items()), newTape(durable.regions.items()), newTape(durable.total.items())}
		}
		src := newReplay(orders, 0)
		p := resumeGraph(t, stage.Finite, newReplay(custs, 0), src, sinks, stage.WithCheckpoint(d, time.Hour))
		if durable.log == nil {
			startLoaded(t, p, src, len(custs), -1)
		} else {
			require.NoError(t, p.Start(t.Context())) // the table is restored
		}
		require.NoError(t, p.Wait(t.Context()))
		durable = sinks
		return sinks
	}
	first := run(orders)
	require.Len(t, first.total.items(), 1)
	again := run(orders)
	assert.Equal(t, first.log.items(), again.log.items(), "no output again")
	assert.Equal(t, first.total.items(), again.total.items())
	assert.Equal(t, first.regions.items(), again.regions.items())

	more := append(slices.Clone(orders), ckPlaced{"o-new", "c1", "add"})
	grown := run(more)
	assert.Equal(t, []int{first.total.items()[0], first.total.items()[0] + 1}, grown.total.items(),
		"the aggregate drains again, counting both runs' outputs")
	assert.Equal(t, append(first.log.items(), "o-new:added"), grown.log.items())
	assert.Equal(t, append(first.regions.items(), "r1=1"), grown.regions.items(),
		"the accumulator emitted and removed its keys at the first drain: only c1's region has a new count")
}

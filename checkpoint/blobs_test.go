package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/stagefsm/stagefsm/checkpoint"
)

// The contract of a Store, tested once on a BlobStore with blobs in
// memory, with and without a head; dir_test.go and natsstage test what is
// their backends' own.

var errInjected = errors.New("injected fault")

// faultBlobs is a mapBlobs whose operations fail on cue: set(op, err)
// makes every later call of op ("put", "get", "list", "delete", and with
// a head "readhead", "writehead") fail with err, for blobs whose name
// contains only (all when empty). With torn, a failing Put leaves the
// first half of the blob.
type faultBlobs struct {
	*mapBlobs
	mu   sync.Mutex
	fail map[string]error
	only string
	torn bool
}

func newFaultBlobs() *faultBlobs {
	return &faultBlobs{mapBlobs: newMapBlobs(), fail: map[string]error{}}
}

func (f *faultBlobs) set(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[op] = err
}

func (f *faultBlobs) err(op, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !strings.Contains(name, f.only) {
		return nil
	}
	return f.fail[op]
}

func (f *faultBlobs) Put(ctx context.Context, name string, data []byte) error {
	if err := f.err("put", name); err != nil {
		if f.torn {
			_ = f.mapBlobs.Put(ctx, name, data[:len(data)/2])
		}
		return err
	}
	return f.mapBlobs.Put(ctx, name, data)
}

func (f *faultBlobs) Get(ctx context.Context, name string) ([]byte, error) {
	if err := f.err("get", name); err != nil {
		return nil, err
	}
	return f.mapBlobs.Get(ctx, name)
}

func (f *faultBlobs) List(ctx context.Context) ([]string, error) {
	if err := f.err("list", ""); err != nil {
		return nil, err
	}
	return f.mapBlobs.List(ctx)
}

func (f *faultBlobs) Delete(ctx context.Context, name string) error {
	if err := f.err("delete", name); err != nil {
		return err
	}
	return f.mapBlobs.Delete(ctx, name)
}

// faultHead is a faultBlobs with a head. beforeWrite, when set, runs
// once before the next compare-and-set: another writer's turn.
type faultHead struct {
	*faultBlobs
	h           *mapHead
	beforeWrite func()
}

func newFaultHead() *faultHead {
	f := newFaultBlobs()
	return &faultHead{faultBlobs: f, h: &mapHead{mapBlobs: f.mapBlobs}}
}

func (f *faultHead) ReadHead(ctx context.Context) ([]byte, uint64, error) {
	if err := f.err("readhead", ""); err != nil {
		return nil, 0, err
	}
	return f.h.ReadHead(ctx)
}

func (f *faultHead) WriteHead(ctx context.Context, value []byte, rev uint64) (uint64, error) {
	if hook := f.beforeWrite; hook != nil {
		f.beforeWrite = nil
		hook()
	}
	if err := f.err("writehead", ""); err != nil {
		return 0, err
	}
	return f.h.WriteHead(ctx, value, rev)
}

// backends returns, by name, a new blobs without and one with a head.
func backends() map[string]func() (checkpoint.Blobs, *faultBlobs) {
	return map[string]func() (checkpoint.Blobs, *faultBlobs){
		"no head": func() (checkpoint.Blobs, *faultBlobs) { f := newFaultBlobs(); return f, f },
		"head":    func() (checkpoint.Blobs, *faultBlobs) { f := newFaultHead(); return f, f.faultBlobs },
	}
}

func newBlobStore(t *testing.T, b checkpoint.Blobs, opts ...checkpoint.Option) *checkpoint.BlobStore {
	t.Helper()
	s := checkpoint.NewBlobStore(b, opts...)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

func loadModel(t *testing.T, s checkpoint.Store) (uint64, *model) {
	t.Helper()
	cp := mustLoad(t, s)
	return cp.Seq, of(cp)
}

func TestBlobStoreContract(t *testing.T) {
	ctx := context.Background()
	none := newBlobStore(t, nil)
	_, err := none.Load(ctx)
	require.Error(t, err, "nil Blobs")
	_, err = none.Save(ctx, full("1", nil))
	require.Error(t, err, "nil Blobs")
	for kind, newBlobs := range backends() {
		t.Run(kind, func(t *testing.T) {
			b, _ := newBlobs()
			s := newBlobStore(t, b, checkpoint.WithCompaction(100))
			_, err := s.Load(ctx)
			require.ErrorIs(t, err, checkpoint.ErrNoCheckpoint)
			_, err = s.Save(ctx, delta(1, "1", nil))
			require.ErrorIs(t, err, checkpoint.ErrStaleBase, "a delta on nothing")

			m := newModel()
			s1 := save(t, s, m, full("1", map[string]string{"a": "1", "b": "2"}))
			s2 := save(t, s, m, delta(s1, "2", map[string]string{"c": "3"}, "a"))
			s3 := save(t, s, m, delta(s2, "3", map[string]string{"b": "4"}))
			assert.Equal(t, []uint64{1, 2, 3}, []uint64{s1, s2, s3})
			seq, got := loadModel(t, newBlobStore(t, b))
			assert.Equal(t, s3, seq, "a new store on the same blobs")
			assert.Equal(t, m, got)

			_, err = s.Save(ctx, delta(s2, "9", nil))
			require.ErrorIs(t, err, checkpoint.ErrStaleBase)
			renamed := delta(s3, "9", nil)
			renamed.Graph, renamed.Stages = []string{"src", "sum", "sink"}, nil
			_, err = s.Save(ctx, renamed)
			var ge *checkpoint.GraphError
			require.ErrorAs(t, err, &ge)
			assert.Equal(t, []string{"count"}, ge.Missing)
			for _, bad := range []*checkpoint.Update{nil, {}, {Graph: []string{"a", "a"}}, {Graph: []string{""}},
				{Graph: []string{"a"}, Stages: map[string]checkpoint.StageUpdate{"b": {}}}} {
				_, err := s.Save(ctx, bad)
				assert.ErrorIs(t, err, checkpoint.ErrInvalid)
			}

			save(t, s, newModel(), full("5", map[string]string{"z": "1"}))
			require.NoError(t, s.Close())
			_, err = s.Load(ctx)
			require.ErrorIs(t, err, checkpoint.ErrClosed)
			_, err = s.Save(ctx, full("6", nil))
			require.ErrorIs(t, err, checkpoint.ErrClosed)
			require.NoError(t, s.Close())
		})
	}
}

// TestBlobStoreFailures fails each operation of the blobs, and of the
// head, during a Save of a delta and of a full checkpoint: a Save that
// fails returns the fault and leaves the previous checkpoint the latest;
// a Load that fails returns the fault, not a corrupt or empty store; with
// the fault gone, saving goes on from what Load returns.
func TestBlobStoreFailures(t *testing.T) {
	ctx := context.Background()
	faults := [][]string{{"put"}, {"put", "delete"}, {"get"}, {"list"}, {"readhead"}, {"writehead"}, {"writehead", "delete"}}
	for kind, newBlobs := range backends() {
		for _, ops := range faults {
			for _, isFull := range []bool{false, true} {
				name := fmt.Sprintf("%s/%s/full=%v", kind, strings.Join(ops, "+"), isFull)
				b, f := newBlobs()
				if _, ok := b.(checkpoint.Head); !ok && strings.HasSuffix(ops[0], "head") {
					continue
				}
				f.torn = true
				s := newBlobStore(t, b, checkpoint.WithCompaction(100))
				m := newModel()
				s1 := save(t, s, m, full("1", map[string]string{"a": "1"}))
				s2 := save(t, s, m, delta(s1, "2", map[string]string{"b": "2"}))

				for _, op := range ops {
					f.set(op, errInjected)
				}
				u := delta(s2, "3", map[string]string{"c": "3"})
				if isFull {
					u.Base = 0
				}
				fresh := newBlobStore(t, b) // one that must read the blobs
				seq, err := fresh.Save(ctx, u)
				if err == nil {
					m.apply(u)
				} else {
					require.ErrorIs(t, err, errInjected, name)
					seq = s2
				}
				_, err = newBlobStore(t, b).Load(ctx)
				if ops[0] == "get" || ops[0] == "list" || ops[0] == "readhead" {
					require.ErrorIs(t, err, errInjected, name)
					assert.NotErrorIs(t, err, checkpoint.ErrNoCheckpoint, name)
					assert.False(t, errors.As(err, new(*checkpoint.CorruptError)), name)
				}

				for _, op := range ops {
					f.set(op, nil)
				}
				for _, st := range []*checkpoint.BlobStore{fresh, newBlobStore(t, b)} {
					got, gm := loadModel(t, st)
					assert.Equal(t, seq, got, name)
					assert.Equal(t, m, gm, name)
				}
				next := save(t, fresh, m, delta(seq, "4", map[string]string{"d": "4"}))
				got, gm := loadModel(t, newBlobStore(t, b))
				assert.Equal(t, next, got, name)
				assert.Equal(t, m, gm, name)
			}
		}
	}
}

// TestBlobStoreFencesStaleWriters checks the head's compare-and-set: a
// writer whose head moved is refused, so is one that loses the race to
// move it, and the winner's checkpoint stands.
func TestBlobStoreFencesStaleWriters(t *testing.T) {
	ctx := context.Background()
	f := newFaultHead()
	a, b := newBlobStore(t, f, checkpoint.WithCompaction(100)), newBlobStore(t, f, checkpoint.WithCompaction(100))
	ma := newModel()
	s1 := save(t, a, ma, full("1", map[string]string{"a": "1"}))

	mb := newModel()
	mb.apply(full("1", map[string]string{"a": "1"}))
	seq, _ := loadModel(t, b)
	s2 := save(t, b, mb, delta(seq, "2", map[string]string{"a": "2"}))
	_, err := a.Save(ctx, delta(s1, "2", map[string]string{"a": "99"}))
	require.ErrorIs(t, err, checkpoint.ErrStaleBase, "the head moved since a saw it")
	seq, got := loadModel(t, a)
	assert.Equal(t, s2, seq)
	assert.Equal(t, mb, got)

	// a saves on b's checkpoint, but b moves the head first: a loses.
	f.beforeWrite = func() { s2 = save(t, b, mb, delta(s2, "3", map[string]string{"b": "3"})) }
	_, err = a.Save(ctx, delta(seq, "3", map[string]string{"a": "100"}))
	require.ErrorIs(t, err, checkpoint.ErrStaleBase, "the compare-and-set lost")
	seq, got = loadModel(t, newBlobStore(t, f))
	assert.Equal(t, s2, seq)
	assert.Equal(t, mb, got, "the loser's blob of the same sequence is never loaded")
	names, err := f.List(ctx)
	require.NoError(t, err)
	assert.Len(t, names, 4, "a's blob of checkpoint 3 stays until a compaction removes it")
}

// TestBlobStoreHead checks what the head bounds: a blob above it is not
// loaded; a corrupt head is logged and every blob considered; a head
// whose checkpoint is missing is corruption, not an empty store.
func TestBlobStoreHead(t *testing.T) {
	ctx := context.Background()
	f := newFaultHead()
	s := newBlobStore(t, f, checkpoint.WithCompaction(100))
	m := newModel()
	s1 := save(t, s, m, full("1", map[string]string{"a": "1"}))
	want := of(mustLoad(t, s))

	// A store without the head, on the same blobs, commits a delta above it.
	noHead := newBlobStore(t, f.faultBlobs)
	s2 := save(t, noHead, m, delta(s1, "2", map[string]string{"b": "2"}))
	seq, got := loadModel(t, newBlobStore(t, f))
	assert.Equal(t, s1, seq, "the blob above the head is not committed")
	assert.Equal(t, want, got)

	f.h.value, f.h.rev = []byte("garbage"), f.h.rev+1
	opt, logs := observed()
	seq, got = loadModel(t, newBlobStore(t, f, opt))
	assert.Equal(t, s2, seq, "every blob is considered")
	assert.Equal(t, m, got)
	assert.Equal(t, 1, logs.FilterMessageSnippet("head is torn or corrupt").Len())
	s3 := save(t, s, m, delta(s2, "3", map[string]string{"c": "3"}))
	seq, _ = loadModel(t, newBlobStore(t, f))
	assert.Equal(t, s3, seq, "saving on a corrupt head repairs it")

	names, err := f.List(ctx)
	require.NoError(t, err)
	for _, name := range names {
		require.NoError(t, f.Delete(ctx, name))
	}
	_, err = newBlobStore(t, f).Load(ctx)
	var ce *checkpoint.CorruptError
	require.ErrorAs(t, err, &ce)
	assert.NotErrorIs(t, err, checkpoint.ErrNoCheckpoint)
}

// TestBlobStoreSkipsCorruptBlobs checks the blobs that Load skips: one
// whose checksum fails, one the Blobs report corrupt themselves (an
// object store's digest), and one missing from a chain.
func TestBlobStoreSkipsCorruptBlobs(t *testing.T) {
	ctx := context.Background()
	for kind, newBlobs := range backends() {
		t.Run(kind, func(t *testing.T) {
			b, f := newBlobs()
			s := newBlobStore(t, b, checkpoint.WithCompaction(100))
			m := newModel()
			s1 := save(t, s, m, full("1", map[string]string{"a": "1"}))
			s2 := save(t, s, m, delta(s1, "2", map[string]string{"b": "2"}))
			want := of(mustLoad(t, s))
			s3 := save(t, s, m, delta(s2, "3", map[string]string{"c": "3"}))
			names, err := f.List(ctx)
			require.NoError(t, err)
			require.Len(t, names, 3)

			for _, damage := range []string{"flip", "digest", "missing"} {
				last := names[2]
				data, err := f.Get(ctx, last)
				require.NoError(t, err)
				switch damage {
				case "flip":
					bad := slices.Clone(data)
					bad[len(bad)/2] ^= 1
					require.NoError(t, f.Put(ctx, last, bad))
				case "digest":
					f.only = last
					f.set("get", &checkpoint.CorruptError{Path: last, Err: errInjected})
				case "missing":
					require.NoError(t, f.Delete(ctx, names[1])) // the delta s3 extends
				}
				opt, logs := observed()
				seq, got := loadModel(t, newBlobStore(t, b, opt))
				if damage == "missing" {
					assert.Equal(t, s1, seq, damage)
				} else {
					assert.Equal(t, s2, seq, damage)
					assert.Equal(t, want, got, damage)
				}
				require.Equal(t, 1, logs.Len(), damage)
				var ce *checkpoint.CorruptError
				require.ErrorAs(t, fieldError(t, logs.All()[0]), &ce, damage)
				assert.Contains(t, ce.Path, last, damage)
				f.set("get", nil)
				require.NoError(t, f.Put(ctx, last, data))
			}
			_ = s3
		})
	}
}

// TestBlobStoreCollectsOrphans leaves the blob of a failed save behind
// (its removal failed too, which is logged): Load never returns it, and a
// later compaction removes it with the chains before the kept one.
func TestBlobStoreCollectsOrphans(t *testing.T) {
	ctx := context.Background()
	for kind, newBlobs := range backends() {
		t.Run(kind, func(t *testing.T) {
			b, f := newBlobs()
			core, logs := observer.New(zapcore.WarnLevel)
			s := newBlobStore(t, b, checkpoint.WithLogger(zap.New(core)), checkpoint.WithCompaction(100))
			m := newModel()
			seq := save(t, s, m, full("1", map[string]string{"a": "1"}))
			before, err := f.List(ctx)
			require.NoError(t, err)

			fault := "put" // torn: a blob that fails its checksum
			if _, ok := b.(checkpoint.Head); ok {
				fault = "writehead" // a complete blob that was never committed
			}
			f.torn = true
			f.set(fault, errInjected)
			f.set("delete", errInjected)
			_, err = s.Save(ctx, delta(seq, "orphan", map[string]string{"o": "1"}))
			require.ErrorIs(t, err, errInjected)
			assert.Equal(t, 1, logs.FilterMessageSnippet("cannot remove").Len())
			after, err := f.List(ctx)
			require.NoError(t, err)
			orphans := setMinusOf(after, before)
			require.Len(t, orphans, 1)
			f.set(fault, nil)
			f.set("delete", nil)

			for i := range 10 {
				s = newBlobStore(t, b, checkpoint.WithCompaction(0))
				seq = save(t, s, m, delta(seq, fmt.Sprint(i), map[string]string{"k": fmt.Sprint(i)}))
				require.NoError(t, s.Close()) // waits for the compaction
				names, err := f.List(ctx)
				require.NoError(t, err)
				if !slices.Contains(names, orphans[0]) {
					t.Logf("collected after %d saves; %d blobs", i+1, len(names))
					got, gm := loadModel(t, newBlobStore(t, b))
					assert.Equal(t, seq, got)
					assert.Equal(t, m, gm)
					return
				}
			}
			t.Fatal("the orphan was never collected")
		})
	}
}

func setMinusOf(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

// TestBlobStoreModel runs seeded random histories of saves, new stores on
// the same blobs and compactions, with and without a head, against the
// model; the blobs kept stay bounded.
func TestBlobStoreModel(t *testing.T) {
	for kind, newBlobs := range backends() {
		for _, ratio := range []float64{0, 0.5, 4} {
			t.Run(fmt.Sprintf("%s/%v", kind, ratio), func(t *testing.T) {
				b, f := newBlobs()
				s := newBlobStore(t, b, checkpoint.WithCompaction(ratio))
				m := newModel()
				seq := save(t, s, m, full("0", nil))
				for i := range 60 {
					if i%13 == 12 {
						require.NoError(t, s.Close())
						s = newBlobStore(t, b, checkpoint.WithCompaction(ratio))
					}
					seq = save(t, s, m, delta(seq, fmt.Sprint(i), map[string]string{fmt.Sprint("k", i%9): fmt.Sprint(i)}, fmt.Sprint("k", i%5)))
				}
				require.NoError(t, s.Close())
				got, gm := loadModel(t, newBlobStore(t, b))
				assert.Equal(t, seq, got)
				assert.Equal(t, m, gm)
				names, err := f.List(context.Background())
				require.NoError(t, err)
				fulls := 0
				for _, n := range names {
					if strings.Contains(n, ".full.") {
						fulls++
					}
				}
				assert.LessOrEqual(t, fulls, 2, "the kept chain's and the previous one's: %v", names)
			})
		}
	}
}

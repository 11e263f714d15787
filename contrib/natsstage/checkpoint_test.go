package natsstage_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/stagefsm/stagefsm/checkpoint"
	"github.com/stagefsm/stagefsm/contrib/natsstage"
)

const ckBucket = "ckpt"

var ckGraph = []string{"src", "count", "sink"}

func newStore(t *testing.T, js jetstream.JetStream, name string, opts ...natsstage.StoreOption) *natsstage.Store {
	t.Helper()
	s, err := natsstage.NewStore(context.Background(), js, ckBucket, name, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func save(t *testing.T, s checkpoint.Store, u *checkpoint.Update) uint64 {
	t.Helper()
	seq, err := s.Save(context.Background(), u)
	require.NoError(t, err)
	return seq
}

func load(t *testing.T, s checkpoint.Store) *checkpoint.Snapshot {
	t.Helper()
	cp, err := s.Load(context.Background())
	require.NoError(t, err)
	return cp
}

// full is a full update of the test graph with the counts given.
func full(pos string, counts map[string]string) *checkpoint.Update {
	set := map[string][]byte{}
	for k, v := range counts {
		set[k] = []byte(v)
	}
	return &checkpoint.Update{Graph: ckGraph, Stages: map[string]checkpoint.StageUpdate{
		"src":   {Position: []byte(pos)},
		"count": {Set: set},
	}}
}

func delta(base uint64, pos string, set map[string]string, del ...string) *checkpoint.Update {
	u := full(pos, set)
	u.Base = base
	st := u.Stages["count"]
	st.Delete = del
	u.Stages["count"] = st
	return u
}

// counts returns the count stage's state as strings.
func counts(cp *checkpoint.Snapshot) map[string]string {
	out := map[string]string{}
	for k, v := range cp.Stages["count"].State {
		out[k] = string(v)
	}
	return out
}

func TestStoreSavesAndLoadsChains(t *testing.T) {
	_, js := startServer(t).connect(t)
	s := newStore(t, js, "p0")
	ctx := context.Background()

	_, err := s.Load(ctx)
	require.ErrorIs(t, err, checkpoint.ErrNoCheckpoint)
	_, err = s.Save(ctx, delta(1, "3", nil))
	require.ErrorIs(t, err, checkpoint.ErrStaleBase, "a delta on nothing")

	s1 := save(t, s, full("3", map[string]string{"a": "1", "b": "2"}))
	s2 := save(t, s, delta(s1, "5", map[string]string{"c": "7"}, "a"))
	s3 := save(t, s, delta(s2, "9", map[string]string{"b": "4", "d": "1"}))
	assert.Less(t, s1, s2)
	assert.Less(t, s2, s3)

	cp := load(t, s)
	assert.Equal(t, s3, cp.Seq)
	assert.NoError(t, cp.Match([]string{"sink", "count", "src"}))
	assert.Equal(t, "9", string(cp.Stages["src"].Position))
	assert.Equal(t, map[string]string{"b": "4", "c": "7", "d": "1"}, counts(cp))

	// Another Store on the same name (a worker taking over) loads the same.
	other := newStore(t, js, "p0")
	assert.Equal(t, cp, load(t, other))

	_, err = s.Save(ctx, delta(s2, "10", nil))
	require.ErrorIs(t, err, checkpoint.ErrStaleBase, "a delta on an older checkpoint")

	renamed := delta(s3, "10", nil)
	renamed.Graph = []string{"src", "sum", "sink"}
	renamed.Stages = nil
	_, err = s.Save(ctx, renamed)
	var ge *checkpoint.GraphError
	require.ErrorAs(t, err, &ge)
	assert.Equal(t, []string{"count"}, ge.Missing)
	assert.Equal(t, []string{"sum"}, ge.Added)
	var ge2 *checkpoint.GraphError
	require.ErrorAs(t, cp.Match(renamed.Graph), &ge2)

	for _, bad := range []*checkpoint.Update{nil, {}, {Graph: []string{"a", "a"}}, {Graph: []string{""}},
		{Graph: []string{"a"}, Stages: map[string]checkpoint.StageUpdate{"b": {}}}} {
		_, err := s.Save(ctx, bad)
		assert.ErrorIs(t, err, checkpoint.ErrInvalid)
	}

	// A full checkpoint replaces everything, also the graph.
	s4 := save(t, s, &checkpoint.Update{Graph: []string{"x"}, Stages: map[string]checkpoint.StageUpdate{
		"x": {Set: map[string][]byte{"k": []byte("v")}, Delete: []string{"k"}}}})
	cp = load(t, s)
	assert.Equal(t, s4, cp.Seq)
	assert.Equal(t, []string{"x"}, cp.Graph)
	assert.Empty(t, cp.Stages["x"].State, "a key set and deleted is deleted")
}

func TestStoreNamesShareABucket(t *testing.T) {
	_, js := startServer(t).connect(t)
	a, b := newStore(t, js, "part-0"), newStore(t, js, "part-1")
	save(t, a, full("1", map[string]string{"a": "1"}))
	_, err := b.Load(context.Background())
	require.ErrorIs(t, err, checkpoint.ErrNoCheckpoint, "another name's checkpoints are not b's")
	sb := save(t, b, full("2", map[string]string{"b": "2"}))
	save(t, b, delta(sb, "3", map[string]string{"b": "3"}))
	assert.Equal(t, map[string]string{"a": "1"}, counts(load(t, a)))
	assert.Equal(t, map[string]string{"b": "3"}, counts(load(t, b)))

	for _, name := range []string{"", "a/b", "a.b", "a b", "ä"} {
		_, err := natsstage.NewStore(context.Background(), js, ckBucket, name)
		assert.ErrorIs(t, err, natsstage.ErrInvalidName, "name %q", name)
	}
}

// objects returns the names of the objects of the checkpoints called name.
func objects(t *testing.T, js jetstream.JetStream, name string) []string {
	t.Helper()
	obs, err := js.ObjectStore(context.Background(), ckBucket)
	require.NoError(t, err)
	infos, err := obs.List(context.Background())
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	require.NoError(t, err)
	var out []string
	for _, info := range infos {
		if strings.HasPrefix(info.Name, name+"/") {
			out = append(out, info.Name)
		}
	}
	return out
}

// corrupt rewrites the object of checkpoint seq with change applied.
func corrupt(t *testing.T, js jetstream.JetStream, name string, seq uint64, change func([]byte) []byte) {
	t.Helper()
	ctx := context.Background()
	obs, err := js.ObjectStore(ctx, ckBucket)
	require.NoError(t, err)
	prefix := fmt.Sprintf("%s/%020d.", name, seq)
	for _, obj := range objects(t, js, name) {
		if strings.HasPrefix(obj, prefix) {
			data, err := obs.GetBytes(ctx, obj)
			require.NoError(t, err)
			_, err = obs.PutBytes(ctx, obj, change(data))
			require.NoError(t, err)
			return
		}
	}
	t.Fatalf("no object for checkpoint %d", seq)
}

func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.WarnLevel)
	return zap.New(core), logs
}

// loggedError returns the error a log line carries.
func loggedError(t *testing.T, e observer.LoggedEntry) error {
	t.Helper()
	for _, f := range e.Context {
		if err, ok := f.Interface.(error); ok && f.Key == "error" {
			return err
		}
	}
	t.Fatalf("no error in %q", e.Message)
	return nil
}

func TestStoreSkipsCorruptCheckpoints(t *testing.T) {
	_, js := startServer(t).connect(t)
	log, logs := observed()
	s := newStore(t, js, "p0", natsstage.WithStoreLogger(log), natsstage.WithCompaction(100))
	s1 := save(t, s, full("1", map[string]string{"a": "1"}))
	s2 := save(t, s, delta(s1, "2", map[string]string{"a": "2"}))
	s3 := save(t, s, delta(s2, "3", map[string]string{"a": "3"}))

	// A flipped byte in the newest checkpoint: the previous one is used.
	corrupt(t, js, "p0", s3, func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b })
	cp := load(t, s)
	assert.Equal(t, s2, cp.Seq)
	assert.Equal(t, map[string]string{"a": "2"}, counts(cp))
	require.Equal(t, 1, logs.FilterMessageSnippet("skipped a torn or corrupt checkpoint").Len())
	var ce *checkpoint.CorruptError
	require.ErrorAs(t, loggedError(t, logs.All()[0]), &ce)

	// Saving goes on from the checkpoint loaded.
	s4 := save(t, s, delta(cp.Seq, "4", map[string]string{"b": "1"}))
	assert.Greater(t, s4, s3)
	cp = load(t, newStore(t, js, "p0"))
	assert.Equal(t, s4, cp.Seq)
	assert.Equal(t, map[string]string{"a": "2", "b": "1"}, counts(cp))

	// A torn full checkpoint breaks every delta on it: none is complete.
	corrupt(t, js, "p0", s1, func(b []byte) []byte { return b[:len(b)-3] })
	_, err := s.Load(context.Background())
	require.ErrorAs(t, err, &ce)
	assert.NotErrorIs(t, err, checkpoint.ErrNoCheckpoint)
}

func TestStoreSurvivesACorruptHead(t *testing.T) {
	_, js := startServer(t).connect(t)
	log, logs := observed()
	s := newStore(t, js, "p0", natsstage.WithStoreLogger(log))
	s1 := save(t, s, full("1", map[string]string{"a": "1"}))
	s2 := save(t, s, delta(s1, "2", map[string]string{"a": "2"}))

	kv, err := js.KeyValue(context.Background(), ckBucket)
	require.NoError(t, err)
	_, err = kv.PutString(context.Background(), "p0", "garbage")
	require.NoError(t, err)

	cp := load(t, s)
	assert.Equal(t, s2, cp.Seq, "every object is considered")
	assert.Equal(t, 1, logs.FilterMessageSnippet("head is torn or corrupt").Len())
	s3 := save(t, s, delta(s2, "3", map[string]string{"a": "3"}))
	assert.Equal(t, s3, load(t, newStore(t, js, "p0")).Seq)
}

func TestStoreWriteFailureKeepsTheLastCheckpoint(t *testing.T) {
	ns := startServer(t)
	_, js := ns.connect(t)
	s := newStore(t, js, "p0")
	ctx := context.Background()
	s1 := save(t, s, full("1", map[string]string{"a": "1"}))

	// The server refuses the object: its stream takes small messages only.
	st, err := js.Stream(ctx, "OBJ_"+ckBucket)
	require.NoError(t, err)
	cfg := st.CachedInfo().Config
	limited := cfg
	limited.MaxMsgSize = 64
	_, err = js.UpdateStream(ctx, limited)
	require.NoError(t, err)
	_, err = s.Save(ctx, delta(s1, "2", map[string]string{"a": strings.Repeat("x", 200)}))
	require.Error(t, err)
	assert.NotErrorIs(t, err, checkpoint.ErrStaleBase)
	assert.Equal(t, s1, load(t, s).Seq)
	_, err = js.UpdateStream(ctx, cfg)
	require.NoError(t, err)

	// The head cannot be moved: its bucket was deleted. The object stored
	// is removed again, and the error is JetStream's.
	s2 := save(t, s, delta(s1, "2", map[string]string{"a": "2"}))
	require.NoError(t, js.DeleteKeyValue(ctx, ckBucket))
	_, err = s.Save(ctx, delta(s2, "3", map[string]string{"a": "3"}))
	require.Error(t, err)
	_, err = s.Load(ctx)
	require.Error(t, err)
	assert.NotErrorIs(t, err, checkpoint.ErrNoCheckpoint, "a missing bucket is not an empty store")
	for _, obj := range objects(t, js, "p0") {
		assert.NotContains(t, obj, fmt.Sprintf("%020d", s2+1), "the object of the failed save is removed")
	}

	// The connection closed for good: Save fails, and a new worker on a
	// new connection loads the last good checkpoint.
	_, js2 := ns.connect(t)
	s = newStore(t, js2, "p1")
	p1 := save(t, s, full("1", map[string]string{"a": "1"}))
	js2.Conn().Close()
	_, err = s.Save(ctx, delta(p1, "2", map[string]string{"a": "2"}))
	require.Error(t, err)
	cp := load(t, newStore(t, js, "p1"))
	assert.Equal(t, p1, cp.Seq)
	assert.Equal(t, map[string]string{"a": "1"}, counts(cp))
}

func TestStoreFencesAStaleWriter(t *testing.T) {
	_, js := startServer(t).connect(t)
	a := newStore(t, js, "p0")
	s1 := save(t, a, full("1", map[string]string{"a": "1"}))

	// b takes over: it loads and saves on a's checkpoint.
	b := newStore(t, js, "p0")
	cp := load(t, b)
	s2 := save(t, b, delta(cp.Seq, "2", map[string]string{"a": "2"}))

	// a, unaware, saves on the checkpoint it had: refused.
	_, err := a.Save(context.Background(), delta(s1, "2", map[string]string{"a": "99"}))
	require.ErrorIs(t, err, checkpoint.ErrStaleBase)
	cp = load(t, a)
	assert.Equal(t, s2, cp.Seq)
	assert.Equal(t, map[string]string{"a": "2"}, counts(cp))
}

func TestStoreCompacts(t *testing.T) {
	_, js := startServer(t).connect(t)
	s, err := natsstage.NewStore(context.Background(), js, ckBucket, "p0", natsstage.WithCompaction(0))
	require.NoError(t, err)
	want := map[string]string{}
	for i := range 50 {
		want[fmt.Sprint("k", i)] = "0"
	}
	seq := save(t, s, full("0", want))
	// Compactions run in the background while saves go on; save until
	// they have removed old checkpoints.
	saves := 0
	for ; saves < 30 || len(objects(t, js, "p0")) > saves; saves++ {
		require.Less(t, saves, 1000, "no compaction removed a checkpoint")
		i := saves + 1
		k, v := fmt.Sprint("k", i%7), fmt.Sprint(i)
		want[k] = v
		seq = save(t, s, delta(seq, fmt.Sprint(i), map[string]string{k: v}, fmt.Sprint("k", 40+i%10)))
		delete(want, fmt.Sprint("k", 40+i%10))
	}
	require.NoError(t, s.Close())
	_, err = s.Load(context.Background())
	require.ErrorIs(t, err, checkpoint.ErrClosed)

	cp := load(t, newStore(t, js, "p0"))
	assert.Equal(t, seq, cp.Seq)
	assert.Equal(t, want, counts(cp))
	assert.Equal(t, fmt.Sprint(saves), string(cp.Stages["src"].Position))
}

// TestStoreMillionKeys saves a full checkpoint of a million keys (far over
// the server's 1MB message limit) and a delta of 1% of them, and loads
// the merged state.
func TestStoreMillionKeys(t *testing.T) {
	n := 1_000_000
	if testing.Short() || raceEnabled {
		n = 100_000
	}
	_, js := startServer(t).connect(t)
	s := newStore(t, js, "big", natsstage.WithCompaction(100))
	set := make(map[string][]byte, n)
	for i := range n {
		set[fmt.Sprintf("key-%07d", i)] = []byte(fmt.Sprintf("%08d", i))
	}
	stages := func(set map[string][]byte) map[string]checkpoint.StageUpdate {
		return map[string]checkpoint.StageUpdate{"count": {Set: set}}
	}
	start := time.Now()
	s1 := save(t, s, &checkpoint.Update{Graph: ckGraph, Stages: stages(set)})
	fullTook := time.Since(start)
	changed := make(map[string][]byte, n/100)
	for i := 0; i < n; i += 100 {
		changed[fmt.Sprintf("key-%07d", i)] = []byte("changed!")
	}
	start = time.Now()
	s2 := save(t, s, &checkpoint.Update{Base: s1, Graph: ckGraph, Stages: stages(changed)})
	deltaTook := time.Since(start)
	start = time.Now()
	cp := load(t, newStore(t, js, "big"))
	loadTook := time.Since(start)
	t.Logf("%d keys: full save %v, 1%% delta save %v, load %v", n, fullTook, deltaTook, loadTook)
	assert.Equal(t, s2, cp.Seq)
	state := cp.Stages["count"].State
	require.Len(t, state, n)
	for i := 0; i < n; i += 50 {
		want := fmt.Sprintf("%08d", i)
		if i%100 == 0 {
			want = "changed!"
		}
		require.Equal(t, want, string(state[fmt.Sprintf("key-%07d", i)]))
	}
}

package checkpoint_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/stagefsm/stagefsm/checkpoint"
)

var graph = []string{"src", "count", "sink"}

// model is what a checkpoint should hold: positions and state by stage,
// as strings, with empty stages left out.
type model struct {
	pos   map[string]string
	state map[string]map[string]string
}

func newModel() *model {
	return &model{pos: map[string]string{}, state: map[string]map[string]string{}}
}

// apply applies u to m the way the store documents it.
func (m *model) apply(u *checkpoint.Update) {
	if u.Base == 0 {
		*m = *newModel()
	}
	for name, su := range u.Stages {
		if su.Position != nil {
			m.pos[name] = string(su.Position)
		}
		for k, v := range su.Set {
			if m.state[name] == nil {
				m.state[name] = map[string]string{}
			}
			m.state[name][k] = string(v)
		}
		for _, k := range su.Delete {
			delete(m.state[name], k)
		}
		if len(m.state[name]) == 0 {
			delete(m.state, name)
		}
	}
}

// of returns the model of a loaded checkpoint.
func of(cp *checkpoint.Snapshot) *model {
	m := newModel()
	for name, st := range cp.Stages {
		if st.Position != nil {
			m.pos[name] = string(st.Position)
		}
		for k, v := range st.State {
			if m.state[name] == nil {
				m.state[name] = map[string]string{}
			}
			m.state[name][k] = string(v)
		}
	}
	return m
}

func openDir(t *testing.T, path string, opts ...checkpoint.Option) *checkpoint.Dir {
	t.Helper()
	d, err := checkpoint.OpenDir(path, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, d.Close()) })
	return d
}

// save saves u into the store d, applies it to m, and checks that Load returns m.
func save(t *testing.T, d checkpoint.Store, m *model, u *checkpoint.Update) uint64 {
	t.Helper()
	seq, err := d.Save(context.Background(), u)
	require.NoError(t, err)
	m.apply(u)
	cp, err := d.Load(context.Background())
	require.NoError(t, err)
	assert.Equal(t, seq, cp.Seq)
	assert.Equal(t, m, of(cp))
	return seq
}

func full(pos string, state map[string]string) *checkpoint.Update {
	set := map[string][]byte{}
	for k, v := range state {
		set[k] = []byte(v)
	}
	return &checkpoint.Update{Graph: graph, Stages: map[string]checkpoint.StageUpdate{
		"src": {Position: []byte(pos)}, "count": {Set: set}}}
}

func delta(base uint64, pos string, set map[string]string, del ...string) *checkpoint.Update {
	s := map[string][]byte{}
	for k, v := range set {
		s[k] = []byte(v)
	}
	return &checkpoint.Update{Base: base, Graph: graph, Stages: map[string]checkpoint.StageUpdate{
		"src": {Position: []byte(pos)}, "count": {Set: s, Delete: del}}}
}

// TestDirSaveLoad saves a full checkpoint and deltas (set, replace,
// delete, a new position) and loads them back, also from a new Dir on the
// same directory.
func TestDirSaveLoad(t *testing.T) {
	path := t.TempDir()
	d := openDir(t, path)
	m := newModel()
	seq := save(t, d, m, full("10", map[string]string{"a": "1", "b": "2", "c": "3"}))
	seq = save(t, d, m, delta(seq, "20", map[string]string{"a": "11", "d": "4"}, "b"))
	seq = save(t, d, m, delta(seq, "30", map[string]string{"e": "5", "x": "gone"}, "x", "missing"))

	cp, err := openDir(t, path).Load(context.Background())
	require.NoError(t, err)
	assert.Equal(t, seq, cp.Seq)
	assert.Equal(t, graph, cp.Graph)
	assert.Equal(t, m, of(cp))
	assert.Equal(t, map[string]string{"a": "11", "c": "3", "d": "4", "e": "5"}, m.state["count"], "the model itself")

	// A delta on a Dir that has not loaded yet scans the directory first.
	d2 := openDir(t, path)
	_, err = d2.Save(context.Background(), delta(seq, "40", map[string]string{"f": "6"}))
	require.NoError(t, err)
}

// TestDirFullWithDeletes checks that a full checkpoint drops the keys it
// both sets and deletes.
func TestDirFullWithDeletes(t *testing.T) {
	d := openDir(t, t.TempDir())
	u := full("1", map[string]string{"a": "1", "b": "2"})
	u.Stages["count"] = checkpoint.StageUpdate{Set: u.Stages["count"].Set, Delete: []string{"b"}}
	save(t, d, newModel(), u)
	cp, err := d.Load(context.Background())
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{"a": []byte("1")}, cp.Stages["count"].State)
	assert.Len(t, u.Stages["count"].Set, 2, "the caller's update is not changed")
}

func TestDirNoCheckpoint(t *testing.T) {
	_, err := openDir(t, t.TempDir()).Load(context.Background())
	assert.ErrorIs(t, err, checkpoint.ErrNoCheckpoint)
}

func TestDirStaleBase(t *testing.T) {
	d := openDir(t, t.TempDir())
	_, err := d.Save(context.Background(), delta(1, "1", nil))
	require.ErrorIs(t, err, checkpoint.ErrStaleBase, "no checkpoint to apply to")
	m := newModel()
	seq := save(t, d, m, full("1", nil))
	seq2 := save(t, d, m, delta(seq, "2", nil))
	_, err = d.Save(context.Background(), delta(seq, "3", nil))
	assert.ErrorIs(t, err, checkpoint.ErrStaleBase, "based on the one before the latest")
	cp, err := d.Load(context.Background())
	require.NoError(t, err)
	assert.Equal(t, seq2, cp.Seq)
}

// TestDirGraph checks that a checkpoint of another graph is refused, by
// Match and by a delta Save, with the stages named.
func TestDirGraph(t *testing.T) {
	d := openDir(t, t.TempDir())
	seq := save(t, d, newModel(), full("1", nil))
	cp, err := d.Load(context.Background())
	require.NoError(t, err)

	assert.NoError(t, cp.Match([]string{"sink", "src", "count"}), "order does not matter")
	var ge *checkpoint.GraphError
	require.ErrorAs(t, cp.Match([]string{"src", "counter", "sink", "audit"}), &ge)
	assert.Equal(t, []string{"count"}, ge.Missing)
	assert.Equal(t, []string{"audit", "counter"}, ge.Added)
	assert.Contains(t, ge.Error(), "count")
	require.ErrorAs(t, cp.Match([]string{"src"}), &ge)
	assert.Equal(t, []string{"count", "sink"}, ge.Missing)
	assert.Empty(t, ge.Added)

	_, err = d.Save(context.Background(), &checkpoint.Update{Base: seq, Graph: []string{"src", "sink"}})
	require.ErrorAs(t, err, &ge)
	assert.Equal(t, []string{"count"}, ge.Missing)

	// The same stages in another order extend the history.
	seq2, err := d.Save(context.Background(), &checkpoint.Update{Base: seq, Graph: []string{"sink", "count", "src"}})
	require.NoError(t, err)
	cp, err = d.Load(context.Background())
	require.NoError(t, err)
	assert.Equal(t, seq2, cp.Seq)
	assert.Equal(t, graph, cp.Graph)
}

func TestDirInvalid(t *testing.T) {
	d := openDir(t, t.TempDir())
	for name, u := range map[string]*checkpoint.Update{
		"nil":       nil,
		"no stages": {},
		"empty":     {Graph: []string{"a", ""}},
		"twice":     {Graph: []string{"a", "b", "a"}},
		"not in graph": {Graph: []string{"a"}, Stages: map[string]checkpoint.StageUpdate{
			"b": {Position: []byte("1")}}},
	} {
		_, err := d.Save(context.Background(), u)
		assert.ErrorIs(t, err, checkpoint.ErrInvalid, name)
	}
	_, err := d.Load(context.Background())
	assert.ErrorIs(t, err, checkpoint.ErrNoCheckpoint, "nothing was written")
}

func TestDirContext(t *testing.T) {
	d := openDir(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := d.Save(ctx, full("1", nil))
	assert.ErrorIs(t, err, context.Canceled)
	_, err = d.Load(ctx)
	assert.ErrorIs(t, err, context.Canceled)
	_, err = d.Load(context.Background())
	assert.ErrorIs(t, err, checkpoint.ErrNoCheckpoint)
}

// files returns the files in dir, oldest first, each checkpoint file's
// name without its CRC ("00000000000000000002.delta").
func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, withoutCRC(e.Name()))
	}
	slices.Sort(names)
	return names
}

var crcSuffix = regexp.MustCompile(`\.[0-9a-f]{8}$`)

func withoutCRC(name string) string { return crcSuffix.ReplaceAllString(name, "") }

// file returns the path of the checkpoint file in dir that files names
// short.
func file(t *testing.T, dir, short string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		if withoutCRC(e.Name()) == short {
			return filepath.Join(dir, e.Name())
		}
	}
	require.Fail(t, "no such checkpoint file", short)
	return ""
}

// observed returns a logger that records Warn and above.
func observed() (checkpoint.Option, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.WarnLevel)
	return checkpoint.WithLogger(zap.New(core)), logs
}

// corruptionsOf returns, for a file's bytes, every truncation and every
// single flipped byte.
func corruptionsOf(b []byte) map[string][]byte {
	out := map[string][]byte{}
	for n := range len(b) {
		out[fmt.Sprintf("cut at %d", n)] = b[:n]
		flipped := slices.Clone(b)
		flipped[n] ^= 0x20
		out[fmt.Sprintf("flip byte %d", n)] = flipped
	}
	return out
}

// TestDirTornLatest truncates the latest checkpoint file at every offset
// and flips each of its bytes: Load returns the previous checkpoint and
// logs the skipped one; a delta on the previous one then goes on cleanly.
func TestDirTornLatest(t *testing.T) {
	path := t.TempDir()
	d := openDir(t, path)
	prev := newModel()
	seq := save(t, d, prev, full("10", map[string]string{"a": "1", "b": "2"}))
	save(t, d, newModel(), delta(seq, "20", map[string]string{"a": "11"}, "b"))
	names := files(t, path)
	require.Len(t, names, 2)
	last := file(t, path, names[1])
	good, err := os.ReadFile(last)
	require.NoError(t, err)

	for name, bad := range corruptionsOf(good) {
		require.NoError(t, os.WriteFile(last, bad, 0o644))
		opt, logs := observed()
		cp, err := openDir(t, path, opt).Load(context.Background())
		require.NoError(t, err, name)
		assert.Equal(t, seq, cp.Seq, name)
		assert.Equal(t, prev, of(cp), name)
		require.Equal(t, 1, logs.Len(), name)
		entry := logs.All()[0]
		assert.Equal(t, zapcore.WarnLevel, entry.Level)
		var ce *checkpoint.CorruptError
		require.ErrorAs(t, fieldError(t, entry), &ce, name)
		assert.Equal(t, last, ce.Path)
	}

	// Resuming from the previous checkpoint, the next delta replaces the
	// corrupt one in the history.
	d = openDir(t, path)
	cp, err := d.Load(context.Background())
	require.NoError(t, err)
	m := of(cp)
	seq3 := save(t, d, m, delta(cp.Seq, "30", map[string]string{"c": "3"}))
	cp, err = openDir(t, path).Load(context.Background())
	require.NoError(t, err)
	assert.Equal(t, seq3, cp.Seq)
	assert.Equal(t, map[string]string{"a": "1", "b": "2", "c": "3"}, of(cp).state["count"])
}

func fieldError(t *testing.T, e observer.LoggedEntry) error {
	t.Helper()
	for _, f := range e.Context {
		if err, ok := f.Interface.(error); ok && f.Key == "error" {
			return err
		}
	}
	require.Fail(t, "the log line carries no error", "%v", e.Context)
	return nil
}

func corrupt(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[len(b)/2] ^= 1
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

// TestDirCompaction lets a compaction run in the background and checks
// the full checkpoint it writes next to the delta it equals: deltas extend
// it, a corrupt one falls back to the delta chain, and both corrupt fall
// back to the checkpoint before.
func TestDirCompaction(t *testing.T) {
	path := t.TempDir()
	d := openDir(t, path, checkpoint.WithCompaction(0.0001))
	m := newModel()
	seq := save(t, d, m, full("1", map[string]string{"a": "1"}))
	first := of(mustLoad(t, d))
	save(t, d, m, delta(seq, "2", map[string]string{"b": "2"}))
	require.NoError(t, d.Close()) // waits for the compaction
	_, err := d.Load(context.Background())
	require.ErrorIs(t, err, checkpoint.ErrClosed)
	assert.Equal(t, []string{"00000000000000000001.full", "00000000000000000002.delta", "00000000000000000002.full"}, files(t, path))

	d = openDir(t, path, checkpoint.WithCompaction(1e9))
	cp := mustLoad(t, d)
	require.Equal(t, uint64(2), cp.Seq)
	save(t, d, m, delta(cp.Seq, "3", map[string]string{"c": "3"}))
	require.NoError(t, d.Close())

	full2 := file(t, path, "00000000000000000002.full")
	corrupt(t, full2)
	opt, logs := observed()
	cp = mustLoad(t, openDir(t, path, opt))
	assert.Equal(t, uint64(3), cp.Seq, "through the delta the full checkpoint equals")
	assert.Equal(t, m, of(cp))
	require.Equal(t, 1, logs.Len())
	var ce *checkpoint.CorruptError
	require.ErrorAs(t, fieldError(t, logs.All()[0]), &ce)
	assert.Equal(t, full2, ce.Path)

	corrupt(t, file(t, path, "00000000000000000002.delta"))
	opt, logs = observed()
	cp = mustLoad(t, openDir(t, path, opt))
	assert.Equal(t, uint64(1), cp.Seq)
	assert.Equal(t, first, of(cp))
	assert.Equal(t, 3, logs.Len(), "both files of checkpoint 2, and the delta 3 on it")
	for _, e := range logs.All() {
		require.ErrorAs(t, fieldError(t, e), &ce)
	}
}

// TestDirRetention compacts after every delta: the files older than the
// previous full checkpoint are removed.
func TestDirRetention(t *testing.T) {
	path := t.TempDir()
	m := newModel()
	d := openDir(t, path)
	seq := save(t, d, m, full("0", map[string]string{"a": "0"}))
	require.NoError(t, d.Close())
	for i := range 6 {
		d = openDir(t, path, checkpoint.WithCompaction(0))
		seq = save(t, d, m, delta(seq, fmt.Sprint(i), map[string]string{fmt.Sprint(i): "x"}))
		require.NoError(t, d.Close())
	}
	// Checkpoints 6 and 7 have a delta and a full file each; 5 and older
	// are gone.
	assert.Equal(t, []string{"00000000000000000006.delta", "00000000000000000006.full",
		"00000000000000000007.delta", "00000000000000000007.full"}, files(t, path))
	assert.Equal(t, m, of(mustLoad(t, openDir(t, path))))
}

// TestDirBrokenChain removes a delta in the middle of a chain: the deltas
// after it are skipped, the one before it is used.
func TestDirBrokenChain(t *testing.T) {
	path := t.TempDir()
	d := openDir(t, path, checkpoint.WithCompaction(100))
	m := newModel()
	seq := save(t, d, m, full("1", map[string]string{"a": "1"}))
	seq = save(t, d, m, delta(seq, "2", map[string]string{"b": "2"}))
	want := of(mustLoad(t, d))
	seq = save(t, d, m, delta(seq, "3", map[string]string{"c": "3"}))
	save(t, d, m, delta(seq, "4", map[string]string{"d": "4"}))
	require.NoError(t, os.Remove(file(t, path, "00000000000000000003.delta")))

	opt, logs := observed()
	cp, err := openDir(t, path, opt).Load(context.Background())
	require.NoError(t, err)
	assert.Equal(t, uint64(2), cp.Seq)
	assert.Equal(t, want, of(cp))
	require.Equal(t, 1, logs.Len())
	var ce *checkpoint.CorruptError
	require.ErrorAs(t, fieldError(t, logs.All()[0]), &ce)
	assert.True(t, strings.HasSuffix(withoutCRC(ce.Path), "00000000000000000004.delta"), ce.Path)
}

func mustLoad(t *testing.T, d checkpoint.Store) *checkpoint.Snapshot {
	t.Helper()
	cp, err := d.Load(context.Background())
	require.NoError(t, err)
	return cp
}

// TestDirAllCorrupt checks that a directory whose only checkpoint is
// corrupt is an error naming the file, not "no checkpoint": starting from
// nothing would silently reprocess everything. A full Save starts over.
func TestDirAllCorrupt(t *testing.T) {
	path := t.TempDir()
	d := openDir(t, path)
	save(t, d, newModel(), full("1", map[string]string{"a": "1"}))
	name := file(t, path, files(t, path)[0])
	require.NoError(t, os.Truncate(name, 20))

	d = openDir(t, path)
	_, err := d.Load(context.Background())
	var ce *checkpoint.CorruptError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, name, ce.Path)
	assert.NotErrorIs(t, err, checkpoint.ErrNoCheckpoint)

	_, err = d.Save(context.Background(), delta(1, "2", nil))
	assert.ErrorIs(t, err, checkpoint.ErrStaleBase)
	save(t, d, newModel(), full("5", map[string]string{"z": "26"}))
}

// TestDirLeftovers checks that OpenDir removes the temporary files of a
// save a crash interrupted, and that other files are ignored.
func TestDirLeftovers(t *testing.T) {
	path := t.TempDir()
	save(t, openDir(t, path), newModel(), full("1", nil))
	require.NoError(t, os.WriteFile(filepath.Join(path, ".tmp-00000000000000000002.delta-123"), []byte("half"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(path, "README"), []byte("mine"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(path, "7.full"), []byte("not ours"), 0o644))
	cp := mustLoad(t, openDir(t, path))
	assert.Equal(t, uint64(1), cp.Seq)
	assert.Equal(t, []string{"00000000000000000001.full", "7.full", "README"}, files(t, path))
}

// TestDirModel runs seeded random histories of full and delta saves,
// reopenings and compactions against a model, and checks that old chains
// are removed.
func TestDirModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed))
			path := t.TempDir()
			ratio := []float64{0, 0.5, 1, 4}[seed%4]
			d := openDir(t, path, checkpoint.WithCompaction(ratio))
			m := newModel()
			seq := save(t, d, m, full("0", nil))
			for i := range 40 {
				switch r := rng.IntN(20); {
				case r == 0:
					seq = save(t, d, m, full(fmt.Sprint(i), map[string]string{"k0": "full"}))
				case r == 1:
					require.NoError(t, d.Close())
					d = openDir(t, path, checkpoint.WithCompaction(ratio))
				default:
					set := map[string]string{}
					for range rng.IntN(5) {
						set[fmt.Sprintf("k%d", rng.IntN(30))] = fmt.Sprint(rng.Uint32())
					}
					var del []string
					for range rng.IntN(3) {
						del = append(del, fmt.Sprintf("k%d", rng.IntN(30)))
					}
					seq = save(t, d, m, delta(seq, fmt.Sprint(i), set, del...))
				}
			}
			require.NoError(t, d.Close())
			assert.Equal(t, m, of(mustLoad(t, openDir(t, path))))
			fulls := 0
			for _, n := range files(t, path) {
				if strings.HasSuffix(n, ".full") {
					fulls++
				}
			}
			t.Log(len(files(t, path)), "files", fulls, "full", files(t, path))
			assert.LessOrEqual(t, fulls, 3, "the current and the previous chain's, and perhaps one a new history made stale")
		})
	}
}

// TestDirReadsNamesWithoutCRC checks that the files of an earlier
// version, named without their CRC, still load and take deltas.
func TestDirReadsNamesWithoutCRC(t *testing.T) {
	path := t.TempDir()
	d := openDir(t, path, checkpoint.WithCompaction(100))
	m := newModel()
	seq := save(t, d, m, full("1", map[string]string{"a": "1"}))
	seq = save(t, d, m, delta(seq, "2", map[string]string{"b": "2"}))
	require.NoError(t, d.Close())
	for _, short := range files(t, path) {
		require.NoError(t, os.Rename(file(t, path, short), filepath.Join(path, short)))
	}
	require.Equal(t, []string{"00000000000000000001.full", "00000000000000000002.delta"}, files(t, path))

	d = openDir(t, path, checkpoint.WithCompaction(100))
	cp := mustLoad(t, d)
	assert.Equal(t, seq, cp.Seq)
	assert.Equal(t, m, of(cp))
	seq = save(t, d, m, delta(seq, "3", map[string]string{"c": "3"}))
	assert.Equal(t, m, of(mustLoad(t, openDir(t, path))))
	assert.Equal(t, uint64(3), seq)
}

package checkpoint

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// faultFS is the real file system with one operation failing on cue.
type faultFS struct {
	osFS
	fail       string // the operation that fails: create, write, sync, close, rename, syncdir
	only       string // with fail "create": only for temporary files whose pattern contains it
	writeLimit int    // with fail "write": bytes written before the disk is full
	err        error
	armed      bool // set by the first CreateTemp: with only, the first file is never failed
}

var errInjected = errors.New("injected fault")

func (f *faultFS) CreateTemp(dir, pattern string) (file, error) {
	defer func() { f.armed = true }()
	if f.fail == "create" && strings.Contains(pattern, f.only) && (f.only == "" || f.armed) {
		return nil, f.err
	}
	fl, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: fl, fs: f}, nil
}

func (f *faultFS) Rename(from, to string) error {
	if f.fail == "rename" {
		return f.err
	}
	return f.osFS.Rename(from, to)
}

func (f *faultFS) SyncDir(name string) error {
	if f.fail == "syncdir" {
		return f.err
	}
	return f.osFS.SyncDir(name)
}

type faultFile struct {
	*os.File
	fs      *faultFS
	written int
}

func (f *faultFile) Write(b []byte) (int, error) {
	if f.fs.fail == "write" && f.written+len(b) > f.fs.writeLimit {
		n, _ := f.File.Write(b[:max(f.fs.writeLimit-f.written, 0)])
		f.written += n
		return n, f.fs.err
	}
	n, err := f.File.Write(b)
	f.written += n
	return n, err
}

func (f *faultFile) Sync() error {
	if f.fs.fail == "sync" {
		return f.fs.err
	}
	return f.File.Sync()
}

func (f *faultFile) Close() error {
	err := f.File.Close()
	if f.fs.fail == "close" {
		return f.fs.err
	}
	return err
}

func update(base uint64, pos string, set map[string][]byte) *Update {
	return &Update{Base: base, Graph: []string{"src", "count"}, Stages: map[string]StageUpdate{
		"src": {Position: []byte(pos)}, "count": {Set: set}}}
}

// TestDirFailingWrites injects each way a write can fail — no file, a full
// disk at every byte count, a failed sync, close, rename or directory sync
// — into the save of a delta and of a full checkpoint: Save fails with the
// fault, leaves no file behind, and Load still returns the previous
// checkpoint; with the fault gone the next Save succeeds on it.
func TestDirFailingWrites(t *testing.T) {
	ctx := context.Background()
	big := map[string][]byte{}
	for _, k := range strings.Split("a b c d e f g h", " ") {
		big[k] = []byte(strings.Repeat(k, 100))
	}
	faults := []faultFS{{fail: "create"}, {fail: "sync"}, {fail: "close"}, {fail: "rename"}, {fail: "syncdir"}}
	for n := 0; n < 800; n += 53 { // both files are longer than 800 bytes
		faults = append(faults, faultFS{fail: "write", writeLimit: n})
	}
	for _, fault := range faults {
		for _, isFull := range []bool{false, true} {
			path := t.TempDir()
			fs := &faultFS{}
			d, err := openDir(path, fs, newOptions(nil))
			require.NoError(t, err)
			t.Cleanup(func() { assert.NoError(t, d.Close()) })
			seq, err := d.Save(ctx, update(0, "1", map[string][]byte{"a": []byte("1")}))
			require.NoError(t, err)
			before, err := os.ReadDir(path)
			require.NoError(t, err)

			*fs = fault
			fs.err = errInjected
			if fault.fail == "write" {
				fs.err = syscall.ENOSPC
			}
			u := update(seq, "2", big)
			if isFull {
				u.Base = 0
			}
			_, err = d.Save(ctx, u)
			require.ErrorIs(t, err, fs.err, "%s at %d, full %v", fault.fail, fault.writeLimit, isFull)
			after, err := os.ReadDir(path)
			require.NoError(t, err)
			assert.Equal(t, names(before), names(after), "%s: nothing left behind", fault.fail)

			for _, dd := range []*Dir{d, mustOpen(t, path)} { // what it knows, and what it finds
				cp, err := dd.Load(ctx)
				require.NoError(t, err)
				assert.Equal(t, seq, cp.Seq, fault.fail)
				assert.Equal(t, []byte("1"), cp.Stages["src"].Position)
			}

			fs.fail = ""
			seq2, err := d.Save(ctx, update(seq, "3", map[string][]byte{"b": []byte("2")}))
			require.NoError(t, err, "%s: the next save works", fault.fail)
			require.NoError(t, d.Close())
			cp, err := mustOpen(t, path).Load(ctx)
			require.NoError(t, err)
			assert.Equal(t, seq2, cp.Seq)
			assert.Equal(t, map[string][]byte{"a": []byte("1"), "b": []byte("2")}, cp.Stages["count"].State)
		}
	}
}

// TestDirFailingCompaction fails the background compaction: it is
// logged, the chain stays the latest, and a later save tries again.
func TestDirFailingCompaction(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	fs := &faultFS{fail: "create", only: ".full", err: errInjected}
	core, logs := observer.New(zapcore.WarnLevel)
	d, err := openDir(path, fs, newOptions([]Option{WithCompaction(0.001), WithLogger(zap.New(core))}))
	require.NoError(t, err)
	seq, err := d.Save(ctx, update(0, "1", map[string][]byte{"a": []byte("1")}))
	require.NoError(t, err, "the fault is on the full checkpoint only after the first")
	seq, err = d.Save(ctx, update(seq, "2", map[string][]byte{"b": []byte("2")}))
	require.NoError(t, err, "the delta is written")
	require.NoError(t, d.Close())
	require.Equal(t, 1, logs.Len())
	assert.ErrorIs(t, logs.All()[0].Context[len(logs.All()[0].Context)-1].Interface.(error), errInjected)

	d = mustOpen(t, path)
	cp, err := d.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, seq, cp.Seq)
	assert.Equal(t, map[string][]byte{"a": []byte("1"), "b": []byte("2")}, cp.Stages["count"].State)
	entries, err := os.ReadDir(path)
	require.NoError(t, err)
	assert.Regexp(t, `^00000000000000000001\.full\.[0-9a-f]{8} 00000000000000000002\.delta\.[0-9a-f]{8}$`, strings.Join(names(entries), " "))

	d.s.compaction = 0
	_, err = d.Save(ctx, update(seq, "3", map[string][]byte{"c": []byte("3")}))
	require.NoError(t, err)
	require.NoError(t, d.Close())
	entries, err = os.ReadDir(path)
	require.NoError(t, err)
	assert.Regexp(t, `00000000000000000003\.full\.`, strings.Join(names(entries), " "), "compacted at the next save")
}

func mustOpen(t *testing.T, path string) *Dir {
	t.Helper()
	d, err := openDir(path, osFS{}, newOptions(nil))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, d.Close()) })
	return d
}

func names(entries []os.DirEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, filepath.Base(e.Name()))
	}
	return out
}

package checkpoint

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// Dir is the embedded [Store]: a directory of checkpoint files, needing no
// server.
//
// Each checkpoint is one file, written atomically: to a temporary file,
// synced, renamed to its final name, and the directory synced; a CRC-32C
// over the whole file detects a torn or corrupt one. A full checkpoint
// holds every stage's state; a delta holds only what an [Update] changed
// and names the exact file (sequence and checksum) it extends, so the cost
// of a checkpoint follows the keys that changed, not the keys that exist.
// Once the deltas since the last full checkpoint add up to its size (see
// [WithCompaction]), [Dir.Save] writes a full checkpoint instead — it
// reads the chain back and writes the whole state, so that checkpoint
// costs as much as a full rewrite — and removes the files older than the
// previous full checkpoint. The previous chain is kept, so a corrupt new
// full checkpoint still leaves a complete one to fall back to.
//
// A Dir is safe for concurrent use, but a directory must have one writer:
// two processes saving into the same directory corrupt each other's
// history.
type Dir struct {
	path       string
	fs         fsys
	log        *zap.Logger
	compaction float64

	mu     sync.Mutex
	known  bool   // tip and maxSeq reflect the directory
	tip    tip    // the latest complete checkpoint; seq 0 when none
	maxSeq uint64 // the highest sequence of any checkpoint file
}

// tip describes the latest complete checkpoint and its chain.
type tip struct {
	seq       uint64
	crc       uint32
	graph     []string
	fullSeq   uint64 // the full checkpoint the chain starts with
	fullSize  int64
	deltaSize int64 // the chain's deltas, in bytes
}

var _ Store = (*Dir)(nil)

const (
	extFull   = ".full"
	extDelta  = ".delta"
	tmpPrefix = ".tmp-"
)

// OpenDir opens the checkpoint directory at path, creating it (mode 0755)
// if needed, and removes the temporary files a crash during a save may
// have left. It reads no checkpoint: [Dir.Load] does.
func OpenDir(path string, opts ...Option) (*Dir, error) {
	o := newOptions(opts)
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, fmt.Errorf("checkpoint: open %s: %w", path, err)
	}
	return openDir(path, osFS{}, o)
}

func openDir(path string, fs fsys, o options) (*Dir, error) {
	d := &Dir{path: path, fs: fs, log: o.logger.With(zap.String("dir", path)), compaction: o.compaction}
	entries, err := fs.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: open %s: %w", path, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			d.remove(filepath.Join(path, e.Name()))
		}
	}
	return d, nil
}

// Load returns the latest complete checkpoint in the directory, as
// [Store.Load] describes: a torn or corrupt newer one is skipped (logged
// at Warn, with its [*CorruptError]) and the previous complete one
// returned. An error reading the directory or a file is returned as is:
// only a file that reads but fails its checks counts as corrupt.
func (d *Dir) Load(ctx context.Context) (*Checkpoint, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	chain, err := d.resolve()
	if err != nil {
		return nil, err
	}
	return merge(chain), nil
}

// Save writes u as the new latest checkpoint, as [Store.Save] describes:
// a delta when u has a Base, a full checkpoint when it has none or when
// the deltas are due for compaction. A failed write (a full disk, a
// failed sync or rename) removes what it wrote and leaves the previous
// checkpoint the latest. ctx is checked before writing and again before
// the rename that commits.
func (d *Dir) Save(ctx context.Context, u *Update) (uint64, error) {
	if err := u.check(); err != nil {
		return 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if !d.known {
		if _, err := d.resolve(); err != nil && !errors.Is(err, ErrNoCheckpoint) && !allCorrupt(err) {
			return 0, err
		}
	}
	prev := d.tip
	if u.Base != 0 {
		if u.Base != prev.seq {
			return 0, fmt.Errorf("%w: update on checkpoint %d, the latest is %d", ErrStaleBase, u.Base, prev.seq)
		}
		if err := matchGraph(prev.graph, u.Graph); err != nil {
			return 0, err
		}
	}
	h := header{kind: kindDelta, seq: d.maxSeq + 1, prevSeq: prev.seq, prevCRC: prev.crc}
	graph, stages := u.Graph, u.Stages
	if u.Base != 0 {
		graph = prev.graph // the same set; the history keeps its first order
	}
	switch {
	case u.Base == 0:
		h.kind = kindFull
		stages = withoutDeletes(stages)
	case float64(prev.deltaSize) >= d.compaction*float64(prev.fullSize):
		h.kind = kindFull
		chain, err := d.resolve()
		if err != nil {
			return 0, err
		}
		if d.tip.seq != prev.seq {
			return 0, fmt.Errorf("%w: the directory's latest checkpoint is %d now", ErrStaleBase, d.tip.seq)
		}
		cp := merge(chain)
		apply(cp.Stages, u.Stages)
		stages = make(map[string]StageUpdate, len(cp.Stages))
		for name, st := range cp.Stages {
			stages[name] = StageUpdate{Position: st.Position, Set: st.State}
		}
	}
	if h.kind == kindFull {
		h.prevSeq, h.prevCRC = 0, 0
	}
	crc, size, err := d.write(ctx, h, graph, stages)
	if err != nil {
		return 0, err
	}
	d.maxSeq = h.seq
	d.tip = tip{seq: h.seq, crc: crc, graph: slices.Clone(graph), fullSeq: h.seq, fullSize: size}
	if h.kind == kindDelta {
		d.tip.fullSeq, d.tip.fullSize, d.tip.deltaSize = prev.fullSeq, prev.fullSize, prev.deltaSize+size
	} else if prev.seq != 0 {
		d.removeBefore(prev.fullSeq)
	}
	return h.seq, nil
}

// withoutDeletes returns stages with each stage's deleted keys taken out
// of its Set, for a full checkpoint (which has nothing to delete from). It
// copies only what it changes.
func withoutDeletes(stages map[string]StageUpdate) map[string]StageUpdate {
	var out map[string]StageUpdate
	for name, st := range stages {
		if len(st.Delete) == 0 {
			continue
		}
		if out == nil {
			out = maps.Clone(stages)
		}
		set := maps.Clone(st.Set)
		for _, k := range st.Delete {
			delete(set, k)
		}
		out[name] = StageUpdate{Position: st.Position, Set: set}
	}
	if out == nil {
		return stages
	}
	return out
}

// write writes one checkpoint file atomically and returns its CRC and
// size. On failure it removes what it wrote; when the directory sync
// after the rename fails, it also removes the renamed file (the rename
// might or might not survive a crash) and forgets what it knew of the
// directory, to scan it again.
func (d *Dir) write(ctx context.Context, h header, graph []string, stages map[string]StageUpdate) (uint32, int64, error) {
	name := fileName(h.seq, h.kind)
	f, err := d.fs.CreateTemp(d.path, tmpPrefix+name+"-*")
	if err != nil {
		return 0, 0, fmt.Errorf("checkpoint: write %s: %w", name, err)
	}
	w := newWriter(f)
	w.header(h)
	w.body(graph, stages)
	crc, err := w.finish()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = d.fs.Rename(f.Name(), filepath.Join(d.path, name))
	}
	if err != nil {
		d.remove(f.Name())
		return 0, 0, fmt.Errorf("checkpoint: write %s: %w", name, err)
	}
	if err := d.fs.SyncDir(d.path); err != nil {
		d.known = false
		d.remove(filepath.Join(d.path, name))
		_ = d.fs.SyncDir(d.path) // best effort: the save failed either way
		return 0, 0, fmt.Errorf("checkpoint: write %s: sync directory: %w", name, err)
	}
	return crc, headerSize + int64(w.n) + trailSize, nil
}

// remove removes a file, logging a failure (the file is garbage; the
// checkpoint that made it so stands).
func (d *Dir) remove(path string) {
	if err := d.fs.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("checkpoint: cannot remove a stale file", zap.String("file", path), zap.Error(err))
	}
}

// removeBefore removes the checkpoint files older than seq.
func (d *Dir) removeBefore(seq uint64) {
	files, err := d.list()
	if err != nil {
		d.log.Warn("checkpoint: cannot list old checkpoints to remove", zap.Error(err))
		return
	}
	for _, f := range files {
		if f.seq < seq {
			d.remove(filepath.Join(d.path, f.name))
		}
	}
}

func fileName(seq uint64, kind fileKind) string {
	ext := extFull
	if kind == kindDelta {
		ext = extDelta
	}
	return fmt.Sprintf("%020d%s", seq, ext)
}

// stored is a checkpoint file in the directory.
type stored struct {
	seq  uint64
	kind fileKind
	name string
}

// list returns the directory's checkpoint files, newest first. Names that
// are not checkpoint files are ignored.
func (d *Dir) list() ([]stored, error) {
	entries, err := d.fs.ReadDir(d.path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: read %s: %w", d.path, err)
	}
	var files []stored
	for _, e := range entries {
		name := e.Name()
		kind := kindFull
		base, ok := strings.CutSuffix(name, extFull)
		if !ok {
			kind = kindDelta
			base, ok = strings.CutSuffix(name, extDelta)
		}
		seq, err := strconv.ParseUint(base, 10, 64)
		if !ok || err != nil || seq == 0 || len(base) != 20 {
			continue
		}
		files = append(files, stored{seq: seq, kind: kind, name: name})
	}
	slices.SortFunc(files, func(a, b stored) int { return cmp.Compare(b.seq, a.seq) })
	return files, nil
}

// resolve finds the latest complete checkpoint: the newest file whose
// chain back to a full checkpoint reads and checks. It returns that chain,
// oldest first, and records it as the tip. Skipped files are logged.
func (d *Dir) resolve() ([]*decoded, error) {
	files, err := d.list()
	if err != nil {
		return nil, err
	}
	d.known, d.tip, d.maxSeq = true, tip{}, 0
	if len(files) == 0 {
		return nil, fmt.Errorf("checkpoint: %s: %w", d.path, ErrNoCheckpoint)
	}
	d.maxSeq = files[0].seq
	r := chainReader{d: d, files: make(map[uint64]stored, len(files)), cache: map[uint64]readResult{}}
	for _, f := range files {
		r.files[f.seq] = f
	}
	var skipped []error
	for _, f := range files {
		chain, err := r.chain(f.seq)
		var ce *CorruptError
		if errors.As(err, &ce) {
			skipped = append(skipped, err)
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, err := range skipped {
			d.log.Warn("checkpoint: skipped a torn or corrupt checkpoint", zap.Error(err),
				zap.Uint64("used", chain[len(chain)-1].seq))
		}
		last := chain[len(chain)-1]
		d.tip = tip{seq: last.seq, crc: last.crc, graph: last.graph, fullSeq: chain[0].seq, fullSize: chain[0].size}
		for _, c := range chain[1:] {
			d.tip.deltaSize += c.size
		}
		return chain, nil
	}
	return nil, &noneComplete{path: d.path, errs: skipped}
}

// noneComplete is the error of a directory whose every checkpoint is torn
// or corrupt; it unwraps to their [*CorruptError]s.
type noneComplete struct {
	path string
	errs []error
}

func (e *noneComplete) Error() string {
	return fmt.Sprintf("checkpoint: %s holds no complete checkpoint: %v", e.path, errors.Join(e.errs...))
}

func (e *noneComplete) Unwrap() []error { return e.errs }

func allCorrupt(err error) bool {
	var nc *noneComplete
	return errors.As(err, &nc)
}

type readResult struct {
	dec *decoded
	err error
}

// chainReader reads and checks files once each while resolve tries the
// candidates.
type chainReader struct {
	d     *Dir
	files map[uint64]stored
	cache map[uint64]readResult
}

func (r *chainReader) read(seq uint64) (*decoded, error) {
	if res, ok := r.cache[seq]; ok {
		return res.dec, res.err
	}
	f := r.files[seq]
	path := filepath.Join(r.d.path, f.name)
	var res readResult
	data, err := r.d.fs.ReadFile(path)
	switch {
	case err != nil:
		res.err = fmt.Errorf("checkpoint: read %s: %w", path, err)
	default:
		res.dec, res.err = decode(data)
		if res.err == nil && (res.dec.seq != seq || res.dec.kind != f.kind) {
			res.err = fmt.Errorf("%w: the file holds checkpoint %d of kind %d", errFormat, res.dec.seq, res.dec.kind)
		}
		if res.err != nil {
			res.dec, res.err = nil, &CorruptError{Path: path, Err: res.err}
		}
	}
	r.cache[seq] = res
	return res.dec, res.err
}

// chain returns the files from the full checkpoint to seq, oldest first.
func (r *chainReader) chain(seq uint64) ([]*decoded, error) {
	var chain []*decoded
	for {
		dec, err := r.read(seq)
		if err != nil {
			return nil, err
		}
		chain = append(chain, dec)
		if dec.kind == kindFull {
			slices.Reverse(chain)
			return chain, nil
		}
		path := filepath.Join(r.d.path, r.files[seq].name)
		if _, ok := r.files[dec.prevSeq]; !ok || dec.prevSeq >= seq {
			return nil, &CorruptError{Path: path, Err: fmt.Errorf("it extends checkpoint %d, which is missing", dec.prevSeq)}
		}
		prev, err := r.read(dec.prevSeq)
		if err != nil {
			return nil, err
		}
		if prev.crc != dec.prevCRC || !slices.Equal(prev.graph, dec.graph) {
			return nil, &CorruptError{Path: path, Err: fmt.Errorf("it extends another checkpoint %d than the one stored", dec.prevSeq)}
		}
		seq = dec.prevSeq
	}
}

// merge applies a chain's deltas to its full checkpoint.
func merge(chain []*decoded) *Checkpoint {
	full, last := chain[0], chain[len(chain)-1]
	cp := &Checkpoint{Seq: last.seq, Graph: slices.Clone(last.graph), Stages: make(map[string]Stage, len(full.stages))}
	for name, st := range full.stages {
		cp.Stages[name] = Stage{Position: st.Position, State: st.Set}
	}
	for _, delta := range chain[1:] {
		apply(cp.Stages, delta.stages)
	}
	return cp
}

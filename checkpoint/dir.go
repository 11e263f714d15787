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
// and names the exact checkpoint (sequence and checksum) it extends, so
// the cost of a checkpoint follows the keys that changed, not the keys
// that exist.
//
// Once the deltas since the last full checkpoint add up to its size (see
// [WithCompaction]), Save starts a compaction in the background: one
// goroutine, owned by the Dir and waited for by [Dir.Close], reads the chain,
// writes the whole state as a full checkpoint equal to the latest delta
// (while saves go on), and removes the files older than the previous full
// checkpoint. The previous chain is kept, so a corrupt full checkpoint
// still leaves a complete one to fall back to. A failed compaction is
// logged and tried again after a later save; it never fails a save.
//
// A Dir is safe for concurrent use, but a directory must have one writer:
// two Dirs (or processes) saving into the same directory corrupt each
// other's history.
type Dir struct {
	path       string
	fs         fsys
	log        *zap.Logger
	compaction float64
	wg         sync.WaitGroup // a running compaction

	mu         sync.Mutex
	closed     bool
	compacting bool
	known      bool   // tip and maxSeq reflect the directory
	tip        tip    // the latest complete checkpoint; seq 0 when none
	maxSeq     uint64 // the highest sequence of any checkpoint file
}

// tip describes the latest complete checkpoint and its chain.
type tip struct {
	seq       uint64
	id        uint32 // the checksum a delta on it links to (see identity)
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
// have left. It reads no checkpoint: [Dir.Load] does. Close the Dir when
// done with it.
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

// Close waits for a running compaction to end and makes later calls of
// Save and Load fail with [ErrClosed]. It returns nil; so do later calls.
func (d *Dir) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.wg.Wait()
	return nil
}

// Load returns the latest complete checkpoint in the directory, as
// [Store.Load] describes: a torn or corrupt file is skipped (logged at
// Warn, with its [*CorruptError]) and the previous complete checkpoint
// returned. An error reading the directory or a file is returned as is:
// only a file that reads but fails its checks counts as corrupt.
func (d *Dir) Load(ctx context.Context) (*Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.usable(ctx); err != nil {
		return nil, err
	}
	chain, err := d.resolve()
	if err != nil {
		return nil, err
	}
	return merge(chain), nil
}

func (d *Dir) usable(ctx context.Context) error {
	if d.closed {
		return fmt.Errorf("checkpoint: %s: %w", d.path, ErrClosed)
	}
	return ctx.Err()
}

// Save writes u as the new latest checkpoint, as [Store.Save] describes:
// a delta when u has a Base, a full checkpoint when it has none. A failed
// write (a full disk, a failed sync or rename) removes what it wrote and
// leaves the previous checkpoint the latest. ctx is checked before writing
// and again before the rename that commits. A delta that makes the deltas
// as large as the full checkpoint starts a compaction (see [Dir]).
func (d *Dir) Save(ctx context.Context, u *Update) (uint64, error) {
	if err := u.check(); err != nil {
		return 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.usable(ctx); err != nil {
		return 0, err
	}
	if !d.known {
		if _, err := d.resolve(); err != nil && !errors.Is(err, ErrNoCheckpoint) && !allCorrupt(err) {
			return 0, err
		}
	}
	prev := d.tip
	h := header{kind: kindFull, seq: d.maxSeq + 1}
	graph, stages := u.Graph, withoutDeletes(u.Stages)
	if u.Base != 0 {
		if u.Base != prev.seq {
			return 0, fmt.Errorf("%w: update on checkpoint %d, the latest is %d", ErrStaleBase, u.Base, prev.seq)
		}
		if err := matchGraph(prev.graph, u.Graph); err != nil {
			return 0, err
		}
		h = header{kind: kindDelta, seq: d.maxSeq + 1, prevSeq: prev.seq, prevCRC: prev.id}
		graph, stages = prev.graph, u.Stages // the same set of stages; the history keeps its first order
	}
	tmp, crc, size, err := d.writeTemp(ctx, h, graph, stages)
	if err == nil {
		err = d.commit(ctx, tmp, h)
	}
	if err != nil {
		return 0, err
	}
	d.maxSeq = h.seq
	d.tip = tip{seq: h.seq, id: crc, graph: slices.Clone(graph), fullSeq: h.seq, fullSize: size}
	if h.kind == kindFull {
		if prev.seq != 0 {
			d.removeBefore(prev.fullSeq)
		}
		return h.seq, nil
	}
	d.tip.fullSeq, d.tip.fullSize, d.tip.deltaSize = prev.fullSeq, prev.fullSize, prev.deltaSize+size
	if !d.compacting && float64(d.tip.deltaSize) >= d.compaction*float64(d.tip.fullSize) {
		d.compacting = true
		d.wg.Add(1)
		go d.compact(d.tip)
	}
	return h.seq, nil
}

// compact writes the checkpoint at t as a full checkpoint, X.full next to
// the delta X.delta it equals, and makes it the start of the chain. It
// runs in its own goroutine, outside the lock but for the commit.
func (d *Dir) compact(t tip) {
	defer d.wg.Done()
	err := d.compactTo(t)
	d.mu.Lock()
	d.compacting = false
	d.mu.Unlock()
	if err != nil {
		d.log.Warn("checkpoint: compaction failed; a later save tries again", zap.Uint64("checkpoint", t.seq), zap.Error(err))
	}
}

func (d *Dir) compactTo(t tip) error {
	files, err := d.list()
	if err != nil {
		return err
	}
	r := newChainReader(d, files)
	chain, err := r.chainFile(fileID{seq: t.seq, kind: kindDelta})
	if err != nil {
		return err
	}
	if identity(chain[len(chain)-1]) != t.id {
		return fmt.Errorf("checkpoint %d on disk is not the one saved", t.seq)
	}
	cp := merge(chain)
	stages := make(map[string]StageUpdate, len(cp.Stages))
	for name, st := range cp.Stages {
		stages[name] = StageUpdate{Position: st.Position, Set: st.State}
	}
	h := header{kind: kindFull, seq: t.seq, prevSeq: t.seq, prevCRC: t.id}
	tmp, _, size, err := d.writeTemp(context.Background(), h, cp.Graph, stages)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.commit(context.Background(), tmp, h); err != nil {
		return err
	}
	if d.known && d.tip.fullSeq == t.fullSeq && d.tip.seq >= t.seq {
		d.tip.fullSeq, d.tip.fullSize, d.tip.deltaSize = t.seq, size, d.tip.deltaSize-t.deltaSize
		d.removeBefore(t.fullSeq)
	}
	return nil
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

// writeTemp writes one checkpoint file to a synced temporary file and
// returns its path, CRC and size. On failure it removes what it wrote.
func (d *Dir) writeTemp(ctx context.Context, h header, graph []string, stages map[string]StageUpdate) (string, uint32, int64, error) {
	name := fileName(h.seq, h.kind)
	f, err := d.fs.CreateTemp(d.path, tmpPrefix+name+"-*")
	if err != nil {
		return "", 0, 0, fmt.Errorf("checkpoint: write %s: %w", name, err)
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
	if err != nil {
		d.remove(f.Name())
		return "", 0, 0, fmt.Errorf("checkpoint: write %s: %w", name, err)
	}
	return f.Name(), crc, headerSize + int64(w.n) + trailSize, nil
}

// commit renames the temporary file tmp to its final name and syncs the
// directory. On failure it removes tmp; when the directory sync fails, it
// also removes the renamed file (the rename might or might not survive a
// crash) and forgets what it knew of the directory, to scan it again.
// d.mu must be held.
func (d *Dir) commit(ctx context.Context, tmp string, h header) error {
	name := fileName(h.seq, h.kind)
	err := ctx.Err()
	if err == nil {
		err = d.fs.Rename(tmp, filepath.Join(d.path, name))
	}
	if err != nil {
		d.remove(tmp)
		return fmt.Errorf("checkpoint: write %s: %w", name, err)
	}
	if err := d.fs.SyncDir(d.path); err != nil {
		d.known = false
		d.remove(filepath.Join(d.path, name))
		_ = d.fs.SyncDir(d.path) // best effort: the save failed either way
		return fmt.Errorf("checkpoint: write %s: sync directory: %w", name, err)
	}
	return nil
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
			d.remove(filepath.Join(d.path, fileName(f.seq, f.kind)))
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

// fileID names a checkpoint file: a delta and the full checkpoint a
// compaction made of it share a sequence.
type fileID struct {
	seq  uint64
	kind fileKind
}

// list returns the directory's checkpoint files, newest first, a full
// checkpoint before a delta of the same sequence. Names that are not
// checkpoint files are ignored.
func (d *Dir) list() ([]fileID, error) {
	entries, err := d.fs.ReadDir(d.path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: read %s: %w", d.path, err)
	}
	var files []fileID
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
		files = append(files, fileID{seq: seq, kind: kind})
	}
	slices.SortFunc(files, func(a, b fileID) int {
		return cmp.Or(cmp.Compare(b.seq, a.seq), cmp.Compare(a.kind, b.kind))
	})
	return files, nil
}

// resolve finds the latest complete checkpoint: the newest file whose
// chain back to a full checkpoint reads and checks. It returns that chain,
// oldest first, and records it as the tip. Every torn or corrupt file met
// on the way is logged.
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
	r := newChainReader(d, files)
	for _, f := range files {
		chain, err := r.chainFile(f)
		var ce *CorruptError
		if errors.As(err, &ce) {
			continue
		}
		if err != nil {
			return nil, err
		}
		last := chain[len(chain)-1]
		for _, err := range r.corrupt {
			d.log.Warn("checkpoint: skipped a torn or corrupt checkpoint file", zap.Error(err), zap.Uint64("used", last.seq))
		}
		d.tip = tip{seq: last.seq, id: identity(last), graph: last.graph, fullSeq: chain[0].seq, fullSize: chain[0].size}
		for _, c := range chain[1:] {
			d.tip.deltaSize += c.size
		}
		return chain, nil
	}
	return nil, &noneComplete{path: d.path, errs: r.corrupt}
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

// identity is the checksum a delta on dec links to: its own, or, for a
// full checkpoint a compaction made, the checksum of the delta it equals
// (in its header), so that the deltas written on that delta extend it.
func identity(dec *decoded) uint32 {
	if dec.kind == kindFull && dec.prevSeq == dec.seq {
		return dec.prevCRC
	}
	return dec.crc
}

type readResult struct {
	dec *decoded
	err error
}

// chainReader reads and checks each file once while resolve tries the
// candidates, and keeps the errors of the corrupt ones.
type chainReader struct {
	d       *Dir
	files   map[fileID]bool
	cache   map[fileID]readResult
	chains  map[fileID]chainResult
	corrupt []error
}

type chainResult struct {
	chain []*decoded
	err   error
}

func newChainReader(d *Dir, files []fileID) *chainReader {
	r := &chainReader{d: d, files: make(map[fileID]bool, len(files)), cache: map[fileID]readResult{}, chains: map[fileID]chainResult{}}
	for _, f := range files {
		r.files[f] = true
	}
	return r
}

func (r *chainReader) path(id fileID) string {
	return filepath.Join(r.d.path, fileName(id.seq, id.kind))
}

func (r *chainReader) read(id fileID) (*decoded, error) {
	if res, ok := r.cache[id]; ok {
		return res.dec, res.err
	}
	var res readResult
	data, err := r.d.fs.ReadFile(r.path(id))
	switch {
	case err != nil:
		res.err = fmt.Errorf("checkpoint: read %s: %w", r.path(id), err)
	default:
		res.dec, res.err = decode(data)
		if res.err == nil && (res.dec.seq != id.seq || res.dec.kind != id.kind) {
			res.err = fmt.Errorf("%w: the file holds checkpoint %d of kind %d", errFormat, res.dec.seq, res.dec.kind)
		}
		if res.err == nil && res.dec.kind == kindDelta && res.dec.prevSeq >= res.dec.seq {
			res.err = fmt.Errorf("%w: a delta on a later checkpoint %d", errFormat, res.dec.prevSeq)
		}
		if res.err != nil {
			res.dec, res.err = nil, &CorruptError{Path: r.path(id), Err: res.err}
			r.corrupt = append(r.corrupt, res.err)
		}
	}
	r.cache[id] = res
	return res.dec, res.err
}

// chainFile returns the files from a full checkpoint to the file id,
// oldest first. Where the checkpoint a delta extends has two files (a
// full one a compaction made, and the delta it equals), the full one is
// tried first. Results are kept: the chain returned is shared, so callers
// must not append to it in place.
func (r *chainReader) chainFile(id fileID) ([]*decoded, error) {
	if res, ok := r.chains[id]; ok {
		return res.chain, res.err
	}
	chain, err := r.resolveFile(id)
	r.chains[id] = chainResult{chain: chain, err: err}
	return chain, err
}

func (r *chainReader) resolveFile(id fileID) ([]*decoded, error) {
	dec, err := r.read(id)
	if err != nil {
		return nil, err
	}
	if dec.kind == kindFull {
		return []*decoded{dec}, nil
	}
	for _, kind := range []fileKind{kindFull, kindDelta} {
		pid := fileID{seq: dec.prevSeq, kind: kind}
		if !r.files[pid] {
			continue
		}
		prev, err := r.read(pid)
		if err != nil {
			if !errors.As(err, new(*CorruptError)) {
				return nil, err
			}
			continue
		}
		if identity(prev) != dec.prevCRC || !slices.Equal(prev.graph, dec.graph) {
			continue
		}
		chain, err := r.chainFile(pid)
		if err != nil {
			if !errors.As(err, new(*CorruptError)) {
				return nil, err
			}
			continue
		}
		return append(slices.Clip(chain), dec), nil
	}
	err = &CorruptError{Path: r.path(id), Err: fmt.Errorf("the checkpoint %d it extends is missing or broken", dec.prevSeq)}
	r.corrupt = append(r.corrupt, err)
	return nil, err
}

// merge applies a chain's deltas to its full checkpoint.
func merge(chain []*decoded) *Snapshot {
	full, last := chain[0], chain[len(chain)-1]
	cp := &Snapshot{Seq: last.seq, Graph: slices.Clone(last.graph), Stages: make(map[string]Stage, len(full.stages))}
	for name, st := range full.stages {
		cp.Stages[name] = Stage{Position: st.Position, State: st.Set}
	}
	for _, delta := range chain[1:] {
		apply(cp.Stages, delta.stages)
	}
	return cp
}

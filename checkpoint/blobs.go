package checkpoint

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// Blobs is the storage a [BlobStore] keeps its checkpoints in: named
// blobs, each written whole. [Dir] keeps them as files; a server's object
// store (JetStream, S3) keeps them as objects.
//
// The BlobStore calls the methods under its lock, one at a time, but for
// a compaction in the background, which may call Put, Get and List while
// a Save or a Load runs. They may block on I/O, and should return early
// with ctx's error when ctx is done. Names are short ASCII strings of
// letters, digits and dots.
type Blobs interface {
	// Put stores data under name, replacing a blob of that name. It is
	// atomic: after it returns nil, Get returns data, also after a
	// crash; after an error, the blob is absent or holds bytes that fail
	// the store's checksum (the BlobStore deletes it again).
	Put(ctx context.Context, name string, data []byte) error
	// Get returns the blob called name. It returns an error wrapping
	// [fs.ErrNotExist] when there is none, and may return a
	// [*CorruptError] for a blob it finds torn itself (an object store's
	// digest): the BlobStore skips both, as it skips a blob whose
	// checksum fails. Any other error fails the Load.
	Get(ctx context.Context, name string) ([]byte, error)
	// List returns the names of every blob, in any order; names the
	// BlobStore did not make are ignored.
	List(ctx context.Context) ([]string, error)
	// Delete removes the blob called name; an absent blob is no error
	// (or one wrapping [fs.ErrNotExist]).
	Delete(ctx context.Context, name string) error
}

// Head is an optional interface of a [Blobs]: a commit point, one small
// value moved by compare-and-set, as a key-value store on a server keeps
// it. A [BlobStore] whose Blobs implement Head commits a Save by moving
// the head, after its blob is stored, and loads only what the head
// reaches.
type Head interface {
	// ReadHead returns the head's value and its revision, or nil and
	// revision 0 when there is no head.
	ReadHead(ctx context.Context) (value []byte, rev uint64, err error)
	// WriteHead sets the head to value if its revision is still rev (for
	// rev 0: if there is no head), and returns the new revision. When the
	// head is not at rev (another writer moved it), it returns an error
	// wrapping [ErrStaleBase] and leaves the head alone.
	WriteHead(ctx context.Context, value []byte, rev uint64) (uint64, error)
}

// BlobStore is the [Store], written once for any storage of named blobs
// (a [Blobs]): [Dir] is a BlobStore on files, and a store on a server
// (natsstage.Store on JetStream) is one on that server's objects. Use it
// for a storage of your own; [NewBlobStore] makes one.
//
// Each checkpoint is one blob, named "<sequence>.<full|delta>.<CRC>"
// (the sequence in 20 digits, the CRC-32C in 8 hex digits) and carrying
// that CRC over its bytes, which detects a torn or corrupt one. A full
// checkpoint holds every stage's state; a delta holds only what an
// [Update] changed and names the exact checkpoint (sequence and CRC) it
// extends, so the cost of a checkpoint follows the keys that changed, not
// the keys that exist.
//
// Without a [Head], a Save commits when its Put returns, and the latest
// complete checkpoint is the newest blob whose chain of deltas back to a
// full checkpoint reads and checks; such a store must have one writer:
// two writers corrupt each other's history. With a Head, a Save stores
// its blob, then moves the head to it with a compare-and-set; that is the
// commit. Blobs above the head (of a Save that failed or died between the
// two) are never loaded, and a Save that finds the head moved by another
// writer re-reads the checkpoints, so an update on the checkpoint it had
// fails with [ErrStaleBase]; so does a Save whose compare-and-set loses
// the race. A stale writer is fenced: it cannot overwrite the checkpoints
// of the writer that took its place (their blobs of the same sequence
// differ in CRC, so in name). A head that is itself torn or corrupt is
// logged, and every blob is considered.
//
// Load skips a torn, corrupt or missing blob on the way, logs it at Warn
// with its [*CorruptError] (see [WithLogger]), and returns the previous
// complete checkpoint.
//
// Once the deltas since the last full checkpoint add up to its size (see
// [WithCompaction]), Save starts a compaction in the background: one
// goroutine, owned by the BlobStore and waited for by [BlobStore.Close],
// reads the chain, writes the whole state as a full checkpoint equal to
// the latest delta (while saves go on), and deletes every blob older than
// the previous full checkpoint, also those of failed saves. The previous
// chain is kept, so a corrupt full checkpoint still leaves a complete one
// to fall back to. A failed compaction is logged and tried again after a
// later save; it never fails a save.
//
// An error of the Blobs fails Save or Load with that error, wrapped; a
// failed Save deletes the blob it stored, if it can, and leaves the
// previous checkpoint the latest. A BlobStore is safe for concurrent use.
type BlobStore struct {
	blobs      Blobs
	head       Head // nil: the newest complete blob is the latest
	where      string
	log        *zap.Logger
	compaction float64
	wg         sync.WaitGroup // a running compaction

	mu         sync.Mutex
	closed     bool
	compacting bool
	known      bool   // rev, tip and maxSeq reflect the blobs
	rev        uint64 // the head's revision; 0 when there is no head
	tip        tip    // the latest complete checkpoint; seq 0 when none
	maxSeq     uint64 // the sequence the next Save follows
}

// tip describes the latest complete checkpoint and its chain.
type tip struct {
	seq       uint64
	id        uint32 // the CRC a delta on it links to (see identity)
	name      string // its blob
	graph     []string
	fullSeq   uint64 // the full checkpoint the chain starts with
	fullSize  int64
	deltaSize int64 // the chain's deltas, in bytes
}

var _ Store = (*BlobStore)(nil)

// NewBlobStore returns a [BlobStore] keeping its checkpoints in b, which
// may also implement [Head] (see BlobStore). When b implements
// [fmt.Stringer], its String names the store in errors and in the Path of
// a [*CorruptError] ("<String>/<blob name>"). It reads nothing:
// [BlobStore.Load] does. With a nil b, Save and Load fail. Close the
// store when done with it.
func NewBlobStore(b Blobs, opts ...Option) *BlobStore {
	return newBlobStore(b, newOptions(opts))
}

func newBlobStore(b Blobs, o options) *BlobStore {
	s := &BlobStore{blobs: b, log: o.logger, compaction: o.compaction}
	s.head, _ = b.(Head)
	if str, ok := b.(fmt.Stringer); ok {
		s.where = str.String()
	}
	return s
}

// Close waits for a running compaction to end and makes later calls of
// Save and Load fail with [ErrClosed]. It closes nothing of the Blobs. It
// returns nil; so do later calls.
func (s *BlobStore) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *BlobStore) usable(ctx context.Context) error {
	if s.blobs == nil {
		return errors.New("checkpoint: NewBlobStore was given nil Blobs")
	}
	if s.closed {
		return s.errorf("", ErrClosed)
	}
	return ctx.Err()
}

// errorf wraps err, prefixed with the store's name and what failed.
func (s *BlobStore) errorf(what string, err error) error {
	prefix := "checkpoint: "
	if s.where != "" {
		prefix += s.where + ": "
	}
	if what != "" {
		prefix += what + ": "
	}
	return fmt.Errorf("%s%w", prefix, err)
}

// path names a blob in a [*CorruptError].
func (s *BlobStore) path(name string) string {
	if s.where == "" {
		return name
	}
	return s.where + "/" + name
}

// Load returns the latest complete checkpoint, as [Store.Load] describes
// and [BlobStore] details.
func (s *BlobStore) Load(ctx context.Context) (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	value, rev, err := s.readHead(ctx)
	if err != nil {
		return nil, err
	}
	chain, err := s.resolve(ctx, value, rev)
	if err != nil {
		return nil, err
	}
	return merge(chain), nil
}

// Save stores u as the new latest checkpoint, as [Store.Save] describes
// and [BlobStore] details: a delta when u has a Base, a full checkpoint
// when it has none. ctx is checked before the blob is stored and again
// before the head is moved.
func (s *BlobStore) Save(ctx context.Context, u *Update) (uint64, error) {
	if err := u.check(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	value, rev, err := s.readHead(ctx)
	if err != nil {
		return 0, err
	}
	if !s.known || rev != s.rev {
		if _, err := s.resolve(ctx, value, rev); err != nil && !errors.Is(err, ErrNoCheckpoint) && !allCorrupt(err) {
			return 0, err
		}
	}
	prev := s.tip
	h := header{kind: kindFull, seq: s.maxSeq + 1}
	graph, stages := u.Graph, withoutDeletes(u.Stages)
	if u.Base != 0 {
		if u.Base != prev.seq {
			return 0, s.errorf("", fmt.Errorf("%w: update on checkpoint %d, the latest is %d", ErrStaleBase, u.Base, prev.seq))
		}
		if err := matchGraph(prev.graph, u.Graph); err != nil {
			return 0, err
		}
		h = header{kind: kindDelta, seq: s.maxSeq + 1, prevSeq: prev.seq, prevCRC: prev.id}
		graph, stages = prev.graph, u.Stages // the same set of stages; the history keeps its first order
	}
	data, crc := encode(h, graph, stages)
	name := blobName(h.seq, h.kind, crc)
	if err := s.commit(ctx, name, data, head{seq: h.seq, id: crc}); err != nil {
		return 0, err
	}
	s.maxSeq = h.seq
	s.tip = tip{seq: h.seq, id: crc, name: name, graph: slices.Clone(graph), fullSeq: h.seq, fullSize: int64(len(data))}
	if h.kind == kindFull {
		if prev.seq != 0 {
			s.removeBefore(prev.fullSeq)
		}
		return h.seq, nil
	}
	s.tip.fullSeq, s.tip.fullSize, s.tip.deltaSize = prev.fullSeq, prev.fullSize, prev.deltaSize+int64(len(data))
	if !s.compacting && float64(s.tip.deltaSize) >= s.compaction*float64(s.tip.fullSize) {
		s.compacting = true
		s.wg.Add(1)
		go s.compact(s.tip)
	}
	return h.seq, nil
}

// readHead reads the head, when there is one.
func (s *BlobStore) readHead(ctx context.Context) ([]byte, uint64, error) {
	if s.head == nil {
		return nil, 0, nil
	}
	value, rev, err := s.head.ReadHead(ctx)
	if err != nil {
		return nil, 0, s.errorf("read the head", err)
	}
	return value, rev, nil
}

// commit stores the blob of checkpoint h and, with a head, moves the head
// to it from the revision s.rev. On failure it deletes the blob (but for
// a lost compare-and-set: the blob of that name may be the winner's) and
// forgets what it knew, to read the blobs again. s.mu must be held.
func (s *BlobStore) commit(ctx context.Context, name string, data []byte, h head) error {
	what := "store checkpoint " + strconv.FormatUint(h.seq, 10)
	err := s.blobs.Put(ctx, name, data)
	if err == nil && s.head != nil {
		if err = ctx.Err(); err == nil {
			var rev uint64
			if rev, err = s.head.WriteHead(ctx, encodeHead(h), s.rev); err == nil {
				s.rev = rev
			} else if errors.Is(err, ErrStaleBase) {
				s.known = false
				return s.errorf(what, fmt.Errorf("another writer saved meanwhile: %w", err))
			}
		}
	}
	if err != nil {
		s.known = false
		s.remove(name)
		return s.errorf(what, err)
	}
	return nil
}

// remove deletes a blob, logging a failure (the blob is garbage; the
// checkpoint that made it so stands).
func (s *BlobStore) remove(name string) {
	if err := s.blobs.Delete(context.Background(), name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("checkpoint: cannot remove a stale checkpoint", zap.String("blob", s.path(name)), zap.Error(err))
	}
}

// removeBefore deletes the blobs older than seq: the chains before the
// one kept, and the blobs of saves that failed before it. s.mu must be
// held.
func (s *BlobStore) removeBefore(seq uint64) {
	ids, err := s.list(context.Background())
	if err != nil {
		s.log.Warn("checkpoint: cannot list old checkpoints to remove", zap.Error(err))
		return
	}
	for _, id := range ids {
		if id.seq < seq {
			s.remove(id.name)
		}
	}
}

// compact writes the checkpoint at t as a full checkpoint next to the
// delta it equals, and makes it the start of the chain. It runs in its
// own goroutine, outside the lock but for the removals.
func (s *BlobStore) compact(t tip) {
	defer s.wg.Done()
	err := s.compactTo(t)
	s.mu.Lock()
	s.compacting = false
	s.mu.Unlock()
	if err != nil {
		s.log.Warn("checkpoint: compaction failed; a later save tries again", zap.Uint64("checkpoint", t.seq), zap.Error(err))
	}
}

func (s *BlobStore) compactTo(t tip) error {
	ctx := context.Background()
	ids, err := s.list(ctx)
	if err != nil {
		return err
	}
	id, ok := parseName(t.name)
	if !ok {
		return fmt.Errorf("checkpoint %d has no blob name", t.seq)
	}
	chain, err := newChainReader(s, ctx, ids).chain(id)
	if err != nil {
		return err
	}
	if identity(chain[len(chain)-1]) != t.id {
		return fmt.Errorf("checkpoint %d in the store is not the one saved", t.seq)
	}
	cp := merge(chain)
	stages := make(map[string]StageUpdate, len(cp.Stages))
	for name, st := range cp.Stages {
		stages[name] = StageUpdate{Position: st.Position, Set: st.State}
	}
	data, crc := encode(header{kind: kindFull, seq: t.seq, prevSeq: t.seq, prevCRC: t.id}, cp.Graph, stages)
	if err := s.blobs.Put(ctx, blobName(t.seq, kindFull, crc), data); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.known || s.tip.seq < t.seq {
		return nil // re-read since, or a new history begun: nothing of t to update
	}
	switch s.tip.fullSeq {
	case t.fullSeq:
		s.tip.fullSeq, s.tip.fullSize, s.tip.deltaSize = t.seq, int64(len(data)), s.tip.deltaSize-t.deltaSize
		fallthrough
	case t.seq: // a Load found the full checkpoint already
		s.removeBefore(t.fullSeq)
	}
	return nil
}

// blobID names a checkpoint blob: a delta and the full checkpoint a
// compaction made of it share a sequence.
type blobID struct {
	seq    uint64
	kind   fileKind
	crc    uint32
	hasCRC bool // false for the name of a Dir file of before names had it
	name   string
}

func blobName(seq uint64, kind fileKind, crc uint32) string {
	k := "full"
	if kind == kindDelta {
		k = "delta"
	}
	return fmt.Sprintf("%020d.%s.%08x", seq, k, crc)
}

// parseName parses a blob name that blobName made, or one without the CRC
// (a [Dir] file of an earlier version).
func parseName(name string) (blobID, bool) {
	parts := strings.Split(name, ".")
	if len(parts) != 2 && (len(parts) != 3 || len(parts[2]) != 8) || len(parts[0]) != 20 {
		return blobID{}, false
	}
	id := blobID{name: name}
	seq, err := strconv.ParseUint(parts[0], 10, 64)
	if err != nil || seq == 0 {
		return blobID{}, false
	}
	id.seq = seq
	if len(parts) == 3 {
		crc, err := strconv.ParseUint(parts[2], 16, 32)
		if err != nil {
			return blobID{}, false
		}
		id.crc, id.hasCRC = uint32(crc), true
	}
	switch parts[1] {
	case "full":
		id.kind = kindFull
	case "delta":
		id.kind = kindDelta
	default:
		return blobID{}, false
	}
	return id, true
}

// list returns the store's checkpoint blobs, newest first, a full
// checkpoint before a delta of the same sequence.
func (s *BlobStore) list(ctx context.Context) ([]blobID, error) {
	names, err := s.blobs.List(ctx)
	if err != nil {
		return nil, s.errorf("list", err)
	}
	var ids []blobID
	for _, name := range names {
		if id, ok := parseName(name); ok {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b blobID) int {
		return cmp.Or(cmp.Compare(b.seq, a.seq), cmp.Compare(a.kind, b.kind), strings.Compare(a.name, b.name))
	})
	return ids, nil
}

// resolve finds the latest complete checkpoint that the head (value at
// rev; none at rev 0) reaches, or without a Head the newest: the newest
// blob whose chain back to a full checkpoint reads and checks. It returns
// that chain, oldest first, and records it as the tip. Every torn or
// corrupt blob met on the way is logged.
func (s *BlobStore) resolve(ctx context.Context, value []byte, rev uint64) ([]*decoded, error) {
	s.known, s.rev, s.tip, s.maxSeq = false, 0, tip{}, 0
	if s.head != nil && rev == 0 {
		// No head: nothing was ever committed (blobs, if any, are of
		// saves that failed).
		s.known = true
		return nil, s.errorf("", ErrNoCheckpoint)
	}
	ids, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	var want head
	var headErr error
	bound, headOK := uint64(math.MaxUint64), false
	if s.head != nil {
		if want, headErr = decodeHead(value); headErr == nil {
			bound, headOK, s.maxSeq = want.seq, true, want.seq
		} else {
			s.log.Warn("checkpoint: the head is torn or corrupt; every checkpoint is considered", zap.Error(headErr))
		}
	}
	if !headOK && len(ids) > 0 {
		s.maxSeq = ids[0].seq
	}
	s.rev = rev
	if len(ids) == 0 && s.head == nil {
		s.known = true
		return nil, s.errorf("", ErrNoCheckpoint)
	}
	r := newChainReader(s, ctx, ids)
	for _, id := range ids {
		if id.seq > bound {
			continue // not committed
		}
		chain, err := r.chain(id)
		if errors.As(err, new(*CorruptError)) {
			continue
		}
		if err != nil {
			return nil, err
		}
		last := chain[len(chain)-1]
		if headOK && last.seq == want.seq && identity(last) != want.id {
			continue // another writer's blob of the same sequence, never committed
		}
		for _, err := range r.corrupt {
			s.log.Warn("checkpoint: skipped a torn or corrupt checkpoint", zap.Error(err), zap.Uint64("used", last.seq))
		}
		s.known = true
		s.tip = tip{seq: last.seq, id: identity(last), name: last.name, graph: last.graph, fullSeq: chain[0].seq, fullSize: chain[0].size}
		for _, c := range chain[1:] {
			s.tip.deltaSize += c.size
		}
		return chain, nil
	}
	s.known = true
	if headErr != nil {
		r.corrupt = append(r.corrupt, &CorruptError{Path: s.path("head"), Err: headErr})
	}
	if headOK && !slices.ContainsFunc(ids, func(id blobID) bool { return id.seq == want.seq }) {
		r.corrupt = append(r.corrupt, &CorruptError{
			Path: s.path(blobName(want.seq, kindDelta, want.id)),
			Err:  fmt.Errorf("checkpoint %d, the latest committed, is missing", want.seq),
		})
	}
	return nil, s.errorf("", &noneComplete{errs: r.corrupt})
}

// noneComplete is the error of a store whose every checkpoint is torn or
// corrupt; it unwraps to their [*CorruptError]s.
type noneComplete struct {
	errs []error
}

func (e *noneComplete) Error() string {
	return fmt.Sprintf("no complete checkpoint: %v", errors.Join(e.errs...))
}

func (e *noneComplete) Unwrap() []error { return e.errs }

func allCorrupt(err error) bool {
	var nc *noneComplete
	return errors.As(err, &nc)
}

// identity is the CRC a delta on dec links to: its own, or, for a full
// checkpoint a compaction made, the CRC of the delta it equals (in its
// header), so that the deltas written on that delta extend it.
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

type chainResult struct {
	chain []*decoded
	err   error
}

// chainReader reads and checks each blob once while resolve tries the
// candidates, and keeps the errors of the corrupt ones.
type chainReader struct {
	s       *BlobStore
	ctx     context.Context
	bySeq   map[uint64][]blobID // in list order: a full checkpoint first
	reads   map[string]readResult
	chains  map[string]chainResult
	corrupt []error
}

func newChainReader(s *BlobStore, ctx context.Context, ids []blobID) *chainReader {
	r := &chainReader{s: s, ctx: ctx, bySeq: map[uint64][]blobID{}, reads: map[string]readResult{}, chains: map[string]chainResult{}}
	for _, id := range ids {
		r.bySeq[id.seq] = append(r.bySeq[id.seq], id)
	}
	return r
}

func (r *chainReader) read(id blobID) (*decoded, error) {
	if res, ok := r.reads[id.name]; ok {
		return res.dec, res.err
	}
	var res readResult
	data, err := r.s.blobs.Get(r.ctx, id.name)
	var ce *CorruptError
	switch {
	case errors.As(err, &ce):
		res.err = ce
	case errors.Is(err, fs.ErrNotExist):
		res.err = &CorruptError{Path: r.s.path(id.name), Err: err} // removed since it was listed
	case err != nil:
		res.err = r.s.errorf("read "+id.name, err)
		r.reads[id.name] = res
		return nil, res.err
	default:
		res.dec, res.err = decode(data)
		if res.err == nil && (res.dec.seq != id.seq || res.dec.kind != id.kind || id.hasCRC && res.dec.crc != id.crc) {
			res.err = fmt.Errorf("%w: the blob holds checkpoint %d of kind %d", errFormat, res.dec.seq, res.dec.kind)
		}
		if res.err == nil && res.dec.kind == kindDelta && res.dec.prevSeq >= res.dec.seq {
			res.err = fmt.Errorf("%w: a delta on a later checkpoint %d", errFormat, res.dec.prevSeq)
		}
		if res.err != nil {
			res.dec, res.err = nil, &CorruptError{Path: r.s.path(id.name), Err: res.err}
		} else {
			res.dec.name = id.name
		}
	}
	if res.err != nil {
		r.corrupt = append(r.corrupt, res.err)
	}
	r.reads[id.name] = res
	return res.dec, res.err
}

// chain returns the blobs from a full checkpoint to id, oldest first.
// Where the checkpoint a delta extends has several blobs (a full one a
// compaction made, and the delta it equals), the full one is tried first.
// Results are kept: the chain returned is shared, so callers must not
// append to it in place.
func (r *chainReader) chain(id blobID) ([]*decoded, error) {
	if res, ok := r.chains[id.name]; ok {
		return res.chain, res.err
	}
	chain, err := r.resolveChain(id)
	r.chains[id.name] = chainResult{chain: chain, err: err}
	return chain, err
}

func (r *chainReader) resolveChain(id blobID) ([]*decoded, error) {
	dec, err := r.read(id)
	if err != nil {
		return nil, err
	}
	if dec.kind == kindFull {
		return []*decoded{dec}, nil
	}
	for _, pid := range r.bySeq[dec.prevSeq] {
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
		chain, err := r.chain(pid)
		if err != nil {
			if !errors.As(err, new(*CorruptError)) {
				return nil, err
			}
			continue
		}
		return append(slices.Clip(chain), dec), nil
	}
	err = &CorruptError{Path: r.s.path(id.name), Err: fmt.Errorf("the checkpoint %d it extends is missing or broken", dec.prevSeq)}
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

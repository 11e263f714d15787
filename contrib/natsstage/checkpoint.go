package natsstage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/stagefsm/stagefsm/checkpoint"
)

// ErrInvalidName is returned by [NewStore] for a checkpoint name that is
// empty or holds a character other than ASCII letters, digits, '-' and '_'.
var ErrInvalidName = errors.New("natsstage: invalid checkpoint name")

var _ checkpoint.Store = (*Store)(nil)

// Store is a [checkpoint.Store] in JetStream, so that a worker's
// checkpoints outlive its machine: another worker, anywhere, resumes from
// them. It keeps the same contract as [checkpoint.Dir] — full and delta
// checkpoints chained by Base, [checkpoint.ErrStaleBase],
// [*checkpoint.GraphError], [checkpoint.ErrNoCheckpoint], corruption
// detected by checksum and skipped — in two buckets of the same name:
//
//   - an object store holds the checkpoints, one object each, named
//     "<name>/<sequence>.<full|delta>.<checksum>". The object store
//     splits an object into chunks, so a checkpoint is not bounded by the
//     server's maximum message size (1MB by default): a full checkpoint of
//     a million keys is one object of tens of megabytes. Each object
//     carries a CRC-32C of its own, besides the store's digest.
//   - a key-value bucket holds, under the key name, the head: the
//     sequence and checksum of the latest complete checkpoint. A Save
//     first stores its object, then moves the head with a compare-and-set
//     on the head's revision; that update is the commit. An object the
//     head does not reach (a Save that failed or died between the two) is
//     never loaded, and a Save that finds the head moved by another writer
//     fails with [checkpoint.ErrStaleBase], so a stale worker cannot
//     overwrite the checkpoints of the worker that took its place.
//
// Several pipelines (one per partition, or per worker) share a bucket by
// using distinct names. Load lists the bucket's objects, takes those of its
// name up to the head, newest first, and returns the first whose chain of
// deltas back to a full checkpoint reads and checks; a torn, corrupt or
// missing object on the way is skipped and logged at Warn (see
// [WithStoreLogger]). A head that is itself corrupt is logged, and every
// object of the name is considered.
//
// Once the deltas since the last full checkpoint add up to its size (see
// [WithCompaction]), Save starts a compaction in the background: one
// goroutine, owned by the Store and waited for by [Store.Close], merges the
// chain into a full checkpoint of the latest delta (while saves go on) and
// removes the objects older than the previous full checkpoint, which is
// kept to fall back to.
//
// The caller owns the JetStream context and its connection. An error of
// JetStream (a closed connection, a deleted bucket) fails Save or Load
// with that error, wrapped; a failed Save leaves the previous checkpoint
// the latest. A Store is safe for concurrent use.
type Store struct {
	kv         jetstream.KeyValue
	obs        jetstream.ObjectStore
	bucket     string
	name       string
	log        *zap.Logger
	compaction float64
	wg         sync.WaitGroup // a running compaction

	mu         sync.Mutex
	closed     bool
	compacting bool
	known      bool      // rev, tip and maxSeq reflect the buckets
	rev        uint64    // the head's revision; 0 when there is no head
	tip        storeTip  // the latest complete checkpoint; seq 0 when none
	maxSeq     uint64    // the highest sequence committed (the head's)
	objects    []storeID // the objects listed by the last resolve, for removals
}

// storeTip describes the latest complete checkpoint and its chain.
type storeTip struct {
	seq       uint64
	id        uint32
	graph     []string
	fullSeq   uint64
	fullSize  int64
	deltaSize int64
}

// storeID names one checkpoint object.
type storeID struct {
	seq  uint64
	kind objKind
	crc  uint32
	name string
}

var validName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// NewStore returns a [Store] that keeps the checkpoints called name in the
// key-value bucket and the object store called bucket, creating either
// bucket (with the server's defaults: one replica, file storage) when it
// does not exist. Create the buckets beforehand to choose their
// replicas. It returns an error wrapping [ErrInvalidName] for a bad name,
// and JetStream's error when a bucket can be neither found nor created.
// Close the Store when done with it.
func NewStore(ctx context.Context, js jetstream.JetStream, bucket, name string, opts ...StoreOption) (*Store, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	if js == nil {
		return nil, errors.New("natsstage: NewStore was given a nil JetStream")
	}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Description: "stagefsm checkpoint heads"})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("natsstage: checkpoint bucket %s: %w", bucket, err)
	}
	obs, err := js.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		obs, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: bucket, Description: "stagefsm checkpoints"})
		if errors.Is(err, jetstream.ErrBucketExists) {
			obs, err = js.ObjectStore(ctx, bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("natsstage: checkpoint object store %s: %w", bucket, err)
	}
	o := newStoreOptions(opts)
	s := &Store{
		kv: kv, obs: obs, bucket: bucket, name: name, compaction: o.compaction,
		log: o.logger.With(zap.String("bucket", bucket), zap.String("checkpoints", name)),
	}
	return s, nil
}

// Close waits for a running compaction to end, and makes later
// calls of Save and Load fail with an error wrapping
// [checkpoint.ErrClosed]. It closes no connection. It returns nil; so do
// later calls.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Store) usable(ctx context.Context) error {
	if s.closed {
		return fmt.Errorf("natsstage: checkpoints %s/%s: %w", s.bucket, s.name, checkpoint.ErrClosed)
	}
	return ctx.Err()
}

// Load returns the latest complete checkpoint, as [checkpoint.Store.Load]
// describes: a torn, corrupt or missing object is skipped (logged at Warn,
// with its [*checkpoint.CorruptError]) and the previous complete
// checkpoint returned. An error of JetStream is returned, wrapped.
func (s *Store) Load(ctx context.Context) (*checkpoint.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	chain, err := s.resolve(ctx)
	if err != nil {
		return nil, err
	}
	return mergeChain(chain), nil
}

// Save stores u as the new latest checkpoint, as [checkpoint.Store.Save]
// describes: a delta object when u has a Base, a full one when it has
// none, then the head moved to it. When the head moved since this Store
// last saw it (another writer saved under the same name), the Store reads
// the checkpoints again, and an update on the checkpoint it had fails with
// [checkpoint.ErrStaleBase]; so does a Save whose head update loses the
// race to another writer. A failed Save removes the object it stored, if
// it can, and leaves the previous checkpoint the latest.
func (s *Store) Save(ctx context.Context, u *checkpoint.Update) (uint64, error) {
	if err := checkUpdate(u); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	ent, err := s.kv.Get(ctx, s.name)
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, s.errorf("read the head", err)
	}
	var rev uint64
	if ent != nil {
		rev = ent.Revision()
	}
	if !s.known || rev != s.rev {
		if _, err := s.resolveHead(ctx, ent); err != nil && !errors.Is(err, checkpoint.ErrNoCheckpoint) && !allCorrupt(err) {
			return 0, err
		}
	}
	prev := s.tip
	h := objHeader{kind: kindFull, seq: s.maxSeq + 1}
	graph, stages := u.Graph, withoutDeletes(u.Stages)
	if u.Base != 0 {
		if u.Base != prev.seq {
			return 0, fmt.Errorf("%w: update on checkpoint %d, the latest of %s/%s is %d",
				checkpoint.ErrStaleBase, u.Base, s.bucket, s.name, prev.seq)
		}
		if err := (&checkpoint.Snapshot{Graph: prev.graph}).Match(u.Graph); err != nil {
			return 0, err
		}
		h = objHeader{kind: kindDelta, seq: s.maxSeq + 1, prevSeq: prev.seq, prevCRC: prev.id}
		graph, stages = prev.graph, u.Stages
	}
	data, crc := encodeObject(h, graph, stages)
	obj := s.objectName(h.seq, h.kind, crc)
	if _, err := s.obs.PutBytes(ctx, obj, data); err != nil {
		return 0, s.errorf("store checkpoint "+strconv.FormatUint(h.seq, 10), err)
	}
	value := encodeHead(head{seq: h.seq, id: crc})
	var newRev uint64
	if ent == nil {
		newRev, err = s.kv.Create(ctx, s.name, value)
	} else {
		newRev, err = s.kv.Update(ctx, s.name, value, rev)
	}
	if err != nil {
		s.known = false
		s.remove(obj)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("%w: another writer saved checkpoints %s/%s meanwhile",
				checkpoint.ErrStaleBase, s.bucket, s.name)
		}
		return 0, s.errorf("commit checkpoint "+strconv.FormatUint(h.seq, 10), err)
	}
	s.rev, s.maxSeq = newRev, h.seq
	s.tip = storeTip{seq: h.seq, id: crc, graph: slices.Clone(graph), fullSeq: h.seq, fullSize: int64(len(data))}
	s.objects = append(s.objects, storeID{seq: h.seq, kind: h.kind, crc: crc, name: obj})
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

func (s *Store) errorf(what string, err error) error {
	return fmt.Errorf("natsstage: checkpoints %s/%s: %s: %w", s.bucket, s.name, what, err)
}

func (s *Store) objectName(seq uint64, kind objKind, crc uint32) string {
	k := "full"
	if kind == kindDelta {
		k = "delta"
	}
	return fmt.Sprintf("%s/%020d.%s.%08x", s.name, seq, k, crc)
}

// parseName parses an object name of this Store's checkpoints.
func (s *Store) parseName(obj string) (storeID, bool) {
	rest, ok := strings.CutPrefix(obj, s.name+"/")
	if !ok {
		return storeID{}, false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 || len(parts[0]) != 20 || len(parts[2]) != 8 {
		return storeID{}, false
	}
	seq, err1 := strconv.ParseUint(parts[0], 10, 64)
	crc, err2 := strconv.ParseUint(parts[2], 16, 32)
	if err1 != nil || err2 != nil || seq == 0 {
		return storeID{}, false
	}
	id := storeID{seq: seq, crc: uint32(crc), name: obj}
	switch parts[1] {
	case "full":
		id.kind = kindFull
	case "delta":
		id.kind = kindDelta
	default:
		return storeID{}, false
	}
	return id, true
}

// list returns this Store's checkpoint objects, newest first, a full
// checkpoint before a delta of the same sequence.
func (s *Store) list(ctx context.Context) ([]storeID, error) {
	infos, err := s.obs.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, s.errorf("list", err)
	}
	var ids []storeID
	for _, info := range infos {
		if id, ok := s.parseName(info.Name); ok {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b storeID) int {
		return cmp.Or(cmp.Compare(b.seq, a.seq), cmp.Compare(a.kind, b.kind), strings.Compare(a.name, b.name))
	})
	return ids, nil
}

// resolve reads the head and finds the latest complete checkpoint.
func (s *Store) resolve(ctx context.Context) ([]*decodedObj, error) {
	ent, err := s.kv.Get(ctx, s.name)
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, s.errorf("read the head", err)
	}
	return s.resolveHead(ctx, ent)
}

// resolveHead finds the latest complete checkpoint that the head ent
// (nil when there is none) reaches: the newest object whose chain back to
// a full checkpoint reads and checks. It returns that chain, oldest first,
// and records it as the tip. Every torn or corrupt object met on the way
// is logged.
func (s *Store) resolveHead(ctx context.Context, ent jetstream.KeyValueEntry) ([]*decodedObj, error) {
	s.known, s.rev, s.tip, s.maxSeq, s.objects = false, 0, storeTip{}, 0, nil
	if ent == nil {
		// No head: nothing was ever committed (objects, if any, are of
		// saves that failed).
		s.known = true
		return nil, fmt.Errorf("natsstage: checkpoints %s/%s: %w", s.bucket, s.name, checkpoint.ErrNoCheckpoint)
	}
	ids, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	bound, headOK := uint64(math.MaxUint64), true
	h, herr := decodeHead(ent.Value())
	if herr == nil {
		bound = h.seq
	} else {
		headOK = false
		s.log.Warn("natsstage: the checkpoint head is torn or corrupt; every checkpoint object is considered",
			zap.Error(herr))
		if len(ids) > 0 {
			h.seq = ids[0].seq
		}
	}
	r := &storeReader{s: s, ctx: ctx, ids: ids, reads: map[string]readResult{}, chains: map[string]chainResult{}}
	s.objects = ids
	s.rev, s.maxSeq = ent.Revision(), h.seq
	for _, id := range ids {
		if id.seq > bound {
			continue // not committed
		}
		chain, err := r.chain(id)
		if errors.As(err, new(*checkpoint.CorruptError)) {
			continue
		}
		if err != nil {
			return nil, err
		}
		last := chain[len(chain)-1]
		if headOK && last.seq == h.seq && last.identity() != h.id {
			continue // another writer's object of the same sequence, never committed
		}
		for _, err := range r.corrupt {
			s.log.Warn("natsstage: skipped a torn or corrupt checkpoint", zap.Error(err), zap.Uint64("used", last.seq))
		}
		s.known = true
		s.tip = storeTip{seq: last.seq, id: last.identity(), graph: last.graph, fullSeq: chain[0].seq, fullSize: chain[0].size}
		for _, c := range chain[1:] {
			s.tip.deltaSize += c.size
		}
		return chain, nil
	}
	s.known = true
	if headOK && !slices.ContainsFunc(ids, func(id storeID) bool { return id.seq == h.seq }) {
		r.corrupt = append(r.corrupt, &checkpoint.CorruptError{
			Path: s.objectName(h.seq, kindFull, h.id),
			Err:  fmt.Errorf("checkpoint %d, the latest committed, is missing", h.seq),
		})
	}
	return nil, &noneComplete{what: s.bucket + "/" + s.name, errs: r.corrupt}
}

// noneComplete is the error of a Store whose every checkpoint is torn or
// corrupt; it unwraps to their [*checkpoint.CorruptError]s.
type noneComplete struct {
	what string
	errs []error
}

func (e *noneComplete) Error() string {
	return fmt.Sprintf("natsstage: checkpoints %s: no complete checkpoint: %v", e.what, errors.Join(e.errs...))
}

func (e *noneComplete) Unwrap() []error { return e.errs }

func allCorrupt(err error) bool {
	var nc *noneComplete
	return errors.As(err, &nc)
}

type readResult struct {
	dec *decodedObj
	err error
}

type chainResult struct {
	chain []*decodedObj
	err   error
}

// storeReader reads and checks each object once while resolve tries the
// candidates, and keeps the errors of the corrupt ones.
type storeReader struct {
	s       *Store
	ctx     context.Context
	ids     []storeID
	reads   map[string]readResult
	chains  map[string]chainResult
	corrupt []error
}

func (r *storeReader) read(id storeID) (*decodedObj, error) {
	if res, ok := r.reads[id.name]; ok {
		return res.dec, res.err
	}
	var res readResult
	data, err := r.s.obs.GetBytes(r.ctx, id.name)
	switch {
	case errors.Is(err, jetstream.ErrDigestMismatch), errors.Is(err, jetstream.ErrObjectNotFound):
		res.err = err // corrupt, or removed since it was listed
	case err != nil:
		res.err = r.s.errorf("read "+id.name, err)
		r.reads[id.name] = res
		return nil, res.err
	default:
		res.dec, res.err = decodeObject(data)
		if res.err == nil && (res.dec.seq != id.seq || res.dec.kind != id.kind || res.dec.crc != id.crc) {
			res.err = fmt.Errorf("%w: the object holds checkpoint %d of kind %d", errFormat, res.dec.seq, res.dec.kind)
		}
		if res.err == nil && res.dec.kind == kindDelta && res.dec.prevSeq >= res.dec.seq {
			res.err = fmt.Errorf("%w: a delta on a later checkpoint %d", errFormat, res.dec.prevSeq)
		}
	}
	if res.err != nil {
		res.dec, res.err = nil, &checkpoint.CorruptError{Path: r.s.bucket + ":" + id.name, Err: res.err}
		r.corrupt = append(r.corrupt, res.err)
	}
	r.reads[id.name] = res
	return res.dec, res.err
}

// chain returns the objects from a full checkpoint to id, oldest first.
// Where the checkpoint a delta extends has several objects (a full one a
// compaction made and the delta it equals), the full one is tried first.
// The chain returned is shared: callers must not append to it in place.
func (r *storeReader) chain(id storeID) ([]*decodedObj, error) {
	if res, ok := r.chains[id.name]; ok {
		return res.chain, res.err
	}
	chain, err := r.resolveChain(id)
	r.chains[id.name] = chainResult{chain: chain, err: err}
	return chain, err
}

func (r *storeReader) resolveChain(id storeID) ([]*decodedObj, error) {
	dec, err := r.read(id)
	if err != nil {
		return nil, err
	}
	if dec.kind == kindFull {
		return []*decodedObj{dec}, nil
	}
	for _, pid := range r.ids { // a full object comes before a delta of the same sequence
		if pid.seq != dec.prevSeq {
			continue
		}
		prev, err := r.read(pid)
		if err != nil {
			if !errors.As(err, new(*checkpoint.CorruptError)) {
				return nil, err
			}
			continue
		}
		if prev.identity() != dec.prevCRC || !slices.Equal(prev.graph, dec.graph) {
			continue
		}
		chain, err := r.chain(pid)
		if err != nil {
			if !errors.As(err, new(*checkpoint.CorruptError)) {
				return nil, err
			}
			continue
		}
		return append(slices.Clip(chain), dec), nil
	}
	err = &checkpoint.CorruptError{Path: r.s.bucket + ":" + id.name,
		Err: fmt.Errorf("the checkpoint %d it extends is missing or broken", dec.prevSeq)}
	r.corrupt = append(r.corrupt, err)
	return nil, err
}

// compact writes the checkpoint at t as a full object next to the delta
// it equals, and removes the objects older than the chain's full
// checkpoint. It runs in its own goroutine, outside the lock but for the
// removals.
func (s *Store) compact(t storeTip) {
	defer s.wg.Done()
	err := s.compactTo(t)
	s.mu.Lock()
	s.compacting = false
	s.mu.Unlock()
	if err != nil {
		s.log.Warn("natsstage: checkpoint compaction failed; a later save tries again",
			zap.Uint64("checkpoint", t.seq), zap.Error(err))
	}
}

func (s *Store) compactTo(t storeTip) error {
	ids, err := s.list(context.Background())
	if err != nil {
		return err
	}
	r := &storeReader{s: s, ctx: context.Background(), ids: ids, reads: map[string]readResult{}, chains: map[string]chainResult{}}
	chain, err := r.chain(storeID{seq: t.seq, kind: kindDelta, crc: t.id, name: s.objectName(t.seq, kindDelta, t.id)})
	if err != nil {
		return err
	}
	cp := mergeChain(chain)
	stages := make(map[string]checkpoint.StageUpdate, len(cp.Stages))
	for name, st := range cp.Stages {
		stages[name] = checkpoint.StageUpdate{Position: st.Position, Set: st.State}
	}
	data, crc := encodeObject(objHeader{kind: kindFull, seq: t.seq, prevSeq: t.seq, prevCRC: t.id}, cp.Graph, stages)
	obj := s.objectName(t.seq, kindFull, crc)
	if _, err := s.obs.PutBytes(context.Background(), obj, data); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known && s.tip.fullSeq == t.fullSeq && s.tip.seq >= t.seq {
		s.tip.fullSeq, s.tip.fullSize, s.tip.deltaSize = t.seq, int64(len(data)), s.tip.deltaSize-t.deltaSize
		s.objects = append(s.objects, storeID{seq: t.seq, kind: kindFull, crc: crc, name: obj})
		s.removeBefore(t.fullSeq)
	}
	return nil
}

// removeBefore removes this Store's objects older than seq, among those
// it knows of. s.mu must be held.
func (s *Store) removeBefore(seq uint64) {
	kept := s.objects[:0]
	for _, id := range s.objects {
		if id.seq < seq {
			s.remove(id.name)
			continue
		}
		kept = append(kept, id)
	}
	s.objects = kept
}

// remove removes an object, logging a failure: the object is garbage, the
// checkpoint that made it so stands.
func (s *Store) remove(obj string) {
	err := s.obs.Delete(context.Background(), obj)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		s.log.Warn("natsstage: cannot remove a stale checkpoint", zap.String("object", obj), zap.Error(err))
	}
}

// mergeChain applies a chain's deltas to its full checkpoint.
func mergeChain(chain []*decodedObj) *checkpoint.Snapshot {
	full, last := chain[0], chain[len(chain)-1]
	cp := &checkpoint.Snapshot{Seq: last.seq, Graph: slices.Clone(last.graph), Stages: make(map[string]checkpoint.Stage, len(full.stages))}
	for name, st := range full.stages {
		cp.Stages[name] = checkpoint.Stage{Position: st.Position, State: st.Set}
	}
	for _, delta := range chain[1:] {
		for name, su := range delta.stages {
			st := cp.Stages[name]
			if su.Position != nil {
				st.Position = su.Position
			}
			if len(su.Set) > 0 && st.State == nil {
				st.State = make(map[string][]byte, len(su.Set))
			}
			maps.Copy(st.State, su.Set)
			for _, k := range su.Delete {
				delete(st.State, k)
			}
			cp.Stages[name] = st
		}
	}
	return cp
}

// checkUpdate validates u's shape (not its base), as checkpoint.Dir does.
func checkUpdate(u *checkpoint.Update) error {
	if u == nil {
		return fmt.Errorf("%w: nil update", checkpoint.ErrInvalid)
	}
	if len(u.Graph) == 0 {
		return fmt.Errorf("%w: the update names no stages", checkpoint.ErrInvalid)
	}
	seen := make(map[string]bool, len(u.Graph))
	for _, name := range u.Graph {
		if name == "" {
			return fmt.Errorf("%w: an empty stage name", checkpoint.ErrInvalid)
		}
		if seen[name] {
			return fmt.Errorf("%w: stage %q named twice", checkpoint.ErrInvalid, name)
		}
		seen[name] = true
	}
	for name := range u.Stages {
		if !seen[name] {
			return fmt.Errorf("%w: stage %q is not in the update's graph", checkpoint.ErrInvalid, name)
		}
	}
	return nil
}

// withoutDeletes returns stages with each stage's deleted keys taken out
// of its Set, for a full checkpoint. It copies only what it changes.
func withoutDeletes(stages map[string]checkpoint.StageUpdate) map[string]checkpoint.StageUpdate {
	var out map[string]checkpoint.StageUpdate
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
		out[name] = checkpoint.StageUpdate{Position: st.Position, Set: set}
	}
	if out == nil {
		return stages
	}
	return out
}

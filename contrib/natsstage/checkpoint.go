package natsstage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strings"

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
// them. It is a [checkpoint.BlobStore] with a head — full and delta
// checkpoints, the commit by compare-and-set, stale writers fenced,
// corruption skipped, compaction: the BlobStore's doc gives the contract
// — on two buckets of the same name:
//
//   - an object store holds the checkpoints, one object each, named
//     "<name>/<sequence>.<full|delta>.<checksum>". The object store
//     splits an object into chunks, so a checkpoint is not bounded by the
//     server's maximum message size (1MB by default): a full checkpoint of
//     a million keys is one object of tens of megabytes. An object whose
//     digest fails is skipped as corrupt.
//   - a key-value bucket holds, under the key name, the head: the
//     sequence and checksum of the latest complete checkpoint, moved by
//     an update on its revision.
//
// Several pipelines (one per partition, or per worker) share a bucket by
// using distinct names: a Store reads and removes only the objects of its
// name.
//
// The caller owns the JetStream context and its connection. An error of
// JetStream (a closed connection, a deleted bucket) fails Save or Load
// with that error, wrapped. A Store is safe for concurrent use.
type Store struct {
	s *checkpoint.BlobStore
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
	log := o.logger.With(zap.String("bucket", bucket), zap.String("checkpoints", name))
	b := &blobs{kv: kv, obs: obs, bucket: bucket, name: name}
	return &Store{s: checkpoint.NewBlobStore(b, append(o.checkpoint, checkpoint.WithLogger(log))...)}, nil
}

// Close waits for a running compaction to end, and makes later calls of
// Save and Load fail with an error wrapping [checkpoint.ErrClosed]. It
// closes no connection. It returns nil; so do later calls.
func (s *Store) Close() error { return s.s.Close() }

// Load returns the latest complete checkpoint that the head reaches, as
// [checkpoint.BlobStore.Load] does: a torn, corrupt or missing object is
// skipped (logged at Warn, with its [*checkpoint.CorruptError], whose
// Path is "<bucket>/<object>") and the previous complete checkpoint
// returned.
func (s *Store) Load(ctx context.Context) (*checkpoint.Snapshot, error) { return s.s.Load(ctx) }

// Save stores u as an object, then moves the head to it, as
// [checkpoint.BlobStore.Save] does: a Save that finds the head moved by
// another worker saving under the same name, or loses the race to move
// it, fails with [checkpoint.ErrStaleBase].
func (s *Store) Save(ctx context.Context, u *checkpoint.Update) (uint64, error) {
	return s.s.Save(ctx, u)
}

// blobs are the objects "<name>/…" of an object store, with the head
// under the key name of a key-value bucket.
type blobs struct {
	kv     jetstream.KeyValue
	obs    jetstream.ObjectStore
	bucket string
	name   string
}

func (b *blobs) String() string { return b.bucket + "/" + b.name }

func (b *blobs) Put(ctx context.Context, name string, data []byte) error {
	_, err := b.obs.PutBytes(ctx, b.name+"/"+name, data)
	return err
}

func (b *blobs) Get(ctx context.Context, name string) ([]byte, error) {
	data, err := b.obs.GetBytes(ctx, b.name+"/"+name)
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
		return nil, fmt.Errorf("%w: %w", fs.ErrNotExist, err)
	case errors.Is(err, jetstream.ErrDigestMismatch):
		return nil, &checkpoint.CorruptError{Path: b.String() + "/" + name, Err: err}
	}
	return data, err
}

func (b *blobs) List(ctx context.Context) ([]string, error) {
	infos, err := b.obs.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, err
	}
	var names []string
	for _, info := range infos {
		if name, ok := strings.CutPrefix(info.Name, b.name+"/"); ok && !info.Deleted {
			names = append(names, name)
		}
	}
	return names, nil
}

func (b *blobs) Delete(ctx context.Context, name string) error {
	err := b.obs.Delete(ctx, b.name+"/"+name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	return err
}

func (b *blobs) ReadHead(ctx context.Context) ([]byte, uint64, error) {
	ent, err := b.kv.Get(ctx, b.name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return ent.Value(), ent.Revision(), nil
}

func (b *blobs) WriteHead(ctx context.Context, value []byte, rev uint64) (uint64, error) {
	var err error
	if rev == 0 {
		rev, err = b.kv.Create(ctx, b.name, value)
	} else {
		rev, err = b.kv.Update(ctx, b.name, value, rev)
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%w: %w", checkpoint.ErrStaleBase, err)
	}
	return rev, err
}

package checkpoint

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
)

// Dir is the embedded [Store]: a [BlobStore] on a directory of files,
// needing no server. The BlobStore's doc gives the contract; what is the
// Dir's own is how it writes.
//
// Each checkpoint is one file, written atomically: to a temporary file,
// synced, renamed to its final name, and the directory synced. A Dir has
// no [Head]: the newest complete file is the latest checkpoint. So a
// directory must have one writer: two Dirs (or processes) saving into the
// same directory corrupt each other's history.
type Dir struct {
	s *BlobStore
}

var _ Store = (*Dir)(nil)

const tmpPrefix = ".tmp-"

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
	path = filepath.Clean(path)
	b := &dirBlobs{path: path, fs: fs}
	entries, err := fs.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: open %s: %w", path, err)
	}
	o.logger = o.logger.With(zap.String("dir", path))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := b.Delete(context.Background(), e.Name()); err != nil {
				o.logger.Warn("checkpoint: cannot remove a stale file", zap.String("file", e.Name()), zap.Error(err))
			}
		}
	}
	return &Dir{s: newBlobStore(b, o)}, nil
}

// Close waits for a running compaction to end and makes later calls of
// Save and Load fail with [ErrClosed]. It returns nil; so do later calls.
func (d *Dir) Close() error { return d.s.Close() }

// Load returns the latest complete checkpoint in the directory, as
// [BlobStore.Load] does: a torn or corrupt file is skipped (logged at
// Warn, with its [*CorruptError], whose Path is the file's) and the
// previous complete checkpoint returned. An error reading the directory
// or a file is returned, wrapped: only a file that reads but fails its
// checks counts as corrupt.
func (d *Dir) Load(ctx context.Context) (*Snapshot, error) { return d.s.Load(ctx) }

// Save writes u as the new latest checkpoint, as [BlobStore.Save] does. A
// failed write (a full disk, a failed sync or rename) removes what it
// wrote and leaves the previous checkpoint the latest. ctx is checked
// before writing and again before the rename that commits.
func (d *Dir) Save(ctx context.Context, u *Update) (uint64, error) { return d.s.Save(ctx, u) }

// dirBlobs are the files of a directory, each written to a temporary file
// and renamed.
type dirBlobs struct {
	path string
	fs   fsys
}

func (b *dirBlobs) String() string { return b.path }

func (b *dirBlobs) Put(ctx context.Context, name string, data []byte) error {
	f, err := b.fs.CreateTemp(b.path, tmpPrefix+name+"-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
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
		err = b.fs.Rename(f.Name(), filepath.Join(b.path, name))
	}
	if err != nil {
		_ = b.fs.Remove(f.Name()) // best effort: OpenDir removes what is left
		return err
	}
	if err := b.fs.SyncDir(b.path); err != nil {
		// The rename might or might not survive a crash: undo it.
		_ = b.fs.Remove(filepath.Join(b.path, name))
		_ = b.fs.SyncDir(b.path) // best effort: the save failed either way
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

func (b *dirBlobs) Get(_ context.Context, name string) ([]byte, error) {
	return b.fs.ReadFile(filepath.Join(b.path, name))
}

func (b *dirBlobs) List(context.Context) ([]string, error) {
	entries, err := b.fs.ReadDir(b.path)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func (b *dirBlobs) Delete(_ context.Context, name string) error {
	return b.fs.Remove(filepath.Join(b.path, name))
}

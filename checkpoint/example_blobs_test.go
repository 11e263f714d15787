package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"sync"

	"github.com/stagefsm/stagefsm/checkpoint"
)

// mapBlobs is a checkpoint.Blobs in memory.
type mapBlobs struct {
	mu    sync.Mutex
	blobs map[string][]byte
}

func newMapBlobs() *mapBlobs { return &mapBlobs{blobs: map[string][]byte{}} }

func (m *mapBlobs) Put(_ context.Context, name string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.blobs[name] = slices.Clone(data)
	return nil
}

func (m *mapBlobs) Get(_ context.Context, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	data, ok := m.blobs[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
	}
	return data, nil
}

func (m *mapBlobs) List(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.blobs)), nil
}

func (m *mapBlobs) Delete(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.blobs, name)
	return nil
}

// mapHead is a mapBlobs with a head: a checkpoint.Head in memory.
type mapHead struct {
	*mapBlobs
	value []byte
	rev   uint64
}

func (m *mapHead) ReadHead(context.Context) ([]byte, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.value, m.rev, nil
}

func (m *mapHead) WriteHead(_ context.Context, value []byte, rev uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rev != m.rev {
		return 0, fmt.Errorf("%w: the head is at revision %d, not %d", checkpoint.ErrStaleBase, m.rev, rev)
	}
	m.value, m.rev = slices.Clone(value), m.rev+1
	return m.rev, nil
}

// A BlobStore on blobs in memory: a full checkpoint and a delta, each a
// blob named by its sequence, kind and CRC; a new store on the same blobs
// loads the latest.
func ExampleNewBlobStore() {
	ctx := context.Background()
	blobs := newMapBlobs()
	graph := []string{"orders", "count"}
	store := checkpoint.NewBlobStore(blobs, checkpoint.WithCompaction(10)) // the delta stays a delta
	seq, _ := store.Save(ctx, &checkpoint.Update{Graph: graph, Stages: map[string]checkpoint.StageUpdate{
		"orders": {Position: []byte("120")},
		"count":  {Set: map[string][]byte{"alice": []byte("2")}},
	}})
	_, _ = store.Save(ctx, &checkpoint.Update{Base: seq, Graph: graph, Stages: map[string]checkpoint.StageUpdate{
		"orders": {Position: []byte("180")},
		"count":  {Set: map[string][]byte{"bob": []byte("1")}},
	}})
	_ = store.Close()
	names, _ := blobs.List(ctx)
	fmt.Println(len(names), "blobs, the first", names[0][:25])

	store = checkpoint.NewBlobStore(blobs)
	defer store.Close()
	cp, _ := store.Load(ctx)
	fmt.Printf("checkpoint %d, orders at %s, count %q\n", cp.Seq, cp.Stages["orders"].Position, cp.Stages["count"].State)
	// Output:
	// 2 blobs, the first 00000000000000000001.full
	// checkpoint 2, orders at 180, count map["alice":"2" "bob":"1"]
}

// Blobs with a Head commit each Save by moving the head: a writer that
// another one replaced is fenced — its next Save fails with ErrStaleBase.
func ExampleHead() {
	ctx := context.Background()
	blobs := &mapHead{mapBlobs: newMapBlobs()}
	graph := []string{"orders"}
	at := func(pos string) map[string]checkpoint.StageUpdate {
		return map[string]checkpoint.StageUpdate{"orders": {Position: []byte(pos)}}
	}
	old := checkpoint.NewBlobStore(blobs)
	defer old.Close()
	seq, _ := old.Save(ctx, &checkpoint.Update{Graph: graph, Stages: at("1")})

	taker := checkpoint.NewBlobStore(blobs) // another worker takes over
	defer taker.Close()
	cp, _ := taker.Load(ctx)
	_, _ = taker.Save(ctx, &checkpoint.Update{Base: cp.Seq, Graph: graph, Stages: at("2")})

	_, err := old.Save(ctx, &checkpoint.Update{Base: seq, Graph: graph, Stages: at("99")})
	fmt.Println("the old writer is stale:", errors.Is(err, checkpoint.ErrStaleBase))
	cp, _ = old.Load(ctx)
	fmt.Printf("checkpoint %d, orders at %s\n", cp.Seq, cp.Stages["orders"].Position)
	// Output:
	// the old writer is stale: true
	// checkpoint 2, orders at 2
}

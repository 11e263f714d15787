// Package checkpoint stores checkpoints — the sources' positions and the
// stateful stages' state, as one consistent cut — so that a pipeline
// killed by a crash resumes where its last complete checkpoint left it.
//
// A minimal use: save a full checkpoint, then only what changed, and load
// the latest complete one at the next start.
//
//	dir, err := checkpoint.OpenDir("state")
//	// handle err
//	defer dir.Close()
//	graph := []string{"orders", "count", "sink"}
//	seq, err := dir.Save(ctx, &checkpoint.Update{Graph: graph, Stages: map[string]checkpoint.StageUpdate{
//		"orders": {Position: offset},
//		"count":  {Set: map[string][]byte{"alice": blob}},
//	}})
//	// later: only the changes, on the checkpoint they change
//	seq, err = dir.Save(ctx, &checkpoint.Update{Base: seq, Graph: graph, Stages: changes})
//	// at the next start
//	cp, err := dir.Load(ctx)
//	if err == nil {
//		err = cp.Match(graph) // refuses a checkpoint of another graph
//	}
//
// # Stores
//
// A [Store] saves an [Update] — the changes since the latest checkpoint,
// or everything — atomically, and loads the latest complete [Snapshot].
// [BlobStore] implements the contract once, on any [Blobs] (named blobs
// written whole, with an optional [Head] to commit by compare-and-set);
// [Dir] is the embedded default: a BlobStore on a directory of files,
// each written to a temporary file, synced, renamed and its directory
// synced. Each checkpoint carries a CRC-32C. A save writes only what
// changed (a delta), so a checkpoint costs what changed, not what exists;
// when the deltas have grown as large as the last full checkpoint, a
// compaction in the background writes the whole state again, while saves
// go on.
//
// # Bad input
//
// A torn or corrupt checkpoint (a crash in the middle of a write, a
// flipped byte) fails its checksum: [Dir.Load] skips it, logs it and
// returns the previous complete checkpoint. A failed write (a full disk,
// a failed sync) fails [Dir.Save] and leaves the previous checkpoint the
// latest. A checkpoint of another graph — stages renamed, removed or
// added — is refused by [Snapshot.Match] and by [Store.Save] with a
// [*GraphError].
//
// # State
//
// Each stage's state is kept per key as bytes; a [Codec] turns a state
// into bytes and back: [Gob] by default, or [JSON]. [DecodeState] decodes
// a stage's state and, when a blob no longer decodes after a code change,
// fails with a [*DecodeError] naming the stage and the key.
package checkpoint

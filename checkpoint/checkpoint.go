package checkpoint

import (
	"context"
	"fmt"
	"maps"
	"slices"
)

// Store keeps checkpoints. [Dir] is the embedded default; a store on a
// server (a JetStream bucket, for example) is a [BlobStore] on that
// server's [Blobs], with the same contract.
//
// The engine calls Save at each checkpoint and Load once, at start; it
// never calls them concurrently, but a Store must still be safe for
// concurrent use. Both may block on I/O; both return early, with ctx's
// error, when ctx is done before they commit. Neither may panic on bad
// input: bad input is an error.
type Store interface {
	// Save applies u to the latest complete checkpoint — or to nothing,
	// when u.Base is 0 — and makes the result the new latest complete
	// checkpoint, atomically: when Save returns nil, Load returns the new
	// checkpoint, also after a crash; when Save fails, or the process dies
	// during Save, Load returns the previous one, untouched. Save returns
	// the new checkpoint's sequence number, the Base of the next update.
	//
	// Save fails with an error wrapping [ErrStaleBase] when u.Base is not
	// the latest checkpoint's sequence, with a [*GraphError] when u.Base
	// is a checkpoint of a different graph, and with an error wrapping
	// [ErrInvalid] for a malformed update.
	Save(ctx context.Context, u *Update) (seq uint64, err error)

	// Load returns the latest complete checkpoint. A newer checkpoint
	// that is torn or corrupt (its checksum fails) is skipped and the
	// previous complete one is returned; the store reports the skipped
	// one (a [BlobStore] logs it). Load returns an error wrapping
	// [ErrNoCheckpoint] when the store holds none, and an error wrapping
	// the [*CorruptError]s when it holds checkpoints but none is complete.
	Load(ctx context.Context) (*Snapshot, error)
}

// Snapshot is a complete checkpoint, as [Store.Load] returns it: the
// graph it was taken from, and the saved part of each of its stages.
type Snapshot struct {
	// Seq identifies the checkpoint in its store; it grows with every
	// [Store.Save]. It is the Base of an [Update] applied to this
	// checkpoint.
	Seq uint64
	// Graph lists the names of the graph's stages, as the update that
	// began the checkpoint's history gave them.
	Graph []string
	// Stages holds, by stage name, each stage that saved a position or
	// state. A stage of Graph that saved nothing is absent.
	Stages map[string]Stage
}

// Stage is what a checkpoint holds for one stage.
type Stage struct {
	// Position is a source's position (a byte offset, a stream sequence),
	// encoded by the source; nil for a stage that is not a source.
	Position []byte
	// State holds the stage's state, one encoded blob (see [Codec]) per
	// key; a stage with a single state uses one key.
	State map[string][]byte
}

// Update is what [Store.Save] applies to the latest checkpoint: the
// changes since it. An update with Base 0 is a full checkpoint: it
// replaces everything, and its Graph begins a new history.
type Update struct {
	// Base is the Seq of the checkpoint the update applies to, or 0 for
	// a full checkpoint.
	Base uint64
	// Graph lists the names of the graph's stages, each once, none empty.
	// For an update with a Base it must equal the base's graph (as a set).
	Graph []string
	// Stages holds, by stage name, each stage that changed; every name
	// must be in Graph.
	Stages map[string]StageUpdate
}

// StageUpdate is the change of one stage since the base checkpoint.
type StageUpdate struct {
	// Position replaces the stage's position; nil keeps it.
	Position []byte
	// Set adds or replaces state blobs, by key.
	Set map[string][]byte
	// Delete removes keys. A key both set and deleted is deleted; a key
	// that the base does not hold is ignored.
	Delete []string
}

// check validates u's shape (not its base).
func (u *Update) check() error {
	if u == nil {
		return fmt.Errorf("%w: nil update", ErrInvalid)
	}
	if len(u.Graph) == 0 {
		return fmt.Errorf("%w: the update names no stages", ErrInvalid)
	}
	seen := make(map[string]bool, len(u.Graph))
	for _, name := range u.Graph {
		if name == "" {
			return fmt.Errorf("%w: an empty stage name", ErrInvalid)
		}
		if seen[name] {
			return fmt.Errorf("%w: stage %q named twice", ErrInvalid, name)
		}
		seen[name] = true
	}
	for name := range u.Stages {
		if !seen[name] {
			return fmt.Errorf("%w: stage %q is not in the update's graph", ErrInvalid, name)
		}
	}
	return nil
}

// Match checks that c was taken from a graph with exactly the stages
// named in graph (in any order), so that resuming from it is sound. It
// returns nil, or a [*GraphError] listing the stages renamed, removed or
// added.
func (c *Snapshot) Match(graph []string) error {
	return matchGraph(c.Graph, graph)
}

func matchGraph(saved, graph []string) error {
	missing := setMinus(saved, graph)
	added := setMinus(graph, saved)
	if len(missing) == 0 && len(added) == 0 {
		return nil
	}
	return &GraphError{Missing: missing, Added: added}
}

// setMinus returns the names of a that are not in b, sorted.
func setMinus(a, b []string) []string {
	in := make(map[string]bool, len(b))
	for _, s := range b {
		in[s] = true
	}
	var out []string
	for _, s := range a {
		if !in[s] {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// apply applies the stage changes of u to stages, in place.
func apply(stages map[string]Stage, changes map[string]StageUpdate) {
	for name, su := range changes {
		st := stages[name]
		if su.Position != nil {
			st.Position = su.Position
		}
		if len(su.Set) > 0 && st.State == nil {
			st.State = make(map[string][]byte, len(su.Set))
		}
		for k, v := range su.Set {
			st.State[k] = v
		}
		for _, k := range su.Delete {
			delete(st.State, k)
		}
		stages[name] = st
	}
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

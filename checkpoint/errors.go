package checkpoint

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNoCheckpoint is returned (wrapped) by [Store.Load] when the store
// holds no checkpoint at all: a first start.
var ErrNoCheckpoint = errors.New("checkpoint: no checkpoint")

// ErrStaleBase is returned (wrapped) by [Store.Save] for an update whose
// Base is not the latest checkpoint: the changes were computed against
// another checkpoint, so applying them would make a state nobody had. A
// [Head] returns it for a compare-and-set that finds the head moved.
var ErrStaleBase = errors.New("checkpoint: update not based on the latest checkpoint")

// ErrInvalid is returned (wrapped) by [Store.Save] for a malformed
// [Update]: nil, no stages, an empty or repeated stage name, or a changed
// stage that is not in the graph.
var ErrInvalid = errors.New("checkpoint: invalid update")

// GraphError says that a checkpoint belongs to a different graph: stages
// were renamed, removed or added since it was taken. [Snapshot.Match]
// returns it, and [Store.Save] for an update whose graph is not its
// base's.
type GraphError struct {
	// Missing lists, sorted, the checkpoint's stages that the graph lacks
	// (removed, or renamed from).
	Missing []string
	// Added lists, sorted, the graph's stages that the checkpoint lacks
	// (new, or renamed to).
	Added []string
}

// Error names the missing and the added stages.
func (e *GraphError) Error() string {
	var b strings.Builder
	b.WriteString("checkpoint: taken from a different graph")
	if len(e.Missing) > 0 {
		fmt.Fprintf(&b, "; stages not in the graph: %s", strings.Join(e.Missing, ", "))
	}
	if len(e.Added) > 0 {
		fmt.Fprintf(&b, "; stages not in the checkpoint: %s", strings.Join(e.Added, ", "))
	}
	return b.String()
}

// CorruptError says that a stored checkpoint (or a part of it) is torn or
// corrupt: too short, a checksum that does not match, or a link to the
// checkpoint it extends that is missing or broken. Path names the file
// (or the store's blob: "<store>/<blob name>", see [NewBlobStore]); Err
// says what is wrong.
type CorruptError struct {
	Path string
	Err  error
}

// Error returns "checkpoint: <Path> is torn or corrupt: " followed by
// Err's message.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("checkpoint: %s is torn or corrupt: %v", e.Path, e.Err)
}

// Unwrap returns Err.
func (e *CorruptError) Unwrap() error { return e.Err }

// DecodeError says that a saved state no longer decodes — typically the
// state's type changed since the checkpoint was taken. [DecodeState]
// returns it, naming the stage and the key; Err is the [Codec]'s error.
type DecodeError struct {
	Stage string
	Key   string
	Err   error
}

// Error returns "checkpoint: stage <Stage> key <Key>: state does not
// decode: " followed by Err's message; the key is quoted.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("checkpoint: stage %s key %q: state does not decode: %v", e.Stage, e.Key, e.Err)
}

// Unwrap returns Err.
func (e *DecodeError) Unwrap() error { return e.Err }

// ErrClosed is returned (wrapped) by [BlobStore.Save] and
// [BlobStore.Load] (so by a [Dir]'s) after Close.
var ErrClosed = errors.New("checkpoint: store closed")

package stage

import "fmt"

// Item is the envelope in which a payload travels between stages: the
// payload, its status, where it came from and its place in that stage's
// output.
//
// Status is error when Err is not nil. An item fails at most once: the stage
// where it fails sets Err to an [*ItemError] naming that stage, and from then
// on the item passes through the remaining transforms untouched
// (see [github.com/stagefsm/stagefsm.RunIfNotError]) and is dead-lettered by
// the sink stage. Handlers never see an error item.
//
// Stages create items; users meet them in dead letters (see
// [WithDeadLetter]), as Item[any].
type Item[T any] struct {
	// Payload is the user's value. It is the zero value for an error item
	// that a source reported without a payload, and for an error item that
	// failed before a transform that changes the item type: such an item
	// still travels to the sink, and its dead letter carries the original
	// payload.
	Payload T
	// Err is nil for an ok item, and the cause for an error item.
	Err error
	// Origin is the name of the stage that emitted the item: the source, or
	// the transform whose handler produced it.
	Origin string
	// Seq numbers the items Origin emitted, from 1, in emission order.
	Seq uint64
}

// payload returns the item's payload for a dead letter.
func (it Item[T]) payload() any {
	if ie, ok := it.Err.(*ItemError); ok && ie.carried != nil {
		return ie.carried
	}
	return it.Payload
}

// passOn returns the error item it as an item of the next stage's type.
// When the types are the same the item passes untouched; otherwise its
// payload is carried along, boxed, in its *ItemError, for the dead letter.
func passOn[I, O any](it Item[I]) Item[O] {
	if same, ok := any(it).(Item[O]); ok {
		return same
	}
	ie, ok := it.Err.(*ItemError)
	if !ok { // every stage sets an *ItemError; this keeps any other cause too
		ie = &ItemError{Stage: it.Origin, Err: it.Err}
	}
	if ie.carried == nil {
		ie.carried = it.payload()
	}
	return Item[O]{Err: ie, Origin: it.Origin, Seq: it.Seq}
}

// IsError reports whether the item's status is error. It lets
// [github.com/stagefsm/stagefsm.RunIfNotError] apply to items.
func (it Item[T]) IsError() bool { return it.Err != nil }

// String returns "origin#seq" followed by "ok" or the error.
func (it Item[T]) String() string {
	if it.Err != nil {
		return fmt.Sprintf("%s#%d error: %v", it.Origin, it.Seq, it.Err)
	}
	return fmt.Sprintf("%s#%d ok", it.Origin, it.Seq)
}

package natsstage

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/stagefsm/stagefsm/stage"
)

// Transform adapts f to a [stage.Transform] of [*Msg] that keeps the
// acknowledgement of the JetStream message behind each input right,
// whatever f emits:
//   - nothing (a filter): the input is done, and its JetStream message is
//     acknowledged at once;
//   - the input itself, changed or not: as if f were a plain transform;
//   - new messages (a fan-out): each carries the input's JetStream
//     message, which is acknowledged once all of them are published. A
//     new message without an ID gets the input's ID followed by "/" and its
//     rank among the outputs (1, 2, …), so that processing a redelivered
//     input again yields the same IDs, which the output stream drops as
//     duplicates. f should be deterministic for that to hold.
//
// A plain [stage.TransformFunc] is enough for a transform that emits each
// input exactly once; one that filters or fans out without Transform
// leaves the JetStream message unacknowledged, to be redelivered after the
// consumer's AckWait, again and again.
//
// The outputs of a call that returns an error are discarded, as
// [stage.Transform] says, and the input is dead-lettered (see
// [DeadLetter]). A nil input or output is an error wrapping
// [ErrInvalidMsg] (non-fatal). A message emitted by f must not be one that
// another input carried (an aggregation across inputs): its own JetStream
// message would never be acknowledged by this path, only redelivered.
//
// The returned transform is safe for concurrent use if f is.
func Transform(f func(ctx context.Context, in *Msg, emit func(*Msg)) error) stage.Transform[*Msg, *Msg] {
	return transform{f: f}
}

type transform struct {
	f func(ctx context.Context, in *Msg, emit func(*Msg)) error
}

var errNilFunc = errors.New("natsstage: Transform was given a nil function")

func (t transform) Process(ctx context.Context, in *Msg, emit func(*Msg)) error {
	if t.f == nil {
		return stage.Fatal(errNilFunc)
	}
	if in == nil {
		return fmt.Errorf("%w: nil input", ErrInvalidMsg)
	}
	var outs []*Msg
	if err := t.f(ctx, in, func(m *Msg) { outs = append(outs, m) }); err != nil {
		return err
	}
	for i, m := range outs {
		if m == nil {
			return fmt.Errorf("%w: output %d of %s is nil", ErrInvalidMsg, i+1, in.ID)
		}
	}
	if in.t != nil {
		if len(outs) == 0 {
			in.t.done()
			return nil
		}
		// The input's reference passes to the outputs.
		in.t.refs.Add(int32(len(outs) - 1))
	}
	for i, m := range outs {
		if m != in {
			m.t = in.t
			if m.ID == "" {
				m.ID = in.ID + "/" + strconv.Itoa(i+1)
			}
			if m.Delivered == 0 {
				m.Delivered = in.Delivered
			}
		}
		emit(m)
	}
	return nil
}

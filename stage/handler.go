package stage

import "context"

// Source produces the items of a pipeline.
//
// The source stage calls Next repeatedly, from its own goroutine, one call
// at a time, while it runs. Next emits zero or more items by calling emit
// (only during the call; emit never blocks) and returns:
//   - nil, to be called again;
//   - an error matching [io.EOF] at the end of input (items emitted in that
//     call still count), after which Next is not called again;
//   - an error made with [Fatal], to fail the stage (the items emitted
//     before still go downstream);
//   - any other error, which is non-fatal: the stage emits one error item
//     (zero payload) carrying it, which ends dead-lettered, and calls Next
//     again. A panic is recovered and treated the same way.
//
// The stage sends a batch downstream once it holds the batch size (see
// [WithBatchSize]), at end of input, and whenever a call emits nothing, so a
// source waiting for input should return without emitting rather than block
// while items are held. ctx is done when the pipeline is aborted; a drain
// request (see [Pipeline.Drain]) is seen between calls.
//
// A Source may also implement [Opener] and [io.Closer].
type Source[T any] interface {
	Next(ctx context.Context, emit func(T)) error
}

// Transform maps each item to zero or more items.
//
// The transform stage calls Process from its own goroutine, one call at a
// time, once per ok item, in arrival order; items whose status is error pass
// by without a call. Process emits its outputs by calling emit (only during
// the call; emit never blocks) and returns:
//   - nil: the input is consumed and the outputs go downstream;
//   - an error made with [Fatal]: the stage fails; the outputs of the
//     items it consumed before go downstream, the failing input and the
//     rest of its batch are dead-lettered;
//   - any other error: non-fatal. The outputs of this call are discarded and
//     the input goes on as an error item carrying the error, to be
//     dead-lettered. A panic is recovered and treated the same way.
//
// Process is not called for error items: they pass through untouched, as
// with [github.com/stagefsm/stagefsm.RunIfNotError].
//
// A Transform may also implement [Opener], [Drainer] and [io.Closer].
type Transform[I, O any] interface {
	Process(ctx context.Context, in I, emit func(O)) error
}

// Sink consumes the items at the end of a pipeline.
//
// The sink stage calls Consume from its own goroutine, one call at a time,
// once per ok item, in arrival order. Error items go to the dead-letter
// path instead (see [WithDeadLetter]). A nil error delivers the item; an
// error made with [Fatal] fails the stage; any other error (and a recovered
// panic) dead-letters the item and the stage goes on.
//
// A Sink may also implement [Opener], [Flusher] and [io.Closer].
type Sink[T any] interface {
	Consume(ctx context.Context, in T) error
}

// Opener is an optional interface of a handler that needs setup. The stage
// calls Open once, when it initializes, before any other call; an error or
// a panic fails the stage and, because it happens at start-up, aborts the
// start of the whole pipeline (see [Pipeline.Start]).
type Opener interface {
	Open(ctx context.Context) error
}

// Drainer is an optional interface of a [Transform] that holds items back,
// such as an aggregation. The stage calls Drain once, after the last input
// and before it forwards end of input downstream; the items Drain emits go
// downstream like any other output. An error or a panic fails the stage.
type Drainer[O any] interface {
	Drain(ctx context.Context, emit func(O)) error
}

// Flusher is an optional interface of a [Sink] that buffers. The stage calls
// Flush once, after the last input has been consumed. An error or a panic
// fails the stage.
//
// Every handler may also implement [io.Closer]: its stage calls Close exactly
// once when the stage ends, drained, failed or aborted (see
// [Pipeline.Abort]), if the stage was initialized. A Close error or panic
// fails a stage that had drained; in a stage that had failed, it is
// reported with the failure's reason.
type Flusher interface {
	Flush(ctx context.Context) error
}

// SourceFunc adapts a function to a [Source].
type SourceFunc[T any] func(ctx context.Context, emit func(T)) error

// Next calls f.
func (f SourceFunc[T]) Next(ctx context.Context, emit func(T)) error { return f(ctx, emit) }

// TransformFunc adapts a function to a [Transform].
type TransformFunc[I, O any] func(ctx context.Context, in I, emit func(O)) error

// Process calls f.
func (f TransformFunc[I, O]) Process(ctx context.Context, in I, emit func(O)) error {
	return f(ctx, in, emit)
}

// SinkFunc adapts a function to a [Sink].
type SinkFunc[T any] func(ctx context.Context, in T) error

// Consume calls f.
func (f SinkFunc[T]) Consume(ctx context.Context, in T) error { return f(ctx, in) }

package stage

import (
	"context"
	"sync/atomic"
)

// edge is the bounded channel of batches between two stages, with a free
// list that recycles the batch slices so that a steady stream allocates
// nothing. The downstream stage is the only receiver and returns the slices
// it has finished with. Every upstream stage (one, or several feeding a
// [Merge]) sends and, at end of its input, calls close: the channel closes
// when the last of them has (EOF).
type edge[T any] struct {
	ch      chan []Item[T]
	free    chan []Item[T]
	batch   int
	writers *atomic.Int32 // upstream stages that have not closed yet; shared by a Merge's inputs
}

func newEdge[T any](o *options) *edge[T] {
	e := &edge[T]{
		ch:    make(chan []Item[T], o.capacity),
		free:  make(chan []Item[T], o.capacity+2),
		batch: o.batchSize,
	}
	e.writers = new(atomic.Int32)
	e.writers.Store(1)
	return e
}

// join makes e send into into's channel, as one more of its writers: the
// inputs of a [Merge]. Called while the graph is built, before any stage
// runs.
func (e *edge[T]) join(into *edge[T]) {
	e.ch, e.free, e.writers = into.ch, into.free, into.writers
}

// close is one upstream stage's end of input: the channel closes once every
// writer has closed. Each writer calls it once.
func (e *edge[T]) close() {
	if e.writers.Add(-1) == 0 {
		close(e.ch)
	}
}

// get returns an empty batch, recycled if one is free.
func (e *edge[T]) get() []Item[T] {
	select {
	case b := <-e.free:
		return b
	default:
		return make([]Item[T], 0, e.batch)
	}
}

// put recycles a batch the receiver has finished with. Its items are
// cleared so that it pins no payload.
func (e *edge[T]) put(b []Item[T]) {
	clear(b)
	select {
	case e.free <- b[:0]:
	default:
	}
}

// send sends a batch, waiting while the channel is full (backpressure) or
// until ctx is done; the batch is then not sent and stays the caller's.
func (e *edge[T]) send(ctx context.Context, b []Item[T]) error {
	select {
	case e.ch <- b:
		return nil
	default:
	}
	select {
	case e.ch <- b:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

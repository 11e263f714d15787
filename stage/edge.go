package stage

import "context"

// edge is the bounded channel of batches between two stages, with a free
// list that recycles the batch slices so that a steady stream allocates
// nothing. The upstream stage is the only sender and closes ch at end of
// input (EOF); the downstream stage is the only receiver and returns the
// slices it has finished with.
type edge[T any] struct {
	ch    chan []Item[T]
	free  chan []Item[T]
	batch int
}

func newEdge[T any](o *options) *edge[T] {
	return &edge[T]{
		ch:    make(chan []Item[T], o.capacity),
		free:  make(chan []Item[T], o.capacity+2),
		batch: o.batchSize,
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

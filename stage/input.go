package stage

import "context"

// input is the receiving side of a stage's edge: the channel, and the
// batches parked for the stage while it waited to restart (see
// [WithRestart]), which come first. Only the receiving stage uses it: from
// its loop, or from the goroutine that sheds its input while the loop is
// not running (a failed stage waiting to restart, or that has ended).
type input[T any] struct {
	*edge[T]
	parked [][]Item[T] // oldest first
	nItems int         // items in parked: at most what a full channel holds
	ended  bool        // the channel was closed: end of input, after parked
}

// receive returns the next batch: a parked one, else one from the channel,
// which it counts in u's In. ok is false at end of input; err is ctx.Err()
// when ctx is done first.
func (in *input[T]) receive(ctx context.Context, u *unit) (b []Item[T], ok bool, err error) {
	if len(in.parked) > 0 {
		b = in.parked[0]
		in.parked[0] = nil
		in.parked = in.parked[1:]
		in.nItems -= len(b)
		return b, true, nil
	}
	for {
		if in.ended {
			return nil, false, nil
		}
		select {
		case b, ok = <-in.ch:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
		if !ok {
			in.ended = true
			return nil, false, nil
		}
		if b, ok, err = in.take(ctx, u, b); b != nil || err != nil {
			return b, ok, err
		}
	}
}

// take handles batch b, received from the channel: a barrier is counted
// (see [unit.onBarrier]) and take returns nil; any other batch is counted
// in u's In and returned.
func (in *input[T]) take(ctx context.Context, u *unit, b []Item[T]) ([]Item[T], bool, error) {
	if id, ok := barrierOf(b); ok {
		return nil, false, u.onBarrier(ctx, id)
	}
	u.stats.in.Add(uint64(len(b)))
	u.newInput = true
	return b, true, nil
}

// exhausted reports that the input has ended and nothing is parked.
func (in *input[T]) exhausted() bool { return in.ended && len(in.parked) == 0 }

// park puts b, the rest of the batch a failed incarnation was processing,
// first in line for the next one: the parked batches arrived after it.
func (in *input[T]) park(b []Item[T]) {
	if len(b) > 0 {
		in.parked = append([][]Item[T]{b}, in.parked...)
		in.nItems += len(b)
	}
}

// shed waits for one batch on the channel. When parkable and the parked
// items, with the batch's, are no more than a full channel holds (capacity
// × batch size), it parks the batch for the next incarnation; otherwise it
// dead-letters its items with cause. It reports
// done at end of input and when stop is closed (nil: never), and returns
// ctx.Err() when ctx is done first.
func (in *input[T]) shed(ctx context.Context, u *unit, stop <-chan struct{}, cause error, parkable bool) (bool, error) {
	if in.ended {
		return true, nil
	}
	select {
	case b, ok := <-in.ch:
		if !ok {
			in.ended = true
			return true, nil
		}
		if _, isBarrier := barrierOf(b); isBarrier {
			return false, nil // the stage is down: the cut is given up
		}
		u.stats.in.Add(uint64(len(b)))
		if parkable && in.nItems+len(b) <= cap(in.ch)*in.batch {
			in.parked = append(in.parked, b)
			in.nItems += len(b)
			return false, nil
		}
		for _, it := range b {
			deadLetter(u, it, cause)
		}
		in.put(b)
		return false, nil
	case <-stop:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// sweepParked dead-letters the parked batches with cause.
func (in *input[T]) sweepParked(u *unit, cause error) {
	for _, b := range in.parked {
		for _, it := range b {
			deadLetter(u, it, cause)
		}
	}
	in.parked, in.nItems = nil, 0
}

// sweep dead-letters with cause the parked batches and, without waiting,
// the batches queued on the channel.
func (in *input[T]) sweep(u *unit, cause error) {
	in.sweepParked(u, cause)
	for {
		select {
		case b, ok := <-in.ch:
			if !ok {
				in.ended = true
				return
			}
			if _, isBarrier := barrierOf(b); isBarrier {
				continue
			}
			u.stats.in.Add(uint64(len(b)))
			for _, it := range b {
				deadLetter(u, it, cause)
			}
		default:
			return
		}
	}
}

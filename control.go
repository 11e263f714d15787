package stagefsm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// takeResult is what the loop finds when it looks at the control queue.
type takeResult uint8

const (
	takeEmpty  takeResult = iota // nothing queued, queue open
	takeEvent                    // an event was taken
	takeClosed                   // nothing queued, queue closed
)

// controlQueue is the bounded FIFO of control events between a Stage's
// senders and the loop. Senders never block the loop: they hold mu only to
// push. A token in wake tells the loop, while it waits, that it has
// something to look at; the token is drained whenever take finds nothing
// more, so a closed queue never wakes the loop twice.
type controlQueue[E any] struct {
	mu      sync.Mutex
	buf     []E // ring of len capacity
	head, n int
	closed  bool
	stopped bool
	wake    chan struct{} // capacity 1
	space   chan struct{} // made when a sender waits; closed when room frees
}

func newControlQueue[E any](capacity int) *controlQueue[E] {
	return &controlQueue[E]{buf: make([]E, capacity), wake: make(chan struct{}, 1)}
}

// push queues e, or reports why it cannot. space is the channel to wait on
// when the queue is full.
func (q *controlQueue[E]) push(e E, wait bool) (space <-chan struct{}, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.stopped:
		return nil, ErrStageDone
	case q.closed:
		return nil, ErrControlClosed
	case q.n == len(q.buf):
		if !wait {
			return nil, ErrControlFull
		}
		if q.space == nil {
			q.space = make(chan struct{})
		}
		return q.space, ErrControlFull
	}
	q.buf[(q.head+q.n)%len(q.buf)] = e
	q.n++
	q.signal()
	return nil, nil
}

// send queues e, waiting for room while the queue is full.
func (q *controlQueue[E]) send(ctx context.Context, e E) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		space, err := q.push(e, true)
		if space == nil {
			return err
		}
		select {
		case <-space:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// take removes the oldest event. It is called by the loop only.
func (q *controlQueue[E]) take() (e E, r takeResult) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		q.drain()
		if q.closed {
			return e, takeClosed
		}
		return e, takeEmpty
	}
	var zero E
	e, q.buf[q.head] = q.buf[q.head], zero
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	if q.n == 0 && !q.closed {
		q.drain()
	}
	if q.space != nil {
		close(q.space)
		q.space = nil
	}
	return e, takeEvent
}

// close refuses further events; queued ones are still delivered.
func (q *controlQueue[E]) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.stopped {
		return
	}
	q.closed = true
	q.signal()
}

// stop refuses further events for good and wakes waiting senders. It
// returns how many queued events will never be delivered.
func (q *controlQueue[E]) stop() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stopped = true
	if q.space != nil {
		close(q.space)
		q.space = nil
	}
	n := q.n
	clear(q.buf)
	q.n = 0
	return n
}

func (q *controlQueue[E]) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *controlQueue[E]) drain() {
	select {
	case <-q.wake:
	default:
	}
}

// controlPlane is the loop's side of a Stage: the queue it takes control
// events from and the supervisor's policy for them. The zero value (Run
// without Start) has no queue, and the loop never looks at it.
type controlPlane[S, E any] struct {
	queue       *controlQueue[E]
	policy      Controlled[S, E] // nil: poll in every state, closure maps to nothing
	mode        ControlMode      // of the current state
	closedAsked bool             // ControlClosed was asked in the current state
	closedSent  bool             // a closure event was delivered; never ask again
}

// attach sets up what Run adds to the bare loop: the observer, and the
// control plane and state publication of st (nil for Run).
func (l *loop[S, E, C, A]) attach(st *Stage[S, E]) error {
	var user *Observer[S, E]
	if l.opts.observer != nil {
		o, ok := l.opts.observer.(*Observer[S, E])
		if !ok {
			return fmt.Errorf("stagefsm: WithObserver was given %T but the stage's state and event types make %T",
				l.opts.observer, user)
		}
		user = o
	}
	if st == nil {
		if l.opts.restart != nil {
			return errors.New("stagefsm: WithRestart applies to Start only; Run runs the stage once")
		}
		l.obs = user
		return nil
	}
	l.obs = st.observer(user)
	l.ctl.queue = st.queue
	l.preempt = st.queue != nil
	l.ctl.policy, _ = l.h.(Controlled[S, E])
	return nil
}

// control consults the control queue at the top of an iteration, per the
// current state's mode (Poll or Block; Ignore never gets here). It returns
// the control event to feed and where it came from (sourceControl or
// sourceClosure); sourceDispatch when the iteration should dispatch as
// usual; sourceNone when it decided the iteration without an event — it
// waited, or ended the loop (done, with Run's result in err).
func (l *loop[S, E, C, A]) control(ctx context.Context) (event E, source eventSource, done bool, err error) {
	event, r := l.ctl.queue.take()
	switch r {
	case takeEvent:
		return event, sourceControl, false, nil
	case takeClosed:
		event, ok, err := l.closure()
		if err != nil {
			return event, sourceNone, true, err
		}
		if ok {
			return event, sourceClosure, false, nil
		}
		if l.ctl.mode != ControlBlock {
			return event, sourceDispatch, false, nil
		}
		if !l.armed {
			return event, sourceNone, true, fmt.Errorf("stagefsm: %s: state %s blocks for a control event, but the queue is closed, "+
				"its closure maps to no event and no state timeout is armed: %w", l.name, stateName[S]{l.state}, ErrControlClosed)
		}
		// Only the state timeout (or ctx) can end this wait: nothing will
		// ever arrive, and the wake token was drained by take.
		err = l.block(ctx, nil)
		return event, sourceNone, err != nil, err
	default: // takeEmpty
		if l.ctl.mode != ControlBlock {
			return event, sourceDispatch, false, nil
		}
		err = l.block(ctx, l.ctl.queue.wake)
		return event, sourceNone, err != nil, err
	}
}

// block waits in a Block state until wake is signalled, the armed state
// timeout falls due, or ctx is done. The caller's next iteration takes the
// event or fires the timeout.
func (l *loop[S, E, C, A]) block(ctx context.Context, wake <-chan struct{}) error {
	var due <-chan time.Time
	if l.armed {
		wait := time.Until(l.deadline)
		if wait <= 0 {
			return nil
		}
		due = l.startTimer(wait)
		defer l.timer.Stop()
	}
	select {
	case <-wake:
		return nil
	case <-due:
		return nil
	case <-ctx.Done():
		return l.canceled(ctx, nil)
	}
}

// closure asks the supervisor, at most once per state entered and never
// after it returned an event, what a closed control queue means now.
func (l *loop[S, E, C, A]) closure() (event E, ok bool, err error) {
	if l.ctl.policy == nil || l.ctl.closedSent || l.ctl.closedAsked {
		return event, false, nil
	}
	l.ctl.closedAsked = true
	event, ok, err = l.callControlClosed()
	if err != nil {
		return event, false, fmt.Errorf("stagefsm: %s: ControlClosed in state %s: %w", l.name, stateName[S]{l.state}, err)
	}
	l.ctl.closedSent = ok
	return event, ok, nil
}

// refreshControl reads the control mode of the state just entered.
func (l *loop[S, E, C, A]) refreshControl() error {
	mode, err := l.callControlMode()
	if err != nil {
		return fmt.Errorf("stagefsm: %s: ControlMode in state %s: %w", l.name, stateName[S]{l.state}, err)
	}
	if mode > ControlIgnore {
		return fmt.Errorf("stagefsm: %s: ControlMode in state %s returned the unknown mode %v", l.name, stateName[S]{l.state}, mode)
	}
	l.ctl.mode, l.ctl.closedAsked = mode, false
	return nil
}

// controlWake is the channel an idle wait also selects on: the control
// queue's wake channel when the current state polls, else nil (never
// ready).
func (l *loop[S, E, C, A]) controlWake() <-chan struct{} {
	if l.ctl.queue == nil || l.ctl.mode != ControlPoll {
		return nil
	}
	return l.ctl.queue.wake
}

func (l *loop[S, E, C, A]) callControlMode() (mode ControlMode, err error) {
	if l.opts.recoverPanics {
		defer recoverTo(&err)
	}
	return l.ctl.policy.ControlMode(l.state), nil
}

func (l *loop[S, E, C, A]) callControlClosed() (event E, ok bool, err error) {
	if l.opts.recoverPanics {
		defer recoverTo(&err)
	}
	event, ok = l.ctl.policy.ControlClosed(l.state)
	return event, ok, nil
}

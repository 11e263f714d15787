package stagefsm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrStageDone is returned by [Stage.Send] and [Stage.TrySend] once the
// stage has finished (its Run has returned), and wrapped by the error of
// [Stage.WaitState] when the stage finished in a state that does not match.
var ErrStageDone = errors.New("stagefsm: stage is done")

// ErrControlFull is returned by [Stage.TrySend] when the control queue holds
// as many events as its capacity (see [WithControlCapacity]). The event was
// not queued; retry, or use [Stage.Send], which waits for room.
var ErrControlFull = errors.New("stagefsm: control queue is full")

// ErrControlClosed is returned by [Stage.Send] and [Stage.TrySend] after
// [Stage.CloseControl]. [Run] returns an error wrapping it when a state whose
// mode is [ControlBlock] finds the queue closed and empty, the supervisor
// maps the closure to no event, and no state timeout is armed: the stage
// could never leave that state.
var ErrControlClosed = errors.New("stagefsm: control queue is closed")

// ErrNoStopEvent is returned by [Stage.Stop] when the supervisor does not
// implement [Stoppable], so there is no graceful stop event to send. Use
// [Stage.Send] with the stage's own event, or [Stage.Abort].
var ErrNoStopEvent = errors.New("stagefsm: supervisor has no stop event (implement Stoppable)")

// ControlMode says how the loop treats control events (sent through a
// [Stage]) while the machine is in a given state. The zero value is
// [ControlPoll].
type ControlMode uint8

const (
	// ControlPoll takes at most one queued control event at the top of each
	// iteration, in FIFO order, and feeds it to the machine as if dispatch
	// had returned [Transition] of it; DispatchState is not called in that
	// iteration. With the queue empty the iteration dispatches as usual, and
	// an [Idle] wait ends as soon as a control event arrives. Events are
	// taken between dispatches only: a DispatchState that blocks delays
	// them until it returns, so a polling state should return Idle rather
	// than block for long.
	ControlPoll ControlMode = iota
	// ControlBlock waits for a control event before doing anything: the
	// state is a gate (for example Created, waiting for Initialize).
	// DispatchState is never called in it. The wait ends when an event
	// arrives (it is taken at once), when the context is done, or when the
	// state's timeout falls due (see [Timed]).
	ControlBlock
	// ControlIgnore leaves control events queued: the state is dispatched
	// as if there were no control plane (typically a terminal state). The
	// events stay in the queue, in order, for a later state that polls or
	// blocks.
	ControlIgnore
)

// String returns "Poll", "Block", "Ignore", or "ControlMode(n)" for an
// unknown value.
func (m ControlMode) String() string {
	switch m {
	case ControlPoll:
		return "Poll"
	case ControlBlock:
		return "Block"
	case ControlIgnore:
		return "Ignore"
	default:
		return fmt.Sprintf("ControlMode(%d)", uint8(m))
	}
}

// Controlled is an optional interface of a [HandlerSupervised] that takes
// control events through a [Stage]. The loop detects it with a type
// assertion; a supervisor without it polls in every state ([ControlPoll])
// and maps a closed control queue to no event.
//
// The loop calls both methods from its own goroutine. ControlMode is called
// once each time a state is entered (at start and after every transition
// the machine commits) and must depend only on the state. ControlClosed is
// called when a state that polls or blocks finds the control queue closed
// (see [Stage.CloseControl]) and empty: it returns the event the closure
// means in that state (for example BeginDrain), or ok = false for none. It
// is asked at most once per state entered, and once an event was returned
// it is never asked again: a closure is delivered at most once. A panic in
// either method ends Run with an error wrapping a [*PanicError].
//
// DispatchState never sees the control queue: a control event reaches the
// machine as a transition the loop feeds, like a dispatch's [Transition].
// As for any normal event, a machine that rejects a control event ends Run
// with an error, so a machine should accept (or explicitly ignore) every
// control event in every state that polls or blocks.
type Controlled[S, E any] interface {
	ControlMode(state S) ControlMode
	ControlClosed(state S) (event E, ok bool)
}

// Stoppable is an optional interface of a [HandlerSupervised] that has a
// graceful stop event (typically BeginDrain). [Stage.Stop] sends StopEvent's
// result as a control event and waits for the stage to finish. StopEvent is
// called once, by [Start].
type Stoppable[E any] interface {
	StopEvent() E
}

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

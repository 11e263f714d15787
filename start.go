package stagefsm

import (
	"context"
	"sync"
)

// Change is one state change the machine committed, as delivered by
// [Stage.Changes]: the event took the machine from From to To. Err is the
// failure that was routed (a [*DispatchError] or [*ActionError]) when Event
// came from EventForActionError, and nil for a normal event (a dispatch's
// [Transition], a control event or a state timeout).
//
// Seq numbers the changes of one stage from 1, without gaps; a reader that
// sees a jump in Seq knows how many changes it missed (see [Stage.Changes]
// for the drop policy).
type Change[S, E any] struct {
	Seq   uint64
	From  S
	Event E
	To    S
	Err   error
}

// Stage is the handle of a stage running in the background, returned by
// [Start]. Through it a caller sends control events, watches the state and
// waits for the end.
//
// All methods are safe for concurrent use by any number of goroutines, and
// none of them can block the stage's loop: the loop never waits for a
// reader. The zero Stage is not usable; get one from Start.
type Stage[S, E any] struct {
	cancel    context.CancelFunc
	done      chan struct{}
	queue     *controlQueue[E]
	stopEvent E
	canStop   bool

	mu      sync.Mutex // guards the fields below
	state   S
	seq     uint64
	err     error // Run's result, set before done is closed
	ended   bool
	subs    map[*stateSub[S]]struct{}
	changes map[*changeSub[S, E]]struct{}

	waitMu  sync.Mutex // guards waiters; taken without mu held
	waiters map[*stateWaiter[S]]struct{}
}

type stateSub[S any] struct{ ch chan S }

type changeSub[S, E any] struct{ ch chan Change[S, E] }

type stateWaiter[S any] struct {
	pred func(S) bool
	ch   chan S // capacity 1: the first matching state
}

// Start runs [Run] for h in a new goroutine and returns its handle. The
// goroutine ends when Run returns; [Stage.Wait] and [Stage.Done] tell when.
// ctx bounds the stage's whole life: when it is done the stage stops as with
// [Stage.Abort]. Start never blocks and never fails: a nil supervisor or
// a mismatched option shows up as the error of Wait.
//
// Start adds a control plane to Run: events sent with [Stage.Send] are fed
// to the machine per the supervisor's [Controlled] policy (by default one
// queued event ahead of each dispatch), and every state the machine commits
// is published to [Stage.State], [Stage.Subscribe], [Stage.Changes] and
// [Stage.WaitState] — terminal states included, also when Run returns an
// error. The control queue holds [WithControlCapacity] events. All other
// options are Run's.
//
// Until the machine's first transition [Stage.State] reports initial.
func Start[S, E, C any, A Action[C]](ctx context.Context, h HandlerSupervised[S, E, C, A], initial S, c C, opts ...Option) *Stage[S, E] {
	panic("not implemented yet")
}

// Send queues the control event e, waiting while the queue is full. It
// returns nil once e is queued (the stage takes it per its [ControlMode];
// if the stage finishes first, e is never delivered and Run logs how many
// events were left), [ErrStageDone] if the stage has finished,
// [ErrControlClosed] after [Stage.CloseControl], or ctx.Err() if ctx is done
// first (e is then not queued).
func (s *Stage[S, E]) Send(ctx context.Context, e E) error {
	return s.queue.send(ctx, e)
}

// TrySend queues the control event e without waiting. It returns nil once e
// is queued, [ErrControlFull] if the queue is full (e is not queued),
// [ErrStageDone] if the stage has finished, or [ErrControlClosed] after
// [Stage.CloseControl].
func (s *Stage[S, E]) TrySend(e E) error {
	_, err := s.queue.push(e, false)
	return err
}

// CloseControl tells the stage that no more control events will come.
// Events already queued are still delivered; after them, a state that polls
// or blocks sees the closure and feeds the event the supervisor maps it to
// (see [Controlled]), if any. Later sends return [ErrControlClosed].
// CloseControl is idempotent.
func (s *Stage[S, E]) CloseControl() {
	s.queue.close()
}

// State returns the latest state the stage published: the initial state
// until the machine commits a transition, then the state after each
// committed transition, and after the stage finished its final state.
func (s *Stage[S, E]) State() S {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// WaitState waits until the stage is in a state for which pred returns true
// and returns that state. pred sees the current state first, then every
// state the machine commits, none skipped: it is called from the stage's
// goroutine as each state is published, so it must be fast, must not block
// and must not call WaitState. A pred that panics makes WaitState return an
// error wrapping a [*PanicError].
//
// If the stage finishes in a state that does not match, WaitState returns
// that final state and an error wrapping [ErrStageDone]; if ctx is done
// first, the latest state and ctx.Err().
func (s *Stage[S, E]) WaitState(ctx context.Context, pred func(S) bool) (S, error) {
	panic("not implemented yet")
}

// Subscribe returns a channel that delivers the stage's latest state. It
// holds at most one value: the current state at once, then each newly
// published state replacing any value not yet read. A slow reader misses
// intermediate states but never stalls the stage, and always reads the
// final state: when the stage finishes, the channel delivers its final
// state (if not already read) and is then closed. It is closed as well when
// ctx is done; the subscription then ends and its resources are freed.
func (s *Stage[S, E]) Subscribe(ctx context.Context) <-chan S {
	panic("not implemented yet")
}

// Changes returns a channel of the state changes the stage commits from now
// on, in order, with a buffer of buffer changes (buffer < 1 means 1).
//
// Drop policy: the stage never waits for a reader. When the buffer is full
// and a new change is committed, the oldest unread change is dropped to
// make room, so the reader always gets the most recent changes, including
// the last one; a jump in [Change.Seq] tells how many were dropped. The
// channel is closed when the stage finishes (after its last change) or when
// ctx is done. On a stage that has finished it is closed at once.
func (s *Stage[S, E]) Changes(ctx context.Context, buffer int) <-chan Change[S, E] {
	panic("not implemented yet")
}

// Done returns a channel that is closed when the stage has finished: Run
// has returned, its final state is published and its goroutine is ending.
func (s *Stage[S, E]) Done() <-chan struct{} { return s.done }

// Wait waits for the stage to finish and returns Run's result (nil after a
// successful [Terminate]); see [Run] for every way it returns. It may be
// called any number of times, from any goroutine, and returns the same
// result each time. If ctx is done first, it returns ctx.Err() and the stage
// keeps running.
func (s *Stage[S, E]) Wait(ctx context.Context) error {
	select {
	case <-s.done:
		return s.err // written before done was closed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop stops the stage gracefully: it sends the supervisor's stop event
// (see [Stoppable]) as a control event and waits for the stage to finish,
// returning Run's result. If the stage has already finished, or its control
// queue is closed (the closure then decides), Stop only waits. If ctx is
// done first, Stop returns ctx.Err() and the stage keeps running: call
// [Stage.Abort] to force it. Without a stop event Stop returns
// [ErrNoStopEvent] at once and sends nothing.
func (s *Stage[S, E]) Stop(ctx context.Context) error {
	panic("not implemented yet")
}

// Abort cancels the stage's context: Run stops promptly, writes no
// completion event, and [Stage.Wait] returns an error for which
// errors.Is(err, context.Canceled) holds (unless the stage had already
// finished). Abort does not wait; it is idempotent.
func (s *Stage[S, E]) Abort() { s.cancel() }

package stagefsm

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"

	"go.uber.org/zap"
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
//
// Restarts is how many times the stage had been restarted (see
// [WithRestart]) when the change was committed: 0 without restarts. The
// first change of a new incarnation starts from the initial state, and Seq
// goes on counting across incarnations.
type Change[S, E any] struct {
	Seq      uint64
	From     S
	Event    E
	To       S
	Err      error
	Restarts int
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
	stopErr   error         // why Stop cannot send: ErrNoStopEvent, or StopEvent panicked
	restart   *restartState // nil without WithRestart

	mu          sync.Mutex // guards the fields below
	state       S
	seq         uint64
	seq0        uint64 // seq when the current incarnation started
	restarts    int
	lastFailure error
	err         error // Run's result, set before done is closed
	ended       bool
	subs        map[*stateSub[S]]struct{}
	changes     map[*changeSub[S, E]]struct{}

	waitMu  sync.Mutex // guards waiters; taken without mu held
	waiters map[*stateWaiter[S]]struct{}
}

// stateSub is a Subscribe channel; stop releases its context.AfterFunc.
type stateSub[S any] struct {
	ch   chan S // capacity 1: the latest state not yet read
	stop func() bool
}

// changeSub is a Changes channel.
type changeSub[S, E any] struct {
	ch   chan Change[S, E]
	stop func() bool
}

// stateWaiter is a WaitState call waiting for a matching state.
type stateWaiter[S any] struct {
	pred func(S) bool
	done chan waitResult[S] // capacity 1; sent to once
}

type waitResult[S any] struct {
	state S
	err   error
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
// error. The control queue holds [WithControlCapacity] events. With
// [WithRestart] a failed stage is restarted behind the same handle. All
// other options are Run's.
//
// Until the machine's first transition [Stage.State] reports initial.
func Start[S, E, C any, A Action[C]](ctx context.Context, h HandlerSupervised[S, E, C, A], initial S, c C, opts ...Option) *Stage[S, E] {
	o := newOptions(opts)
	ctx, cancel := context.WithCancel(ctx)
	s := &Stage[S, E]{
		cancel: cancel,
		done:   make(chan struct{}),
		queue:  newControlQueue[E](o.controlCap),
		state:  initial,
	}
	s.stopEvent, s.stopErr = stopEventOf[E](h, o.recoverPanics)
	if o.restart != nil {
		s.restart = newRestartState()
	}
	go func() {
		defer cancel()
		var err error
		if s.restart != nil {
			err = supervise(ctx, h, initial, c, &o, s)
		} else {
			err = run(ctx, h, initial, c, &o, s)
		}
		if n := s.queue.stop(); n > 0 {
			o.logger.Warn("stage ended with control events not delivered", zap.Int("undelivered", n))
		}
		s.finish(err)
	}()
	return s
}

// stopEventOf asks h for its graceful stop event, once.
func stopEventOf[E any](h any, recoverPanics bool) (event E, err error) {
	st, ok := h.(Stoppable[E])
	if !ok {
		return event, ErrNoStopEvent
	}
	if recoverPanics {
		defer func() {
			if v := recover(); v != nil {
				err = fmt.Errorf("stagefsm: StopEvent: %w", &PanicError{Value: v, Stack: debug.Stack()})
			}
		}()
	}
	return st.StopEvent(), nil
}

// observer returns the Observer through which the loop publishes to s,
// calling user's callbacks (if any) after s has published.
func (s *Stage[S, E]) observer(user *Observer[S, E]) *Observer[S, E] {
	if user == nil {
		user = &Observer[S, E]{}
	}
	onTransition, onFailure, onExit := user.OnTransition, user.OnFailure, user.OnExit
	return &Observer[S, E]{
		OnTransition: func(from S, event E, to S, actions int) {
			s.publish(from, event, to, nil)
			if onTransition != nil {
				onTransition(from, event, to, actions)
			}
		},
		OnFailure: func(from S, event E, to S, cause error) {
			s.publish(from, event, to, cause)
			if onFailure != nil {
				onFailure(from, event, to, cause)
			}
		},
		OnComplete: user.OnComplete,
		OnExit: func(state S, err error) {
			s.exit(state)
			if onExit != nil {
				onExit(state, err)
			}
		},
	}
}

// publish records a committed change and hands it to every reader without
// waiting for any. It is called from the loop's goroutine only.
func (s *Stage[S, E]) publish(from S, event E, to S, cause error) {
	s.mu.Lock()
	s.seq++
	s.setState(to)
	change := Change[S, E]{Seq: s.seq, From: from, Event: event, To: to, Err: cause, Restarts: s.restarts}
	for sub := range s.changes {
		offerDropOldest(sub.ch, change)
	}
	s.mu.Unlock()
	s.notifyWaiters(to)
}

// exit records the final state when Run is about to return. After a commit
// it is the state already published; it differs only when the stage (or its
// current incarnation) never committed a transition (the machine may report
// another state than the one given to Start, or was never built).
func (s *Stage[S, E]) exit(state S) {
	s.mu.Lock()
	if s.seq > s.seq0 {
		s.mu.Unlock()
		return
	}
	s.setState(state)
	s.mu.Unlock()
	s.notifyWaiters(state)
}

// setState records state as the latest and offers it to every Subscribe
// reader, without waiting for any. s.mu must be held.
func (s *Stage[S, E]) setState(state S) {
	s.state = state
	for sub := range s.subs {
		offerLatest(sub.ch, state)
	}
}

// finish records Run's result and ends every subscription and wait. The
// queue was stopped before, so that a Send after Done fails.
func (s *Stage[S, E]) finish(err error) {
	s.mu.Lock()
	s.err, s.ended = err, true
	final := s.state
	for sub := range s.subs {
		sub.stop()
		close(sub.ch)
	}
	for sub := range s.changes {
		sub.stop()
		close(sub.ch)
	}
	s.subs, s.changes = nil, nil
	s.mu.Unlock()

	s.waitMu.Lock()
	for w := range s.waiters {
		w.done <- waitResult[S]{final, fmt.Errorf("stagefsm: stage finished in state %v: %w", stateName[S]{final}, ErrStageDone)}
	}
	s.waiters = nil
	s.waitMu.Unlock()
	close(s.done)
}

// notifyWaiters resolves the WaitState calls whose predicate state matches.
func (s *Stage[S, E]) notifyWaiters(state S) {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	for w := range s.waiters {
		if ok, err := matches(w.pred, state); ok || err != nil {
			w.done <- waitResult[S]{state, err}
			delete(s.waiters, w)
		}
	}
}

// matches calls a WaitState predicate, turning a panic into an error.
func matches[S any](pred func(S) bool, state S) (ok bool, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("stagefsm: WaitState predicate: %w", &PanicError{Value: v, Stack: debug.Stack()})
		}
	}()
	return pred(state), nil
}

// offerLatest replaces the unread value of a capacity-1 channel with v.
// Only the publisher sends, under Stage.mu, so the second send always
// finds room; the default cases only make that explicit.
func offerLatest[T any](ch chan T, v T) {
	select {
	case <-ch:
	default:
	}
	select {
	case ch <- v:
	default:
	}
}

// offerDropOldest sends v, dropping the oldest unread value when the
// buffer is full.
func offerDropOldest[T any](ch chan T, v T) {
	select {
	case ch <- v:
		return
	default:
	}
	select {
	case <-ch:
	default:
	}
	select {
	case ch <- v:
	default:
	}
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
// CloseControl is idempotent. Under [WithRestart] it also asks the stage to
// finish: a failure after it is not restarted.
func (s *Stage[S, E]) CloseControl() {
	s.queue.close()
	if s.restart != nil {
		s.restart.requestFinish()
	}
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
	if pred == nil {
		return s.State(), errors.New("stagefsm: WaitState called with a nil predicate")
	}
	s.waitMu.Lock()
	s.mu.Lock()
	state, ended := s.state, s.ended
	s.mu.Unlock()
	ok, err := matches(pred, state)
	switch {
	case ok || err != nil:
		s.waitMu.Unlock()
		return state, err
	case ended:
		s.waitMu.Unlock()
		return state, fmt.Errorf("stagefsm: stage finished in state %v: %w", stateName[S]{state}, ErrStageDone)
	}
	// Registered under waitMu before any later publication or finish can
	// look at the waiters, so no state is missed.
	w := &stateWaiter[S]{pred: pred, done: make(chan waitResult[S], 1)}
	if s.waiters == nil {
		s.waiters = make(map[*stateWaiter[S]]struct{})
	}
	s.waiters[w] = struct{}{}
	s.waitMu.Unlock()

	select {
	case r := <-w.done:
		return r.state, r.err
	case <-ctx.Done():
		s.waitMu.Lock()
		delete(s.waiters, w)
		s.waitMu.Unlock()
		select {
		case r := <-w.done: // resolved meanwhile
			return r.state, r.err
		default:
			return s.State(), ctx.Err()
		}
	}
}

// Subscribe returns a channel that delivers the stage's latest state. It
// holds at most one value: the current state at once, then each newly
// published state replacing any value not yet read. A slow reader misses
// intermediate states but never stalls the stage, and always reads the
// final state: when the stage finishes, the channel delivers its final
// state (if not already read) and is then closed. It is closed as well when
// ctx is done; the subscription then ends and its resources are freed.
// Values are states, not changes: a stage that ends without committing any
// transition may deliver its state twice.
func (s *Stage[S, E]) Subscribe(ctx context.Context) <-chan S {
	sub := &stateSub[S]{ch: make(chan S, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	sub.ch <- s.state
	if s.ended {
		close(sub.ch)
		return sub.ch
	}
	if s.subs == nil {
		s.subs = make(map[*stateSub[S]]struct{})
	}
	s.subs[sub] = struct{}{}
	sub.stop = context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.subs[sub]; ok {
			delete(s.subs, sub)
			close(sub.ch)
		}
	})
	return sub.ch
}

// Changes returns a channel of the state changes the stage commits from now
// on, in order, with a buffer of buffer changes (buffer < 1 means 1; the
// buffer is allocated at once, so more than 65,536 means 65,536).
//
// Drop policy: the stage never waits for a reader. When the buffer is full
// and a new change is committed, the oldest unread change is dropped to
// make room, so the reader always gets the most recent changes, including
// the last one; a jump in [Change.Seq] tells how many were dropped. The
// channel is closed when the stage finishes (after its last change) or when
// ctx is done. On a stage that has finished it is closed at once.
func (s *Stage[S, E]) Changes(ctx context.Context, buffer int) <-chan Change[S, E] {
	sub := &changeSub[S, E]{ch: make(chan Change[S, E], min(max(buffer, 1), maxBuffer))}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		close(sub.ch)
		return sub.ch
	}
	if s.changes == nil {
		s.changes = make(map[*changeSub[S, E]]struct{})
	}
	s.changes[sub] = struct{}{}
	sub.stop = context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.changes[sub]; ok {
			delete(s.changes, sub)
			close(sub.ch)
		}
	})
	return sub.ch
}

// Done returns a channel that is closed when the stage has finished: Run
// has returned, its final state is published and its goroutine is ending.
func (s *Stage[S, E]) Done() <-chan struct{} { return s.done }

// Wait waits for the stage to finish and returns Run's result (nil after a
// successful [Terminate]); see [Run] for every way it returns, and
// [WithRestart] for a stage that is restarted after failures. It may be
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
// [ErrNoStopEvent] at once and sends nothing (and an error wrapping a
// [*PanicError] if StopEvent panicked when Start called it).
//
// Under [WithRestart], Stop also means that a failure from now on is not
// restarted: the stage then ends with that failure. Called while the stage
// waits to restart, Stop sends nothing, no new incarnation starts, and
// Stop returns the failure at once.
func (s *Stage[S, E]) Stop(ctx context.Context) error {
	if s.stopErr != nil {
		return s.stopErr
	}
	if s.restart != nil && !s.restart.requestFinish() {
		return s.Wait(ctx)
	}
	err := s.queue.send(ctx, s.stopEvent)
	if err != nil && !errors.Is(err, ErrStageDone) && !errors.Is(err, ErrControlClosed) {
		return err
	}
	return s.Wait(ctx)
}

// Abort cancels the stage's context: Run stops promptly, writes no
// completion event, and [Stage.Wait] returns an error for which
// errors.Is(err, context.Canceled) holds (unless the stage had already
// finished). Abort does not wait; it is idempotent.
func (s *Stage[S, E]) Abort() { s.cancel() }

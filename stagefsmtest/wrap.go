package stagefsmtest

import (
	"context"
	"time"

	"github.com/stagefsm/stagefsm"
)

// probe observes what Run does through a wrapped supervisor and its
// machine. Run calls every method from its own goroutine, one at a time.
type probe[S, E any] interface {
	// built reports the machine's state once it is built.
	built(state S)
	// gate is called before each dispatch; a non-nil error is returned by
	// the dispatch instead of calling the wrapped one.
	gate(state S) error
	dispatched(state S, d stagefsm.Directive[E], err error)
	handled(t Transition[S, E])
	routed(f Failure[E])
	completed(err error)
}

// wrap returns h with p observing it. The result keeps every optional
// interface that Run and Start detect by type assertion:
//
//   - [stagefsm.Controlled]: the wrapper always implements it, forwarding
//     to h's or, when h has none, answering ControlPoll and "no event" —
//     which is what the loop does for a supervisor without it;
//   - [stagefsm.Stoppable]: the wrapper implements it exactly when h does
//     (its absence changes what Stage.Stop does);
//   - [stagefsm.Timed], on the machine: the wrapped machine always
//     implements it, reporting no timeout when the machine has none, which
//     Run treats exactly like a machine without Timed.
//
// A new optional interface in stagefsm must be added here.
func wrap[S, E, C any, A stagefsm.Action[C]](h stagefsm.HandlerSupervised[S, E, C, A], p probe[S, E]) stagefsm.HandlerSupervised[S, E, C, A] {
	if h == nil {
		return nil // Run reports the nil supervisor
	}
	w := &supervisor[S, E, C, A]{h: h, p: p}
	w.ctl, _ = h.(stagefsm.Controlled[S, E])
	if st, ok := h.(stagefsm.Stoppable[E]); ok {
		return &stoppable[S, E, C, A]{supervisor: w, st: st}
	}
	return w
}

type supervisor[S, E, C any, A stagefsm.Action[C]] struct {
	h   stagefsm.HandlerSupervised[S, E, C, A]
	ctl stagefsm.Controlled[S, E] // nil when h has no control policy
	p   probe[S, E]
}

// stoppable is a supervisor whose h is [stagefsm.Stoppable].
type stoppable[S, E, C any, A stagefsm.Action[C]] struct {
	*supervisor[S, E, C, A]
	st stagefsm.Stoppable[E]
}

func (w *stoppable[S, E, C, A]) StopEvent() E { return w.st.StopEvent() }

func (w *supervisor[S, E, C, A]) ControlMode(state S) stagefsm.ControlMode {
	if w.ctl == nil {
		return stagefsm.ControlPoll
	}
	return w.ctl.ControlMode(state)
}

func (w *supervisor[S, E, C, A]) ControlClosed(state S) (event E, ok bool) {
	if w.ctl == nil {
		return event, false
	}
	return w.ctl.ControlClosed(state)
}

func (w *supervisor[S, E, C, A]) Name() string                    { return w.h.Name() }
func (w *supervisor[S, E, C, A]) EventForActionError(err error) E { return w.route(err) }

func (w *supervisor[S, E, C, A]) BuildStateMachine(initial S) (stagefsm.Machine[S, E, C, A], error) {
	m, err := w.h.BuildStateMachine(initial)
	if err != nil || m == nil {
		return m, err
	}
	timed, _ := m.(stagefsm.Timed[E])
	wm := &machine[S, E, C, A]{m: m, timed: timed, p: w.p}
	w.p.built(m.State())
	return wm, nil
}

func (w *supervisor[S, E, C, A]) DispatchState(ctx context.Context, state S, c C) (stagefsm.Directive[E], error) {
	if err := w.p.gate(state); err != nil {
		return stagefsm.Directive[E]{}, err
	}
	d, err := w.h.DispatchState(ctx, state, c)
	w.p.dispatched(state, d, err)
	return d, err
}

func (w *supervisor[S, E, C, A]) route(err error) E {
	e := w.h.EventForActionError(err)
	w.p.routed(Failure[E]{Err: err, Event: e})
	return e
}

func (w *supervisor[S, E, C, A]) WriteCompletionEvent(ctx context.Context) error {
	err := w.h.WriteCompletionEvent(ctx)
	w.p.completed(err)
	return err
}

type machine[S, E, C, A any] struct {
	m     stagefsm.Machine[S, E, C, A]
	timed stagefsm.Timed[E] // nil when m has no timeouts
	p     probe[S, E]
}

func (w *machine[S, E, C, A]) State() S { return w.m.State() }

func (w *machine[S, E, C, A]) Handle(ctx context.Context, event E, c C) ([]A, error) {
	from := w.m.State()
	actions, err := w.m.Handle(ctx, event, c)
	t := Transition[S, E]{From: from, Event: event, To: w.m.State(), Err: err}
	if len(actions) > 0 {
		t.Actions = make([]any, len(actions))
		for i, a := range actions {
			t.Actions[i] = a
		}
	}
	w.p.handled(t)
	return actions, err
}

func (w *machine[S, E, C, A]) Timeout() (deadline time.Time, event E, ok bool) {
	if w.timed == nil {
		return deadline, event, false
	}
	return w.timed.Timeout()
}

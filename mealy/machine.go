package mealy

import (
	"context"
	"fmt"
	"time"
)

// Machine is a running Mealy machine: a [Definition] and a current state. It
// implements [stagefsm.Machine] and [stagefsm.Timed], so stagefsm.Run drives
// it and fires its state timeouts. Create one with [Definition.New].
//
// A Machine is not safe for concurrent use; stagefsm.Run calls it from one
// goroutine, one call at a time.
type Machine[S, E, C, A any] struct {
	def      *Definition[S, E, C, A]
	state    S
	deadline time.Time
	cur      int32 // index of state
	armed    bool
	// What Handle returns, reused: inline for up to two actions (no
	// allocation apart from the Machine's own, and the same cache lines),
	// more for longer lists.
	inline [2]A
	more   *[]A
}

// State returns the current state, as committed by the last successful
// Handle (or given to New); the zero S for a nil Machine.
func (m *Machine[S, E, C, A]) State() S {
	if m == nil {
		var zero S
		return zero
	}
	return m.state
}

// Handle feeds event to the machine. It finds the transition for the
// current state's key and the event's key (a transition declared with On,
// else an any-state one), computes the next state, commits it, and returns
// the actions to run, in order: exit actions of the state left, entry
// actions of the state entered, then the transition's own actions.
// Entering a state arms its timeout, leaving it disarms it; a Stay changes
// neither.
//
// On error the state and its timeout are unchanged and no actions are
// returned. Handle returns an error when no transition matches (matching
// [ErrUnhandledEvent] and naming the state and the event, unless the
// definition ignores unhandled events or its hook accepts it), when a
// Choose handler fails (wrapping its error) or returns an undeclared target
// ([ErrUndeclaredState]).
//
// The returned slice is owned by the machine and valid only until the next
// call to Handle; the caller must not keep or modify it (stagefsm.Run does
// neither). With static actions Handle does not allocate.
func (m *Machine[S, E, C, A]) Handle(ctx context.Context, event E, c C) ([]A, error) {
	if m == nil || m.def == nil {
		return nil, fmt.Errorf("%w: Machine not created by Definition.New", ErrInvalidDeclaration)
	}
	d := m.def
	var e *edge[S, E, C, A]
	if j, ok := d.eventIndex(event); ok {
		e = d.table[int(m.cur)*d.nEvents+j]
	}
	if e == nil {
		return nil, m.unhandled(ctx, event, c)
	}
	switch e.kind {
	case targetStay:
		return m.out(e.actions), nil
	case targetTo:
		m.state, m.cur = e.target, int32(e.to)
		m.enter(e.to)
		return m.out(e.actions), nil
	}
	next, err := e.choose(ctx, m.state, event, c)
	if err != nil {
		return nil, fmt.Errorf("mealy: choosing the next state for event %v in state %v: %w", event, m.state, err)
	}
	to, ok := d.stateIndex(next)
	if ok {
		for _, ch := range e.choices {
			if ch.to == to {
				m.state, m.cur = next, int32(to)
				m.enter(to)
				return m.out(ch.actions), nil
			}
		}
	}
	return nil, fmt.Errorf("%w: the handler for event %v in state %v chose %v, which is not among its declared targets",
		ErrUndeclaredState, event, m.state, next)
}

// Timeout reports the deadline armed for the current state and the event to
// feed when it passes; ok is false when the state has no timeout. It
// implements [stagefsm.Timed]: stagefsm.Run calls it after every Handle.
func (m *Machine[S, E, C, A]) Timeout() (deadline time.Time, event E, ok bool) {
	if m == nil || !m.armed {
		return time.Time{}, event, false
	}
	return m.deadline, m.def.states[m.cur].timeoutEvent, true
}

// enter arms the timeout of state i, or disarms it.
func (m *Machine[S, E, C, A]) enter(i int) {
	st := &m.def.states[i]
	m.armed = st.timed
	if st.timed {
		m.deadline = time.Now().Add(st.timeout)
	}
}

// out copies actions into the machine's buffer and returns it, capped to
// its length. It copies element by element: for the few actions of a
// transition that is cheaper than the runtime's bulk copy, which Handle
// would pay on every call.
func (m *Machine[S, E, C, A]) out(actions []A) []A {
	n := len(actions)
	var buf []A
	if n <= len(m.inline) {
		buf = m.inline[:n:n]
	} else {
		if m.more == nil || n > len(*m.more) { // New sizes it for the longest list
			more := make([]A, n)
			m.more = &more
		}
		buf = (*m.more)[:n:n]
	}
	//lint:ignore S1001 copy is the runtime's bulk copy, the cost avoided here
	for i, a := range actions {
		buf[i] = a
	}
	return buf
}

// unhandled applies the unhandled-event policy.
func (m *Machine[S, E, C, A]) unhandled(ctx context.Context, event E, c C) error {
	switch m.def.policy {
	case policyIgnore:
		return nil
	case policyHook:
		if err := m.def.hook(ctx, m.state, event, c); err != nil {
			return fmt.Errorf("%w: event %v in state %v: %w", ErrUnhandledEvent, event, m.state, err)
		}
		return nil
	default:
		return fmt.Errorf("%w: event %v in state %v", ErrUnhandledEvent, event, m.state)
	}
}

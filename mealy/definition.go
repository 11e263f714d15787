package mealy

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Definition is a validated Mealy machine definition, returned by
// [Builder.Build]. It is immutable: many machines may be created from it
// with [Definition.New] and drawn with [Definition.Mermaid] and
// [Definition.DOT], concurrently.
type Definition[S, E, C, A any] struct {
	stateIndex func(S) (int, bool)
	eventIndex func(E) (int, bool)

	states     []stateInfo[E, A]
	events     []string // event key names, by index
	nEvents    int
	table      []*edge[S, E, C, A] // [state*nEvents+event]; nil: unhandled
	maxActions int                 // longest action list Handle returns

	initial int // declared initial state, or -1
	failure int // declared failure event, or -1
	policy  policy
	hook    func(ctx context.Context, s S, e E, c C) error
}

// stateInfo is what a Definition knows of one state.
type stateInfo[E, A any] struct {
	name         string
	entry, exit  []A
	terminal     bool
	wayOut       bool // some transition enters another state
	timed        bool
	timeout      time.Duration
	timeoutEvent E
	timeoutName  string
}

// edge is the transition taken from one state on one event.
type edge[S, E, C, A any] struct {
	kind     targetKind
	target   S   // targetTo
	to       int // targetTo: target index; targetStay: the state itself
	choose   func(ctx context.Context, s S, e E, c C) (S, error)
	choices  []choice[A] // targetChoose
	actions  []A         // targetTo, targetStay: exit, entry, own actions
	own      []A         // the transition's own actions, for diagrams
	anyState bool        // from an OnAny declaration
}

// choice is a declared target of a Choose handler and the actions that
// entering it returns.
type choice[A any] struct {
	to      int
	actions []A
}

// concat returns the exit actions of from, the entry actions of to and own,
// in a new slice of exactly that length (nil when empty).
func (d *Definition[S, E, C, A]) concat(from, to int, own []A) []A {
	n := len(d.states[from].exit) + len(d.states[to].entry) + len(own)
	if n == 0 {
		return nil
	}
	out := make([]A, 0, n)
	out = append(out, d.states[from].exit...)
	out = append(out, d.states[to].entry...)
	return append(out, own...)
}

// New returns a machine in state initial. Its entry actions are not run (no
// Handle call returns them); its timeout, if it has one, is armed from now.
//
// New returns an error matching [ErrUndeclaredState] when initial's key is
// not a state of the definition, and one matching [ErrNoWayOut] when the
// state has no transition to another state and is not terminal (a terminal
// initial state is allowed: a stage restarted after it ended). On error the
// machine is nil.
//
// A supervisor's BuildStateMachine typically is
//
//	return def.New(initial)
//
// (on error the returned interface then holds a nil *Machine, which Run
// never uses because it looks at the error first; a nil *Machine's methods
// return errors or zero values, never panic).
func (d *Definition[S, E, C, A]) New(initial S) (*Machine[S, E, C, A], error) {
	if d == nil || d.stateIndex == nil {
		return nil, fmt.Errorf("%w: Definition not returned by Builder.Build", ErrInvalidDeclaration)
	}
	i, ok := d.stateIndex(initial)
	if !ok {
		return nil, fmt.Errorf("%w: initial state %v is not a state of the definition", ErrUndeclaredState, initial)
	}
	if st := &d.states[i]; !st.wayOut && !st.terminal {
		return nil, fmt.Errorf("%w: state %s", ErrNoWayOut, st.name)
	}
	m := &Machine[S, E, C, A]{def: d, state: initial, cur: int32(i)}
	if d.maxActions > len(m.inline) {
		more := make([]A, d.maxActions)
		m.more = &more
	}
	m.enter(i)
	return m, nil
}

// keyName prints a key: its String method when it has one, else %v.
func keyName[K any](k K) string {
	if s, ok := any(k).(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprint(k)
}

// reachable returns, for each state, whether some sequence of transitions
// leads to it from state from.
func (d *Definition[S, E, C, A]) reachable(from int) []bool {
	seen := make([]bool, len(d.states))
	seen[from] = true
	queue := []int{from}
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		for _, e := range d.table[i*d.nEvents : (i+1)*d.nEvents] {
			if e == nil {
				continue
			}
			next := []int{e.to}
			for _, c := range e.choices {
				next = append(next, c.to)
			}
			for _, n := range next {
				if !seen[n] {
					seen[n] = true
					queue = append(queue, n)
				}
			}
		}
	}
	return seen
}

// strict runs the checks of Builder.Strict.
func (v *validator[S, E, C, A, SK, EK]) strict(d *Definition[S, E, C, A]) {
	if d.failure < 0 {
		v.problem(ErrInvalidDeclaration, "Strict requires FailureEvent")
	} else {
		for i, st := range d.states {
			if !st.terminal && d.table[i*d.nEvents+d.failure] == nil {
				v.problem(ErrFailureNotHandled, "state %s does not handle failure event %s", st.name, d.events[d.failure])
			}
		}
	}
	for i, st := range d.states {
		if !st.terminal && !st.wayOut && i != d.initial { // the initial state is checked by build
			v.problem(ErrNoWayOut, "non-terminal state %s has no transition to another state", st.name)
		}
	}
	if !slices.ContainsFunc(d.states, func(st stateInfo[E, A]) bool { return st.terminal }) {
		v.problem(ErrNoTerminal, "no state is terminal")
	}
	if d.initial < 0 {
		if v.b.initialSet == 0 {
			v.problem(ErrInvalidDeclaration, "Strict requires Initial")
		}
		return
	}
	seen := d.reachable(d.initial)
	terminal := false
	for i, st := range d.states {
		if !seen[i] {
			v.problem(ErrUnreachable, "state %s is not reachable from %s", st.name, d.states[d.initial].name)
		}
		terminal = terminal || (seen[i] && st.terminal)
	}
	if !terminal && slices.ContainsFunc(d.states, func(st stateInfo[E, A]) bool { return st.terminal }) {
		v.problem(ErrNoTerminal, "no terminal state is reachable from %s", d.states[d.initial].name)
	}
}

// Terminal reports whether s is a terminal state of the definition; false
// for a state it does not declare.
func (d *Definition[S, E, C, A]) Terminal(s S) bool {
	i, ok := d.stateIndex(s)
	return ok && d.states[i].terminal
}

package mealy

import (
	"errors"
	"fmt"
	"slices"
)

// Build validates the declarations and returns the [Definition] they
// describe. It never panics: every problem found is reported, joined with
// [errors.Join], each matching one of [ErrUndeclaredState], [ErrDuplicate],
// [ErrInvalidDeclaration], [ErrNoWayOut] and, under [Builder.Strict],
// [ErrFailureNotHandled], [ErrUnreachable] and [ErrNoTerminal]. On error the
// Definition is nil.
//
// Build calls the key functions on the states given to [TransitionSpec.To]
// and the events given to [StateSpec.Timeout].
func (b *Builder[S, E, C, A, SK, EK]) Build() (*Definition[S, E, C, A], error) {
	if b == nil || b.stateKey == nil || b.eventKey == nil {
		return nil, fmt.Errorf("%w: nil key function given to New", ErrInvalidDeclaration)
	}
	v := &validator[S, E, C, A, SK, EK]{b: b, stateIdx: make(map[SK]int), eventIdx: make(map[EK]int)}
	return v.build()
}

// validator holds the working data of one Build.
type validator[S, E, C any, A fmt.Stringer, SK, EK comparable] struct {
	b        *Builder[S, E, C, A, SK, EK]
	problems []error

	declared  bool // some state was declared: references must be declared
	stateIdx  map[SK]int
	stateKeys []SK
	eventIdx  map[EK]int
	eventKeys []EK
}

func (v *validator[S, E, C, A, SK, EK]) problem(sentinel error, format string, args ...any) {
	v.problems = append(v.problems, fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...))
}

func (v *validator[S, E, C, A, SK, EK]) addState(k SK) int {
	return intern(v.stateIdx, &v.stateKeys, k)
}

// refState returns the index of the state k that what refers to, adding it
// when states are not declared; -1 if it is undeclared.
func (v *validator[S, E, C, A, SK, EK]) refState(k SK, what string) int {
	if i, ok := v.stateIdx[k]; ok {
		return i
	}
	if v.declared {
		v.problem(ErrUndeclaredState, "%s names state %s, which is not declared", what, keyName(k))
		return -1
	}
	return v.addState(k)
}

func (v *validator[S, E, C, A, SK, EK]) addEvent(k EK) int {
	return intern(v.eventIdx, &v.eventKeys, k)
}

// intern returns the index of k in keys, appending it (and recording its
// index in idx) the first time it is seen.
func intern[K comparable](idx map[K]int, keys *[]K, k K) int {
	if i, ok := idx[k]; ok {
		return i
	}
	idx[k] = len(*keys)
	*keys = append(*keys, k)
	return len(*keys) - 1
}

// describe names a transition spec in messages.
func (v *validator[S, E, C, A, SK, EK]) describe(t *TransitionSpec[S, E, C, A, SK, EK]) string {
	if t.any {
		return "any-state transition on " + keyName(t.event)
	}
	return "transition from " + keyName(t.from) + " on " + keyName(t.event)
}

// resolved is a transition spec with its states as indexes.
type resolved struct {
	from    int   // -1 for any-state or undeclared
	except  []int // any-state only
	to      int   // targetTo
	targets []int // targetChoose
	ok      bool  // usable for the table
}

func (v *validator[S, E, C, A, SK, EK]) build() (*Definition[S, E, C, A], error) {
	b := v.b

	// States: the declared ones, else every state referenced, in order.
	v.declared = len(b.states) > 0
	for _, s := range b.states {
		v.addState(s.key)
	}
	initial := -1
	if b.initialSet > 1 {
		v.problem(ErrDuplicate, "initial state declared %d times", b.initialSet)
	}
	if b.initialSet > 0 { // the last one counts, so later checks still run
		initial = v.refState(b.initial, "Initial")
	}
	res := make([]resolved, len(b.trans))
	for n, t := range b.trans {
		r := resolved{from: -1, to: -1, ok: true}
		what := v.describe(t)
		if !t.any {
			if r.from = v.refState(t.from, what); r.from < 0 {
				r.ok = false
			}
		}
		for _, k := range t.except {
			if i := v.refState(k, what+" (except)"); i >= 0 {
				r.except = append(r.except, i)
			}
		}
		v.addEvent(t.event)
		switch {
		case t.kindSet == 0:
			v.problem(ErrInvalidDeclaration, "%s has no target: call To, Stay or Choose", what)
			r.ok = false
		case t.kindSet > 1:
			v.problem(ErrDuplicate, "%s is given %d targets", what, t.kindSet)
			r.ok = false
		case t.kind == targetTo:
			if r.to = v.refState(b.stateKey(t.target), what); r.to < 0 {
				r.ok = false
			}
		case t.kind == targetChoose:
			if t.choose == nil {
				v.problem(ErrInvalidDeclaration, "%s has a nil Choose handler", what)
				r.ok = false
			}
			if len(t.targets) == 0 {
				v.problem(ErrInvalidDeclaration, "%s declares no targets for its Choose handler", what)
				r.ok = false
			}
			for _, k := range t.targets {
				i := v.refState(k, what)
				if i < 0 {
					r.ok = false
				} else if !slices.Contains(r.targets, i) {
					r.targets = append(r.targets, i)
				}
			}
		}
		res[n] = r
	}
	for _, s := range b.states {
		if s.timeoutSet > 0 {
			v.addEvent(b.eventKey(s.timeoutEvent))
		}
	}
	failure := -1
	if b.failureSet > 1 {
		v.problem(ErrDuplicate, "failure event declared %d times", b.failureSet)
	}
	if b.failureSet > 0 {
		failure = v.addEvent(b.failure)
	}
	switch {
	case b.policySet > 1:
		v.problem(ErrDuplicate, "unhandled-event policy set %d times", b.policySet)
	case b.policy == policyHook && b.hook == nil:
		v.problem(ErrInvalidDeclaration, "OnUnhandled given a nil hook")
	}

	nS, nE := len(v.stateKeys), len(v.eventKeys)
	d := &Definition[S, E, C, A]{
		states:  make([]stateInfo[E, A], nS),
		events:  make([]string, nE),
		nEvents: nE,
		table:   make([]*edge[S, E, C, A], nS*nE),
		initial: initial,
		failure: failure,
		policy:  b.policy,
		hook:    b.hook,
	}
	byName := make(map[string]int, nS)
	for i, k := range v.stateKeys {
		st := &d.states[i]
		st.name = keyName(k)
		if j, ok := byName[st.name]; ok {
			v.problem(ErrDuplicate, "states %d and %d are both named %q", j, i, st.name)
		}
		byName[st.name] = i
		if spec := b.stateByKey[k]; spec != nil {
			st.entry, st.exit, st.terminal = spec.entry, spec.exit, spec.terminal
		}
	}
	for j, k := range v.eventKeys {
		d.events[j] = keyName(k)
	}

	// The table: specific transitions first, then any-state ones fill the
	// gaps of non-terminal states.
	specs := make([]int, nS*nE) // index+1 of the spec in each cell
	anyByEvent := make([]int, nE)
	for n, t := range b.trans {
		r := res[n]
		if !r.ok {
			continue
		}
		j := v.eventIdx[t.event]
		if t.any {
			if anyByEvent[j] != 0 {
				v.problem(ErrDuplicate, "%s is declared twice", v.describe(t))
				continue
			}
			anyByEvent[j] = n + 1
			continue
		}
		if specs[r.from*nE+j] != 0 {
			v.problem(ErrDuplicate, "%s is declared twice", v.describe(t))
			continue
		}
		specs[r.from*nE+j] = n + 1
		if d.states[r.from].terminal && j != failure && leaves(r, t.kind, r.from) {
			v.problem(ErrInvalidDeclaration, "terminal state %s may leave: %s has a target other than %s (only the failure event may leave a terminal state)",
				d.states[r.from].name, v.describe(t), d.states[r.from].name)
		}
	}
	for i := range nS {
		for j := range nE {
			n := specs[i*nE+j]
			isAny := false
			if n == 0 {
				if a := anyByEvent[j]; a != 0 && !d.states[i].terminal && !slices.Contains(res[a-1].except, i) {
					n, isAny = a, true
				}
			}
			if n == 0 {
				continue
			}
			t, r := b.trans[n-1], res[n-1]
			d.table[i*nE+j] = v.edge(d, i, t, r, isAny)
		}
	}

	// Timeouts.
	for _, s := range b.states {
		if s.timeoutSet == 0 {
			continue
		}
		i := v.stateIdx[s.key]
		st := &d.states[i]
		if s.timeoutSet > 1 {
			v.problem(ErrDuplicate, "state %s declares %d timeouts", st.name, s.timeoutSet)
			continue
		}
		if s.timeout <= 0 {
			v.problem(ErrInvalidDeclaration, "state %s declares a timeout of %v; it must be positive", st.name, s.timeout)
			continue
		}
		j := v.eventIdx[b.eventKey(s.timeoutEvent)]
		switch e := d.table[i*nE+j]; {
		case e == nil:
			v.problem(ErrInvalidDeclaration, "state %s times out with event %s, which it does not handle", st.name, d.events[j])
		case e.kind == targetStay:
			v.problem(ErrInvalidDeclaration, "state %s times out with event %s, which it handles with Stay: the deadline would stay armed and past", st.name, d.events[j])
		default:
			st.timeout, st.timeoutEvent, st.timeoutName, st.timed = s.timeout, s.timeoutEvent, d.events[j], true
		}
	}

	// Ways out, and the buffer Handle returns actions in.
	for i := range nS {
		for j := range nE {
			e := d.table[i*nE+j]
			if e == nil {
				continue
			}
			switch e.kind {
			case targetTo:
				d.states[i].wayOut = d.states[i].wayOut || e.to != i
				d.maxActions = max(d.maxActions, len(e.actions))
			case targetStay:
				d.maxActions = max(d.maxActions, len(e.actions))
			case targetChoose:
				for _, c := range e.choices {
					d.states[i].wayOut = d.states[i].wayOut || c.to != i
					d.maxActions = max(d.maxActions, len(c.actions))
				}
			}
		}
	}
	if initial >= 0 && !d.states[initial].wayOut {
		v.problem(ErrNoWayOut, "initial state %s has no transition to another state", d.states[initial].name)
	}
	if b.strict {
		v.strict(d)
	}
	if len(v.problems) > 0 {
		return nil, errors.Join(v.problems...)
	}

	d.stateIndex = indexer(b.stateKey, v.stateKeys, v.stateIdx)
	d.eventIndex = indexer(b.eventKey, v.eventKeys, v.eventIdx)
	return d, nil
}

// linearMax is the number of keys up to which a linear scan finds a key's
// index faster than a map.
const linearMax = 8

// indexer returns a function giving the index of a value's key.
func indexer[T any, K comparable](key func(T) K, keys []K, idx map[K]int) func(T) (int, bool) {
	if len(keys) <= linearMax {
		keys = slices.Clone(keys)
		return func(v T) (int, bool) {
			k := key(v)
			for i, x := range keys {
				if x == k {
					return i, true
				}
			}
			return 0, false
		}
	}
	return func(v T) (int, bool) {
		i, ok := idx[key(v)]
		return i, ok
	}
}

// leaves reports whether a transition of kind from state i can enter
// another state.
func leaves(r resolved, kind targetKind, i int) bool {
	switch kind {
	case targetTo:
		return r.to != i
	case targetChoose:
		return slices.ContainsFunc(r.targets, func(t int) bool { return t != i })
	}
	return false
}

// edge builds the table entry for the transition t taken from state i,
// precomputing its action lists: exit, entry, then its own actions.
func (v *validator[S, E, C, A, SK, EK]) edge(d *Definition[S, E, C, A], i int, t *TransitionSpec[S, E, C, A, SK, EK], r resolved, isAny bool) *edge[S, E, C, A] {
	e := &edge[S, E, C, A]{kind: t.kind, own: t.actions, anyState: isAny, to: i}
	switch t.kind {
	case targetStay:
		e.actions = slices.Clip(slices.Clone(t.actions))
	case targetTo:
		e.target, e.to = t.target, r.to
		e.actions = d.concat(i, r.to, t.actions)
	case targetChoose:
		e.choose = t.choose
		for _, to := range r.targets {
			e.choices = append(e.choices, choice[A]{to: to, actions: d.concat(i, to, t.actions)})
		}
	}
	return e
}

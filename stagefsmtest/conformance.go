package stagefsmtest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/stagefsm/stagefsm"
)

// MachineSpec describes a [stagefsm.Machine] implementation for
// [TestMachine]: how to make one, and a few events it handles, rejects and
// does not handle. A handful of cases is enough; list at least one of each
// kind the machine has.
type MachineSpec[S comparable, E, C, A any] struct {
	// New returns a new machine whose state is initial, as a supervisor's
	// BuildStateMachine does. It is called once or more per case. Required.
	New func(initial S) (stagefsm.Machine[S, E, C, A], error)
	// Context returns the stage context passed to Handle, for the cases
	// that have no Context of their own. Nil means the zero C.
	Context func() C

	// Handled are events the machine handles: in From, Event leads to To.
	Handled []MachineCase[S, E, C]
	// Rejected are events for which the machine has a transition in From
	// but whose handler returns an error (To is ignored).
	Rejected []MachineCase[S, E, C]
	// Unhandled are events the machine has no transition for in From (To
	// is ignored).
	Unhandled []MachineCase[S, E, C]

	// RetainsActions documents that the slices Handle returns belong to the
	// machine (a buffer reused by the next Handle, or the machine's own
	// action lists), so a caller must neither keep nor modify them.
	// [stagefsm.Run] allows that; set it and TestMachine skips the checks
	// that a returned slice is the caller's.
	RetainsActions bool
}

// MachineCase is one event of a [MachineSpec]: Event fed in state From, and
// for a handled event the state To it leads to. Context, if not nil,
// returns the stage context for this case (a handler may decide on it), in
// place of [MachineSpec].Context.
type MachineCase[S, E, C any] struct {
	From    S
	Event   E
	To      S
	Context func() C
}

// TestMachine checks that the machines spec describes keep the contract
// [stagefsm.Run] relies on, in the spirit of [testing/slogtest]. It reports
// each violation with t.Errorf, naming the rule and the case, and goes on
// with the next case. For each case it uses a new machine from spec.New,
// which must be in the state it was asked for. It checks that:
//
//   - a handled event commits its state before Handle returns: State
//     reports To as soon as Handle has returned its actions, and reading it
//     twice gives the same state;
//   - a rejected or unhandled event returns an error and no actions, and
//     leaves the state unchanged; the machine still handles a handled event
//     of the same state afterwards;
//   - an unhandled event's error matches [stagefsm.ErrUnhandledEvent];
//   - a cancelled context does not wedge the machine: Handle with a done
//     context either handles the event or fails leaving the state as it
//     was, and in the latter case the same event is then handled with a
//     live context;
//   - unless spec.RetainsActions is set, the returned slice is the caller's:
//     a later Handle does not change it, and modifying it does not change
//     what a new machine returns for the same event;
//   - no method panics.
func TestMachine[S comparable, E, C, A any](t testing.TB, spec MachineSpec[S, E, C, A]) {
	t.Helper()
	if spec.New == nil {
		t.Errorf("stagefsmtest: TestMachine: MachineSpec.New is nil")
		return
	}
	if len(spec.Handled)+len(spec.Rejected)+len(spec.Unhandled) == 0 {
		t.Errorf("stagefsmtest: TestMachine: MachineSpec has no cases")
		return
	}
	ck := &checker[S, E, C, A]{t: t, spec: spec}
	for i, tc := range spec.Handled {
		ck.name = fmt.Sprintf("Handled[%d] %v --%v--> %v", i, tc.From, tc.Event, tc.To)
		ck.handled(tc)
	}
	for i, tc := range spec.Rejected {
		ck.name = fmt.Sprintf("Rejected[%d] %v --%v-->", i, tc.From, tc.Event)
		ck.refused(tc, false)
	}
	for i, tc := range spec.Unhandled {
		ck.name = fmt.Sprintf("Unhandled[%d] %v --%v-->", i, tc.From, tc.Event)
		ck.refused(tc, true)
	}
}

type checker[S comparable, E, C, A any] struct {
	t    testing.TB
	spec MachineSpec[S, E, C, A]
	name string // the case being checked
}

func (ck *checker[S, E, C, A]) errorf(format string, args ...any) {
	ck.t.Helper()
	ck.t.Errorf("stagefsmtest: machine conformance: %s: %s", ck.name, fmt.Sprintf(format, args...))
}

// newMachine returns a new machine in tc's From state and the stage
// context for tc, or false after reporting why it cannot.
func (ck *checker[S, E, C, A]) newMachine(tc MachineCase[S, E, C]) (m stagefsm.Machine[S, E, C, A], c C, ok bool) {
	ck.t.Helper()
	err := catch(func() error {
		var err error
		m, err = ck.spec.New(tc.From)
		return err
	})
	switch {
	case err != nil:
		ck.errorf("New(%v): %v", tc.From, err)
		return m, c, false
	case m == nil:
		ck.errorf("New(%v) returned a nil machine", tc.From)
		return m, c, false
	}
	s, ok := ck.state(m)
	if ok && s != tc.From {
		ck.errorf("New(%v) returned a machine in state %v", tc.From, s)
		return m, c, false
	}
	c, ok2 := ck.context(tc)
	return m, c, ok && ok2
}

// context returns the stage context for tc.
func (ck *checker[S, E, C, A]) context(tc MachineCase[S, E, C]) (c C, ok bool) {
	ck.t.Helper()
	f := tc.Context
	if f == nil {
		f = ck.spec.Context
	}
	if f == nil {
		return c, true
	}
	if err := catch(func() error { c = f(); return nil }); err != nil {
		ck.errorf("Context: %v", err)
		return c, false
	}
	return c, true
}

// state reads m's state twice, reporting a panic or an unstable state.
func (ck *checker[S, E, C, A]) state(m stagefsm.Machine[S, E, C, A]) (s S, ok bool) {
	ck.t.Helper()
	var again S
	if err := catch(func() error { s, again = m.State(), m.State(); return nil }); err != nil {
		ck.errorf("State: %v", err)
		return s, false
	}
	if s != again {
		ck.errorf("State is not stable: %v, then %v", s, again)
		return s, false
	}
	return s, true
}

func (ck *checker[S, E, C, A]) handle(ctx context.Context, m stagefsm.Machine[S, E, C, A], e E, c C) (actions []A, ok bool, err error) {
	ck.t.Helper()
	var pe *stagefsm.PanicError
	err = catch(func() error {
		var err error
		actions, err = m.Handle(ctx, e, c)
		return err
	})
	if errors.As(err, &pe) {
		ck.errorf("Handle panicked: %v", pe.Value)
		return nil, false, err
	}
	return actions, true, err
}

// expectState reports a state other than want.
func (ck *checker[S, E, C, A]) expectState(m stagefsm.Machine[S, E, C, A], want S, why string) bool {
	ck.t.Helper()
	s, ok := ck.state(m)
	if ok && s != want {
		ck.errorf("State() = %v after Handle, want %v (%s)", s, want, why)
		return false
	}
	return ok
}

func (ck *checker[S, E, C, A]) handled(tc MachineCase[S, E, C]) {
	ck.t.Helper()
	m, c, ok := ck.newMachine(tc)
	if !ok {
		return
	}
	actions, ok, err := ck.handle(context.Background(), m, tc.Event, c)
	if !ok {
		return
	}
	if err != nil {
		ck.errorf("Handle returned error %v, want nil (the spec lists the event as handled)", err)
		return
	}
	if !ck.expectState(m, tc.To, "the state must be committed before Handle returns its actions") {
		return
	}
	if !ck.spec.RetainsActions && len(actions) > 0 {
		ck.callerOwnsActions(tc, m, actions)
	}
	ck.cancelled(tc)
}

// callerOwnsActions checks that actions, which m returned for tc, belong to
// the caller.
func (ck *checker[S, E, C, A]) callerOwnsActions(tc MachineCase[S, E, C], m stagefsm.Machine[S, E, C, A], actions []A) {
	ck.t.Helper()
	ref := append([]A(nil), actions...)
	for _, next := range ck.spec.Handled {
		if next.From != tc.To {
			continue
		}
		nc, ok := ck.context(next)
		if !ok {
			return
		}
		if _, ok, err := ck.handle(context.Background(), m, next.Event, nc); !ok || err != nil {
			break // reported by next's own case
		}
		if !sameActions(actions, ref) {
			ck.errorf("the next Handle (%v) changed the actions this one returned: the machine reuses its slice; document it and set MachineSpec.RetainsActions", next.Event)
			return
		}
		break
	}
	clear(actions)
	m2, c2, ok := ck.newMachine(tc)
	if !ok {
		return
	}
	again, ok, err := ck.handle(context.Background(), m2, tc.Event, c2)
	if !ok || err != nil {
		if ok {
			ck.errorf("Handle on a second machine returned error %v", err)
		}
		return
	}
	if !sameActions(again, ref) {
		ck.errorf("modifying the returned actions changed what a new machine returns: the slice is the machine's own storage; document it and set MachineSpec.RetainsActions")
	}
}

// cancelled checks that a done context does not wedge the machine.
func (ck *checker[S, E, C, A]) cancelled(tc MachineCase[S, E, C]) {
	ck.t.Helper()
	m, c, ok := ck.newMachine(tc)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	actions, ok, err := ck.handle(ctx, m, tc.Event, c)
	if !ok {
		return
	}
	if err == nil {
		ck.expectState(m, tc.To, "Handle with a cancelled context succeeded")
		return
	}
	if len(actions) > 0 {
		ck.errorf("Handle with a cancelled context returned %d actions with its error %v, want none", len(actions), err)
	}
	if !ck.expectState(m, tc.From, "Handle with a cancelled context failed: the state must be unchanged") {
		return
	}
	_, ok, err2 := ck.handle(context.Background(), m, tc.Event, c)
	if !ok {
		return
	}
	if err2 != nil {
		ck.errorf("after a Handle with a cancelled context failed (%v), the machine no longer handles the event: %v", err, err2)
		return
	}
	ck.expectState(m, tc.To, "after a Handle with a cancelled context failed, the event is handled with a live one")
}

// refused checks a rejected or unhandled event.
func (ck *checker[S, E, C, A]) refused(tc MachineCase[S, E, C], unhandled bool) {
	ck.t.Helper()
	m, c, ok := ck.newMachine(tc)
	if !ok {
		return
	}
	actions, ok, err := ck.handle(context.Background(), m, tc.Event, c)
	if !ok {
		return
	}
	if err == nil {
		ck.errorf("Handle returned a nil error and %d actions, want an error (the spec lists the event as refused)", len(actions))
		return
	}
	if len(actions) > 0 {
		ck.errorf("Handle returned %d actions with its error %v, want none", len(actions), err)
	}
	if unhandled && !errors.Is(err, stagefsm.ErrUnhandledEvent) {
		ck.errorf("error %q does not match stagefsm.ErrUnhandledEvent (wrap it with %%w)", err)
	}
	if !ck.expectState(m, tc.From, "a Handle that fails must leave the state unchanged") {
		return
	}
	for _, h := range ck.spec.Handled {
		if h.From != tc.From {
			continue
		}
		hc, ok := ck.context(h)
		if !ok {
			return
		}
		_, ok, err2 := ck.handle(context.Background(), m, h.Event, hc)
		if !ok {
			return
		}
		if err2 != nil {
			ck.errorf("after the failed Handle the machine no longer handles %v: %v", h.Event, err2)
			return
		}
		ck.expectState(m, h.To, "after a failed Handle, a handled event of the same state")
		return
	}
}

// catch runs f, turning a panic into a *stagefsm.PanicError.
func catch(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &stagefsm.PanicError{Value: v}
		}
	}()
	return f()
}

// sameActions reports whether a and b hold the same actions: identical
// values, where functions, pointers, maps, channels and slices compare by
// identity (an action list is expected to be copied, not rebuilt).
func sameActions[A any](a, b []A) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !same(reflect.ValueOf(&a[i]).Elem(), reflect.ValueOf(&b[i]).Elem()) {
			return false
		}
	}
	return true
}

func same(a, b reflect.Value) bool {
	if a.Type() != b.Type() {
		return false
	}
	switch a.Kind() {
	case reflect.Func, reflect.Map, reflect.Chan, reflect.Pointer, reflect.UnsafePointer:
		return a.Pointer() == b.Pointer()
	case reflect.Slice:
		return a.Pointer() == b.Pointer() && a.Len() == b.Len()
	case reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return same(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if !same(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Array:
		for i := range a.Len() {
			if !same(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	default:
		return a.Equal(b)
	}
}

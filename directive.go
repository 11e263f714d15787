package stagefsm

import "fmt"

// directiveKind says what Run does with a Directive. The zero value is
// invalid on purpose: a dispatch that forgot to decide must not look like a
// decision.
type directiveKind uint8

const (
	kindInvalid directiveKind = iota
	kindContinue
	kindIdle
	kindTransition
	kindTerminate
)

// Directive is what [HandlerSupervised.DispatchState] tells [Run] to do next.
// Build one with [Continue], [Idle], [Transition] or [Terminate].
//
// The zero Directive is invalid: returned with a nil error it is treated as a
// dispatch failure whose cause wraps [ErrZeroDirective], so the FSM sees the
// bug instead of the loop spinning silently.
//
// A Directive is a small value; returning one does not allocate.
type Directive[E any] struct {
	kind  directiveKind
	event E
}

// Continue reports that dispatch did some work and wants to be called again
// at once: [Run] dispatches again without waiting and resets the idle
// backoff.
func Continue[E any]() Directive[E] { return Directive[E]{kind: kindContinue} }

// Idle reports that dispatch found nothing to do. [Run] waits per the idle
// backoff (see [WithIdleBackoff]) before dispatching again. The wait ends
// early when the context is done or a state timeout of the machine falls due.
func Idle[E any]() Directive[E] { return Directive[E]{kind: kindIdle} }

// Transition asks [Run] to feed event to the machine, then run the actions
// the machine returns, in order.
func Transition[E any](event E) Directive[E] {
	return Directive[E]{kind: kindTransition, event: event}
}

// Terminate ends the loop: [Run] calls
// [HandlerSupervised.WriteCompletionEvent] exactly once and returns its
// error.
func Terminate[E any]() Directive[E] { return Directive[E]{kind: kindTerminate} }

// Event returns the event of a [Transition] directive. ok is false for every
// other directive.
func (d Directive[E]) Event() (event E, ok bool) {
	return d.event, d.kind == kindTransition
}

// String returns "Continue", "Idle", "Transition(<event>)", "Terminate", or
// "Directive(invalid)" for the zero Directive.
func (d Directive[E]) String() string {
	switch d.kind {
	case kindContinue:
		return "Continue"
	case kindIdle:
		return "Idle"
	case kindTransition:
		return fmt.Sprintf("Transition(%v)", d.event)
	case kindTerminate:
		return "Terminate"
	default:
		return "Directive(invalid)"
	}
}

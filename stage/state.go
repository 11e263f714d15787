package stage

import "fmt"

// StateKind is the variant of a stage's [State].
type StateKind uint8

// The lifecycle of every stage (see the package doc for the transition
// tables). WaitingForGun is used by sources only.
const (
	// Created: the stage exists; it waits for Initialize.
	Created StateKind = iota
	// Initialized: the handler's Open hook ran; the stage waits for Ready.
	Initialized
	// WaitingForGun: a source that is ready waits for Start, which the
	// pipeline sends once every other stage is running.
	WaitingForGun
	// Running: the stage processes items.
	Running
	// Draining: the stage finishes what it has. A source sends its last
	// batch; a transform or sink consumes its input up to end of input.
	Draining
	// Drained: the stage finished normally and forwarded end of input.
	// Terminal.
	Drained
	// Failed: the stage failed; State.Reason says why. Terminal.
	Failed
	// Hydrating: a [Join] in finite reference mode reads its reference
	// input to the end before it reads any stream item. Joins only.
	Hydrating
)

var stateNames = [...]string{"Created", "Initialized", "WaitingForGun", "Running", "Draining", "Drained", "Failed", "Hydrating"}

// String returns the name of the kind, or "StateKind(n)" for an unknown
// value.
func (k StateKind) String() string {
	if int(k) < len(stateNames) {
		return stateNames[k]
	}
	return fmt.Sprintf("StateKind(%d)", uint8(k))
}

// State is the state of a stage's FSM: a kind and, for [Failed], the
// reason. The zero State is Created.
type State struct {
	Kind StateKind
	// Reason is why the stage failed; nil unless Kind is Failed.
	Reason error
}

// Terminal reports whether the stage has ended: Drained or Failed.
func (s State) Terminal() bool { return s.Kind == Drained || s.Kind == Failed }

// String returns the kind's name, with the reason for Failed:
// "Failed(reason)".
func (s State) String() string {
	if s.Kind == Failed && s.Reason != nil {
		return "Failed(" + s.Reason.Error() + ")"
	}
	return s.Kind.String()
}

func stateKind(s State) StateKind { return s.Kind }

// eventKind is the variant of an event.
type eventKind uint8

const (
	evInitialize    eventKind = iota // control: run the Open hook
	evReady                          // control: open the gate
	evStart                          // control: a source's gun
	evBeginDrain                     // control: finish what you have
	evReceivedEOF                    // dispatch: the input ended
	evCompleted                      // dispatch: a source's input ended, or its last batch went out
	evDrainComplete                  // dispatch: a draining stage reached end of input
	evError                          // failure, routed by the loop or sent as a control event
	evHydrated                       // dispatch: a join's reference input ended
)

var eventNames = [...]string{"Initialize", "Ready", "Start", "BeginDrain", "ReceivedEOF", "Completed", "DrainComplete", "Error", "Hydrated"}

func (k eventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("eventKind(%d)", uint8(k))
}

// event is fed to a stage's FSM. err is set for evError only.
type event struct {
	kind eventKind
	err  error
}

func (e event) String() string { return e.kind.String() }

func eventKindOf(e event) eventKind { return e.kind }

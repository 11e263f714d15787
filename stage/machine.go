package stage

import (
	"context"
	"sync"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
)

// definition is the validated FSM of a stage kind.
type definition = mealy.Definition[State, event, *unit, action]

// definitions are built once per kind, on first use.
var definitions = [...]func() (*definition, error){
	kindSource:    sync.OnceValues(func() (*definition, error) { return define(kindSource) }),
	kindTransform: sync.OnceValues(func() (*definition, error) { return define(kindTransform) }),
	kindSink:      sync.OnceValues(func() (*definition, error) { return define(kindSink) }),
	kindJoin:      sync.OnceValues(func() (*definition, error) { return define(kindJoin) }),
}

func newMachine(k kind, initial State) (stagefsm.Machine[State, event, *unit, action], error) {
	def, err := definitions[k]()
	if err != nil {
		return nil, err
	}
	m, err := def.New(initial)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// define declares the FSM of a stage kind, after the reference's stage
// machines:
//
//	Created       -Initialize->    Initialized   [Open]
//	Initialized   -Ready->         Running                  (transform, sink)
//	Initialized   -Ready->         WaitingForGun            (source)
//	WaitingForGun -Start->         Running                  (source)
//	Initialized   -Ready->         Hydrating                (join)
//	Hydrating     -Hydrated->      Running                  (join: its reference input ended)
//	Running       -Completed->     Draining                 (source: end of input)
//	Running       -ReceivedEOF->   Draining                 (transform, sink)
//	Draining      -Completed->     Drained       [ForwardEOF, Cleanup]                (source)
//	Draining      -DrainComplete-> Drained       [DrainHandler, ForwardEOF, Cleanup]  (transform)
//	Draining      -DrainComplete-> Drained       [DrainHandler, Cleanup]              (sink)
//	any non-terminal -BeginDrain-> Draining;  Draining -BeginDrain-> Draining (stay)
//	any non-terminal -Error(e)->   Failed(e)     [SendFailure, Cleanup]
//	Drained          -Error(e)->   Failed(e)     [SendFailure, Cleanup]
//	Failed           -Error->      Failed        (stay: idempotent)
//
// Drained and Failed are terminal. Drained still handles Error, the
// failure event (mealy lets a terminal state leave on it), because the
// actions that enter it run after it is entered: a failing Cleanup turns a
// drained stage into a failed one. No control event reaches it (its
// control mode is Ignore) and its dispatch terminates.
func define(k kind) (*definition, error) {
	b := mealy.New[State, event, *unit, action](stateKind, eventKindOf)
	b.Initial(Created)
	b.FailureEvent(evError)
	b.Strict()
	b.State(Created)
	b.State(Initialized)
	if k == kindSource {
		b.State(WaitingForGun)
	}
	if k == kindJoin {
		b.State(Hydrating)
	}
	b.State(Running)
	b.State(Draining)
	b.State(Drained).Terminal()
	b.State(Failed).Terminal()

	b.On(Created, evInitialize).To(State{Kind: Initialized}).Do(actOpen)
	switch k {
	case kindSource:
		b.On(Initialized, evReady).To(State{Kind: WaitingForGun})
		b.On(WaitingForGun, evStart).To(State{Kind: Running})
		b.On(Running, evCompleted).To(State{Kind: Draining})
		b.On(Draining, evCompleted).To(State{Kind: Drained}).Do(actForwardEOF, actCleanup)
	case kindJoin:
		b.On(Initialized, evReady).To(State{Kind: Hydrating})
		b.On(Hydrating, evHydrated).To(State{Kind: Running})
		b.On(Running, evReceivedEOF).To(State{Kind: Draining})
		b.On(Draining, evDrainComplete).To(State{Kind: Drained}).Do(actDrainHandler, actForwardEOF, actCleanup)
	case kindTransform:
		b.On(Initialized, evReady).To(State{Kind: Running})
		b.On(Running, evReceivedEOF).To(State{Kind: Draining})
		b.On(Draining, evDrainComplete).To(State{Kind: Drained}).Do(actDrainHandler, actForwardEOF, actCleanup)
	case kindSink:
		b.On(Initialized, evReady).To(State{Kind: Running})
		b.On(Running, evReceivedEOF).To(State{Kind: Draining})
		b.On(Draining, evDrainComplete).To(State{Kind: Drained}).Do(actDrainHandler, actCleanup)
	}
	b.OnAny(evBeginDrain, Draining).To(State{Kind: Draining})
	b.On(Draining, evBeginDrain).Stay()

	b.OnAny(evError).Choose(fail, Failed).Do(actSendFailure, actCleanup)
	b.On(Drained, evError).Choose(fail, Failed).Do(actSendFailure, actCleanup) // its entry actions failed
	b.On(Failed, evError).Stay()
	return b.Build()
}

// fail is the target of every Error transition: Failed, with the event's
// error as the reason.
func fail(_ context.Context, _ State, e event, _ *unit) (State, error) {
	return State{Kind: Failed, Reason: e.err}, nil
}

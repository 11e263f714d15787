package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
)

// The gate stage is the smallest stage a control plane can hold: it starts
// in Gated, whose control mode is Block, and waits there for the Open
// control event; Opened terminates. It is what a stage costs when it
// waits for a start signal, with nothing of its own.

type gateState uint8

const (
	gated gateState = iota
	opened
)

func (s gateState) String() string { return [...]string{"Gated", "Opened"}[s] }

type gateEvent uint8

const openEvent gateEvent = 0

func (gateEvent) String() string { return "Open" }

// gateAction is never returned: the gate's transition has no action.
type gateAction struct{}

func (gateAction) Execute(context.Context, struct{}) error { return nil }
func (gateAction) String() string                          { return "none" }

type gateMachine = stagefsm.Machine[gateState, gateEvent, struct{}, gateAction]

// handGate is a hand-written gate machine.
type handGate struct{ state gateState }

func (m *handGate) State() gateState { return m.state }

func (m *handGate) Handle(_ context.Context, e gateEvent, _ struct{}) ([]gateAction, error) {
	if m.state != gated {
		return nil, fmt.Errorf("%w: %v in state %v", stagefsm.ErrUnhandledEvent, e, m.state)
	}
	m.state = opened
	return nil, nil
}

// mealyGate returns the factory of gate machines over one mealy definition.
func mealyGate() (func(gateState) (gateMachine, error), error) {
	b := mealy.New[gateState, gateEvent, struct{}, gateAction](
		func(s gateState) gateState { return s },
		func(e gateEvent) gateEvent { return e },
	)
	b.Initial(gated)
	b.State(gated)
	b.State(opened).Terminal()
	b.On(gated, openEvent).To(opened)
	def, err := b.Build()
	if err != nil {
		return nil, err
	}
	return func(initial gateState) (gateMachine, error) { return def.New(initial) }, nil
}

// gateStage is the supervisor every gate stage shares (by pointer, so that
// Start boxes nothing per stage). It counts the stages that reached the
// gate.
type gateStage struct {
	build   func(gateState) (gateMachine, error)
	reached atomic.Int64
}

var (
	_ stagefsm.HandlerSupervised[gateState, gateEvent, struct{}, gateAction] = (*gateStage)(nil)
	_ stagefsm.Controlled[gateState, gateEvent]                              = (*gateStage)(nil)
	_ stagefsm.Stoppable[gateEvent]                                          = (*gateStage)(nil)
)

var errGateDispatched = errors.New("stagescale: the gate state was dispatched")

func (g *gateStage) BuildStateMachine(initial gateState) (gateMachine, error) {
	return g.build(initial)
}

func (*gateStage) Name() string                               { return "gate" }
func (*gateStage) EventForActionError(error) gateEvent        { return openEvent }
func (*gateStage) WriteCompletionEvent(context.Context) error { return nil }
func (*gateStage) StopEvent() gateEvent                       { return openEvent }

func (*gateStage) DispatchState(_ context.Context, s gateState, _ struct{}) (stagefsm.Directive[gateEvent], error) {
	if s == opened {
		return stagefsm.Terminate[gateEvent](), nil
	}
	return stagefsm.Directive[gateEvent]{}, errGateDispatched
}

// ControlMode blocks in Gated. It is called once as each stage enters a
// state: the first call of a stage means that it is about to block.
func (g *gateStage) ControlMode(s gateState) stagefsm.ControlMode {
	if s == gated {
		g.reached.Add(1)
		return stagefsm.ControlBlock
	}
	return stagefsm.ControlIgnore
}

func (*gateStage) ControlClosed(gateState) (gateEvent, bool) { return 0, false }

package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
	"github.com/stagefsm/stagefsm/stage"
)

// The lifecycle of one order, a Mealy machine per order in the keyed stage
// "lifecycle":
//
//	new -placed-> placed -paid-> paid -shipped-> shipped
//	placed -timeout (-abandon-after)-> abandoned
//	placed -drain-> abandoned          (end of input, never paid)
//	paid -drain-> unshipped            (end of input, paid, never shipped)
//
// The three end states are terminal: the order's Outcome is emitted and its
// instance removed. Any other event is rejected (mealy.ErrUnhandledEvent):
// that event fails, and the order's instance is removed — a paid or shipped
// event of an order whose placed row was rejected upstream ends so.

// Status is the state key of the lifecycle machine.
type Status uint8

// The statuses of an order.
const (
	statusNew Status = iota
	statusPlaced
	statusPaid
	statusShipped
	statusAbandoned
	statusUnshipped
)

var statusNames = [...]string{statusNew: "new", statusPlaced: "placed", statusPaid: "paid", statusShipped: "shipped", statusAbandoned: "abandoned", statusUnshipped: "unshipped"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// orderState is the state of one order's machine: its status and what the
// outcome needs, in 32 bytes.
type orderState struct {
	total    int64 // EUR cents
	cust     *Customer
	at       uint32 // placed, seconds since epoch
	qty      uint16
	country  uint8
	status   Status
	timedOut bool
}

// String formats the state for error messages without the customer's
// address, so that they read the same in every run.
func (s orderState) String() string {
	return s.status.String()
}

// step is the lifecycle's only action: report the outcome of an order that
// reached an end state.
type step uint8

const report step = 1

func (step) String() string { return "report" }

type scope = stage.Scope[int64, Outcome]

// lifecycleDef builds the lifecycle definition; abandonAfter is the timeout
// of the placed state.
func lifecycleDef(abandonAfter time.Duration) (*mealy.Definition[orderState, OrderEvent, *scope, step], error) {
	b := mealy.New[orderState, OrderEvent, *scope, step](
		func(s orderState) Status { return s.status },
		func(e OrderEvent) EventKind { return e.Kind })
	b.Initial(statusNew)
	b.State(statusNew)
	b.State(statusPlaced).Timeout(abandonAfter, OrderEvent{Kind: evTimeout})
	b.State(statusPaid)
	b.State(statusShipped).Terminal()
	b.State(statusAbandoned).Terminal()
	b.State(statusUnshipped).Terminal()
	b.On(statusNew, evPlaced).Choose(func(_ context.Context, _ orderState, e OrderEvent, _ *scope) (orderState, error) {
		return orderState{status: statusPlaced, qty: e.Quantity, at: e.At, total: e.TotalEUR, cust: e.Cust, country: e.Country}, nil
	}, statusPlaced)
	b.On(statusPlaced, evPaid).Choose(to(statusPaid, false), statusPaid)
	b.On(statusPlaced, evTimeout).Choose(to(statusAbandoned, true), statusAbandoned).Do(report)
	b.On(statusPlaced, evDrain).Choose(to(statusAbandoned, false), statusAbandoned).Do(report)
	b.On(statusPaid, evShipped).Choose(to(statusShipped, false), statusShipped).Do(report)
	b.On(statusPaid, evDrain).Choose(to(statusUnshipped, false), statusUnshipped).Do(report)
	return b.Build()
}

// to returns a Choose handler that keeps the order's data and sets its
// status.
func to(st Status, timedOut bool) func(context.Context, orderState, OrderEvent, *scope) (orderState, error) {
	return func(_ context.Context, s orderState, _ OrderEvent, _ *scope) (orderState, error) {
		s.status, s.timedOut = st, timedOut
		return s, nil
	}
}

// effect is an action and the machine that returned it: the keyed stage
// hands Act the action and the event, and the outcome of a timeout or of
// the drain event needs the order's data, which only the state holds.
type effect struct {
	step step
	m    *orderMachine
}

// orderMachine is one order's instance: the mealy machine, whose actions
// it returns as effects.
type orderMachine struct {
	*mealy.Machine[orderState, OrderEvent, *scope, step]
	fx [1]effect
}

func (o *orderMachine) Handle(ctx context.Context, e OrderEvent, c *scope) ([]effect, error) {
	steps, err := o.Machine.Handle(ctx, e, c)
	if err != nil || len(steps) == 0 {
		return nil, err
	}
	fx := o.fx[:0]
	for _, s := range steps {
		fx = append(fx, effect{step: s, m: o})
	}
	return fx, nil
}

// Outcome is how an order ended: the output of the lifecycle stage.
type Outcome struct {
	Order    int64
	TotalEUR int64 // cents
	Cust     *Customer
	At       uint32 // placed, seconds since epoch
	Quantity uint16
	Country  uint8  // index in countries
	Status   Status // statusShipped, statusAbandoned or statusUnshipped
	TimedOut bool   // abandoned by the timeout, not at end of input
}

// outcomeCounts counts the outcomes by status, and the abandoned ones by
// timeout.
type outcomeCounts struct {
	byStatus [len(statusNames)]atomic.Uint64
	timedOut atomic.Uint64
}

// lifecycleSpec is the keyed stage's spec: one orderMachine per order id.
func lifecycleSpec(def *mealy.Definition[orderState, OrderEvent, *scope, step], counts *outcomeCounts) stage.KeyedSpec[OrderEvent, int64, orderState, OrderEvent, effect, Outcome] {
	return stage.KeyedSpec[OrderEvent, int64, orderState, OrderEvent, effect, Outcome]{
		Key:   func(e OrderEvent) int64 { return e.Order },
		Event: func(e OrderEvent) OrderEvent { return e },
		New: func(int64) (stagefsm.Machine[orderState, OrderEvent, *scope, effect], error) {
			m, err := def.New(orderState{status: statusNew})
			if err != nil {
				return nil, err
			}
			return &orderMachine{Machine: m}, nil
		},
		// Under -state: an order's machine as a checkpoint saved it (its
		// timeout is armed again by the stage, for the time it had left).
		Restore: func(_ int64, s orderState) (stagefsm.Machine[orderState, OrderEvent, *scope, effect], error) {
			m, err := def.New(s)
			if err != nil {
				return nil, err
			}
			return &orderMachine{Machine: m}, nil
		},
		Codec: orderCodec{},
		Act: func(_ context.Context, fx effect, _ OrderEvent, sc *scope) error {
			s := fx.m.State()
			counts.byStatus[s.status].Add(1)
			if s.timedOut {
				counts.timedOut.Add(1)
			}
			sc.Emit(Outcome{Order: sc.Key(), Status: s.status, TimedOut: s.timedOut, Quantity: s.qty, At: s.at, TotalEUR: s.total, Cust: s.cust, Country: s.country})
			return nil
		},
		Terminal: def.Terminal,
		Drain:    func(int64) (OrderEvent, bool) { return OrderEvent{Kind: evDrain}, true },
	}
}

package mealy_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
)

// Door is a state with a payload: Locked carries the code. Doors are routed
// by their DoorKind only.
type Door struct {
	Kind DoorKind
	Code string // Locked only
}

type DoorKind int

const (
	Closed DoorKind = iota
	Open
	Locked
)

func (k DoorKind) String() string { return [...]string{"Closed", "Open", "Locked"}[k] }

func (d Door) String() string {
	if d.Kind == Locked {
		return "Locked(" + d.Code + ")"
	}
	return d.Kind.String()
}

// Input is an event; Lock and Unlock carry a code.
type Input struct {
	Kind InputKind
	Code string
}

type InputKind int

const (
	Push InputKind = iota
	Pull
	Lock
	Unlock
)

func (k InputKind) String() string { return [...]string{"Push", "Pull", "Lock", "Unlock"}[k] }

// Effect is an action: named, executed by stagefsm.Run.
type Effect string

func (e Effect) String() string { return string(e) }

func (e Effect) Execute(context.Context, *Log) error { fmt.Println("  effect:", e); return nil }

// Log is the stage context.
type Log struct{ Tries int }

func doorDefinition() (*mealy.Definition[Door, Input, *Log, Effect], error) {
	b := mealy.New[Door, Input, *Log, Effect](
		func(d Door) DoorKind { return d.Kind },
		func(i Input) InputKind { return i.Kind },
	)
	b.Initial(Closed)
	b.State(Closed)
	b.State(Open).Entry("lightOn").Exit("lightOff")
	b.State(Locked)
	b.On(Closed, Pull).To(Door{Kind: Open}).Do("creak")
	b.On(Open, Push).To(Door{Kind: Closed}).Do("slam")
	b.On(Closed, Lock).Choose(func(_ context.Context, _ Door, in Input, _ *Log) (Door, error) {
		return Door{Kind: Locked, Code: in.Code}, nil
	}, Locked)
	b.On(Locked, Unlock).Choose(func(_ context.Context, d Door, in Input, l *Log) (Door, error) {
		l.Tries++
		if in.Code != d.Code {
			return d, errors.New("wrong code")
		}
		return Door{Kind: Closed}, nil
	}, Closed)
	return b.Build()
}

// A machine routes by variant, hands payloads to handlers, and returns exit,
// entry and transition actions in that order.
func Example() {
	def, err := doorDefinition()
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := def.New(Door{Kind: Closed})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, log := context.Background(), &Log{}
	for _, in := range []Input{{Kind: Pull}, {Kind: Push}, {Kind: Lock, Code: "1234"}, {Kind: Unlock, Code: "0000"}, {Kind: Pull}, {Kind: Unlock, Code: "1234"}} {
		actions, err := m.Handle(ctx, in, log)
		switch {
		case errors.Is(err, mealy.ErrUnhandledEvent):
			fmt.Printf("%v: unhandled in %v\n", in.Kind, m.State())
		case err != nil:
			fmt.Printf("%v: %v, still %v\n", in.Kind, errors.Unwrap(err), m.State())
		default:
			fmt.Printf("%v: %v %v\n", in.Kind, m.State(), actions)
		}
	}
	// Output:
	// Pull: Open [lightOn creak]
	// Push: Closed [lightOff slam]
	// Lock: Locked(1234) []
	// Unlock: wrong code, still Locked(1234)
	// Pull: unhandled in Locked(1234)
	// Unlock: Closed []
}

// Build reports every problem at once; each matches a sentinel error.
func ExampleBuilder_Build() {
	b := mealy.New[Door, Input, *Log, Effect](
		func(d Door) DoorKind { return d.Kind },
		func(i Input) InputKind { return i.Kind },
	)
	b.State(Closed)
	b.State(Open).Timeout(-time.Second, Input{Kind: Push})
	b.On(Closed, Pull).To(Door{Kind: Open})
	b.On(Closed, Pull).To(Door{Kind: Closed})
	b.On(Open, Push).To(Door{Kind: Locked})
	_, err := b.Build()
	fmt.Println("duplicate:", errors.Is(err, mealy.ErrDuplicate))
	fmt.Println("undeclared:", errors.Is(err, mealy.ErrUndeclaredState))
	fmt.Println("invalid:", errors.Is(err, mealy.ErrInvalidDeclaration))
	fmt.Println("strict:", errors.Is(err, mealy.ErrUnreachable))
	// Output:
	// duplicate: true
	// undeclared: true
	// invalid: true
	// strict: false
}

func ExampleDefinition_Mermaid() {
	def, err := doorDefinition()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(def.Mermaid(Door{Kind: Open}))
	// Output:
	// stateDiagram-v2
	//     [*] --> Closed
	//     Open : entry / lightOn
	//     Open : exit / lightOff
	//     Closed --> Locked : Lock (choice)
	//     Closed --> Open : Pull / creak
	//     Locked --> Closed : Unlock (choice)
	//     Open --> Closed : Push / slam
	//     classDef current fill:#fde68a,stroke:#b45309,stroke-width:2px
	//     class Open current
}

// A state timeout is armed when the state is entered and reported to
// stagefsm.Run, which feeds its event when the deadline passes.
func ExampleStateSpec_Timeout() {
	b := mealy.New[Door, Input, *Log, Effect](
		func(d Door) DoorKind { return d.Kind },
		func(i Input) InputKind { return i.Kind },
	)
	b.State(Open).Timeout(30*time.Second, Input{Kind: Push}) // the door closes itself
	b.State(Closed)
	b.On(Open, Push).To(Door{Kind: Closed})
	b.On(Closed, Pull).To(Door{Kind: Open})
	def, err := b.Build()
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := def.New(Door{Kind: Open})
	if err != nil {
		fmt.Println(err)
		return
	}
	_, in, ok := m.Timeout()
	fmt.Println("open:", in.Kind, ok)
	if _, err := m.Handle(context.Background(), Input{Kind: Push}, &Log{}); err != nil {
		fmt.Println(err)
		return
	}
	_, _, ok = m.Timeout()
	fmt.Println("closed:", ok)
	// Output:
	// open: Push true
	// closed: false
}

// doorStage pulls the door open, pushes it shut, and terminates.
type doorStage struct {
	def *mealy.Definition[Door, Input, *Log, Effect]
}

func (doorStage) Name() string                        { return "door" }
func (doorStage) EventForActionError(err error) Input { return Input{Kind: Push} }

func (s doorStage) BuildStateMachine(initial Door) (stagefsm.Machine[Door, Input, *Log, Effect], error) {
	return s.def.New(initial)
}

func (doorStage) DispatchState(_ context.Context, d Door, l *Log) (stagefsm.Directive[Input], error) {
	fmt.Println("dispatch in", d)
	switch {
	case d.Kind == Open:
		return stagefsm.Transition(Input{Kind: Push}), nil
	case l.Tries == 0:
		l.Tries++
		return stagefsm.Transition(Input{Kind: Pull}), nil
	default:
		return stagefsm.Terminate[Input](), nil
	}
}

func (doorStage) WriteCompletionEvent(context.Context) error { fmt.Println("done"); return nil }

// stagefsm.Run drives a mealy machine; the machine never runs actions itself.
func Example_run() {
	def, err := doorDefinition()
	if err != nil {
		fmt.Println(err)
		return
	}
	err = stagefsm.Run(context.Background(), doorStage{def: def}, Door{Kind: Closed}, &Log{})
	fmt.Println("err:", err)
	// Output:
	// dispatch in Closed
	//   effect: lightOn
	//   effect: creak
	// dispatch in Open
	//   effect: lightOff
	//   effect: slam
	// dispatch in Closed
	// done
	// err: <nil>
}

package stagefsmtest_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stage"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

// The examples drive the stage of machine_test.go: Created -Start-> Running
// [Open], Running -Finish-> Done [Flush, Close], any -Error-> Failed
// [Report, Close].

// reporter stands in for the *testing.T of a real test so that the examples
// can show what a failing check reports: it prints the message (tabs as
// spaces) instead of failing.
type reporter struct{ testing.TB }

func (reporter) Helper()        {}
func (reporter) Cleanup(func()) {}
func (reporter) Errorf(format string, args ...any) {
	fmt.Println(strings.ReplaceAll(fmt.Sprintf(format, args...), "\t", "    "))
}
func (r reporter) Fatalf(format string, args ...any) { r.Errorf(format, args...) } // a real test stops here

func ExampleNewSupervisor() {
	// In a test, pass t instead of nil: the Supervisor then fails the test
	// if its script runs out or is left unused.
	sup := stagefsmtest.NewSupervisor(nil, builder(acts{}), failed).
		In(Created, stagefsmtest.Returns(stagefsm.Transition(Event{Kind: Start}))).
		In(Running,
			stagefsmtest.Returns(stagefsm.Continue[Event]()).Times(2),
			stagefsmtest.Fails[Event](errors.New("disk full"))).
		In(Failed, stagefsmtest.Returns(stagefsm.Terminate[Event]()))

	err := stagefsm.Run(context.Background(), sup, Created, &Ctx{})

	fmt.Println("Run:", err)
	fmt.Println("dispatched in:", sup.States())
	fmt.Println("failures:", sup.Failures())
	fmt.Println("completions:", sup.Completions())
	// Output:
	// Run: <nil>
	// dispatched in: [Created Running Running Running Failed]
	// failures: [dispatch in state Running: disk full]
	// completions: 1
}

// States that carry data are matched with When; a panic is routed like an
// error.
func ExampleSupervisor_When() {
	terminal := func(s State) bool { return s == Done || s == Failed }
	sup := stagefsmtest.NewSupervisor(nil, builder(acts{}), failed).
		When(terminal, stagefsmtest.Returns(stagefsm.Terminate[Event]())).
		Script(stagefsmtest.Panics[Event]("nil map"))

	err := stagefsm.Run(context.Background(), sup, Running, &Ctx{})

	var pe *stagefsm.PanicError
	fmt.Println("Run:", err)
	fmt.Println("panic routed:", errors.As(sup.Failures()[0], &pe), pe.Value)
	// Output:
	// Run: <nil>
	// panic routed: true nil map
}

func ExampleBlocksUntil() {
	release := make(chan struct{})
	sup := stagefsmtest.NewSupervisor(nil, builder(acts{}), failed).
		In(Running, stagefsmtest.BlocksUntil(release, stagefsm.Transition(Event{Kind: Finish}))).
		In(Done, stagefsmtest.Returns(stagefsm.Terminate[Event]()))
	errc := make(chan error, 1)
	go func() { errc <- stagefsm.Run(context.Background(), sup, Running, &Ctx{}) }()

	// The dispatch blocks until released. (In a synctest bubble,
	// synctest.Wait tells when it is blocked.)
	close(release)

	fmt.Println("Run:", <-errc)
	fmt.Println("dispatched in:", sup.States())
	// Output:
	// Run: <nil>
	// dispatched in: [Running Done]
}

func ExampleNewStepper() {
	sup := stagefsmtest.NewSupervisor(nil, builder(acts{}), failed).
		In(Created, stagefsmtest.Returns(stagefsm.Transition(Event{Kind: Start}))).
		In(Running, stagefsmtest.Fails[Event](errors.New("bad input"))).
		In(Failed, stagefsmtest.Returns(stagefsm.Terminate[Event]()))
	// In a test, pass t.Context() and t: t.Cleanup then closes the Stepper.
	st := stagefsmtest.NewStepper(context.Background(), nil, sup, Created, &Ctx{})
	defer st.Close()

	for {
		it, err := st.Step(context.Background())
		if err != nil {
			fmt.Println("Step:", err)
			return
		}
		fmt.Printf("%v: directive %v, %d transitions, %d failures -> %v\n",
			it.From, it.Directive, len(it.Transitions), len(it.Failures), it.To)
		if it.Done {
			fmt.Println("Run returned:", it.Err, "completed:", it.Completed)
			return
		}
	}
	// Output:
	// Created: directive Transition(Start), 1 transitions, 0 failures -> Running
	// Running: directive Directive(invalid), 1 transitions, 1 failures -> Failed
	// Failed: directive Terminate, 0 transitions, 0 failures -> Failed
	// Run returned: <nil> completed: true
}

func ExampleRecord() {
	var rec stagefsmtest.Recorder[State, Event]
	sup := stagefsmtest.NewSupervisor(nil, builder(newActs(&rec)), failed).
		In(Created, stagefsmtest.Returns(stagefsm.Transition(Event{Kind: Start}))).
		In(Running, stagefsmtest.Returns(stagefsm.Transition(Event{Kind: Finish}))).
		In(Done, stagefsmtest.Returns(stagefsm.Terminate[Event]()))

	err := stagefsm.Run(context.Background(), stagefsmtest.Record(&rec, sup), Created, &Ctx{})

	fmt.Println("Run:", err)
	fmt.Println("timeline:", rec.Timeline())
	for _, t := range rec.Transitions() {
		fmt.Printf("%v --%v--> %v %v\n", t.From, t.Event, t.To, t.Actions)
	}
	fmt.Println("completions:", rec.Completions())
	// Output:
	// Run: <nil>
	// timeline: [Created Running Done]
	// Created --Start--> Running [Open]
	// Running --Finish--> Done [Flush Close]
	// completions: [<nil>]
}

func ExampleNewAction() {
	var rec stagefsmtest.Recorder[State, Event]
	a := newActs(&rec) // stagefsmtest.NewAction[*Ctx](&rec, "Open"), …
	a.Flush = a.Flush.Fails(errors.New("disk full"))
	sup := stagefsmtest.NewSupervisor(nil, builder(a), failed).
		In(Running, stagefsmtest.Returns(stagefsm.Transition(Event{Kind: Finish})))

	// Done -Error- is unhandled: the failure of Flush cannot be routed.
	err := stagefsm.Run(context.Background(), stagefsmtest.Record(&rec, sup), Running, &Ctx{})

	fmt.Println("unhandled:", errors.Is(err, stagefsm.ErrUnhandledEvent))
	for _, r := range rec.Actions() {
		fmt.Println(r.Name, r.Err)
	}
	// Output:
	// unhandled: true
	// Flush disk full
}

// A passing check says nothing; a failing one prints a diff and stops the
// test.
func ExampleRequireTimeline() {
	var rec stagefsmtest.Recorder[State, Event]
	sup := stagefsmtest.NewSupervisor(nil, builder(acts{}), failed).
		In(Created, stagefsmtest.Returns(stagefsm.Transition(Event{Kind: Start}))).
		In(Running, stagefsmtest.Fails[Event](errors.New("bad input"))).
		In(Failed, stagefsmtest.Returns(stagefsm.Terminate[Event]()))
	_ = stagefsm.Run(context.Background(), stagefsmtest.Record(&rec, sup), Created, &Ctx{})
	t := reporter{} // in a test: t

	stagefsmtest.RequireTimeline(t, &rec, Created, Running, Failed)
	stagefsmtest.RequireTimeline(t, &rec, Created, Running, Done)
	// Output:
	// stagefsmtest: state timeline differs (-want +got):
	//       Created
	//       Running
	//     - Done
	//     + Failed
}

func ExampleRequireActions() {
	var rec stagefsmtest.Recorder[State, Event]
	a := newActs(&rec)
	a.Report = a.Report.Fails(errors.New("alerting down"))
	sup := stagefsmtest.NewSupervisor(nil, builder(a), failed).
		In(Running, stagefsmtest.Fails[Event](errors.New("bad input")))
	_ = stagefsm.Run(context.Background(), stagefsmtest.Record(&rec, sup), Running, &Ctx{})
	t := reporter{}

	stagefsmtest.RequireActions(t, &rec, "Report", "Close")
	// Output:
	// stagefsmtest: executed actions differ (-want +got):
	//       Report (failed: alerting down)
	//     - Close
}

func ExampleRequireFailures() {
	errInput := errors.New("bad input")
	var rec stagefsmtest.Recorder[State, Event]
	sup := stagefsmtest.NewSupervisor(nil, builder(acts{}), failed).
		In(Running, stagefsmtest.Fails[Event](errInput)).
		In(Failed, stagefsmtest.Returns(stagefsm.Terminate[Event]()))
	_ = stagefsm.Run(context.Background(), stagefsmtest.Record(&rec, sup), Running, &Ctx{})
	t := reporter{}

	stagefsmtest.RequireFailures(t, &rec, errInput)
	stagefsmtest.RequireFailures(t, &rec) // none expected
	// Output:
	// stagefsmtest: routed failures differ (-want +got):
	//     + dispatch in state Running: bad input -> event Error(dispatch in state Running: bad input)
}

func ExampleRequireCompletions() {
	var rec stagefsmtest.Recorder[State, Event]
	sup := stagefsmtest.NewSupervisor(nil, builder(acts{}), failed).
		In(Done, stagefsmtest.Returns(stagefsm.Terminate[Event]())).
		CompleteWith(errors.New("journal closed"))
	_ = stagefsm.Run(context.Background(), stagefsmtest.Record(&rec, sup), Done, &Ctx{})
	t := reporter{}

	stagefsmtest.RequireCompletions(t, &rec, 1)
	stagefsmtest.RequireCompletions(t, &rec, 0)
	// Output:
	// stagefsmtest: WriteCompletionEvent called 1 times, want 0
	//     call 1: error: journal closed
}

func ExampleTestMachine() {
	spec := stagefsmtest.MachineSpec[State, Event, *Ctx, Act]{
		New: func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
			return &machine{state: initial, acts: newActs(nil)}, nil
		},
		Context: func() *Ctx { return &Ctx{} },
		Handled: []stagefsmtest.MachineCase[State, Event, *Ctx]{
			{From: Created, Event: Event{Kind: Start}, To: Running},
			{From: Running, Event: Event{Kind: Finish}, To: Done},
			{From: Running, Event: Event{Kind: Error}, To: Failed},
		},
		Rejected: []stagefsmtest.MachineCase[State, Event, *Ctx]{
			{From: Running, Event: Event{Kind: Finish}, Context: func() *Ctx { return &Ctx{Busy: true} }},
		},
		Unhandled: []stagefsmtest.MachineCase[State, Event, *Ctx]{
			{From: Done, Event: Event{Kind: Start}},
		},
	}
	t := reporter{} // in a test: t

	stagefsmtest.TestMachine(t, spec) // conforms: nothing reported

	// The same cases over a machine that returns its actions in a buffer it
	// reuses: that must be documented (spec.RetainsActions).
	spec.New = func(initial State) (stagefsm.Machine[State, Event, *Ctx, Act], error) {
		return &bufferMachine{machine: machine{state: initial, acts: newActs(nil)}, buf: make([]Act, 0, 4)}, nil
	}
	stagefsmtest.TestMachine(t, spec)
	// Output:
	// stagefsmtest: machine conformance: Handled[0] Created --Start--> Running: the next Handle (Finish) changed the actions this one returned: the machine reuses its slice; document it and set MachineSpec.RetainsActions
}

// runPipeline runs source → transform → sink and returns how it ended and
// the causes of its dead letters (their stage.ItemError's Err).
func runPipeline[I, O any](src stage.Source[I], tr stage.Transform[I, O], sink stage.Sink[O]) (dead []error, err error) {
	var mu sync.Mutex
	p := stage.To(stage.Then(stage.From("src", src), "tr", tr), "sink", sink,
		stage.WithDeadLetter(func(it stage.Item[any]) {
			mu.Lock()
			defer mu.Unlock()
			var ie *stage.ItemError
			if errors.As(it.Err, &ie) {
				dead = append(dead, ie.Err)
			}
		}))
	if err := p.Start(context.Background()); err != nil {
		return nil, err
	}
	err = p.Wait(context.Background())
	mu.Lock()
	defer mu.Unlock()
	return dead, err
}

func ExampleNewSource() {
	errBad := errors.New("bad record")
	src := stagefsmtest.NewSource[int]().
		Emit(1, 2).
		Fail(errBad).          // one error item, dead-lettered
		Panic("corrupt page"). // recovered: one error item too
		Emit(3)                // then end of input
	sink := stagefsmtest.NewSink[string]()

	dead, err := runPipeline(src, stagefsmtest.NewTransform(strconv.Itoa), sink)

	var pe *stagefsm.PanicError
	fmt.Println("Wait:", err)
	fmt.Println("dead letters:", len(dead), errors.Is(dead[0], errBad), errors.As(dead[1], &pe))
	fmt.Println("emitted:", src.Emitted(), "in", src.Calls(), "calls")
	fmt.Println("delivered:", sink.Delivered())
	// Output:
	// Wait: <nil>
	// dead letters: 2 true true
	// emitted: [1 2 3] in 5 calls
	// delivered: [1 2 3]
}

func ExampleNewTransform() {
	errOverflow := errors.New("overflow")
	src := stagefsmtest.NewSource[int]().Emit(1, 2, 3)
	tr := stagefsmtest.NewTransform(func(n int) int { return n * n }).
		FailAt(2, errOverflow).      // the 2nd item fails
		SleepAt(3, time.Millisecond) // the 3rd is slow
	sink := stagefsmtest.NewSink[int]()

	dead, err := runPipeline(src, tr, sink)

	fmt.Println("Wait:", err)
	fmt.Println("dead letters:", len(dead), errors.Is(dead[0], errOverflow))
	fmt.Println("transform delivered:", tr.Delivered(), "hooks:", tr.Lifecycle())
	fmt.Println("sink delivered:", sink.Delivered())
	// Output:
	// Wait: <nil>
	// dead letters: 1 true
	// transform delivered: [1 3] hooks: [Open Drain Close]
	// sink delivered: [1 9]
}

func ExampleNewSink() {
	errFull := errors.New("disk full")
	src := stagefsmtest.NewSource[int]().Emit(1, 2, 3)
	sink := stagefsmtest.NewSink[string]().
		PanicAt(1, "disk gone").        // item 1 dead-lettered
		FailAt(3, stage.Fatal(errFull)) // fails the stage

	_, err := runPipeline(src, stagefsmtest.NewTransform(strconv.Itoa), sink)

	var se *stage.Error
	fmt.Println("failed stage:", errors.As(err, &se), se.Stage, errors.Is(err, errFull))
	fmt.Println("delivered:", sink.Delivered(), "calls:", sink.Calls())
	// Output:
	// failed stage: true sink true
	// delivered: [2] calls: 3
}

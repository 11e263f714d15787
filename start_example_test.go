package stagefsm_test

import (
	"context"
	"fmt"

	"github.com/stagefsm/stagefsm"
)

// jobState is the FSM state of the job stage of the examples.
type jobState int

const (
	jobCreated  jobState = iota // gate: waits for jobInit
	jobRunning                  // works; polls for jobDrain
	jobDraining                 // finishes its work
	jobStopped                  // terminal
)

func (s jobState) String() string {
	return [...]string{"Created", "Running", "Draining", "Stopped"}[s]
}

// jobEvent is fed to the job's FSM.
type jobEvent string

const (
	jobInit    jobEvent = "Init"    // control event
	jobDrain   jobEvent = "Drain"   // control event: the graceful stop
	jobDrained jobEvent = "Drained" // from dispatch
	jobFail    jobEvent = "Fail"    // from a failure
)

// jobWork is the stage context: how many items the job handled.
type jobWork struct{ items int }

// jobAction is a side effect of the job's FSM.
type jobAction func(*jobWork)

func (a jobAction) Execute(_ context.Context, w *jobWork) error { a(w); return nil }

type jobMachine struct{ state jobState }

func (m *jobMachine) State() jobState { return m.state }

func (m *jobMachine) Handle(_ context.Context, e jobEvent, _ *jobWork) ([]jobAction, error) {
	switch {
	case m.state == jobCreated && e == jobInit:
		m.state = jobRunning
	case m.state == jobRunning && e == jobDrain:
		m.state = jobDraining
	case m.state == jobDraining && e == jobDrained, e == jobFail:
		m.state = jobStopped
	default:
		return nil, fmt.Errorf("%w: %s in %s", stagefsm.ErrUnhandledEvent, e, m.state)
	}
	return nil, nil
}

// job is the supervisor. Besides HandlerSupervised it implements
// stagefsm.Controlled (Created is a gate, Stopped ignores control events)
// and stagefsm.Stoppable (Drain is the graceful stop).
type job struct{}

func (job) Name() string                               { return "job" }
func (job) EventForActionError(error) jobEvent         { return jobFail }
func (job) WriteCompletionEvent(context.Context) error { return nil }
func (job) StopEvent() jobEvent                        { return jobDrain }

func (job) BuildStateMachine(initial jobState) (stagefsm.Machine[jobState, jobEvent, *jobWork, jobAction], error) {
	return &jobMachine{state: initial}, nil
}

func (job) DispatchState(_ context.Context, s jobState, w *jobWork) (stagefsm.Directive[jobEvent], error) {
	switch s {
	case jobRunning:
		if w.items < 3 {
			w.items++
			return stagefsm.Continue[jobEvent](), nil
		}
		return stagefsm.Idle[jobEvent](), nil // nothing more to do until told
	case jobDraining:
		return stagefsm.Transition(jobDrained), nil
	default: // jobStopped (Created never dispatches: it blocks)
		return stagefsm.Terminate[jobEvent](), nil
	}
}

func (job) ControlMode(s jobState) stagefsm.ControlMode {
	switch s {
	case jobCreated:
		return stagefsm.ControlBlock
	case jobStopped:
		return stagefsm.ControlIgnore
	default:
		return stagefsm.ControlPoll
	}
}

func (job) ControlClosed(jobState) (jobEvent, bool) { return jobDrain, true }

// Start a stage in the background, open its gate with a control event,
// wait for a state, stop it gracefully, and print every state change.
func ExampleStart() {
	ctx := context.Background()
	st := stagefsm.Start(ctx, job{}, jobCreated, &jobWork{})
	changes := st.Changes(ctx, 16)

	fmt.Println("state:", st.State())
	if err := st.Send(ctx, jobInit); err != nil {
		fmt.Println("send:", err)
	}
	if s, err := st.WaitState(ctx, func(s jobState) bool { return s == jobRunning }); err == nil {
		fmt.Println("state:", s)
	}
	err := st.Stop(ctx) // sends Drain, waits for the end
	fmt.Println("stopped:", err)

	for c := range changes { // closed after the last change
		fmt.Printf("%d: %v -%v-> %v\n", c.Seq, c.From, c.Event, c.To)
	}
	fmt.Println("final:", st.State(), "send now:", st.TrySend(jobInit))
	// Output:
	// state: Created
	// state: Running
	// stopped: <nil>
	// 1: Created -Init-> Running
	// 2: Running -Drain-> Draining
	// 3: Draining -Drained-> Stopped
	// final: Stopped send now: stagefsm: stage is done
}

// Count transitions with an Observer; it works with Run and with Start.
func ExampleWithObserver() {
	transitions := 0
	obs := stagefsm.WithObserver(stagefsm.Observer[jobState, jobEvent]{
		OnTransition: func(jobState, jobEvent, jobState, int) { transitions++ },
		OnExit: func(s jobState, err error) {
			fmt.Println("exit in", s, "error:", err, "transitions:", transitions)
		},
	})
	_ = stagefsm.Run(context.Background(), job{}, jobDraining, &jobWork{}, obs)
	// Output:
	// exit in Stopped error: <nil> transitions: 1
}

// Package stagefsm runs handler-supervised FSM stages: each stage of a
// stream-processing application is a finite state machine, and a
// supervision loop, [Run], drives it. Every error and every panic of the
// stage's handler becomes an event that goes back through the machine.
//
// A stage is a supervisor (what each state does) and a machine (what each
// event means), here a [github.com/stagefsm/stagefsm/mealy] definition:
//
//	type stage struct{ def *mealy.Definition[State, Event, *Counter, Action] }
//
//	func (s stage) Name() string { return "counter" }
//	func (s stage) BuildStateMachine(initial State) (stagefsm.Machine[State, Event, *Counter, Action], error) {
//		return s.def.New(initial)
//	}
//	func (stage) DispatchState(ctx context.Context, s State, c *Counter) (stagefsm.Directive[Event], error) {
//		if s == Done {
//			return stagefsm.Terminate[Event](), nil // writes the completion event
//		}
//		if err := c.step(ctx); err != nil {
//			return stagefsm.Directive[Event]{}, err // fed back as EventForActionError(err)
//		}
//		return stagefsm.Transition(Event{Kind: Tick}), nil
//	}
//	func (stage) EventForActionError(err error) Event        { return Event{Kind: Failure, Err: err} }
//	func (stage) WriteCompletionEvent(context.Context) error { return nil }
//
//	err := stagefsm.Run(ctx, stage{def}, Created, &Counter{})
//
// The package [github.com/stagefsm/stagefsm/stage] runs ready-made
// source, transform and sink stages like this one, wired into graphs.
//
// # The pieces
//
// A [Machine] holds the stage's current state; its Handle method computes
// the next state for an event, commits it and returns the actions to run,
// without running them. A [HandlerSupervised] supervisor says what each
// state does: its DispatchState reads input, calls the user's handler and
// returns a [Directive] — [Continue], [Idle], [Transition] or [Terminate].
// [Run] is the only caller of Handle and of the actions' Execute (the
// single-gateway rule), so a machine and its actions need no locks.
//
// # Failures are events
//
// Every error from dispatch or from an action, and every panic there, is
// turned into an event by the supervisor's EventForActionError and fed back
// through the machine, which decides what it means — typically a move to a
// Failed state whose actions report the failure and clean up. The error the
// supervisor receives is a [*DispatchError] or an [*ActionError] wrapping the
// cause (a [*PanicError] for a panic). Only failures that cannot be routed —
// the machine rejecting an event, a failure action failing, too many
// failures in a row ([ErrFailureLoop]) — end Run with an error.
//
// # Cancellation
//
// Every call takes a [context.Context]. When it is done, Run returns
// promptly with an error matching ctx.Err(), routes nothing and writes no
// completion event. A graceful stop is an event the machine handles, not a
// cancellation.
//
// # State timeouts
//
// A machine that implements [Timed] can arm a deadline per state; Run fires
// its event on time, also while the stage idles or while dispatch blocks.
//
// # Running in the background: the control plane
//
// [Start] runs Run in a goroutine it owns and returns a [Stage] handle. The
// caller sends control events with [Stage.Send] or [Stage.TrySend] (a
// bounded queue, [WithControlCapacity]; nothing is dropped), reads the state
// with [Stage.State], waits for one with [Stage.WaitState], follows it with
// [Stage.Subscribe] (latest state) or [Stage.Changes] (typed transitions),
// and ends the stage with [Stage.Stop] (graceful: the supervisor's
// [Stoppable] event), [Stage.Abort] (cancel) or by letting it terminate;
// [Stage.Wait] returns Run's result. The supervisor says once, per state,
// how control events are taken ([Controlled]: [ControlPoll],
// [ControlBlock], [ControlIgnore]) and what a closed queue means; its
// DispatchState never sees the queue. State is published after every
// transition the machine commits, terminal ones included, also when Run
// returns an error.
//
// # Concurrency contract of a Stage
//
// Every method of [Stage] is safe to call from any goroutine, concurrently,
// before, during and after the stage runs; none of them can block the
// stage's loop. Send, Stop, Wait and WaitState wait (bounded by their ctx);
// TrySend, CloseControl, State, Subscribe, Changes, Done, Abort, Restarts
// and LastFailure never wait. Delivery to readers never waits for them: Subscribe keeps only the
// latest state and Changes drops the oldest unread change when its buffer
// is full (a gap in [Change.Seq] shows it). The supervisor, the machine,
// the actions and an [Observer] are still called from the stage's one
// goroutine only; they must not call the Stage methods that wait (the
// stage would wait for itself), and a WaitState predicate also runs there.
//
// # Observing
//
// [WithObserver] sets typed callbacks for every committed transition,
// routed failure, completion and exit, for metrics or tracing; with no
// observer the loop pays one nil check. The logger ([WithLogger]) is not an
// observer: it stays built in, because it reports lifecycle and failures
// with the stage's identity at fixed levels and is tuned to cost nothing
// when its level is off, whereas an Observer is for the user's own typed
// instrumentation.
//
// # Restarting failed stages
//
// [WithRestart] makes Start restart a stage that failed — Run returned an
// error, or the machine terminated in a state the supervisor reports as
// failed ([Failable]) — with a fresh machine from the initial state and a
// context from the caller's factory, behind the same [Stage] handle. A
// [RestartPolicy] bounds the restarts as an Erlang/OTP supervisor does (at
// most N within a sliding period, else [ErrRestartIntensity]) and spaces
// them with a per-stage exponential backoff (capped, with jitter that a
// seed makes reproducible, reset once the stage has been healthy). Failures
// wrapping [ErrPermanent] (see [Permanent]) are not restarted, nor are
// panics under [RestartPolicy].PanicIsPermanent, nor is a cancellation, nor a failure after [Stage.Stop] or [Stage.CloseControl]
// asked the stage to finish; a Stop during the backoff ends the stage at
// once. Restarts are logged at Warn, reported to the [Observer] and counted
// by [Stage.Restarts].
//
// # Options
//
// [WithLogger], [WithIdleBackoff], [WithMaxConsecutiveFailures],
// [WithRecoverPanics] and [WithObserver] configure Run and Start;
// [WithControlCapacity] and [WithRestart] configure Start only (Run has no
// control queue, and rejects WithRestart). With no options Run logs nothing,
// waits 1ms to 10ms between idle dispatches, gives up after 100 failures in
// a row and recovers panics; Start also queues up to 16 control events and
// does not restart a failed stage.
package stagefsm

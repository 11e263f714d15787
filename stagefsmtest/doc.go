// Package stagefsmtest provides what tests of [stagefsm] stages need: a
// scripted fake supervisor, a driver that runs the real loop one iteration
// at a time, a recorder with assertion helpers, a conformance test for
// machine implementations, and fake source, transform and sink handlers for
// the ready-made stages — as [net/http/httptest] does for HTTP handlers.
//
//	toEvent := func(err error) Event { return Event{Kind: Failure, Err: err} }
//	sup := stagefsmtest.NewSupervisor(t, build, toEvent). // build makes the machine under test
//		In(Created, stagefsmtest.Returns(stagefsm.Transition(Event{Kind: Start}))).
//		In(Running, stagefsmtest.Fails[Event](errors.New("disk full"))).
//		In(Failed, stagefsmtest.Returns(stagefsm.Terminate[Event]()))
//	err := stagefsm.Run(ctx, sup, Created, &Ctx{})
//	// err == nil; sup.States() == [Created Running Failed]; sup.Failures() holds the routed error
//
// # The pieces
//
//   - [Supervisor] is a fake [stagefsm.HandlerSupervised] whose dispatch
//     replies follow a script of steps ([Step]: [Returns], [Fails], [Panics],
//     [BlocksUntil]), per state ([Supervisor.In], [Supervisor.When]) or in
//     sequence ([Supervisor.Script]). It counts its calls and the states it
//     was dispatched in, and fails the test when its script runs out or is
//     left unused. Use it to test a machine and its actions under the real
//     [stagefsm.Run].
//   - [Stepper] runs the real [stagefsm.Run] — not a copy of the loop — one
//     iteration at a time: [Stepper.Step] lets one dispatch through and
//     returns an [Iteration] (the directive, the transitions, the failures
//     routed, Run's result once it returns).
//   - [Recorder], fed by [Record] (which wraps any supervisor) and by the
//     actions ([Action]) made with [NewAction], records the state
//     timeline, the transitions, the actions executed, the failures routed
//     and the completion calls. [RequireTimeline], [RequireActions],
//     [RequireFailures] and [RequireCompletions] fail the test with a line
//     diff when they differ from what is expected.
//   - [TestMachine] checks any [stagefsm.Machine] implementation against
//     the contract Run relies on, given a [MachineSpec].
//   - [Source], [Transform] and [Sink] are fake handlers for the ready-made
//     stages of package [github.com/stagefsm/stagefsm/stage], scripted with
//     items, errors, panics and slowness, so that one custom handler can be
//     tested inside a real pipeline between fakes. They implement stage's
//     interfaces by their method sets alone: this package does not import
//     stage, so stage's own tests may use it.
//
// The wrappers this package puts around a supervisor ([Record],
// [NewStepper]) keep the optional interfaces Run and [stagefsm.Start]
// detect by type assertion ([stagefsm.Controlled], [stagefsm.Stoppable],
// and [stagefsm.Timed] on the machine), so the stage behaves as it would
// unwrapped.
//
// # Time: timeouts and idle backoff in an instant
//
// Nothing here reads the clock: every wait is Run's own, on timers. Run a
// test inside a [testing/synctest] bubble and those timers use the bubble's
// fake clock, which jumps forward whenever every goroutine of the bubble is
// blocked. A test then sees exact times and takes no real time:
//
//	func TestWaitingTimesOut(t *testing.T) {
//		synctest.Test(t, func(t *testing.T) {
//			sup := stagefsmtest.NewSupervisor(t, newMachine, failed).
//				In(Waiting, stagefsmtest.Returns(stagefsm.Idle[Event]()).Forever()).
//				In(TimedOut, stagefsmtest.Returns(stagefsm.Terminate[Event]()))
//			start := time.Now()
//			err := stagefsm.Run(t.Context(), sup, Waiting, &Ctx{})
//			require.NoError(t, err)
//			assert.Equal(t, 30*time.Second, time.Since(start)) // the state's timeout, exactly
//		})
//	}
//
// The same holds for the idle backoff: a stage that answers Idle a hundred
// times waits its whole backoff sequence (1ms, 2ms, … 10ms by default, see
// [stagefsm.WithIdleBackoff]) in fake time, and time.Since(start) tells
// exactly how long it waited. A dispatch that blocks honouring its context
// ([BlocksUntil] with a nil release) is cut at a state's deadline the same
// way, and so is a handler's own per-item deadline, or a fake handler's
// Sleep. Rules of the bubble:
//
//   - make everything inside it: the Supervisor's release channels, the
//     Stepper (whose goroutine and timers must belong to the bubble), the
//     contexts (t.Context() of the bubble's t);
//   - call synctest.Wait to wait until Run's goroutine is blocked — in an
//     idle wait, at a Stepper's gate, or in a BlocksUntil step — before
//     looking at what it did;
//   - with a [Stepper], time.Sleep(d) while the stage is held at the gate
//     moves the clock by d; a state timeout that fell due then fires in the
//     next [Stepper.Step].
//
// # Concurrency
//
// [stagefsm.Run] calls the fakes from its own goroutine; every type here
// locks what it shares, so a test may inspect a Supervisor or a Recorder
// while Run runs and after it returns. The Require helpers and the
// Stepper's driving methods call t.Fatalf or wait, so call them from the
// test's goroutine.
package stagefsmtest

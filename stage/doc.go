// Package stage ships ready-made stages — sources, transforms, sinks,
// joins, keyed stateful stages, fan-out and fan-in, parallel stages — and
// the [Graph] that wires them into a [Pipeline]: the user writes handlers,
// the package runs each one as a supervised FSM stage under
// [stagefsm.Start], with its lifecycle, backpressure, dead letters,
// accounting and journal.
//
//	g := stage.NewGraph(stage.WithDeadLetter(dlq))
//	lines := stage.Apply(stage.Read(g, "read", reader), "parse", parser) // *Stream[Order]
//	stage.Write(lines, "store", writer)
//	p, err := g.Build() // every wiring problem at once, naming the stages
//	if err != nil { ... }
//	if err := p.Start(ctx); err != nil { ... }
//	err = p.Wait(ctx)
//
// # Handlers
//
// A [Source] emits items and says when its input ends; a [Transform] maps
// one item to zero or more; a [Sink] consumes them. Each may implement
// optional hooks, found by type assertion: [Opener] (setup), [Drainer] (a
// transform's last outputs, such as aggregates), [Flusher] (a sink's
// buffers) and [io.Closer] (cleanup, exactly once). The function types
// [SourceFunc], [TransformFunc] and [SinkFunc] adapt plain functions.
//
// A handler's error fails one item, not the stage: the item is marked as an
// error and flows on to be dead-lettered. A handler makes an error fatal —
// the stage fails — by wrapping it with [Fatal]. A panic in a handler is
// recovered and fails the item like an error; a panic in a hook fails the
// stage.
//
// # Building and running a pipeline
//
//	src := stage.From("read", reader)
//	parsed := stage.Then(src, "parse", parser)     // Chain[Order]
//	p := stage.To(parsed, "write", writer, stage.WithJournal(j))
//	if err := p.Start(ctx); err != nil { ... }
//	err := p.Wait(ctx)
//
// Chains are typed end to end: [Then] may change the item type. Stages are
// connected by bounded channels of batches ([WithCapacity] batches of up to
// [WithBatchSize] items): a full channel makes the stage upstream wait
// (backpressure), and batching makes a pipeline cheaper per item than one
// channel operation per item.
//
// # Graphs
//
// A straight line is the simple case of a [Graph]: [Read] adds a source,
// [Apply] and [ApplyParallel] transforms, [Write] sinks, [Broadcast] and
// [Route] branch a [Stream], [Merge] joins several of one type, and [Join]
// enriches a stream input from a reference input. [Graph.Build] checks the
// graph and returns the [Pipeline]; [Graph.Mermaid] draws it. Every source
// gets the start gun once every other stage runs, and [Pipeline.Drain]
// drains every source. Summed over a graph that has ended, Emitted ==
// Delivered + DeadLettered + Dropped (an inner join's unmatched items are
// dropped, and counted).
//
// # Keyed stages
//
// A keyed stage holds one instance per key, created on the key's first item:
// [Keyed] runs a typed FSM per key (a [KeyedSpec]: any [stagefsm.Machine],
// such as a mealy machine, removed at a terminal state), [KeyedAccumulate]
// a plain state folded per key (a [KeyedAccumulator], emitted when a
// predicate says so, every interval, and at drain), and [Aggregate] is the
// one-key case. No key has a goroutine or a runtime timer: per-key
// timeouts and intervals live in one deadline heap per worker, fired by
// the stage's loop with one timer. A key's failure is that item's (or that
// key's state's) dead letter; other keys go on. With Workers > 1 the keys
// are sharded by hash across that many workers, a key's items in order.
//
// # Checkpoints
//
// [WithCheckpoint] keeps a pipeline's state across a crash: it takes one
// consistent cut of the graph every interval and at drain — the sources'
// positions (see [Resumable]) with every stateful stage's state as of
// them: keyed instances and their timeouts, accumulators, join tables,
// aggregates — saves what changed into a [checkpoint.Store] (the embedded
// default is [checkpoint.Dir]), then lets each [Committer] source
// acknowledge what the checkpoint covers. A restarted pipeline resumes from
// the latest complete checkpoint, and its outputs are those of a run that
// never crashed. [ReadFileJournal] reads a journal back, past a line torn
// by a crash.
//
// # Items
//
// Items travel in an [Item] envelope: payload, status (Err), origin stage
// and sequence number. An item fails at most once; from then on it passes
// through the remaining transforms untouched (the rule of
// [stagefsm.RunIfNotError]) and the sink stage hands it to the dead-letter
// writer ([WithDeadLetter]) instead of the sink's handler. Nothing is
// dropped: every item is emitted once and ends once, delivered or
// dead-lettered, and [Pipeline.Stats] proves it:
// Emitted == Delivered + DeadLettered once the pipeline has ended (see
// [Counts]).
//
// # Stage lifecycle
//
// Every stage is a [mealy] machine:
//
//	Created -Initialize-> Initialized [Open]
//	Initialized -Ready-> Running                 (source: -> WaitingForGun -Start-> Running)
//	Running -ReceivedEOF-> Draining              (source: -Completed->)
//	Draining -DrainComplete-> Drained [DrainHandler, ForwardEOF, Cleanup]
//	                                             (source: -Completed-> [ForwardEOF, Cleanup];
//	                                              sink: [DrainHandler, Cleanup])
//	any state before Draining -BeginDrain-> Draining
//	any state but Failed -Error-> Failed(reason) [SendFailure, Cleanup]
//	Failed -Error-> Failed                       (idempotent)
//
// The states before Running are start-up gates that wait for control
// events; the pipeline opens them in order (see [Pipeline.Start]). Running
// and Draining take control events between dispatches, the terminal states
// none. End of input is the closing of a channel: it reaches each stage in
// pipeline order, and each stage drains — a transform runs its Drain hook
// and forwards end of input, a sink flushes — before the next one sees it.
//
// A stage with nothing to do blocks on its input channel (or on a control
// event at a gate): it does not poll, so an idle stage costs no CPU. Only a
// source whose Next emits nothing is called again after the loop's idle
// backoff ([stagefsm.WithIdleBackoff] defaults).
//
// # When a stage fails
//
// The failure of one stage drains the others:
//   - the failed stage sends on what it had produced from the items it
//     consumed, enters Failed, forwards end of input downstream, and
//     dead-letters, with [ErrFailed], the inputs it had not processed
//     and every item that still reaches its input until its upstream ends;
//   - the source is asked to drain ([Pipeline.Drain]), so upstream stops
//     producing and finishes what is in flight (into the failed stage's
//     dead letters);
//   - downstream stages drain what they have and end Drained;
//   - [Pipeline.Wait] returns a [*Error] for the failed stage.
//
// A failure that a stage's loop cannot route (its journal failing to record
// its completion, a bug in a machine) aborts the pipeline. [Pipeline.Abort]
// (or the end of the Start context) cancels every stage; the items in
// flight are dead-lettered with [ErrAborted], so the counts still balance.
//
// # Restarting a failed stage
//
// [WithRestart] puts a stage under a [stagefsm.RestartPolicy] (intensity,
// backoff with jitter, error classes: see [stagefsm.WithRestart], which
// runs it). A failure of that stage then ends only its current
// incarnation: its output stays open, nothing drains, no completion is
// journaled. The item whose handler failed is dead-lettered with its
// error; the rest of its batch waits for the next incarnation. While the
// stage waits out its backoff, a goroutine of the pipeline keeps taking
// its input, so upstream never blocks on it: as many items as its input
// channel holds are parked for the next incarnation, the rest is
// dead-lettered with
// [ErrRestarted] (which also wraps the failure). Then the stage starts
// again from Created with the same handler (Open runs again) and takes the
// parked items and its input again. The journal records an
// [EntryRestart], [Stats].Restarts counts it. Every item is still
// delivered or dead-lettered exactly once. When the policy gives up, the
// stage fails as above and [Pipeline.Wait]'s error wraps
// [stagefsm.ErrRestartIntensity] (or the permanent failure).
//
// # Journal
//
// A [Journal] receives every state change, every stage's completion —
// drained, or failed with the reason — and the pipeline's own completion.
// [MemoryJournal] keeps them in memory; [FileJournal] appends them to a file
// as JSON lines and syncs it at each completion; [ReadFileJournal] reads
// it back, reporting and skipping a last line that a crash cut short.
package stage

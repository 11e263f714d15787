// Package natsstage runs [stage] pipelines over NATS JetStream, so that a
// stream-processing application can scale past one machine: many workers,
// each a [stage.Pipeline] in its own process (or several in one), share a
// durable consumer of an input stream and publish to an output stream.
//
// It lives in its own Go module, so that the core library gains no
// dependency.
//
// # A worker
//
//	src := natsstage.NewSource(js, "ORDERS", "billing")      // durable pull consumer
//	work := stage.Then(stage.From("orders", src), "bill", natsstage.Transform(bill))
//	p := stage.To(work, "invoices", natsstage.NewSink(js, "invoices.new"),
//		stage.WithDeadLetter(natsstage.DeadLetter(logDeadLetter)))
//	if err := p.Start(ctx); err != nil { ... }
//	err := p.Wait(ctx)
//
// Items are [*Msg]. A [Source] reads a durable pull consumer; a
// [Transform] (or any transform that passes each message on) processes
// them; a [Sink] publishes them. The dead-letter function made by
// [DeadLetter] is part of the contract: it settles the JetStream messages
// of the items the pipeline dead-letters.
//
// # Delivery guarantees
//
// At least once: the JetStream message behind a [*Msg] is acknowledged only
// after the [Sink] has published the message and JetStream has stored it —
// or after the pipeline dead-lettered it and [DeadLetter] settled it. A
// worker that stops or crashes leaves its messages unacknowledged, and
// JetStream redelivers them to the other workers (at once for those it
// handed back — 250ms later for those still arriving as it stopped — and
// after the consumer's AckWait for the others).
//
// Effectively once in the output: a [Source] gives each message an ID
// derived from its place in the input stream ("<stream>:<sequence>"), and
// the [Sink] publishes it as the Nats-Msg-Id header, so the output stream
// drops the second copy of a message processed twice — as long as the
// redelivery comes within the output stream's duplicates window (two
// minutes by default) and the processing is deterministic.
//
// A message a handler rejects (a non-fatal error) is retried later or
// terminated, per [WithRetry]; [Msg.Redelivered] and [Msg.Delivered] tell
// a handler that it has seen the message before.
//
// # Checkpoints
//
// A pipeline with stateful stages (keyed state, aggregates, joins) keeps
// that state across crashes with [stage.WithCheckpoint]; [Store] keeps
// its checkpoints in JetStream, so that any worker can resume another's:
//
//	store, err := natsstage.NewStore(ctx, js, "checkpoints", "partition-3")
//	src := natsstage.NewSource(js, "ORDERS", "partition-3", natsstage.WithAckOnCommit(true))
//	p := stage.To(..., stage.WithCheckpoint(store, time.Second), ...)
//
// With [WithAckOnCommit] the [Source] acknowledges a message only once a
// stored checkpoint holds the state it went into, and a Source that
// resumes skips what the checkpoint covers and processes the rest once:
// the state is exactly that of a run without the crash. Give each
// partition its own durable consumer and checkpoint name, read by one
// worker at a time; a worker that takes a partition over starts a
// pipeline on that consumer and name.
//
// Without WithAckOnCommit a message is acknowledged when a [Sink] has
// published every [*Msg] that carries it. A stateful stage keeps its
// inputs rather than emitting them on, so their messages are never
// published and JetStream redelivers them after AckWait: a pipeline with
// stateful stages after a Source needs checkpoints and WithAckOnCommit.
//
// # Failures of the connection
//
// A lost connection or a server restart is ridden out for up to
// [WithMaxOutage]: the client reconnects, the consumer resumes, and
// publishes that were not acknowledged are repeated with the same message
// id. Past that budget, or when the connection is closed for good, the
// stage fails with an error wrapping [ErrUnavailable]; the pipeline drains
// or stops and [stage.Pipeline.Wait] reports it. A stage never waits on
// JetStream without a bound.
//
// # Ownership
//
// The caller owns the NATS connection and the [jetstream.JetStream]
// context, creates the streams and the durable consumer, and closes the
// connection after the pipelines have ended. A [Source] and a [Sink] serve
// one pipeline each; use one pair per worker.
package natsstage

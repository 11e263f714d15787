// Package kafkastage runs [stage] pipelines over Kafka, on
// github.com/twmb/franz-go: many workers, each a [stage.Pipeline] in its
// own process (or several in one), are members of one consumer group
// reading an input topic and produce to an output topic.
//
// It lives in its own Go module, so that the core library gains no
// dependency.
//
// # A worker
//
//	kopts := []kgo.Opt{kgo.SeedBrokers("localhost:9092")}
//	dl := kafkastage.NewDeadLetters(kopts, "orders.dlq")
//	defer dl.Close()
//	src := kafkastage.NewSource(kopts, "billing", []string{"orders"})
//	work := stage.Then(stage.From("orders", src), "bill", bill) // emits each record once
//	p := stage.To(work, "invoices", kafkastage.NewSink(kopts, "invoices"),
//		stage.WithDeadLetter(dl.Write))
//	if err := p.Start(ctx); err != nil { ... }
//	err := p.Wait(ctx)
//
// Items are [*Record]. A transform must emit each input record exactly
// once (changed or not): the record carries the input offset it commits.
// A pipeline with state — a keyed stage, an accumulator, a join, an
// aggregate — uses checkpoints instead (see "Checkpoints").
//
// # Delivery guarantees
//
// At least once, nothing lost (see "Exactly once" for the transactional
// mode): an offset is committed only once its
// record — and every earlier record of its partition — has been produced
// by a [Sink] and acknowledged, or written to the dead-letter topic by
// [DeadLetters]. A partition revoked from a member waits for its records
// in flight before the group moves it, so its next owner starts where
// this one stopped; a member that dies leaves its uncommitted records to
// be read again by the next owner. Records of a partition keep their order.
//
// A record a handler rejects, one that fails to decode, or one too large
// for the [Sink] goes to the dead-letter topic with its cause and origin
// in headers ([HeaderCause], [HeaderTopic], [HeaderPartition],
// [HeaderOffset]); its partition goes on.
//
// # Exactly once
//
// [NewExactlyOnce] makes a worker that consumes, transforms and produces
// in Kafka transactions (franz-go's [kgo.GroupTransactSession]):
//
//	eos := kafkastage.NewExactlyOnce(append(kopts, kgo.TransactionalID("billing-"+host)),
//		"billing", []string{"orders"})
//	dl := eos.DeadLetters("orders.dlq")
//	p := stage.To(stage.Then(stage.From("orders", eos.Source()), "bill", bill),
//		"invoices", eos.Sink("invoices"), stage.WithDeadLetter(dl.Write))
//
// The guarantee: a reader of the output (and dead-letter) topics with
// [kgo.ReadCommitted] isolation sees the outputs of each input record
// exactly once — none lost, none twice — across rebalances, workers
// leaving and joining, and workers killed mid-transaction. Each batch the
// Source reads is one transaction: its outputs, its dead letters and its
// input offsets commit atomically once every record of the batch is
// delivered, and are aborted together otherwise (a record not delivered,
// partitions taken by the group meanwhile); an aborted batch is read again
// from the committed offsets, by this member or the partitions' next
// owner. A killed member's open transaction is aborted by the brokers
// when its transaction timeout expires ([kgo.TransactionTimeout]), or at
// once when a worker with the same [kgo.TransactionalID] starts; until
// then read_committed readers of the partitions it wrote wait.
//
// It assumes: brokers with KIP-447 (Kafka 2.5 or later), so that a new
// owner waits for the transactions of the old one; that the pipeline's
// effects are only its Kafka outputs (a handler's side effects elsewhere —
// a database write, an HTTP call — happen again when a batch is aborted
// and read again: exactly once holds only for what goes through the
// transaction); that the Sinks and DeadLetters are the session's own (a
// plain [Sink] produces outside the transaction, at least once); and that
// readers use read_committed (a read_uncommitted reader also sees the
// aborted attempts).
//
// Why a session that hands out the Source and its Sinks rather than an
// option on [NewSource] and [NewSink]: the transaction belongs to one
// client, which must both consume (its group generation fences the offset
// commit) and produce; a pair built apart could silently pair a
// transactional source with a plain sink, and be at least once while
// claiming exactly once. The session makes that mix impossible: its Sink
// refuses records its Source did not read.
//
// The cost is latency and throughput: a batch commits only once all of
// it is delivered, and each transaction takes a few requests; larger
// batches ([WithMaxPoll]) amortize them.
//
// # Checkpoints
//
// A [Source] made with [WithCommitOnCheckpoint] and [WithPartitions]
// serves a pipeline that checkpoints ([stage.WithCheckpoint]): its
// offsets commit when a stored checkpoint covers them, not when records
// are delivered, so stages after it may absorb records into state, split
// or drop them. Its position (see [Source.Position]) is the next offset
// of each partition it reads; a worker that restarts, or takes a dead
// worker's partitions over, resumes the checkpoint's state and reads each
// partition from the checkpoint's offset — none lost, none counted twice:
//
//	store, err := checkpoint.OpenDir("/var/lib/billing/p0-3") // the checkpoints of partitions 0-3
//	src := kafkastage.NewSource(kopts, "billing", []string{"orders"},
//		kafkastage.WithCommitOnCheckpoint(true), kafkastage.WithPartitions(0, 1, 2, 3))
//	sums := stage.ThenKeyedAccumulate(stage.From("orders", src), "sums", perCustomer)
//	p := stage.To(sums, "totals", kafkastage.NewSink(kopts, "totals"),
//		stage.WithCheckpoint(store, time.Second), stage.WithDeadLetter(dl.Write))
//
// Why fixed partitions rather than the group's rebalances: a keyed state
// is the state of the partitions whose input it saw. A rebalance would
// move a partition to another member mid-stream, without the state, and
// a checkpoint would mix partitions that members own at different times.
// So each worker reads a fixed set of partitions and owns that set's
// checkpoint store; a successor of a dead worker (a restarted pod, a
// standby) opens the same store with the same partitions. Spreading the
// partitions over workers, and moving a set when a worker dies, is the
// deployment's job (a StatefulSet ordinal, a lease), not the group's.
//
// The group then serves only as the place where offsets are committed,
// with generation -1 commits of a group without members, so that Kafka's
// tools (kafka-consumer-groups, lag exporters) show the progress. The
// Source reads the group's offsets once, as its start when the store holds
// no checkpoint; after that the checkpoint is its position, and the
// group's offsets trail it by up to one interval while the pipeline runs,
// and reach the final checkpoint's at a drain. The group must have no members: do not run
// a group-mode Source of the same group.
//
// Dead letters keep working: a rejected record goes to the dead-letter
// topic; one rejected after the last checkpoint is written again after a
// crash, as its input is read again. [Sink] outputs made after the last
// checkpoint may be written again too (at least once): de-duplicate by
// key downstream, or emit from state only at drain or on a trigger.
//
// # Failures of the brokers
//
// Brokers that do not answer are ridden out for up to [WithMaxOutage];
// beyond it the stage fails with an error wrapping [ErrUnavailable], and
// [stage.Pipeline.Wait] reports it.
package kafkastage

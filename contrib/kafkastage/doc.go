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
//
// # Delivery guarantees
//
// At least once, nothing lost: an offset is committed only once its
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
// # Failures of the brokers
//
// Brokers that do not answer are ridden out for up to [WithMaxOutage];
// beyond it the stage fails with an error wrapping [ErrUnavailable], and
// [stage.Pipeline.Wait] reports it.
package kafkastage

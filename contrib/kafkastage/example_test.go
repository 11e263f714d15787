package kafkastage_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stagefsm/stagefsm/checkpoint"
	"github.com/stagefsm/stagefsm/contrib/kafkastage"
	"github.com/stagefsm/stagefsm/stage"
)

// A worker reads the "orders" topic as a member of the group "billing",
// produces to "invoices" and writes what it rejects to "orders.dlq".
func Example() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "orders", "invoices", "orders.dlq"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cluster.Close()
	kopts := []kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...)}

	feed, _ := kgo.NewClient(kopts...)
	for i := range 6 {
		feed.ProduceSync(context.Background(), &kgo.Record{Topic: "orders", Value: []byte(strconv.Itoa(i))})
	}
	feed.Close()

	dl := kafkastage.NewDeadLetters(kopts, "orders.dlq")
	defer dl.Close()
	src := kafkastage.NewSource(kopts, "billing", []string{"orders"})
	sink := kafkastage.NewSink(kopts, "invoices")
	bill := stage.TransformFunc[*kafkastage.Record, *kafkastage.Record](
		func(_ context.Context, r *kafkastage.Record, emit func(*kafkastage.Record)) error {
			if string(r.Value) == "3" {
				return errors.New("no such customer")
			}
			r.Value = append([]byte("invoice "), r.Value...)
			emit(r)
			return nil
		})
	p := stage.To(stage.Then(stage.From("orders", src), "bill", bill), "invoices", sink,
		stage.WithDeadLetter(dl.Write))
	if err := p.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	for src.Stats().Committable < 6 {
		time.Sleep(10 * time.Millisecond)
	}
	p.Drain()
	fmt.Println(p.Wait(context.Background()))
	fmt.Println("produced", sink.Stats().Produced, "dead letters", dl.Stats().Written,
		"committable", src.Stats().Committable)
	// Output:
	// <nil>
	// produced 5 dead letters 1 committable 6
}

// A worker in exactly-once mode: its outputs, its dead letters and its
// input offsets commit together, in Kafka transactions. Readers of the
// output use read_committed isolation.
func ExampleExactlyOnce() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "orders", "invoices", "orders.dlq"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cluster.Close()
	kopts := []kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...)}

	feed, _ := kgo.NewClient(kopts...)
	for i := range 6 {
		feed.ProduceSync(context.Background(), &kgo.Record{Topic: "orders", Value: []byte(strconv.Itoa(i))})
	}
	feed.Close()

	eos := kafkastage.NewExactlyOnce(append(kopts, kgo.TransactionalID("billing-1")), "billing", []string{"orders"})
	src := eos.Source()
	dl := eos.DeadLetters("orders.dlq")
	bill := stage.TransformFunc[*kafkastage.Record, *kafkastage.Record](
		func(_ context.Context, r *kafkastage.Record, emit func(*kafkastage.Record)) error {
			if string(r.Value) == "3" {
				return errors.New("no such customer")
			}
			r.Value = append([]byte("invoice "), r.Value...)
			emit(r)
			return nil
		})
	p := stage.To(stage.Then(stage.From("orders", src), "bill", bill), "invoices", eos.Sink("invoices"),
		stage.WithDeadLetter(dl.Write))
	if err := p.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	for src.Stats().Committable < 6 {
		time.Sleep(10 * time.Millisecond)
	}
	p.Drain()
	fmt.Println(p.Wait(context.Background()))

	read, _ := kgo.NewClient(append(kopts, kgo.ConsumeTopics("invoices"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	defer read.Close()
	var invoices []string
	for len(invoices) < 5 {
		read.PollFetches(context.Background()).EachRecord(func(r *kgo.Record) {
			invoices = append(invoices, string(r.Value))
		})
	}
	slices.Sort(invoices)
	fmt.Println(invoices)
	fmt.Println("committed", src.Stats().Committable, "dead letters", dl.Stats().Written)
	// Output:
	// <nil>
	// [invoice 0 invoice 1 invoice 2 invoice 4 invoice 5]
	// committed 6 dead letters 1
}

// A worker that sums each customer's orders in a keyed stage, reading
// partitions 0 and 1 of "orders" and checkpointing to a directory: its
// offsets commit with the checkpoints, and a worker that takes the
// partitions over resumes the sums from the directory.
func ExampleWithCommitOnCheckpoint() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "orders", "totals"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cluster.Close()
	kopts := []kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...)}

	feed, _ := kgo.NewClient(append(kopts, kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	for i, customer := range []string{"ann", "bob", "ann", "bob", "ann", "bob"} {
		feed.ProduceSync(context.Background(), &kgo.Record{Topic: "orders", Partition: int32(i % 2),
			Key: []byte(customer), Value: []byte(strconv.Itoa(10 * (i + 1)))})
	}
	feed.Close()

	dir, _ := os.MkdirTemp("", "checkpoints")
	defer os.RemoveAll(dir)
	store, _ := checkpoint.OpenDir(dir)
	defer store.Close()
	src := kafkastage.NewSource(kopts, "billing", []string{"orders"},
		kafkastage.WithCommitOnCheckpoint(true), kafkastage.WithPartitions(0, 1))
	totals := stage.KeyedAccumulator[*kafkastage.Record, string, int, *kafkastage.Record]{
		Key: func(r *kafkastage.Record) string { return string(r.Key) },
		Fold: func(total *int, r *kafkastage.Record) error {
			n, err := strconv.Atoi(string(r.Value))
			*total += n
			return err
		},
		Emit: func(customer string, total int, emit func(*kafkastage.Record)) error {
			emit(&kafkastage.Record{Key: []byte(customer), Value: fmt.Appendf(nil, "%s %d", customer, total)})
			return nil
		},
	}
	p := stage.To(stage.ThenKeyedAccumulate(stage.From("orders", src), "totals", totals),
		"out", kafkastage.NewSink(kopts, "totals"), stage.WithCheckpoint(store, 50*time.Millisecond))
	if err := p.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	for src.Stats().Committable < 6 { // committed once a stored checkpoint covers them
		time.Sleep(10 * time.Millisecond)
	}
	p.Drain()
	fmt.Println(p.Wait(context.Background()))

	read, _ := kgo.NewClient(append(kopts, kgo.ConsumeTopics("totals"))...)
	defer read.Close()
	var out []string
	for len(out) < 2 {
		read.PollFetches(context.Background()).EachRecord(func(r *kgo.Record) { out = append(out, string(r.Value)) })
	}
	slices.Sort(out)
	fmt.Println(out)
	// Output:
	// <nil>
	// [ann 90 bob 120]
}

package natsstage_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stagefsm/stagefsm/contrib/natsstage"
	"github.com/stagefsm/stagefsm/stage"
)

// A worker that turns orders into invoices: it reads the durable consumer
// "billing" of the stream ORDERS and publishes to invoices.new, stored by
// the stream INVOICES. Each order is acknowledged once its invoice is
// stored; the invoice's message id names the order it came from.
func Example() {
	srv, stop, err := exampleServer()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	if err := exampleStreams(ctx, js, "tea", "cake", "jam"); err != nil {
		fmt.Println(err)
		return
	}

	src := natsstage.NewSource(js, "ORDERS", "billing")
	billed := make(chan struct{})
	n := 0
	bill := natsstage.Transform(func(_ context.Context, m *natsstage.Msg, emit func(*natsstage.Msg)) error {
		m.Data = append([]byte("invoice for "), m.Data...)
		emit(m)
		if n++; n == 3 {
			close(billed)
		}
		return nil
	})
	sink := natsstage.NewSink(js, "invoices.new")
	p := stage.To(stage.Then(stage.From("orders", src), "bill", bill), "invoices", sink,
		stage.WithDeadLetter(natsstage.DeadLetter(nil)))
	if err := p.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	<-billed
	p.Drain() // a worker normally runs until told to stop
	if err := p.Wait(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("orders acknowledged: %d\n", src.Stats().Acked)

	cons, err := js.OrderedConsumer(ctx, "INVOICES", jetstream.OrderedConsumerConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	for m := range batch.Messages() {
		fmt.Printf("%s (id %s)\n", m.Data(), m.Headers().Get(jetstream.MsgIDHeader))
	}
	// Output:
	// orders acknowledged: 3
	// invoice for tea (id ORDERS:1)
	// invoice for cake (id ORDERS:2)
	// invoice for jam (id ORDERS:3)
}

// exampleServer starts an embedded JetStream server on a random loopback
// port, with its store in a temporary directory; stop shuts it down and
// removes the store.
func exampleServer() (srv *server.Server, stop func(), err error) {
	dir, err := os.MkdirTemp("", "natsstage-example-")
	if err != nil {
		return nil, nil, err
	}
	srv, err = server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	srv.Start()
	stop = func() {
		srv.Shutdown()
		srv.WaitForShutdown()
		os.RemoveAll(dir)
	}
	if !srv.ReadyForConnections(10 * time.Second) {
		stop()
		return nil, nil, fmt.Errorf("server not ready")
	}
	return srv, stop, nil
}

// exampleStreams creates the streams ORDERS and INVOICES and the durable
// consumer "billing" of ORDERS, and publishes the orders.
func exampleStreams(ctx context.Context, js jetstream.JetStream, orders ...string) error {
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		return err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "INVOICES", Subjects: []string{"invoices.>"}}); err != nil {
		return err
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, "ORDERS", jetstream.ConsumerConfig{
		Durable: "billing", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		return err
	}
	for _, o := range orders {
		if _, err := js.Publish(ctx, "orders.new", []byte(o)); err != nil {
			return err
		}
	}
	return nil
}

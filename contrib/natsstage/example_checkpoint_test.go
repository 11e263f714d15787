package natsstage_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stagefsm/stagefsm/contrib/natsstage"
	"github.com/stagefsm/stagefsm/stage"
)

// A worker whose per-customer totals survive it: the Source acknowledges
// an order only once a checkpoint in the JetStream bucket "checkpoints"
// holds the totals it went into, so a worker that takes over after a crash
// resumes from those totals and from the orders they have not seen.
func ExampleWithAckOnCommit() {
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
	if err := exampleStreams(ctx, js, "alice=3", "bob=5", "alice=4"); err != nil {
		fmt.Println(err)
		return
	}
	store, err := natsstage.NewStore(ctx, js, "checkpoints", "billing")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()

	src := natsstage.NewSource(js, "ORDERS", "billing", natsstage.WithAckOnCommit(true))
	folded, folds := make(chan struct{}), 0
	totals := stage.KeyedAccumulator[*natsstage.Msg, string, int, *natsstage.Msg]{
		Key: func(m *natsstage.Msg) string {
			who, _, _ := strings.Cut(string(m.Data), "=")
			return who
		},
		Fold: func(total *int, m *natsstage.Msg) error {
			_, v, _ := strings.Cut(string(m.Data), "=")
			n, err := strconv.Atoi(v)
			*total += n
			if folds++; folds == 3 {
				close(folded)
			}
			return err
		},
		Emit: func(who string, total int, emit func(*natsstage.Msg)) error { // at drain
			emit(&natsstage.Msg{ID: "total:" + who, Data: fmt.Appendf(nil, "%s %d", who, total)})
			return nil
		},
	}
	p := stage.To(stage.ThenKeyedAccumulate(stage.From("orders", src), "totals", totals),
		"invoices", natsstage.NewSink(js, "invoices.totals"),
		stage.WithCheckpoint(store, 0), // every interval (0: only at drain)
		stage.WithDeadLetter(natsstage.DeadLetter(nil)))
	if err := p.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	<-folded
	p.Drain() // a worker normally runs until told to stop
	if err := p.Wait(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("checkpoints %d, orders acknowledged %d\n", p.Stats().Checkpoints, src.Stats().Acked)
	snap, err := store.Load(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	// The source's position: no floor yet, then the three stream
	// sequences it emitted (1, and twice one more).
	fmt.Printf("position %s\n", snap.Stages["orders"].Position)
	// Output:
	// checkpoints 1, orders acknowledged 3
	// position ORDERS/billing:0,1*3
}

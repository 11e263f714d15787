package natsstage_test

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stagefsm/stagefsm/checkpoint"
	"github.com/stagefsm/stagefsm/contrib/natsstage"
)

// Checkpoints of partition 0 kept in the bucket "checkpoints", which the
// other partitions share under names of their own. A full checkpoint, then
// a delta on it; another worker (here a second Store on a new connection)
// loads the merged state.
func ExampleStore() {
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
	store, err := natsstage.NewStore(ctx, js, "checkpoints", "partition-0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()

	graph := []string{"orders", "totals", "out"}
	seq, err := store.Save(ctx, &checkpoint.Update{Graph: graph, Stages: map[string]checkpoint.StageUpdate{
		"orders": {Position: []byte("41")},
		"totals": {Set: map[string][]byte{"alice": []byte("3"), "bob": []byte("5")}},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = store.Save(ctx, &checkpoint.Update{Base: seq, Graph: graph, Stages: map[string]checkpoint.StageUpdate{
		"orders": {Position: []byte("42")},
		"totals": {Set: map[string][]byte{"bob": []byte("6")}, Delete: []string{"alice"}},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}

	// Another worker takes partition 0 over.
	nc2, err := nats.Connect(srv.ClientURL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc2.Close()
	js2, err := jetstream.New(nc2)
	if err != nil {
		fmt.Println(err)
		return
	}
	takeover, err := natsstage.NewStore(ctx, js2, "checkpoints", "partition-0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer takeover.Close()
	cp, err := takeover.Load(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("checkpoint", cp.Seq, "graph matches:", cp.Match(graph) == nil)
	fmt.Println("position", string(cp.Stages["orders"].Position))
	fmt.Println("bob", string(cp.Stages["totals"].State["bob"]), "keys", len(cp.Stages["totals"].State))

	other, err := natsstage.NewStore(ctx, js2, "checkpoints", "partition-1")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer other.Close()
	_, err = other.Load(ctx)
	fmt.Println("partition-1:", err)
	// Output:
	// checkpoint 2 graph matches: true
	// position 42
	// bob 6 keys 1
	// partition-1: checkpoint: checkpoints/partition-1: checkpoint: no checkpoint
}

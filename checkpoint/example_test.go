package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/stagefsm/stagefsm/checkpoint"
)

// A Dir saves a full checkpoint, then a delta with only what changed, and
// loads the latest complete one back.
func ExampleDir() {
	path, _ := os.MkdirTemp("", "checkpoints")
	defer os.RemoveAll(path)
	ctx := context.Background()
	graph := []string{"orders", "count", "sink"}

	d, err := checkpoint.OpenDir(path)
	if err != nil {
		panic(err)
	}
	seq, _ := d.Save(ctx, &checkpoint.Update{Graph: graph, Stages: map[string]checkpoint.StageUpdate{
		"orders": {Position: []byte("120")},
		"count":  {Set: map[string][]byte{"alice": []byte("2"), "bob": []byte("1")}},
	}})
	seq, _ = d.Save(ctx, &checkpoint.Update{Base: seq, Graph: graph, Stages: map[string]checkpoint.StageUpdate{
		"orders": {Position: []byte("180")},
		"count":  {Set: map[string][]byte{"alice": []byte("3")}, Delete: []string{"bob"}},
	}})
	_ = d.Close()

	d, _ = checkpoint.OpenDir(path) // a new start
	defer d.Close()
	cp, err := d.Load(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("checkpoint", cp.Seq == seq, "graph", cp.Match(graph))
	fmt.Printf("orders at %s, count %q\n", cp.Stages["orders"].Position, cp.Stages["count"].State)
	// Output:
	// checkpoint true graph <nil>
	// orders at 180, count map["alice":"3"]
}

// A checkpoint torn by a crash fails its checksum: Load returns the one
// before it.
func ExampleDir_torn() {
	path, _ := os.MkdirTemp("", "checkpoints")
	defer os.RemoveAll(path)
	ctx := context.Background()
	graph := []string{"orders"}
	d, _ := checkpoint.OpenDir(path, checkpoint.WithCompaction(10)) // the delta stays a delta
	seq, _ := d.Save(ctx, &checkpoint.Update{Graph: graph, Stages: map[string]checkpoint.StageUpdate{"orders": {Position: []byte("1")}}})
	_, _ = d.Save(ctx, &checkpoint.Update{Base: seq, Graph: graph, Stages: map[string]checkpoint.StageUpdate{"orders": {Position: []byte("2")}}})
	_ = d.Close()

	files, _ := filepath.Glob(filepath.Join(path, "*.delta.*"))
	fi, _ := os.Stat(files[0])
	_ = os.Truncate(files[0], fi.Size()-3) // the crash

	d, _ = checkpoint.OpenDir(path)
	defer d.Close()
	cp, _ := d.Load(ctx)
	fmt.Printf("resumed from checkpoint %d, orders at %s\n", cp.Seq, cp.Stages["orders"].Position)
	// Output:
	// resumed from checkpoint 1, orders at 1
}

// Match refuses a checkpoint taken from another graph.
func ExampleSnapshot_Match() {
	cp := &checkpoint.Snapshot{Seq: 7, Graph: []string{"orders", "count", "sink"}}
	err := cp.Match([]string{"orders", "tally", "sink"}) // count was renamed
	var ge *checkpoint.GraphError
	if errors.As(err, &ge) {
		fmt.Println(ge.Missing, ge.Added)
	}
	fmt.Println(err)
	// Output:
	// [count] [tally]
	// checkpoint: taken from a different graph; stages not in the graph: count; stages not in the checkpoint: tally
}

type tally struct {
	N    int
	Last string
}

// Gob, the default codec, encodes each key's state on its own.
func ExampleGob() {
	var c checkpoint.Codec[tally] = checkpoint.Gob[tally]{}
	b, _ := c.Encode(tally{N: 3, Last: "order-9"})
	s, err := c.Decode(b)
	fmt.Println(s, err)
	// Output:
	// {3 order-9} <nil>
}

// JSON encodes state readably.
func ExampleJSON() {
	var c checkpoint.Codec[tally] = checkpoint.JSON[tally]{}
	b, _ := c.Encode(tally{N: 3, Last: "order-9"})
	fmt.Println(string(b))
	// Output:
	// {"N":3,"Last":"order-9"}
}

// DecodeState decodes a stage's state; a state that no longer decodes
// names the stage and the key.
func ExampleDecodeState() {
	old, _ := checkpoint.JSON[tally]{}.Encode(tally{N: 3})
	cp := &checkpoint.Snapshot{Graph: []string{"count"}, Stages: map[string]checkpoint.Stage{
		"count": {State: map[string][]byte{"alice": old}}}}

	states, err := checkpoint.DecodeState(checkpoint.JSON[tally]{}, cp, "count")
	fmt.Println(states, err)

	type tallyV2 struct{ N string } // the type changed
	_, err = checkpoint.DecodeState(checkpoint.JSON[tallyV2]{}, cp, "count")
	var de *checkpoint.DecodeError
	fmt.Println(errors.As(err, &de), de.Stage, de.Key)
	// Output:
	// map[alice:{3 }] <nil>
	// true count alice
}

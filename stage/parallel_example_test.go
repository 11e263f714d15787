package stage_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/stagefsm/stagefsm/stage"
)

// ThenParallel runs a transform on four workers. With the zero Order,
// InputOrder, the outputs leave in input order whichever worker finishes
// first; the handler must be safe for concurrent use (this one shares
// nothing).
func ExampleThenParallel() {
	words := strings.Fields("alpha beta gamma delta epsilon zeta eta theta")
	src := stage.SourceFunc[string](func(_ context.Context, emit func(string)) error {
		if len(words) == 0 {
			return io.EOF
		}
		emit(words[0])
		words = words[1:]
		return nil
	})
	upper := stage.TransformFunc[string, string](func(_ context.Context, w string, emit func(string)) error {
		emit(strings.ToUpper(w))
		return nil
	})
	var out []string
	collect := stage.SinkFunc[string](func(_ context.Context, w string) error {
		out = append(out, w)
		return nil
	})
	chain := stage.ThenParallel(stage.From("words", src), "upper", upper, stage.Parallel[string]{Workers: 4})
	p := stage.To(chain, "collect", collect)
	if err := p.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	err := p.Wait(context.Background())
	fmt.Println(strings.Join(out, " "), err)
	// Output:
	// ALPHA BETA GAMMA DELTA EPSILON ZETA ETA THETA <nil>
}

// A Parallel with KeyOrder sends the items of one key to one worker, so
// each key's outputs keep their input order; a bad configuration is
// reported by Start.
func ExampleParallel() {
	src := stage.SourceFunc[int](func(context.Context, func(int)) error { return io.EOF })
	id := stage.TransformFunc[int, int](func(_ context.Context, n int, emit func(int)) error {
		emit(n)
		return nil
	})
	sink := stage.SinkFunc[int](func(context.Context, int) error { return nil })
	bad := stage.Parallel[int]{Workers: 2, Order: stage.KeyOrder} // no Key
	p := stage.To(stage.ThenParallel(stage.From("src", src), "id", id, bad), "sink", sink)
	fmt.Println(p.Start(context.Background()))
	// Output:
	// stage: transform "id": stage: invalid Parallel: KeyOrder needs a Key
}

// With AnyOrder the outputs of each worker's share of a batch leave as
// soon as it is done: the same items, in any order (sorted here to print
// them).
func ExampleOrder() {
	n := 0
	src := stage.SourceFunc[int](func(_ context.Context, emit func(int)) error {
		if n == 6 {
			return io.EOF
		}
		n++
		emit(n)
		return nil
	})
	square := stage.TransformFunc[int, int](func(_ context.Context, v int, emit func(int)) error {
		emit(v * v)
		return nil
	})
	var mu sync.Mutex
	var out []int
	collect := stage.SinkFunc[int](func(_ context.Context, v int) error {
		mu.Lock()
		defer mu.Unlock()
		out = append(out, v)
		return nil
	})
	par := stage.Parallel[int]{Workers: 3, Order: stage.AnyOrder}
	p := stage.To(stage.ThenParallel(stage.From("n", src), "square", square, par), "collect", collect)
	if err := p.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	err := p.Wait(context.Background())
	slices.Sort(out)
	fmt.Println(out, err, stage.AnyOrder)
	// Output:
	// [1 4 9 16 25 36] <nil> AnyOrder
}

package stage_test

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
	"github.com/stagefsm/stagefsm/stage"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

// step is the action of the cart machine below.
type step string

func (s step) String() string { return string(s) }

// Each cart key runs its own Mealy machine: open until paid, then removed.
// Carts still open at end of input are flushed by the drain event.
func ExampleKeyed() {
	type scope = stage.Scope[string, string]
	id := func(s string) string { return s }
	b := mealy.New[string, string, *scope, step](id, id)
	b.Initial("open")
	b.State("open")
	b.State("paid").Terminal()
	b.On("open", "add").Stay()
	b.On("open", "pay").To("paid").Do("receipt")
	b.On("open", "drain").To("paid").Do("flush")
	def, err := b.Build()
	if err != nil {
		fmt.Println(err)
		return
	}
	type ev struct{ cart, kind string }
	src := stagefsmtest.NewSource[ev]().Emit(ev{"ann", "add"}, ev{"bob", "add"}, ev{"ann", "pay"})
	keyed := stage.ThenKeyed(stage.From("events", stage.Source[ev](src)), "carts", stage.KeyedSpec[ev, string, string, string, step, string]{
		Key:   func(e ev) string { return e.cart },
		Event: func(e ev) string { return e.kind },
		New: func(string) (stagefsm.Machine[string, string, *scope, step], error) {
			return def.New("open")
		},
		Act: func(_ context.Context, a step, _ string, s *scope) error {
			s.Emit(s.Key() + " " + a.String())
			return nil
		},
		Terminal: def.Terminal,
		Drain:    func(string) (string, bool) { return "drain", true },
	})
	p := stage.To(keyed, "print", stage.SinkFunc[string](func(_ context.Context, s string) error {
		fmt.Println(s)
		return nil
	}))
	if err := p.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.Wait(context.Background()), p.Stats().Stages[1].Keys)
	// Output:
	// ann receipt
	// bob flush
	// <nil> 0
}

// An unkeyed aggregate: the sum of the input, emitted at end of input.
func ExampleAggregate() {
	src := stagefsmtest.NewSource[int]().Emit(1, 2, 3, 4)
	sum := stage.ThenAggregate(stage.From("numbers", stage.Source[int](src)), "sum",
		func(total *int, n int) { *total += n },
		func(total int, emit func(string)) { emit(fmt.Sprint("total ", total)) })
	p := stage.To(sum, "print", stage.SinkFunc[string](func(_ context.Context, s string) error {
		fmt.Println(s)
		return nil
	}))
	if err := p.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.Wait(context.Background()))
	// Output:
	// total 10
	// <nil>
}

// A keyed accumulator: the total of each user's purchases, emitted as soon
// as it reaches 100, and what is left of each total at end of input.
func ExampleKeyedAccumulate() {
	type buy struct {
		user  string
		cents int
	}
	src := stagefsmtest.NewSource[buy]().Emit(
		buy{"ann", 60}, buy{"bob", 30}, buy{"ann", 50}, buy{"bob", 20}, buy{"ann", 5})
	totals := stage.ThenKeyedAccumulate(stage.From("buys", stage.Source[buy](src)), "totals",
		stage.KeyedAccumulator[buy, string, int, string]{
			Key: func(b buy) string { return b.user },
			Fold: func(total *int, b buy) error {
				*total += b.cents
				return nil
			},
			EmitWhen: func(_ string, total int) bool { return total >= 100 },
			Emit: func(user string, total int, emit func(string)) error {
				emit(fmt.Sprintf("%s %d", user, total))
				return nil
			},
		})
	p := stage.To(totals, "print", stage.SinkFunc[string](func(_ context.Context, s string) error {
		fmt.Println(s)
		return nil
	}))
	if err := p.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.Wait(context.Background()), p.Stats().Stages[1].Keys)
	// Output:
	// ann 110
	// ann 5
	// bob 50
	// <nil> 0
}

// A keyed accumulator on two workers: each word's count is kept by the
// worker its key hashes to, so the counts of one word never race. Outputs
// of different keys arrive in any order: the sink sorts them.
func ExampleKeyedAccumulate_workers() {
	words := strings.Fields("to be or not to be that is the question to ask")
	src := stagefsmtest.NewSource[string]().Emit(words...)
	counts := stage.ThenKeyedAccumulate(stage.From("words", stage.Source[string](src)), "counts",
		stage.KeyedAccumulator[string, string, int, string]{
			Key: func(w string) string { return w },
			Fold: func(n *int, _ string) error {
				*n++
				return nil
			},
			Emit: func(w string, n int, emit func(string)) error {
				if n > 1 {
					emit(fmt.Sprintf("%s %d", w, n))
				}
				return nil
			},
			Workers: 2,
		})
	var got []string
	p := stage.To(counts, "collect", stage.SinkFunc[string](func(_ context.Context, s string) error {
		got = append(got, s)
		return nil
	}))
	if err := p.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	err := p.Wait(context.Background())
	slices.Sort(got)
	fmt.Println(strings.Join(got, ", "), err)
	// Output:
	// be 2, to 3 <nil>
}

package stage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/stagefsm/stagefsm/stage"
)

// list is a sink that keeps what it consumes.
type list[T any] struct {
	mu  sync.Mutex
	got []T
}

func (l *list[T]) Consume(_ context.Context, v T) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, v)
	return nil
}

// emitAll returns a source that emits vs, then ends.
func emitAll[T any](vs ...T) stage.Source[T] {
	i := 0
	return stage.SourceFunc[T](func(_ context.Context, emit func(T)) error {
		if i == len(vs) {
			return io.EOF
		}
		emit(vs[i])
		i++
		return nil
	})
}

// A graph: orders joined with a customer table, then routed by value, the
// big ones broadcast to an alert sink and a store.
func ExampleGraph() {
	type Customer struct {
		ID   int
		Name string
	}
	type Order struct{ ID, Customer, Cents int }
	type Line struct {
		Order int
		Name  string
		Cents int
	}

	g := stage.NewGraph(stage.WithName("shop"))
	customers := stage.Read(g, "customers", emitAll(Customer{1, "ada"}, Customer{2, "bob"}))
	orders := stage.Read(g, "orders", emitAll(Order{10, 1, 500}, Order{11, 2, 90_000}, Order{12, 3, 100}, Order{13, 1, 70_000}))
	lines := stage.Join(customers, orders, "enrich", stage.JoinSpec[int, Customer, Order, Line]{
		RefKey:    func(c Customer) int { return c.ID },
		StreamKey: func(o Order) int { return o.Customer },
		Combine:   func(o Order, c Customer, _ bool) Line { return Line{o.ID, c.Name, o.Cents} },
		Strategy:  stage.Inner, // order 12 has no customer: dropped, and counted
	})
	byValue := stage.Route(lines, "by-value", 2, func(l Line) int {
		if l.Cents >= 50_000 {
			return 0
		}
		return 1
	})
	big := stage.Broadcast(byValue[0], "big", 2)
	alerts, store, small := &list[Line]{}, &list[Line]{}, &list[Line]{}
	stage.Write(big[0], "alerts", alerts)
	stage.Write(big[1], "store", store)
	stage.Write(byValue[1], "small", small)

	p, err := g.Build()
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Wait(ctx); err != nil {
		fmt.Println(err)
		return
	}
	byOrder := func(a, b Line) int { return a.Order - b.Order }
	slices.SortFunc(alerts.got, byOrder)
	fmt.Println("alerts:", alerts.got)
	fmt.Println("store: ", len(store.got), "small:", small.got)
	st := p.Stats()
	for _, s := range st.Stages {
		if s.Name == "enrich" {
			fmt.Println("unmatched:", s.Unmatched, "dropped:", s.Counts.Dropped)
		}
	}
	fmt.Println("balanced:", st.Emitted == st.Delivered+st.DeadLettered+st.Dropped)
	// Output:
	// alerts: [{11 bob 90000} {13 ada 70000}]
	// store:  2 small: [{10 ada 500}]
	// unmatched: 1 dropped: 1
	// balanced: true
}

// Merge: several streams of one type into one.
func ExampleMerge() {
	g := stage.NewGraph()
	a := stage.Read(g, "a", emitAll(1, 2, 3))
	b := stage.Read(g, "b", emitAll(10, 20))
	sum := &list[int]{}
	stage.Write(stage.Merge("both", a, b), "sum", sum)
	p, _ := g.Build()
	ctx := context.Background()
	_ = p.Start(ctx)
	_ = p.Wait(ctx)
	slices.Sort(sum.got)
	fmt.Println(sum.got)
	// Output: [1 2 3 10 20]
}

// The graph's picture, for a README.
func ExampleGraph_Mermaid() {
	g := stage.NewGraph()
	src := stage.Read(g, "numbers", emitAll(1, 2))
	branches := stage.Broadcast(src, "copy", 2)
	stage.Write(branches[0], "left", &list[int]{})
	stage.Write(branches[1], "right", &list[int]{})
	fmt.Print(g.Mermaid())
	// Output:
	// flowchart LR
	//     s0(["numbers<br/><i>source</i>"])
	//     s1{{"copy<br/><i>broadcast</i>"}}
	//     s2[("left<br/><i>sink</i>")]
	//     s3[("right<br/><i>sink</i>")]
	//     s0 -->|int| s1
	//     s1 -->|int| s2
	//     s1 -->|int| s3
}

// runGraph builds, starts and waits for g, printing any error.
func runGraph(g *stage.Graph) *stage.Pipeline {
	p, err := g.Build()
	if err != nil {
		fmt.Println(err)
		return nil
	}
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		fmt.Println(err)
	}
	if err := p.Wait(ctx); err != nil {
		fmt.Println(err)
	}
	return p
}

// The three strategies of a Join for a stream item without a reference:
// Inner drops it (counted), Left passes it on unmatched, Strict
// dead-letters it with ErrUnmatched.
func ExampleJoin() {
	names := map[int]string{1: "ada", 2: "bob"}
	for _, strategy := range []stage.JoinStrategy{stage.Inner, stage.Left, stage.Strict} {
		var letters []string
		g := stage.NewGraph(stage.WithDeadLetter(func(it stage.Item[any]) {
			letters = append(letters, fmt.Sprint(it.Payload, errors.Is(it.Err, stage.ErrUnmatched)))
		}))
		ref := stage.Read(g, "customers", emitAll(1, 2))
		orders := stage.Read(g, "orders", emitAll(1, 3, 2))
		out := &list[string]{}
		stage.Write(stage.Join(ref, orders, "enrich", stage.JoinSpec[int, int, int, string]{
			RefKey:    func(id int) int { return id },
			StreamKey: func(customer int) int { return customer },
			Combine: func(customer, _ int, matched bool) string {
				if !matched {
					return fmt.Sprintf("%d:?", customer)
				}
				return fmt.Sprintf("%d:%s", customer, names[customer])
			},
			Strategy: strategy, // Mode: the default, Finite — the whole reference first
		}), "out", out)
		p := runGraph(g)
		fmt.Println(strategy, out.got, "dropped:", p.Stats().Dropped, "dead letters:", letters)
	}
	// Output:
	// Inner [1:ada 2:bob] dropped: 1 dead letters: []
	// Left [1:ada 3:? 2:bob] dropped: 0 dead letters: []
	// Strict [1:ada 2:bob] dropped: 0 dead letters: [3 true]
}

// Broadcast: every item to every branch, each branch at its own pace.
func ExampleBroadcast() {
	g := stage.NewGraph()
	copies := stage.Broadcast(stage.Read(g, "numbers", emitAll(1, 2, 3)), "copy", 2)
	audit, sum := &list[int]{}, &list[int]{}
	stage.Write(copies[0], "audit", audit)
	stage.Write(stage.Aggregate(copies[1], "total", func(s *int, v int) { *s += v },
		func(s int, emit func(int)) { emit(s) }), "sum", sum)
	p := runGraph(g)
	fmt.Println("audit:", audit.got, "sum:", sum.got)
	st := p.Stats()
	fmt.Println("emitted:", st.Emitted, "delivered:", st.Delivered)
	// Output:
	// audit: [1 2 3] sum: [6]
	// emitted: 10 delivered: 10
}

// Route: each item to the branch its pick function names; an item it
// names no branch for is dead-lettered with ErrNoRoute, never dropped.
func ExampleRoute() {
	var letters []string
	g := stage.NewGraph(stage.WithDeadLetter(func(it stage.Item[any]) {
		letters = append(letters, fmt.Sprint(it.Payload, " ", errors.Is(it.Err, stage.ErrNoRoute)))
	}))
	parts := stage.Route(stage.Read(g, "numbers", emitAll(1, 2, 3, 4, -5)), "parity", 2, func(v int) int {
		if v < 0 {
			return -1 // no branch
		}
		return v % 2
	})
	even, odd := &list[int]{}, &list[int]{}
	stage.Write(parts[0], "even", even)
	stage.Write(parts[1], "odd", odd)
	runGraph(g)
	fmt.Println("even:", even.got, "odd:", odd.got, "dead letters:", letters)
	// Output:
	// even: [2 4] odd: [1 3] dead letters: [-5 true]
}

// A Live join: the reference is a feed that never ends (here, prices that
// keep coming); the join enriches the stream with the latest reference it
// has, and when the stream ends it drains the feed, so the graph ends.
func ExampleJoin_live() {
	g := stage.NewGraph()
	var tick int
	prices := stage.Read(g, "prices", stage.SourceFunc[int](func(_ context.Context, emit func(int)) error {
		tick++
		emit(100 + tick%7) // the price of the day, forever
		return nil
	}))
	orders := stage.Read(g, "orders", emitAll(1, 2, 3))
	out := &list[string]{}
	stage.Write(stage.Join(prices, orders, "price", stage.JoinSpec[int, int, int, string]{
		RefKey:    func(int) int { return 0 }, // one key: the current price
		StreamKey: func(int) int { return 0 },
		Combine:   func(qty, price int, _ bool) string { return fmt.Sprintf("%d at %d", qty, price) },
		Strategy:  stage.Left, // an order ahead of the first price goes on unpriced
		Mode:      stage.Live,
	}), "out", out)
	p := runGraph(g)
	fmt.Println(len(out.got), "orders out; the feed ended as", p.Stats().Stages[0].State)
	// Output: 3 orders out; the feed ended as Drained
}

package stage_test

import (
	"context"
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

package stage_test

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stage"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

// build builds g or fails the test.
func build(t *testing.T, g *stage.Graph) *stage.Pipeline {
	t.Helper()
	p, err := g.Build()
	require.NoError(t, err)
	return p
}

func sorted[T any](c *collector[T], less func(a, b T) int) []T {
	got := c.items()
	slices.SortFunc(got, less)
	return got
}

func ints(n int, f func(int) int) []int {
	out := make([]int, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, f(i))
	}
	return out
}

func TestBroadcastRouteMerge(t *testing.T) {
	dl := &letters{}
	g := stage.NewGraph(stage.WithDeadLetter(dl.add), stage.WithBatchSize(7), stage.WithCapacity(1))
	src := stage.Read(g, "numbers", upTo(1000))
	b := stage.Broadcast(src, "copy", 2)
	all := &collector[int]{}
	stage.Write(b[0], "all", all)
	r := stage.Route(b[1], "parity", 3, func(i int) int {
		if i%100 == 0 {
			return 7 // names no branch: a dead letter
		}
		return i % 2
	})
	even := stage.Apply(r[0], "even", stage.TransformFunc[int, int](func(_ context.Context, i int, emit func(int)) error {
		emit(i)
		return nil
	}))
	odd := stage.Apply(r[1], "odd", stage.TransformFunc[int, int](func(_ context.Context, i int, emit func(int)) error {
		emit(-i)
		return nil
	}))
	merged := &collector[int]{}
	stage.Write(stage.Merge("both", even, odd, r[2]), "merged", merged)
	p := build(t, g)
	require.NoError(t, run(t, p))

	assert.Equal(t, ints(1000, func(i int) int { return i }), all.items(), "a branch keeps the purchase of its input")
	var want []int
	for i := 1; i <= 1000; i++ {
		switch {
		case i%100 == 0:
		case i%2 == 0:
			want = append(want, i)
		default:
			want = append(want, -i)
		}
	}
	slices.Sort(want)
	assert.Equal(t, want, sorted(merged, func(a, b int) int { return a - b }))

	st := assertBalanced(t, p, dl)
	require.Len(t, dl.items(), 10)
	for _, it := range dl.items() {
		assert.ErrorIs(t, it.Err, stage.ErrNoRoute)
		var ie *stage.ItemError
		require.ErrorAs(t, it.Err, &ie)
		assert.Equal(t, "parity", ie.Stage)
	}
	byName := map[string]stage.Stats{}
	for _, s := range st.Stages {
		byName[s.Name] = s
	}
	assert.Equal(t, "broadcast", byName["copy"].Kind)
	assert.EqualValues(t, 2000, byName["copy"].Counts.Emitted, "a broadcast item counts once per branch")
	assert.EqualValues(t, 1000, byName["copy"].Counts.Delivered)
	assert.Equal(t, "route", byName["parity"].Kind)
	assert.EqualValues(t, 10, byName["parity"].Counts.DeadLettered)
	assert.Equal(t, "merge", byName["both"].Kind)
	assert.EqualValues(t, 990, byName["both"].Counts.Delivered)
	for _, s := range st.Stages {
		assert.Equal(t, stage.Drained, s.State.Kind, s.Name)
	}
}

func TestRoutePanicIsADeadLetter(t *testing.T) {
	dl := &letters{}
	g := stage.NewGraph(stage.WithDeadLetter(dl.add))
	r := stage.Route(stage.Read(g, "n", upTo(10)), "pick", 1, func(i int) int {
		if i == 5 {
			panic("boom")
		}
		return 0
	})
	sink := &collector[int]{}
	stage.Write(r[0], "sink", sink)
	p := build(t, g)
	require.NoError(t, run(t, p))
	assert.Equal(t, []int{1, 2, 3, 4, 6, 7, 8, 9, 10}, sink.items())
	require.Len(t, dl.items(), 1)
	var pe *stagefsm.PanicError
	assert.ErrorAs(t, dl.items()[0].Err, &pe)
	assert.ErrorIs(t, dl.items()[0].Err, stage.ErrNoRoute)
	assertBalanced(t, p, dl)
}

// A slow branch of a broadcast holds back its source: nothing is buffered
// beyond the channels.
func TestBroadcastBackpressure(t *testing.T) {
	g := stage.NewGraph(stage.WithBatchSize(1), stage.WithCapacity(1))
	src := stagefsmtest.NewSource[int]()
	for i := range 100 {
		src.Emit(i)
	}
	b := stage.Broadcast(stage.Read(g, "src", src), "b", 2)
	release := make(chan struct{})
	fast := &collector[int]{}
	slow := &collector[int]{fail: func(int) error { <-release; return nil }}
	stage.Write(b[0], "fast", fast)
	stage.Write(b[1], "slow", slow)
	p := build(t, g)
	require.NoError(t, p.Start(context.Background()))
	// The slow sink holds one item; the channels hold a few more; the
	// fast branch cannot run ahead by more than that.
	for range 50 {
		st := p.Stats()
		require.LessOrEqual(t, st.Stages[0].Counts.Emitted, uint64(10), "the source ran ahead of a blocked branch")
	}
	close(release)
	require.NoError(t, p.Wait(context.Background()))
	assert.Len(t, fast.items(), 100)
	assert.Len(t, slow.items(), 100)
}

type customer struct {
	ID   int
	Name string
}

type purchase struct {
	ID, Customer int
}

type enriched struct {
	Order   int
	Name    string
	Matched bool
}

func joinSpec(strategy stage.JoinStrategy, mode stage.ReferenceMode) stage.JoinSpec[int, customer, purchase, enriched] {
	return stage.JoinSpec[int, customer, purchase, enriched]{
		RefKey:    func(c customer) int { return c.ID },
		StreamKey: func(o purchase) int { return o.Customer },
		Combine: func(o purchase, c customer, ok bool) enriched {
			return enriched{Order: o.ID, Name: c.Name, Matched: ok}
		},
		Strategy: strategy,
		Mode:     mode,
	}
}

func customers(n int) *stagefsmtest.Source[customer] {
	src := stagefsmtest.NewSource[customer]()
	for i := 1; i <= n; i++ {
		src.Emit(customer{ID: i, Name: "c" + strconv.Itoa(i)})
	}
	return src
}

func purchases(n, customers int) *stagefsmtest.Source[purchase] {
	src := stagefsmtest.NewSource[purchase]()
	for i := 1; i <= n; i++ {
		src.Emit(purchase{ID: i, Customer: i % (customers + 5)}) // some customers do not exist
	}
	return src
}

func TestJoinStrategies(t *testing.T) {
	const nOrders, nCustomers = 500, 20
	unmatched := 0
	for i := 1; i <= nOrders; i++ {
		if c := i % (nCustomers + 5); c < 1 || c > nCustomers {
			unmatched++
		}
	}
	for _, mode := range []stage.ReferenceMode{stage.Finite, stage.Live} {
		for _, strategy := range []stage.JoinStrategy{stage.Inner, stage.Left, stage.Strict} {
			t.Run(strconv.Itoa(int(mode))+"/"+strconv.Itoa(int(strategy)), func(t *testing.T) {
				dl := &letters{}
				g := stage.NewGraph(stage.WithDeadLetter(dl.add), stage.WithBatchSize(16))
				ref := stage.Read(g, "customers", customers(nCustomers))
				str := stage.Read(g, "orders", purchases(nOrders, nCustomers))
				out := &collector[enriched]{}
				stage.Write(stage.Join(ref, str, "enrich", joinSpec(strategy, mode)), "out", out)
				p := build(t, g)
				require.NoError(t, run(t, p))
				st := assertBalanced(t, p, dl)
				join := st.Stages[2]
				require.Equal(t, "enrich", join.Name)
				assert.Equal(t, "join", join.Kind)
				if mode == stage.Finite {
					// Every purchase was enriched after the whole table was read.
					assert.EqualValues(t, unmatched, join.Unmatched)
					assert.Contains(t, kinds(join.Timeline), stage.Hydrating)
				}
				matched := 0
				for _, e := range out.items() {
					if e.Matched {
						matched++
						assert.Equal(t, "c"+strconv.Itoa(e.Order%(nCustomers+5)), e.Name)
					}
				}
				switch strategy {
				case stage.Inner:
					assert.Len(t, out.items(), nOrders-int(join.Unmatched))
					assert.EqualValues(t, join.Unmatched, join.Counts.Dropped)
					assert.Empty(t, dl.items())
				case stage.Left:
					assert.Len(t, out.items(), nOrders)
					assert.Equal(t, nOrders-int(join.Unmatched), matched)
				case stage.Strict:
					assert.Len(t, dl.items(), int(join.Unmatched))
					for _, it := range dl.items() {
						assert.ErrorIs(t, it.Err, stage.ErrUnmatched)
					}
				}
			})
		}
	}
}

// A live join whose reference never ends: the end of the stream ends the
// join and drains the reference's source.
func TestJoinLiveReferenceNeverEnds(t *testing.T) {
	g := stage.NewGraph()
	endless := stage.SourceFunc[customer](func(ctx context.Context, emit func(customer)) error {
		emit(customer{ID: 1, Name: "one"})
		return nil
	})
	ref := stage.Read(g, "customers", endless)
	str := stage.Read(g, "orders", purchases(100, 3))
	out := &collector[enriched]{}
	stage.Write(stage.Join(ref, str, "enrich", joinSpec(stage.Left, stage.Live)), "out", out)
	p := build(t, g)
	require.NoError(t, run(t, p))
	assert.Len(t, out.items(), 100)
	assertBalanced(t, p, nil)
}

func TestJoinKeyPanicIsADeadLetter(t *testing.T) {
	dl := &letters{}
	spec := joinSpec(stage.Inner, stage.Finite)
	spec.StreamKey = func(o purchase) int {
		if o.ID == 3 {
			panic("bad purchase")
		}
		return o.Customer
	}
	g := stage.NewGraph(stage.WithDeadLetter(dl.add))
	ref := stage.Read(g, "customers", customers(10))
	str := stage.Read(g, "orders", purchases(10, 10))
	stage.Write(stage.Join(ref, str, "enrich", spec), "out", &collector[enriched]{})
	p := build(t, g)
	require.NoError(t, run(t, p))
	require.Len(t, dl.items(), 1)
	var pe *stagefsm.PanicError
	assert.ErrorAs(t, dl.items()[0].Err, &pe)
	assertBalanced(t, p, dl)
}

func TestBuildErrors(t *testing.T) {
	sink := &collector[int]{}
	other := stage.NewGraph()
	foreign := stage.Read(other, "foreign", upTo(1))

	g := stage.NewGraph(stage.WithRestart("ghost", stagefsm.RestartPolicy{}))
	a := stage.Read(g, "a", upTo(1))
	stage.Write(a, "s1", sink)
	stage.Write(a, "s2", sink)                                                      // a read twice
	stage.Read(g, "unread", upTo(1))                                                // never read
	stage.Write(stage.Merge("m", stage.Read(g, "c", upTo(1)), foreign), "s3", sink) // another graph's stream
	stage.Route(stage.Read(g, "a", upTo(1)), "r", 0, nil)                           // duplicate name, no branches, nil pick
	stage.Apply[int, int](stage.Read(g, "b", upTo(1)), "t", nil)
	_, err := g.Build()
	require.Error(t, err)
	msg := err.Error()
	for _, want := range []string{
		`the output of a is read by s1 and s2`,
		`the output of unread is read by no stage`,
		`of another Graph (written by foreign)`,
		`two stages are named "a"`,
		`route "r" has 0 branches`,
		`route "r" has a nil pick function`,
		`transform "t" has a nil handler`,
		`WithRestart names "ghost"`,
		`the output of t is read by no stage`,
	} {
		assert.Contains(t, msg, want)
	}
	_, err = g.Build()
	assert.Error(t, err, "a Graph builds once")

	_, err = stage.NewGraph().Build()
	assert.ErrorContains(t, err, "no source")
	var nilGraph *stage.Graph
	_, err = nilGraph.Build()
	assert.Error(t, err)
}

func TestGraphMermaid(t *testing.T) {
	g := stage.NewGraph()
	ref := stage.Read(g, "customers", customers(1))
	str := stage.Read(g, "orders", purchases(1, 1))
	j := stage.Join(ref, str, "enrich", joinSpec(stage.Inner, stage.Finite))
	b := stage.Broadcast(j, "fan", 2)
	stage.Write(b[0], "store", &collector[enriched]{})
	stage.Write(b[1], "audit", &collector[enriched]{})
	p := build(t, g)
	got := p.Mermaid()
	assert.Equal(t, g.Mermaid(), got)
	path := filepath.Join("testdata", "graph.mmd")
	if f := flag.Lookup("update"); f != nil && f.Value.String() == "true" { // declared in diagram_internal_test.go
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create it")
	assert.Equal(t, string(want), got)
	assert.Contains(t, got, "stage_test.purchase")
}

func TestMergeEndsWhenAllInputsEnd(t *testing.T) {
	g := stage.NewGraph(stage.WithBatchSize(3))
	var ins []*stage.Stream[int]
	for i := range 4 {
		ins = append(ins, stage.Read(g, "src"+strconv.Itoa(i), upTo(10*(i+1))))
	}
	out := &collector[int]{}
	stage.Write(stage.Merge("m", ins...), "out", out)
	p := build(t, g)
	require.NoError(t, run(t, p))
	assert.Len(t, out.items(), 10+20+30+40)
	assertBalanced(t, p, nil)
}

// A failing stage in one branch drains the whole graph, and every item is
// still accounted for.
func TestGraphFailureDrainsEverything(t *testing.T) {
	dl := &letters{}
	g := stage.NewGraph(stage.WithDeadLetter(dl.add), stage.WithBatchSize(4))
	src := stagefsmtest.NewSource[int]()
	for i := range 200 {
		src.Emit(i)
	}
	b := stage.Broadcast(stage.Read(g, "src", src), "b", 2)
	stage.Write(b[0], "ok", &collector[int]{})
	stage.Write(b[1], "bad", &collector[int]{fail: func(i int) error {
		if i == 50 {
			return stage.Fatal(errors.New("disk gone"))
		}
		return nil
	}})
	p := build(t, g)
	err := run(t, p)
	var se *stage.Error
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "bad", se.Stage)
	assertBalanced(t, p, dl)
}

// A Finite join reads its whole reference before its stream: with both
// from one upstream stage, that stage would block on the full stream side
// and the graph would hang. Build refuses it; in Live mode the same graph
// runs.
func TestFiniteJoinOfOneUpstreamIsRefused(t *testing.T) {
	shape := func(mode stage.ReferenceMode, sink *collector[int]) *stage.Graph {
		g := stage.NewGraph(stage.WithCapacity(1), stage.WithBatchSize(1))
		b := stage.Broadcast(stage.Read(g, "src", upTo(100)), "copy", 2)
		ref := stage.Apply(b[0], "as-ref", &mapper[int, int]{f: func(v int) int { return v }})
		j := stage.Join(ref, b[1], "j", stage.JoinSpec[int, int, int, int]{
			RefKey: func(r int) int { return r }, StreamKey: func(v int) int { return v },
			Combine: func(s, _ int, _ bool) int { return s }, Mode: mode,
		})
		stage.Write(j, "sink", sink)
		return g
	}
	_, err := shape(stage.Finite, &collector[int]{}).Build()
	assert.ErrorContains(t, err, `join "j" reads its reference and its stream both from copy, src`)

	sink := &collector[int]{}
	p := build(t, shape(stage.Live, sink))
	require.NoError(t, p.Start(context.Background()))
	require.NoError(t, p.Wait(context.Background()))
	st := p.Stats()
	assert.Equal(t, st.Emitted, st.Delivered+st.DeadLettered+st.Dropped)
	// Live: a stream item ahead of its reference is unmatched (and, for
	// Inner, dropped).
	assert.EqualValues(t, 100, uint64(len(sink.items()))+st.Dropped)
	assert.Equal(t, st.Dropped, st.Stages[3].Unmatched, "%s", st.Stages[3].Name)
}

package stage

import (
	"context"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
)

// benchAct is the action of the benchmark machine.
type benchAct uint8

func (a benchAct) String() string { return "emit" }

type benchScope = Scope[int, int]

// benchDef is a small machine with a 16-byte state (a string): "open"
// (timeout armed) stays on "add", goes to "paid" on "pay" and back on
// "reopen".
func benchDef(b testing.TB) *mealy.Definition[string, string, *benchScope, benchAct] {
	id := func(s string) string { return s }
	m := mealy.New[string, string, *benchScope, benchAct](id, id)
	m.Initial("open")
	m.State("open").Timeout(time.Hour, "timeout")
	m.State("paid")
	m.State("gone").Terminal()
	m.On("open", "add").Stay().Do(1)
	m.On("open", "pay").To("paid").Do(1)
	m.On("paid", "reopen").To("open").Do(1)
	m.On("open", "timeout").To("gone")
	def, err := m.Build()
	if err != nil {
		b.Fatal(err)
	}
	return def
}

type benchIn struct {
	key int
	ev  string
}

// benchCore returns a keyed core outside a pipeline, to drive its per-item
// path directly.
func benchCore(b testing.TB, edit ...func(*KeyedSpec[benchIn, int, string, string, benchAct, int])) *keyedCore[benchIn, int, int] {
	def := benchDef(b)
	u := &unit{name: "keyed"}
	o := newOptions(nil)
	spec := KeyedSpec[benchIn, int, string, string, benchAct, int]{
		Key:   func(v benchIn) int { return v.key },
		Event: func(v benchIn) string { return v.ev },
		New: func(int) (stagefsm.Machine[string, string, *benchScope, benchAct], error) {
			return def.New("open")
		},
		Act: func(_ context.Context, _ benchAct, _ string, s *benchScope) error {
			s.Emit(s.Key())
			return nil
		},
		Terminal: def.Terminal,
	}
	for _, f := range edit {
		f(&spec)
	}
	k := newKeyedMachinesCore(u, &spec, newEdge[benchIn](&o), newEdge[int](&o))
	k.w.flush = func(context.Context) error { // outputs are dropped, not sent
		clear(k.w.items)
		k.w.items, k.w.emitted = k.w.items[:0], 0
		return nil
	}
	return k
}

// benchBatches cuts evs into input batches of the default size.
func benchBatches(evs []benchIn) [][]Item[benchIn] {
	var bs [][]Item[benchIn]
	for c := range slices.Chunk(evs, defaultBatchSize) {
		b := make([]Item[benchIn], len(c))
		for i, e := range c {
			b[i].Payload = e
		}
		bs = append(bs, b)
	}
	return bs
}

// benchFeed hands the batches to k as its loop does, without channels.
func benchFeed(b testing.TB, k *keyedCore[benchIn, int, int], bs [][]Item[benchIn]) {
	for _, bt := range bs {
		k.next = 0
		if _, err := k.handle(context.Background(), bt); err != nil {
			b.Fatal(err)
		}
	}
	if err := k.w.flush(context.Background()); err != nil {
		b.Fatal(err)
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkKeyedIdleMemory measures the heap a keyed stage holds per idle
// key: 1,000,000 keys, each a mealy machine with a 16-byte state in a
// state with an armed timeout (its heap entry included). Target: ≤ 256
// bytes/key.
func BenchmarkKeyedIdleMemory(b *testing.B) {
	const n = 1_000_000
	evs := make([]benchIn, n)
	for i := range evs {
		evs[i] = benchIn{key: i, ev: "add"}
	}
	bs := benchBatches(evs)
	for b.Loop() {
		before := heapAlloc()
		k := benchCore(b)
		benchFeed(b, k, bs)
		k.w.items, k.keys, k.okIdx = nil, nil, nil
		after := heapAlloc()
		if k.shards[0].(*keyedMachines[benchIn, int, string, string, benchAct, int]).timers.armed != n || int(k.counts.keys.Load()) != n {
			b.Fatalf("armed %d, keys %d, want %d", k.shards[0].(*keyedMachines[benchIn, int, string, string, benchAct, int]).timers.armed, k.counts.keys.Load(), n)
		}
		b.ReportMetric(float64(after-before)/n, "bytes/key")
		runtime.KeepAlive(k)
	}
}

// BenchmarkKeyedVsHand compares the per-event cost of the keyed core's
// batch path (driven directly, batches of the default size without
// channels: the pipeline's batch channels are the same for any transform
// and would hide the difference) with a hand-written loop over
// map[key]state with a switch that does the same work (lookup or create,
// transition, arm the timeout on entering open, emit one output), on the
// same pre-generated events over 100,000 keys in random order. Metric
// ratio: keyed ns/event over hand ns/event, both measured in each
// iteration. Target: ≤ 2.0.
func BenchmarkKeyedVsHand(b *testing.B) { keyedVsHand(b, 100_000) }

// BenchmarkKeyedVsHandCached is BenchmarkKeyedVsHand over 100 keys, whose
// states all stay in the processor's caches: its ratio is the compute cost
// of the keyed path (key and event functions, the machine behind an
// interface, actions, terminal and timeout checks) over the hand loop's,
// without the cache misses that dominate both with 100,000 keys.
func BenchmarkKeyedVsHandCached(b *testing.B) { keyedVsHand(b, 100) }

func keyedVsHand(b *testing.B, keys int) {
	const events = 1_000_000
	r := rand.New(rand.NewPCG(1, 2))
	evs := make([]benchIn, events)
	paid := make([]bool, keys) // every key starts open
	for i := range evs {
		key := r.IntN(keys)
		ev := "add"
		switch {
		case paid[key]:
			ev = "reopen"
		case r.IntN(4) == 0:
			ev = "pay"
		}
		paid[key] = ev == "pay"
		evs[i] = benchIn{key, ev}
	}
	bs := benchBatches(evs)
	var keyedNs, handNs float64
	for b.Loop() {
		k := benchCore(b)
		start := time.Now()
		benchFeed(b, k, bs)
		keyedNs += float64(time.Since(start))

		type hstate struct {
			s        string
			deadline time.Time
			armed    bool
		}
		hand := make(map[int]*hstate)
		out := make([]int, 0, 1024)
		start = time.Now()
		for _, e := range evs {
			st, ok := hand[e.key]
			if !ok {
				st = &hstate{s: "open", deadline: time.Now().Add(time.Hour), armed: true}
				hand[e.key] = st
			}
			switch st.s {
			case "open":
				switch e.ev {
				case "add":
				case "pay":
					st.s, st.armed = "paid", false
				default:
					b.Fatalf("unhandled %s in %s", e.ev, st.s)
				}
			case "paid":
				if e.ev != "reopen" {
					b.Fatalf("unhandled %s in %s", e.ev, st.s)
				}
				st.s, st.deadline, st.armed = "open", time.Now().Add(time.Hour), true
			}
			out = append(out, e.key)
			if len(out) >= 1024 {
				out = out[:0]
			}
		}
		handNs += float64(time.Since(start))
	}
	b.ReportMetric(keyedNs/handNs, "ratio")
	b.ReportMetric(keyedNs/float64(b.N*events), "keyed-ns/event")
	b.ReportMetric(handNs/float64(b.N*events), "hand-ns/event")
}

// BenchmarkKeyedTimeoutLateness arms 1,000,000 per-key timeouts of one
// second, in batches of 1,024 items as a running stage takes them (firing
// the due timeouts after each batch, as the stage's loop does), then lets
// the core's own wait (receive on an input that stays open, then the due
// timeouts) fire the rest, in real time. It reports the p50 and p99 of how
// late each fired after its deadline and fails if one is lost.
func BenchmarkKeyedTimeoutLateness(b *testing.B) {
	const n, d, batch = 1_000_000, time.Second, 1024
	id := func(s string) string { return s }
	m := mealy.New[string, string, *benchScope, benchAct](id, id)
	m.Initial("open")
	m.State("open").Timeout(d, "timeout")
	m.State("gone").Terminal()
	m.On("open", "add").Stay()
	m.On("open", "timeout").To("gone").Do(1)
	def, err := m.Build()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var p50, p99 float64
	for b.Loop() {
		armed := make([]time.Time, n)
		late := make([]time.Duration, 0, n)
		k := benchCore(b, func(spec *KeyedSpec[benchIn, int, string, string, benchAct, int]) {
			spec.New = func(int) (stagefsm.Machine[string, string, *benchScope, benchAct], error) { return def.New("open") }
			spec.Act = func(_ context.Context, _ benchAct, _ string, s *benchScope) error {
				late = append(late, time.Since(armed[s.Key()].Add(d)))
				return nil
			}
		})
		items := make([]Item[benchIn], 0, batch)
		for i := 0; i < n; i += batch {
			items = items[:0]
			now := time.Now()
			for j := i; j < min(i+batch, n); j++ {
				armed[j] = now
				items = append(items, Item[benchIn]{Payload: benchIn{key: j, ev: "add"}})
			}
			k.next = 0
			if _, err := k.handle(ctx, items); err != nil {
				b.Fatal(err)
			}
			if err := k.fireDue(ctx); err != nil {
				b.Fatal(err)
			}
		}
		for k.shards[0].(*keyedMachines[benchIn, int, string, string, benchAct, int]).timers.armed > 0 {
			if _, _, err := k.receive(ctx); err != nil {
				b.Fatal(err)
			}
			if err := k.fireDue(ctx); err != nil {
				b.Fatal(err)
			}
		}
		if len(late) != n || k.counts.timeouts.Load() != n {
			b.Fatalf("fired %d (%d timeouts), want %d", len(late), k.counts.timeouts.Load(), n)
		}
		slices.Sort(late)
		p50 += float64(late[n/2])
		p99 += float64(late[n*99/100])
	}
	b.ReportMetric(p50/float64(b.N), "p50-late-ns")
	b.ReportMetric(p99/float64(b.N), "p99-late-ns")
}

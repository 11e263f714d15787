package stage_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"pgregory.net/rapid"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stage"
)

// This file checks graphs (Broadcast, Route, Merge, Join, Keyed,
// ApplyParallel, Apply) with random shapes, capacities, batch sizes and
// faults (pgregory.net/rapid), each case in a testing/synctest bubble.
//
// Every decision of a handler — fail, panic, emit zero, one or two outputs,
// which branch a route picks, whether a join finds a reference — is a hash
// of the stage and the item, so the test computes, by walking the graph by
// hand, how every item copy must end: delivered to a sink, absorbed by a
// transform that emitted nothing, dead-lettered at a named stage, or
// dropped by an inner join. Without a stage failure, drain or abort the
// observed ends must be exactly those, as a multiset. With one, each
// observed end must be one that the item could meet on its path (the
// normal one, or a dead letter at a stage it reached), no end repeats, and
// every item a source emitted ends somewhere. In both cases Stats close
// (emitted == delivered + dead-lettered + dropped), the dead-letter writer
// saw every dead letter, Wait returns, and per-key order holds at the
// sinks along every order-preserving path.

// gtok is the item of the random graphs: an input of source Src, number ID
// (increasing), with a key, and the trail of handlers it went through,
// which makes every copy of an input distinct.
type gtok struct {
	Src, ID, Key int
	Trail        string
}

func (t gtok) via(name string) gtok { t.Trail += "/" + name; return t }

// gref is a reference row of a join.
type gref struct{ Key int }

// gend is how one copy ended.
type gend struct {
	Src, ID int
	Trail   string
	How     string // "sink", "absorbed", "dl", "dropped"
	At      string // the stage
}

func (e gend) String() string {
	return fmt.Sprintf("%d#%d%s %s@%s", e.Src, e.ID, e.Trail, e.How, e.At)
}

var (
	errGraphItem  = errors.New("graph: item fault")
	errGraphFatal = errors.New("graph: fatal fault")
)

// gfaults is what a handler does wrong, 1 in every: errEvery returns an
// error, panicEvery panics, fatalEvery returns a Fatal error (the stage
// fails); zeroEvery and twoEvery make a transform emit no output or two.
type gfaults struct {
	errEvery, panicEvery, fatalEvery int
	zeroEvery, twoEvery              int
}

// gplan is a random graph and its faults.
type gplan struct {
	seed           uint64
	batch, cap     int
	keys           int
	drainAt        int // drain from inside the call drainAt of source 0; 0: never
	abortAt        int // abort likewise
	sources        []int
	perCall        int
	ops            []gop
	faults         map[string]gfaults
	anyOrderStages map[string]bool
}

// gop is one step of the graph: kind, the streams it reads (indices) and
// its parameters.
type gop struct {
	kind     string // "apply", "par", "bcast", "route", "merge", "join", "keyed"
	name     string
	ins      []int
	n        int // branches; workers for par
	order    stage.Order
	strategy stage.JoinStrategy
}

func drawGraphPlan(t *rapid.T) *gplan {
	p := &gplan{
		seed:           rapid.Uint64().Draw(t, "seed"),
		batch:          rapid.IntRange(1, 8).Draw(t, "batch"),
		cap:            rapid.IntRange(1, 3).Draw(t, "capacity"),
		keys:           rapid.IntRange(1, 12).Draw(t, "keys"),
		perCall:        rapid.IntRange(1, 4).Draw(t, "perCall"),
		faults:         map[string]gfaults{},
		anyOrderStages: map[string]bool{},
	}
	for range rapid.IntRange(1, 2).Draw(t, "sources") {
		p.sources = append(p.sources, rapid.IntRange(0, 60).Draw(t, "calls"))
	}
	switch rapid.IntRange(0, 7).Draw(t, "outside") {
	case 0:
		p.drainAt = rapid.IntRange(1, 20).Draw(t, "drainAt")
	case 1:
		p.abortAt = rapid.IntRange(1, 20).Draw(t, "abortAt")
	}
	fatal := rapid.IntRange(0, 5).Draw(t, "fatal") == 0
	open := len(p.sources)
	stream := func() int { open++; return open - 1 }
	live := make([]int, 0, 8)
	for i := range len(p.sources) {
		live = append(live, i)
	}
	take := func() int {
		i := rapid.IntRange(0, len(live)-1).Draw(t, "take")
		s := live[i]
		live = slices.Delete(live, i, i+1)
		return s
	}
	steps := rapid.IntRange(0, 7).Draw(t, "steps")
	for range steps {
		kinds := []string{"apply", "par", "bcast", "route", "join", "keyed"}
		if len(live) >= 2 {
			kinds = append(kinds, "merge")
		}
		if len(live) >= 4 {
			kinds = []string{"apply", "join", "keyed", "merge"}
		}
		op := gop{kind: rapid.SampledFrom(kinds).Draw(t, "kind")}
		op.name = fmt.Sprintf("%s%d", op.kind[:1], len(p.ops))
		switch op.kind {
		case "apply", "keyed":
			op.ins = []int{take()}
			p.faults[op.name] = drawGraphFaults(t, op.kind == "apply")
			p.ops = append(p.ops, op)
			live = append(live, stream())
		case "par":
			op.ins = []int{take()}
			op.n = rapid.IntRange(1, 3).Draw(t, "workers")
			op.order = rapid.SampledFrom([]stage.Order{stage.InputOrder, stage.AnyOrder, stage.KeyOrder}).Draw(t, "order")
			if op.order == stage.AnyOrder {
				p.anyOrderStages[op.name] = true
			}
			p.faults[op.name] = drawGraphFaults(t, true)
			p.ops = append(p.ops, op)
			live = append(live, stream())
		case "join":
			op.ins = []int{take()}
			op.strategy = rapid.SampledFrom([]stage.JoinStrategy{stage.Inner, stage.Left, stage.Strict}).Draw(t, "strategy")
			p.ops = append(p.ops, op)
			live = append(live, stream())
		case "merge":
			op.ins = []int{take(), take()}
			if len(live) > 0 && rapid.Bool().Draw(t, "third") {
				op.ins = append(op.ins, take())
			}
			p.ops = append(p.ops, op)
			live = append(live, stream())
		case "bcast", "route":
			op.ins = []int{take()}
			op.n = rapid.IntRange(1, 3).Draw(t, "branches")
			p.ops = append(p.ops, op)
			first := open
			open += op.n
			// A branch always goes through a transform first, so that its
			// copies carry a trail of their own.
			for i := range op.n {
				name := fmt.Sprintf("t%d", len(p.ops))
				p.ops = append(p.ops, gop{kind: "apply", name: name, ins: []int{first + i}})
				p.faults[name] = drawGraphFaults(t, false)
				live = append(live, stream())
			}
		}
	}
	for _, s := range live {
		name := fmt.Sprintf("w%d", len(p.ops))
		p.ops = append(p.ops, gop{kind: "sink", name: name, ins: []int{s}})
		p.faults[name] = drawGraphFaults(t, false)
	}
	if fatal {
		var names []string
		for _, op := range p.ops {
			if _, ok := p.faults[op.name]; ok {
				names = append(names, op.name)
			}
		}
		sort.Strings(names)
		name := rapid.SampledFrom(names).Draw(t, "fatalStage")
		f := p.faults[name]
		f.fatalEvery = rapid.IntRange(5, 80).Draw(t, "fatalEvery")
		p.faults[name] = f
	}
	return p
}

func drawGraphFaults(t *rapid.T, fanout bool) gfaults {
	var f gfaults
	if rapid.IntRange(0, 2).Draw(t, "errs") > 0 {
		f.errEvery = rapid.IntRange(2, 30).Draw(t, "errEvery")
	}
	if rapid.IntRange(0, 3).Draw(t, "panics") == 0 {
		f.panicEvery = rapid.IntRange(3, 40).Draw(t, "panicEvery")
	}
	if fanout && rapid.Bool().Draw(t, "fanout") {
		f.zeroEvery = rapid.IntRange(3, 20).Draw(t, "zeroEvery")
		f.twoEvery = rapid.IntRange(3, 20).Draw(t, "twoEvery")
	}
	return f
}

// hash is the decision salt of stage name for item t.
func (p *gplan) hash(name, salt string, t gtok) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d|%s|%s|%d|%d|%s", p.seed, name, salt, t.Src, t.ID, t.Trail)
	return h.Sum64()
}

func (p *gplan) roll(name, salt string, t gtok, every int) bool {
	return every > 0 && p.hash(name, salt, t)%uint64(every) == 0
}

// fault is what the handler of name does with t.
func (p *gplan) fault(name string, t gtok) (err error, panics bool) {
	f := p.faults[name]
	switch {
	case p.roll(name, "fatal", t, f.fatalEvery):
		return stage.Fatal(fmt.Errorf("%s on %d#%d: %w", name, t.Src, t.ID, errGraphFatal)), false
	case p.roll(name, "panic", t, f.panicEvery):
		return nil, true
	case p.roll(name, "err", t, f.errEvery):
		return fmt.Errorf("%s on %d#%d: %w", name, t.Src, t.ID, errGraphItem), false
	}
	return nil, false
}

// outs is what a transform emits for t: zero, one or two outputs.
func (p *gplan) outs(name string, t gtok) []gtok {
	f := p.faults[name]
	switch {
	case p.roll(name, "zero", t, f.zeroEvery):
		return nil
	case p.roll(name, "two", t, f.twoEvery):
		return []gtok{t.via(name + "a"), t.via(name + "b")}
	}
	return []gtok{t.via(name)}
}

// refHas reports whether the reference table of join name has key k.
func (p *gplan) refHas(name string, k int) bool {
	return p.hash(name, "ref", gtok{Key: k})%3 != 0
}

// keyPanics reports whether the stream key function of join name panics on t.
func (p *gplan) keyPanics(name string, t gtok) bool { return p.roll(name, "key", t, 17) }

// pick is a route's choice for t; n (out of range) names no branch.
func (p *gplan) pick(name string, n int, t gtok) int {
	x := int(p.hash(name, "route", t) % uint64(4*n+1))
	if x == 4*n {
		return n
	}
	return x / 4
}

// gsim is the expected fate of every copy, computed by walking the plan.
type gsim struct {
	p        *gplan
	consumer map[int]gop // by stream
	out      map[string][]int
	ends     map[gend]int  // the normal ends
	possible map[gend]bool // what an end may be under a failure
	fatal    bool          // some item meets a fatal fault
	unmatch  map[string]uint64
	alt      bool // exploring an outcome that is possible, not normal
	// maySilent: the items that may end unobserved, dropped by a join.
	maySilent map[[2]int]bool
}

func (s *gsim) visit(stream int, t gtok) {
	op := s.consumer[stream]
	end := func(how string, t gtok) {
		e := gend{Src: t.Src, ID: t.ID, Trail: t.Trail, How: how, At: op.name}
		if !s.alt {
			s.ends[e]++
		}
		s.possible[e] = true
	}
	s.possible[gend{Src: t.Src, ID: t.ID, Trail: t.Trail, How: "dl", At: op.name}] = true
	handler := func(outs []gtok) {
		err, panics := s.p.fault(op.name, t)
		if errors.Is(err, errGraphFatal) {
			s.fatal = true
		}
		if err != nil || panics {
			end("dl", t)
			return
		}
		if outs == nil && op.kind != "sink" {
			end("absorbed", t)
			return
		}
		for _, o := range outs {
			s.pass(op.name, o)
		}
	}
	switch op.kind {
	case "sink":
		if err, panics := s.p.fault(op.name, t); err != nil || panics {
			if errors.Is(err, errGraphFatal) {
				s.fatal = true
			}
			end("dl", t)
			return
		}
		end("sink", t)
	case "apply", "par":
		handler(s.p.outs(op.name, t))
	case "keyed":
		handler([]gtok{t.via(op.name)})
	case "bcast":
		for _, o := range s.out[op.name] {
			s.visit(o, t)
		}
	case "route":
		i := s.p.pick(op.name, op.n, t)
		if i == op.n {
			end("dl", t)
			return
		}
		s.visit(s.out[op.name][i], t)
	case "merge":
		s.visit(s.out[op.name][0], t)
	case "join":
		// A drain or a failure can cut the reference's source short, and
		// an item can then be dropped unmatched.
		s.maySilent[[2]int{t.Src, t.ID}] = true
		if s.p.keyPanics(op.name, t) {
			end("dl", t)
			return
		}
		matched := s.p.refHas(op.name, t.Key)
		s.join(op, t, matched)
		// Or the other way, in the same case.
		alt := s.alt
		s.alt = true
		s.join(op, t, !matched)
		s.alt = alt
	}
}

// join is what join op does with stream item t, matched or not.
func (s *gsim) join(op gop, t gtok, matched bool) {
	if matched {
		s.pass(op.name, t.via(op.name))
		return
	}
	if !s.alt {
		s.unmatch[op.name]++
	}
	switch op.strategy {
	case stage.Inner:
		if !s.alt {
			s.ends[gend{Src: t.Src, ID: t.ID, Trail: t.Trail, How: "dropped", At: op.name}]++
		}
	case stage.Left:
		s.pass(op.name, t.via(op.name+"?"))
	case stage.Strict:
		e := gend{Src: t.Src, ID: t.ID, Trail: t.Trail, How: "dl", At: op.name}
		if !s.alt {
			s.ends[e]++
		}
		s.possible[e] = true
	}
}

// pass sends o, an output of the stage name, downstream; before it is
// sent, a failure may dead-letter it at name.
func (s *gsim) pass(name string, o gtok) {
	s.possible[gend{Src: o.Src, ID: o.ID, Trail: o.Trail, How: "dl", At: name}] = true
	s.visit(s.out[name][0], o)
}

// grig runs a plan and records what happened.
type grig struct {
	p        *gplan
	pipe     *stage.Pipeline
	mu       sync.Mutex
	ends     map[gend]int
	emitted  map[[2]int]bool
	letters  int
	sinkSeen map[string][]gtok // per sink, in arrival order
	bad      []string
	aborted  bool
	drained  bool
}

func (r *grig) record(e gend) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ends[e]++
}

func (r *grig) transform(name string) stage.Transform[gtok, gtok] {
	return stage.TransformFunc[gtok, gtok](func(_ context.Context, in gtok, emit func(gtok)) error {
		err, panics := r.p.fault(name, in)
		switch {
		case panics:
			panic(fmt.Sprintf("%s panics on %d#%d", name, in.Src, in.ID))
		case err != nil:
			return err
		}
		outs := r.p.outs(name, in)
		if outs == nil {
			r.record(gend{Src: in.Src, ID: in.ID, Trail: in.Trail, How: "absorbed", At: name})
		}
		for _, o := range outs {
			emit(o)
		}
		return nil
	})
}

func (r *grig) source(i int) stage.Source[gtok] {
	id := 0
	calls := 0
	return stage.SourceFunc[gtok](func(_ context.Context, emit func(gtok)) error {
		calls++
		if i == 0 && calls == r.p.drainAt {
			r.mu.Lock()
			r.drained = true
			r.mu.Unlock()
			r.pipe.Drain()
		}
		if i == 0 && calls == r.p.abortAt {
			r.mu.Lock()
			r.aborted = true
			r.mu.Unlock()
			r.pipe.Abort()
		}
		if calls > r.p.sources[i] {
			return io.EOF
		}
		for range r.p.perCall {
			id++
			t := gtok{Src: i, ID: id, Key: int(r.p.hash("key", "", gtok{Src: i, ID: id}) % uint64(r.p.keys))}
			r.mu.Lock()
			r.emitted[[2]int{i, id}] = true
			r.mu.Unlock()
			emit(t)
		}
		return nil
	})
}

// gcounter is the machine of a keyed stage: it counts its key's events and
// asks for one action per event; three events end it (the stage removes
// it, and the key's next item starts a new one).
type gcounter struct{ n int }

func (c *gcounter) State() int { return c.n }
func (c *gcounter) Handle(_ context.Context, e gtok, _ *stage.Scope[int, gtok]) ([]gtok, error) {
	c.n++
	return []gtok{e}, nil
}

func (r *grig) keyed(in *stage.Stream[gtok], name string) *stage.Stream[gtok] {
	return stage.Keyed(in, name, stage.KeyedSpec[gtok, int, int, gtok, gtok, gtok]{
		Key:   func(t gtok) int { return t.Key },
		Event: func(t gtok) gtok { return t },
		New: func(int) (stagefsm.Machine[int, gtok, *stage.Scope[int, gtok], gtok], error) {
			return &gcounter{}, nil
		},
		Act: func(_ context.Context, a gtok, _ gtok, s *stage.Scope[int, gtok]) error {
			if s.Key() != a.Key {
				r.mu.Lock()
				r.bad = append(r.bad, fmt.Sprintf("%s: item of key %d in the scope of key %d", name, a.Key, s.Key()))
				r.mu.Unlock()
			}
			err, panics := r.p.fault(name, a)
			switch {
			case panics:
				panic(fmt.Sprintf("%s panics on %d#%d", name, a.Src, a.ID))
			case err != nil:
				return err
			}
			s.Emit(a.via(name))
			return nil
		},
		Terminal: func(n int) bool { return n >= 3 },
	})
}

func (r *grig) build() (*stage.Pipeline, *gsim, error) {
	p := r.p
	sim := &gsim{p: p, consumer: map[int]gop{}, out: map[string][]int{}, ends: map[gend]int{},
		possible: map[gend]bool{}, unmatch: map[string]uint64{}, maySilent: map[[2]int]bool{}}
	g := stage.NewGraph(stage.WithBatchSize(p.batch), stage.WithCapacity(p.cap),
		stage.WithDeadLetter(r.deadLetter))
	var streams []*stage.Stream[gtok]
	for i := range p.sources {
		streams = append(streams, stage.Read(g, fmt.Sprintf("s%d", i), r.source(i)))
	}
	for _, op := range p.ops {
		for _, in := range op.ins {
			sim.consumer[in] = op
		}
		in := streams[op.ins[0]]
		var outs []*stage.Stream[gtok]
		switch op.kind {
		case "apply":
			outs = append(outs, stage.Apply(in, op.name, r.transform(op.name)))
		case "par":
			outs = append(outs, stage.ApplyParallel(in, op.name, r.transform(op.name), stage.Parallel[gtok]{
				Workers: op.n, Order: op.order, Key: func(t gtok) uint64 { return uint64(t.Key) },
			}))
		case "keyed":
			outs = append(outs, r.keyed(in, op.name))
		case "bcast":
			outs = stage.Broadcast(in, op.name, op.n)
		case "route":
			n := op.n
			outs = stage.Route(in, op.name, n, func(t gtok) int { return p.pick(op.name, n, t) })
		case "merge":
			var ins []*stage.Stream[gtok]
			for _, i := range op.ins {
				ins = append(ins, streams[i])
			}
			outs = append(outs, stage.Merge(op.name, ins...))
		case "join":
			name := op.name
			ref := stage.Read(g, "ref"+name, r.refs(name))
			outs = append(outs, stage.Join(ref, in, name, stage.JoinSpec[int, gref, gtok, gtok]{
				RefKey: func(r gref) int { return r.Key },
				StreamKey: func(t gtok) int {
					if p.keyPanics(name, t) {
						panic("key of " + t.Trail)
					}
					return t.Key
				},
				Combine: func(t gtok, _ gref, matched bool) gtok {
					if matched {
						return t.via(name)
					}
					return t.via(name + "?")
				},
				Strategy: op.strategy,
			}))
		case "sink":
			stage.Write(in, op.name, r.sink(op.name))
		}
		for _, o := range outs {
			sim.out[op.name] = append(sim.out[op.name], len(streams))
			streams = append(streams, o)
		}
	}
	pipe, err := g.Build()
	r.pipe = pipe
	return pipe, sim, err
}

func (r *grig) refs(join string) stage.Source[gref] {
	k := 0
	return stage.SourceFunc[gref](func(_ context.Context, emit func(gref)) error {
		for ; k < r.p.keys; k++ {
			if r.p.refHas(join, k) {
				emit(gref{Key: k})
				k++
				return nil
			}
		}
		return io.EOF
	})
}

func (r *grig) sink(name string) stage.Sink[gtok] {
	return stage.SinkFunc[gtok](func(_ context.Context, in gtok) error {
		err, panics := r.p.fault(name, in)
		switch {
		case panics:
			panic(fmt.Sprintf("%s panics on %d#%d", name, in.Src, in.ID))
		case err != nil:
			return err
		}
		r.record(gend{Src: in.Src, ID: in.ID, Trail: in.Trail, How: "sink", At: name})
		r.mu.Lock()
		r.sinkSeen[name] = append(r.sinkSeen[name], in)
		r.mu.Unlock()
		return nil
	})
}

func (r *grig) deadLetter(it stage.Item[any]) {
	r.mu.Lock()
	r.letters++
	r.mu.Unlock()
	t, ok := it.Payload.(gtok)
	var ie *stage.ItemError
	if !errors.As(it.Err, &ie) {
		r.mu.Lock()
		r.bad = append(r.bad, fmt.Sprintf("dead letter without an ItemError: %v", it))
		r.mu.Unlock()
		return
	}
	if !ok {
		if _, ref := it.Payload.(gref); !ref {
			r.mu.Lock()
			r.bad = append(r.bad, fmt.Sprintf("dead letter of an unknown payload: %v", it))
			r.mu.Unlock()
		}
		return // a reference row: a stage failure swept it
	}
	r.record(gend{Src: t.Src, ID: t.ID, Trail: t.Trail, How: "dl", At: ie.Stage})
}

func runGraphPlan(t assert.TestingT, p *gplan) {
	r := &grig{p: p, ends: map[gend]int{}, emitted: map[[2]int]bool{}, sinkSeen: map[string][]gtok{}}
	pipe, sim, err := r.build()
	if !assert.NoError(t, err, "the random graph builds") {
		return
	}
	ctx := context.Background()
	assert.NoError(t, pipe.Start(ctx))
	wctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	werr := pipe.Wait(wctx)
	select {
	case <-pipe.Done():
	default:
		assert.Fail(t, "the pipeline did not end", "plan %+v", *p)
		pipe.Abort()
		<-pipe.Done()
		return
	}

	// What should have happened, to every item the sources emitted.
	for i, calls := range p.sources {
		for id := 1; id <= calls*p.perCall; id++ {
			tk := gtok{Src: i, ID: id, Key: int(p.hash("key", "", gtok{Src: i, ID: id}) % uint64(p.keys))}
			sim.possible[gend{Src: i, ID: id, How: "dl", At: fmt.Sprintf("s%d", i)}] = true
			sim.visit(i, tk)
		}
	}
	r.mu.Lock()
	strict := !sim.fatal && !r.drained && !r.aborted
	r.mu.Unlock()

	st := pipe.Stats()
	assert.Equal(t, st.Emitted, st.Delivered+st.DeadLettered+st.Dropped, "emitted == delivered + dead-lettered + dropped")
	assert.Zero(t, st.InFlight, "nothing in flight after Wait")
	assert.EqualValues(t, r.letters, st.DeadLettered, "the dead-letter writer saw every dead letter")

	var bad []string
	bad = append(bad, r.bad...)
	if strict {
		assert.NoError(t, werr)
		for e, n := range sim.ends {
			if e.How == "dropped" {
				continue
			}
			if got := r.ends[e]; got != n {
				bad = append(bad, fmt.Sprintf("%v: ended %d times, want %d", e, got, n))
			}
		}
		for e, n := range r.ends {
			if sim.ends[e] == 0 {
				bad = append(bad, fmt.Sprintf("%v: ended %d times, want never", e, n))
			}
		}
		var dropped uint64
		for e, n := range sim.ends {
			if e.How == "dropped" {
				dropped += uint64(n)
			}
		}
		assert.Equal(t, dropped, st.Dropped, "dropped by inner joins")
		for _, s := range st.Stages {
			if s.Kind == "join" {
				assert.Equal(t, sim.unmatch[s.Name], s.Unmatched, "%s: unmatched", s.Name)
			}
			assert.True(t, s.State.Terminal(), "%s ends in a terminal state: %v", s.Name, s.State)
		}
	} else {
		if sim.fatal && p.abortAt == 0 {
			if werr != nil && !errors.Is(werr, errGraphFatal) && !errors.Is(werr, stage.ErrAborted) {
				bad = append(bad, fmt.Sprintf("Wait: %v, want the fatal fault", werr))
			}
		}
		if r.aborted {
			assert.ErrorIs(t, werr, stage.ErrAborted)
		}
		if !sim.fatal && !r.aborted {
			assert.NoError(t, werr)
		}
		fan := map[string]int{}
		for _, op := range p.ops {
			if op.kind == "bcast" {
				fan[op.name] = op.n
			}
		}
		seen := map[[2]int]bool{}
		for e, n := range r.ends {
			seen[[2]int{e.Src, e.ID}] = true
			if !sim.possible[e] {
				bad = append(bad, fmt.Sprintf("%v: an end the item cannot meet", e))
			}
			if n > max(1, fan[e.At]) {
				bad = append(bad, fmt.Sprintf("%v: ended %d times", e, n))
			}
		}
		for k := range r.emitted {
			if !seen[k] && !sim.maySilent[k] {
				bad = append(bad, fmt.Sprintf("%d#%d: emitted and never ended", k[0], k[1]))
			}
		}
	}

	// Per-key order at the sinks, along each path that keeps it.
	for sink, toks := range r.sinkSeen {
		last := map[string]int{}
		for _, tk := range toks {
			if p.keepsOrder(tk.Trail) {
				k := fmt.Sprintf("%d|%d|%s", tk.Src, tk.Key, tk.Trail)
				if prev, ok := last[k]; ok && prev >= tk.ID {
					bad = append(bad, fmt.Sprintf("%s: key %d on %s: %d after %d", sink, tk.Key, tk.Trail, tk.ID, prev))
				}
				last[k] = tk.ID
			}
		}
	}

	sort.Strings(bad)
	if len(bad) > 12 {
		bad = append(bad[:12], fmt.Sprintf("... and %d more", len(bad)-12))
	}
	assert.Empty(t, bad, "plan %+v\nops %+v", *p, p.ops)
}

// keepsOrder reports whether a trail went through no stage that reorders.
func (p *gplan) keepsOrder(trail string) bool {
	for _, part := range strings.Split(trail, "/") {
		if p.anyOrderStages[strings.TrimRight(part, "ab")] {
			return false
		}
	}
	return true
}

// TestGraphProperties runs random graphs of up to seven stages besides the
// sources and sinks — Apply, ApplyParallel in its three orders, Broadcast,
// Route, Merge, Join in its three strategies, Keyed — with random batch
// sizes, capacities and faults (errors, panics, a Fatal, a drain or an
// abort), and checks every item's end against the plan (see the top of the
// file).
func TestGraphProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		plan := drawGraphPlan(rt)
		rapid.SyncTest(rt, func(st *rapid.T) { runGraphPlan(st, plan) })
	})
}

// TestKeyedFeedsMerge is the first bug the graph properties found, as a
// plain case: a keyed stage that was one of a Merge's inputs closed the
// merge's channel when it ended, and the other input then sent on a
// closed channel.
func TestKeyedFeedsMerge(t *testing.T) {
	p := &gplan{keys: 2, batch: 1, cap: 1, sources: []int{3, 40}, perCall: 1,
		faults: map[string]gfaults{}, anyOrderStages: map[string]bool{},
		ops: []gop{
			{kind: "keyed", name: "k0", ins: []int{0}},
			{kind: "merge", name: "m1", ins: []int{2, 1}},
			{kind: "sink", name: "w2", ins: []int{3}},
		}}
	synctest.Test(t, func(t *testing.T) { runGraphPlan(t, p) })
}

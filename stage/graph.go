package stage

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// Graph is a typed graph of stages being built: sources, transforms and
// sinks, and the stages that branch and join streams ([Broadcast],
// [Route], [Merge], [Join]). Stages are added by functions that take the
// [Stream]s they read and return the Streams they write, so that the item
// types of every edge are checked by the compiler:
//
//	g := stage.NewGraph(stage.WithName("orders"))
//	orders := stage.Read(g, "orders", reader)         // *Stream[Order]
//	parsed := stage.Apply(orders, "parse", parser)    // *Stream[Parsed]
//	branch := stage.Route(parsed, "by-value", 2, pick) // two *Stream[Parsed]
//	stage.Write(branch[0], "alerts", alerts)
//	stage.Write(branch[1], "store", store)
//	p, err := g.Build()
//
// A stage function of one input adds its stage to that input's Graph.
// Every Stream is read by exactly one stage; a Stream that several stages
// need goes through [Broadcast]. A stage can only read Streams that exist,
// so a graph has no cycles by construction. [Graph.Build] checks the rest —
// names, nil handlers, Streams read twice or never, Streams of another
// graph — and returns every problem, naming the stages, before any
// goroutine starts. The linear [From], [Then] and [To] build a Graph too.
//
// A Graph is not safe for concurrent use while it is built.
type Graph struct {
	p       *Pipeline
	errs    []error
	seen    map[string]bool
	streams []streamInfo // every Stream, in creation order
	edges   []diagramEdge
	finite  []finiteJoin
	built   bool
}

// finiteJoin is a Join in Finite mode, for the build check: the Streams
// of its reference and its stream.
type finiteJoin struct {
	name        string
	ref, stream int
}

// streamInfo is what the build check knows of a Stream.
type streamInfo struct {
	from     string // the stage writing it
	port     string // its name among the writer's outputs, if several
	readers  []string
	typeName string
}

// diagramEdge is one edge of the graph's Mermaid picture.
type diagramEdge struct{ from, to, label string }

// NewGraph returns an empty Graph whose pipeline runs with opts.
func NewGraph(opts ...Option) *Graph {
	return &Graph{
		p:    &Pipeline{opts: newOptions(opts), done: make(chan struct{})},
		seen: make(map[string]bool),
	}
}

// Stream is a typed edge of a [Graph]: the items of type T one stage
// writes, to be read by exactly one other stage. Streams are made by the
// functions that add stages; the zero Stream is not usable.
type Stream[T any] struct {
	g    *Graph
	id   int // index in g.streams
	edge *edge[T]
}

// newStream makes the output Stream of the stage from.
func newStream[T any](g *Graph, from, port string) *Stream[T] {
	g.streams = append(g.streams, streamInfo{from: from, port: port, typeName: typeName[T]()})
	return &Stream[T]{g: g, id: len(g.streams) - 1, edge: newEdge[T](&g.p.opts)}
}

func typeName[T any]() string { return reflect.TypeFor[T]().String() }

// read records that stage reads s, and returns s's edge. A nil Stream, or
// one of another graph, is an error of the build; the stage then reads an
// edge that is closed at once, so the graph stays well formed until Build
// reports it.
func read[T any](g *Graph, s *Stream[T], stage string) *edge[T] {
	switch {
	case s == nil || s.g == nil:
		g.errs = append(g.errs, fmt.Errorf("stage: %s reads a nil Stream", stage))
	case s.g != g:
		g.errs = append(g.errs, fmt.Errorf("stage: %s reads a Stream of another Graph (written by %s)", stage, s.g.streams[s.id].from))
	default:
		info := &g.streams[s.id]
		info.readers = append(info.readers, stage)
		if u := g.last(stage); u != nil {
			e := s.edge
			prev := u.depth
			u.depth = func() int { // Stats.Queued: batches waiting on every input
				n := len(e.ch)
				if prev != nil {
					n += prev()
				}
				return n
			}
		}
		g.edges = append(g.edges, diagramEdge{from: info.from, to: stage, label: info.typeName})
		return s.edge
	}
	e := newEdge[T](&g.p.opts)
	close(e.ch)
	return e
}

// last returns the stage named name added last, or nil.
func (g *Graph) last(name string) *unit {
	for i := len(g.p.units) - 1; i >= 0; i-- {
		if g.p.units[i].name == name {
			return g.p.units[i]
		}
	}
	return nil
}

// graphOf returns the graph of s, or nil.
func graphOf[T any](s *Stream[T]) *Graph {
	if s == nil {
		return nil
	}
	return s.g
}

// unit adds the stage name of kind k; label is its kind in [Stats].
func (g *Graph) unit(name string, k kind, label string, handlerIsNil bool) *unit {
	switch {
	case name == "":
		g.errs = append(g.errs, fmt.Errorf("stage: a %s has an empty name", label))
	case g.seen[name]:
		g.errs = append(g.errs, fmt.Errorf("stage: two stages are named %q", name))
	}
	if handlerIsNil {
		g.errs = append(g.errs, fmt.Errorf("stage: %s %q has a nil handler", label, name))
	}
	if g.built {
		g.errs = append(g.errs, fmt.Errorf("stage: %s %q added to a Graph already built", label, name))
	}
	g.seen[name] = true
	u := newUnit(g.p, name, k)
	u.label = label
	if g.p.opts.latency && k != kindSource {
		u.lat = new(latency)
	}
	g.p.units = append(g.p.units, u)
	return u
}

// misuse records a problem of the stage name, found while adding it.
func (g *Graph) misuse(format string, args ...any) {
	g.errs = append(g.errs, fmt.Errorf("stage: "+format, args...))
}

// Read adds the source stage name, which runs src, and returns the Stream
// it writes.
func Read[T any](g *Graph, name string, src Source[T]) *Stream[T] {
	out := newStream[T](g, name, "")
	u := g.unit(name, kindSource, kindSource.String(), src == nil)
	u.core = newSourceCore(u, src, out.edge)
	return out
}

// Apply adds the transform stage name, which runs t on the items of in, and
// returns the Stream it writes.
func Apply[I, O any](in *Stream[I], name string, t Transform[I, O]) *Stream[O] {
	g := graphOf(in)
	if g == nil {
		return nilStream[O](name)
	}
	out := newStream[O](g, name, "")
	u := g.unit(name, kindTransform, kindTransform.String(), t == nil)
	u.core = newTransformCore(u, t, read(g, in, name), out.edge)
	return out
}

// Write adds the sink stage name, which runs s on the items of in.
func Write[T any](in *Stream[T], name string, s Sink[T]) {
	g := graphOf(in)
	if g == nil {
		return // reported by the Build of no graph: see nilStream
	}
	u := g.unit(name, kindSink, kindSink.String(), s == nil)
	u.core = newSinkCore(u, s, read(g, in, name))
}

// nilStream is what a stage function returns when its input Stream is nil:
// a Stream of a graph that only reports the problem, so that the caller's
// own Graph fails to build (it then has an unread or missing stage) and
// nothing panics.
func nilStream[T any](stage string) *Stream[T] {
	g := NewGraph()
	g.misuse("%s reads a nil Stream", stage)
	return newStream[T](g, stage, "")
}

// Build checks the graph and returns its [Pipeline], ready to start. It
// returns an error joining every problem found, each naming the stages
// concerned: an empty or duplicate name, a nil handler, a Stream read by
// no stage (an unconnected output) or by several (use [Broadcast]), a
// Stream of another graph, a graph without a source, a restart policy
// ([WithRestart]) naming no stage, a misused stage function (a [Route]
// without branches...), a [Finite] join whose reference and stream share an
// upstream stage (it would hang). A Graph builds once; a second Build returns an
// error.
func (g *Graph) Build() (*Pipeline, error) {
	if g == nil {
		return nil, errors.New("stage: Build of a nil Graph")
	}
	if g.built {
		return nil, errors.New("stage: the Graph was built already")
	}
	g.built = true
	errs := slices.Clone(g.errs)
	sources := 0
	for _, u := range g.p.units {
		if u.kind == kindSource {
			sources++
		}
	}
	if sources == 0 {
		errs = append(errs, errors.New("stage: the graph has no source"))
	}
	for _, s := range g.streams {
		from := s.from
		if s.port != "" {
			from += " (output " + s.port + ")"
		}
		switch len(s.readers) {
		case 0:
			errs = append(errs, fmt.Errorf("stage: the output of %s is read by no stage", from))
		case 1:
		default:
			errs = append(errs, fmt.Errorf("stage: the output of %s is read by %s: a Stream has one reader (use Broadcast)",
				from, strings.Join(s.readers, " and ")))
		}
	}
	errs = append(errs, g.checkFiniteJoins()...)
	p := g.p
	p.byName = make(map[string]*unit, len(p.units))
	for _, u := range p.units {
		p.byName[u.name] = u
	}
	for _, name := range slices.Sorted(maps.Keys(p.opts.restart)) {
		u, ok := p.byName[name]
		if !ok {
			errs = append(errs, fmt.Errorf("stage: WithRestart names %q, which is not a stage of the graph", name))
			continue
		}
		policy := p.opts.restart[name]
		u.policy = &policy
	}
	p.graph = g
	if p.opts.store != nil {
		p.ck = newCheckpointer(p)
		errs = append(errs, p.ck.check()...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// checkFiniteJoins rejects a Finite join whose reference and stream come
// from a common upstream stage. The join reads its reference to the end
// before it takes a stream item, so that stage would block on the full
// stream side and the reference would never end: the graph would hang.
func (g *Graph) checkFiniteJoins() []error {
	var errs []error
	for _, j := range g.finite {
		ref := g.upstream(g.streams[j.ref].from)
		var common []string
		for s := range g.upstream(g.streams[j.stream].from) {
			if ref[s] {
				common = append(common, s)
			}
		}
		if len(common) > 0 {
			slices.Sort(common)
			errs = append(errs, fmt.Errorf("stage: join %q reads its reference and its stream both from %s: "+
				"in Finite mode it reads the whole reference first, and the stream would block it (use Live mode or a source of its own for the reference)",
				j.name, strings.Join(common, ", ")))
		}
	}
	return errs
}

// upstream returns stage and every stage it reads from, directly or not.
func (g *Graph) upstream(stage string) map[string]bool {
	seen := map[string]bool{}
	var walk func(string)
	walk = func(st string) {
		if seen[st] {
			return
		}
		seen[st] = true
		for _, s := range g.streams {
			if slices.Contains(s.readers, st) {
				walk(s.from)
			}
		}
	}
	walk(stage)
	return seen
}

// Mermaid returns the graph as a Mermaid flowchart: one node per stage,
// labelled with its name and kind, and one edge per Stream, labelled with
// its item type. Stages are listed in the order they were added, so the
// text is stable for a given program.
func (g *Graph) Mermaid() string {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	ids := make(map[string]string, len(g.p.units))
	for i, u := range g.p.units {
		id := fmt.Sprintf("s%d", i)
		ids[u.name] = id
		open, close := "[", "]"
		switch u.kind {
		case kindSource:
			open, close = "([", "])"
		case kindSink:
			open, close = "[(", ")]"
		}
		if u.label != u.kind.String() {
			open, close = "{{", "}}"
		}
		fmt.Fprintf(&b, "    %s%s\"%s<br/><i>%s</i>\"%s\n", id, open, mermaidText(u.name), u.label, close)
	}
	for _, e := range g.edges {
		from, to := ids[e.from], ids[e.to]
		if from == "" || to == "" {
			continue
		}
		fmt.Fprintf(&b, "    %s -->|%s| %s\n", from, mermaidText(e.label), to)
	}
	return b.String()
}

// mermaidText escapes what Mermaid would read as syntax in a label.
func mermaidText(s string) string { return mermaidEscapes.Replace(s) }

var mermaidEscapes = strings.NewReplacer(`"`, "#quot;", "|", "#124;", "<", "#lt;", ">", "#gt;")

// Command pipeline is the stagefsm demo: it generates the order events of
// an online shop and its customer table as CSV, and runs them through a
// graph of supervised FSM stages:
//
//	orders → parse → enrich ─┐
//	customers → parse-customers ─┴→ join → lifecycle → fan ─┬→ hourly → write
//	                                                         └→ triage ─┬→ alerts
//	                                                                    ├→ high-value
//	                                                                    └→ standard
//
// The join enriches each event with its customer (finite reference: the
// customer table is read first); lifecycle is a keyed stage that runs one
// Mealy machine per order (placed → paid → shipped, abandoned when it is not
// paid within -abandon-after); fan broadcasts each order's outcome to the
// hourly revenue aggregate and to triage, which routes it to the alerts
// (abandoned, or paid and never shipped), the high-value orders, or the
// rest. Progress goes to stderr; the summary lists every stage with its
// counts, the keyed and join stats, each stage's state timeline and the
// accounting check. Flags inject faults; with any of them every item is
// still accounted for. Run it with -h for the flags.
//
//	go run ./examples/pipeline
//	go run ./examples/pipeline -mermaid                          # the graph, as a Mermaid flowchart
//	go run ./examples/pipeline -fail-rate 0.01 -panic-every 50000
//	go run ./examples/pipeline -fatal-at 600000
//	go run ./examples/pipeline -slow-sink 200us -drain-after 1s
//	go run ./examples/pipeline -flaky-sink 20000                 # restarted under a restart policy
//	go run ./examples/pipeline -flaky-sink 500 -max-restarts 3   # until the policy gives up
//	go run ./examples/pipeline -state /tmp/state                 # checkpoints: after a kill, the same command resumes
//
// # Checkpoints
//
// With -state DIR the demo checkpoints into DIR every second
// (-checkpoint-every) and at the end, and writes its outputs to
// DIR/outputs unless -out says otherwise. Kill it at any moment and run the
// same command again: it resumes from the last checkpoint — the sources'
// byte offsets, the open orders' machines with their armed timeouts (the
// time they had left: the downtime does not count), the join's customer
// table, the hourly aggregate, the sinks' file lengths (a resumed sink
// truncates what it wrote after the checkpoint) — and ends with the same
// output files as a run that was never killed. Run it again with the same
// input flags (-n and -seed, or -in): the positions are offsets in that
// input.
//
// go run ./cmd/crashtest -rounds 10 checks it: it kills the demo with
// SIGKILL at random moments (seeded), starts it again, and compares the
// outputs item by item with a run never killed — the alerts as a set, since
// the end of input reaches the open orders in an order a restore changes —
// with -abandon-after 10m: the timeout is real time, so which orders a
// short one abandons, rather than the end of input, depends on timing too.
// An order's events are close together in the input (paid at most 30
// minutes of data time after placed: some 2,100 rows later with 1,000,000
// orders, a millisecond or two of processing), so a restored timeout does
// not fire before the replay reaches the order's next event, unless the
// pipeline stalls for most of -abandon-after. A checkpoint is such a stall:
// the sources wait while it is cut (up to several hundred milliseconds for
// 1,000,000 orders on two busy cores), so a timeout shorter than that can
// abandon an order whose paid event waits behind it, with or without a
// crash.
//
// The dead letters are not part of a checkpoint: a resumed run appends its
// own to dead_letters.jsonl, so those of the input replayed since the
// checkpoint appear twice.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/checkpoint"
	"github.com/stagefsm/stagefsm/stage"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// config is what the flags say.
type config struct {
	n            int
	in           string
	out          string
	failRate     float64
	panicEvery   int64
	fatalAt      int64
	slowSink     time.Duration
	drainAfter   time.Duration
	flakySink    int64
	maxRestart   int
	backoff      time.Duration
	abandonAfter time.Duration
	highValue    float64
	batch        int
	capacity     int
	seed         uint64
	progress     time.Duration
	mermaid      bool
	mermaidFSM   bool
	cpuProfile   string
	state        string
	cpEvery      time.Duration
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("pipeline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.n, "n", 1_000_000, "generate `N` orders (each placed, most paid and shipped: about 3 events per order)")
	fs.StringVar(&c.in, "in", "", "read orders.csv (header: "+ordersHeader+") and customers.csv (header: "+customersHeader+") from this `dir` instead of generating them")
	fs.StringVar(&c.out, "out", "", "write the generated data, the outputs, dead letters and journal to `dir` (default: a new temporary directory; with -state, its subdirectory outputs)")
	fs.Float64Var(&c.failRate, "fail-rate", 0.001, "fraction of generated placed rows that are broken: malformed (parse rejects them) or invalid (enrich rejects them); each is dead-lettered, and so are the paid and shipped events of that order (lifecycle rejects them), the pipeline goes on")
	fs.Int64Var(&c.panicEvery, "panic-every", 0, "the enrich handler panics on the placed event of every order whose id is a multiple of `K` (0: never); each panic fails that event only")
	fs.Int64Var(&c.fatalAt, "fatal-at", 0, "the enrich handler fails fatally at the placed event of order `ID` (0: never): enrich fails, the sources drain, the stages after it drain what they have")
	fs.DurationVar(&c.slowSink, "slow-sink", 0, "every sink waits `D` per item it consumes (backpressure through the whole graph: watch the in-flight count stay bounded)")
	fs.DurationVar(&c.drainAfter, "drain-after", 0, "ask the pipeline to drain after `D`: the sources stop, everything in flight is still delivered, and the orders still open get the lifecycle's drain event")
	fs.Int64Var(&c.flakySink, "flaky-sink", 0, "the high-value sink loses its connection (a fatal error) on every `N`-th order it writes (0: never). The high-value stage then runs under a restart policy: each failure restarts it after a backoff: the order it failed on is dead-lettered, the orders reaching it meanwhile wait for it (beyond a channel's worth they are dead-lettered too, so nothing upstream waits)")
	fs.IntVar(&c.maxRestart, "max-restarts", 10, "with -flaky-sink: the restart policy's intensity, at most `K` restarts per minute (0: no limit); one more failure and the policy gives up: the high-value stage fails, the pipeline drains")
	fs.DurationVar(&c.backoff, "restart-backoff", 2*time.Millisecond, "with -flaky-sink: the wait before the first restart (`D`), doubled for each restart in a row up to 100×D, back to D after 10×D without a failure; orders reaching the sink meanwhile wait for it, up to -capacity × -batch, the rest is dead-lettered")
	fs.DurationVar(&c.abandonAfter, "abandon-after", 250*time.Millisecond, "the lifecycle's timeout (real time): an order not paid within `D` of its placed event is abandoned; the orders still unpaid at end of input are abandoned by the drain event")
	fs.Float64Var(&c.highValue, "high-value", 1500, "shipped orders of at least `EUR` go to the high-value sink")
	fs.IntVar(&c.batch, "batch", 1024, "items per batch between stages (0: the library default, 128; this graph moves about 16 items per order from stage to stage, and larger batches cut what each hop costs)")
	fs.IntVar(&c.capacity, "capacity", 0, "batches each channel between stages holds (0: the library default, 4)")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the generated data")
	fs.DurationVar(&c.progress, "progress", 100*time.Millisecond, "interval of the progress line on stderr (0: none)")
	fs.BoolVar(&c.mermaid, "mermaid", false, "print the pipeline's graph as a Mermaid flowchart and exit")
	fs.BoolVar(&c.mermaidFSM, "mermaid-lifecycle", false, "print the per-order lifecycle machine as a Mermaid state diagram and exit")
	fs.StringVar(&c.state, "state", "", "checkpoint into `dir` (created if needed) and, when it holds a checkpoint, resume from it: after a crash, run again with the same -state (and -in, -out) and the outputs end as if the crash never happened")
	fs.DurationVar(&c.cpEvery, "checkpoint-every", time.Second, "with -state: the interval `D` between checkpoints (and one at the end)")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the pipeline's run (not the data generation) to `file`")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: pipeline [flags]

Generates the events of %s orders and a customer table as CSV (or reads -in)
and runs them through a graph of supervised FSM stages (stagefsm/stage):
  orders → parse → enrich, customers → parse-customers, both → join (the
  customer table first) → lifecycle (one Mealy machine per order) → fan →
  hourly → write, and fan → triage → alerts | high-value | standard.
Progress goes to stderr; the summary to stdout. Ctrl-C drains the pipeline
gracefully; a second Ctrl-C aborts it. The exit status is 1 if a stage failed
or the pipeline was aborted.

Flags:
`, "1,000,000")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	case c.n < 0 || c.failRate < 0 || c.failRate > 1 || c.panicEvery < 0 || c.fatalAt < 0 || c.slowSink < 0 || c.drainAfter < 0 ||
		c.flakySink < 0 || c.maxRestart < 0 || c.backoff < 0 || c.highValue < 0:
		return c, errors.New("negative values (and -fail-rate above 1) make no sense")
	case c.abandonAfter <= 0:
		return c, errors.New("-abandon-after must be positive")
	case c.cpEvery <= 0:
		return c, errors.New("-checkpoint-every must be positive")
	}
	if c.state != "" && c.out == "" {
		// A resumed run goes on with the output files of the run it
		// resumes: they must not be in a new temporary directory. The
		// checkpoint directory ignores what is not a checkpoint file.
		c.out = filepath.Join(c.state, "outputs")
	}
	return c, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	c, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "pipeline:", err)
		return 2
	}
	if err := demo(c, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "pipeline:", err)
		return 1
	}
	return 0
}

// files are where the demo reads and writes.
type files struct {
	orders, customers                    string
	hourly, alerts, highValue, deadLines string
	journal                              string
}

func newFiles(in, out string) files {
	if in == "" {
		in = out
	}
	return files{
		orders: filepath.Join(in, "orders.csv"), customers: filepath.Join(in, "customers.csv"),
		hourly: filepath.Join(out, "hourly_revenue.jsonl"), alerts: filepath.Join(out, "alerts.jsonl"),
		highValue: filepath.Join(out, "high_value.jsonl"), deadLines: filepath.Join(out, "dead_letters.jsonl"),
		journal: filepath.Join(out, "journal.jsonl"),
	}
}

// demoGraph is the built pipeline and the handlers the summary reads.
type demoGraph struct {
	p                      *stage.Pipeline
	orders                 *lineSource
	rows                   *fileSink[Row]
	alerts, high, standard *fileSink[Outcome]
	outcomes               *outcomeCounts
	policy                 *stagefsm.RestartPolicy // nil: none
	edges                  []edgeGroup
	highValueCents         int64
	abandonAfter           time.Duration
}

// edgeGroup is a set of stages whose outputs all go to another set: what the
// first sends, the second receives.
type edgeGroup struct{ from, to []string }

// buildGraph wires the demo's graph. It opens no file: the handlers do, when
// the pipeline starts.
func buildGraph(c config, fl files, opts ...stage.Option) (*demoGraph, error) {
	def, err := lifecycleDef(c.abandonAfter)
	if err != nil {
		return nil, err
	}
	d := &demoGraph{
		orders:         &lineSource{path: fl.orders, header: ordersHeader, countPrefix: "placed,"},
		rows:           &fileSink[Row]{path: fl.hourly, slow: c.slowSink, encode: appendRow},
		alerts:         &fileSink[Outcome]{path: fl.alerts, slow: c.slowSink, encode: appendOutcome},
		high:           &fileSink[Outcome]{path: fl.highValue, slow: c.slowSink, flaky: c.flakySink, encode: appendOutcome},
		standard:       &fileSink[Outcome]{slow: c.slowSink},
		outcomes:       &outcomeCounts{},
		highValueCents: int64(c.highValue * 100),
		abandonAfter:   c.abandonAfter,
	}
	if c.flakySink > 0 {
		d.policy = restartPolicy(c)
		opts = append(opts, stage.WithRestart("high-value", *d.policy))
	}
	g := stage.NewGraph(opts...)
	events := stage.Apply(stage.Read(g, "orders", stage.Source[string](d.orders)), "parse", stage.TransformFunc[string, Event](parseEvent))
	valid := stage.Apply(events, "enrich", stage.Transform[Event, OrderEvent](enricher{panicEvery: c.panicEvery, fatalAt: c.fatalAt}))
	customers := stage.Apply(stage.Read(g, "customers", stage.Source[string](&lineSource{path: fl.customers, header: customersHeader})),
		"parse-customers", stage.TransformFunc[string, customerRef](parseCustomer))
	joined := stage.Join(customers, valid, "join", stage.JoinSpec[uint32, customerRef, OrderEvent, OrderEvent]{
		RefKey:    func(r customerRef) uint32 { return r.c.ID },
		StreamKey: func(e OrderEvent) uint32 { return e.Customer },
		Combine: func(e OrderEvent, r customerRef, _ bool) OrderEvent {
			e.Cust, e.Country = r.c, r.country
			return e
		},
		Strategy: stage.Inner, // the events of deleted customers: dropped, and counted
		Mode:     stage.Finite,
		Codec:    customerCodec{},
	})
	outcomes := stage.Keyed(joined, "lifecycle", lifecycleSpec(def, d.outcomes))
	fan := stage.Broadcast(outcomes, "fan", 2)
	stage.Write(stage.Aggregate(fan[0], "hourly", foldHourly, emitHourly), "write", stage.Sink[Row](d.rows))
	branches := stage.Route(fan[1], "triage", 3, func(o Outcome) int {
		switch {
		case o.Status != statusShipped:
			return 0
		case o.TotalEUR >= d.highValueCents:
			return 1
		}
		return 2
	})
	stage.Write(branches[0], "alerts", stage.Sink[Outcome](d.alerts))
	stage.Write(branches[1], "high-value", stage.Sink[Outcome](d.high))
	stage.Write(branches[2], "standard", stage.Sink[Outcome](d.standard))
	d.edges = []edgeGroup{
		{[]string{"orders"}, []string{"parse"}}, {[]string{"parse"}, []string{"enrich"}},
		{[]string{"customers"}, []string{"parse-customers"}},
		{[]string{"enrich", "parse-customers"}, []string{"join"}}, {[]string{"join"}, []string{"lifecycle"}},
		{[]string{"lifecycle"}, []string{"fan"}}, {[]string{"fan"}, []string{"hourly", "triage"}},
		{[]string{"hourly"}, []string{"write"}}, {[]string{"triage"}, []string{"alerts", "high-value", "standard"}},
	}
	if d.p, err = g.Build(); err != nil {
		return nil, err
	}
	return d, nil
}

func demo(c config, stdout, stderr io.Writer) error {
	if c.mermaid || c.mermaidFSM {
		if c.mermaidFSM {
			def, err := lifecycleDef(c.abandonAfter)
			if err != nil {
				return err
			}
			fmt.Fprint(stdout, def.Mermaid())
			return nil
		}
		d, err := buildGraph(c, newFiles(c.in, c.out))
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, d.p.Mermaid())
		return nil
	}
	out := c.out
	if out == "" {
		dir, err := os.MkdirTemp("", "stagefsm-pipeline-")
		if err != nil {
			return err
		}
		out = dir
	} else if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	fl := newFiles(c.in, out)
	stderr = &lockedWriter{w: stderr} // the progress, the signals and the checkpoints write to it
	if c.in == "" {
		fmt.Fprintf(stderr, "generating %s orders and %s customers into %s ...\n", group(uint64(c.n)), group(uint64(customerCount(c.n))), out)
		t0 := time.Now()
		if err := generate(fl.orders, fl.customers, c.n, c.failRate, c.seed); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "generated in %s\n", time.Since(t0).Round(time.Millisecond))
	}

	journal, err := stage.OpenFileJournal(fl.journal)
	if err != nil {
		return err
	}
	defer journal.Close()
	dead := &jsonLines{path: fl.deadLines}
	defer dead.Close()
	var opts []stage.Option
	var store *notedStore
	if c.state == "" {
		if err := dead.open(false); err != nil {
			return err
		}
	} else {
		dir, err := checkpoint.OpenDir(c.state, checkpoint.WithLogger(warnLogger(stderr)))
		if err != nil {
			return err
		}
		defer dir.Close()
		// A resumed run keeps the dead letters of the runs it resumes and
		// appends its own (see the README: those of the input replayed
		// since the checkpoint appear twice). The pipeline loads the
		// checkpoint as it starts, before any stage runs.
		store = &notedStore{Store: dir, loaded: func(resumed bool) error { return dead.open(resumed) }}
		first := true
		store.saved = func(seq uint64) {
			if first { // the checkpoints are taken one at a time
				first = false
				fmt.Fprintf(stderr, "-state %s: checkpoint %d stored\n", c.state, seq)
			}
			if checkpointed != nil {
				checkpointed(seq)
			}
		}
		opts = append(opts, stage.WithCheckpoint(store, c.cpEvery))
	}
	var causes causeCounts
	d, err := buildGraph(c, fl, append(opts,
		stage.WithName("orders"),
		stage.WithJournal(journal),
		stage.WithBatchSize(c.batch),
		stage.WithCapacity(c.capacity),
		stage.WithDeadLetter(func(it stage.Item[any]) {
			causes.add(it.Err)
			dead.write(deadLetter{Stage: failedAt(it.Err), Origin: it.Origin, Seq: it.Seq, Error: it.Err.Error(), Payload: it.Payload})
		}))...)
	if err != nil {
		return err
	}
	p := d.p

	if c.cpuProfile != "" {
		stopProfile, err := startProfile(c.cpuProfile)
		if err != nil {
			return err
		}
		defer stopProfile()
	}
	ctx := context.Background()
	start := time.Now()
	if err := p.Start(ctx); err != nil {
		return err
	}
	if store != nil {
		fmt.Fprintf(stderr, "-state %s: %s\n", c.state, store)
	}
	stop := handleSignals(p, stderr)
	defer stop()
	if c.drainAfter > 0 {
		t := time.AfterFunc(c.drainAfter, func() {
			fmt.Fprintf(stderr, "\n-drain-after %s: draining\n", c.drainAfter)
			p.Drain()
		})
		defer t.Stop()
	}
	peakKeys := showProgress(p, start, c.progress, stderr)
	runErr := p.Wait(ctx)
	elapsed := time.Since(start)
	if err := dead.Close(); err != nil && runErr == nil {
		runErr = err
	}
	if err := journal.Close(); err != nil && runErr == nil {
		runErr = err
	}

	summarize(stdout, summary{
		d: d, stats: p.Stats(), start: start, elapsed: elapsed, err: runErr, causes: &causes, peakKeys: peakKeys,
		files: fl,
	})
	return runErr
}

// notedStore is the checkpoint store of -state. It notes the checkpoint
// the pipeline loaded at its start, to say so, tells loaded whether there
// was one, and saved of each checkpoint stored.
type notedStore struct {
	checkpoint.Store
	loaded func(resumed bool) error
	saved  func(seq uint64)
	seq    uint64 // of the checkpoint loaded; 0: none
	err    error  // of the load
}

// checkpointed, if not nil, is called after each checkpoint the demo
// stored: a test kills the demo there.
var checkpointed func(seq uint64)

func (s *notedStore) Save(ctx context.Context, u *checkpoint.Update) (uint64, error) {
	seq, err := s.Store.Save(ctx, u)
	if err == nil {
		s.saved(seq)
	}
	return seq, err
}

func (s *notedStore) Load(ctx context.Context) (*checkpoint.Snapshot, error) {
	cp, err := s.Store.Load(ctx)
	s.err = err
	switch {
	case err == nil:
		s.seq = cp.Seq
		err = s.loaded(true)
	case errors.Is(err, checkpoint.ErrNoCheckpoint):
		if lerr := s.loaded(false); lerr != nil {
			err = lerr
		}
	}
	return cp, err
}

// String says what the pipeline started from.
func (s *notedStore) String() string {
	switch {
	case s.seq != 0:
		return fmt.Sprintf("resuming from checkpoint %d", s.seq)
	case s.err == nil || errors.Is(s.err, checkpoint.ErrNoCheckpoint):
		return "no checkpoint yet: starting from the beginning"
	}
	return fmt.Sprintf("starting from the beginning (%v)", s.err)
}

// lockedWriter serializes the writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// warnLogger logs warnings and errors to w: the checkpoint store's word on
// a torn or corrupt checkpoint it skipped.
func warnLogger(w io.Writer) *zap.Logger {
	enc := zap.NewDevelopmentEncoderConfig()
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), zap.WarnLevel))
}

// startProfile starts a CPU profile into path; the returned function stops
// it and closes the file.
func startProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// restartPolicy is the high-value stage's restart policy under -flaky-sink:
// at most -max-restarts restarts a minute, a backoff from -restart-backoff
// doubling up to 100 times that, reset after 10 times that without a
// failure, with 20% jitter seeded by -seed (so a run is reproducible).
func restartPolicy(c config) *stagefsm.RestartPolicy {
	limit := c.maxRestart
	if limit == 0 {
		limit = -1 // the policy's 0 means its default; the flag's means none
	}
	return &stagefsm.RestartPolicy{
		MaxRestarts:    limit,
		Period:         time.Minute,
		BackoffInitial: c.backoff,
		BackoffMax:     100 * c.backoff,
		HealthyAfter:   10 * c.backoff,
		Jitter:         0.2,
		Seed:           c.seed,
	}
}

// handleSignals drains the pipeline on the first interrupt and aborts it on
// the second. The returned function stops listening.
func handleSignals(p *stage.Pipeline, stderr io.Writer) func() {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt)
	done := make(chan struct{})
	go func() {
		for n := 0; ; n++ {
			select {
			case <-sig:
				if n == 0 {
					fmt.Fprintln(stderr, "\ninterrupt: draining (interrupt again to abort)")
					p.Drain()
				} else {
					fmt.Fprintln(stderr, "\ninterrupt: aborting")
					p.Abort()
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
	}
}

// Row is one line of hourly_revenue.jsonl: a country's revenue in one hour
// (the hour the orders were placed), over the orders that were paid.
type Row struct {
	Hour       time.Time `json:"hour"`
	Country    string    `json:"country"`
	Region     string    `json:"region"`
	Orders     int       `json:"orders"`
	Units      int       `json:"units"`
	RevenueEUR float64   `json:"revenue_eur"`
	AvgEUR     float64   `json:"avg_order_eur"`
}

// hourly is the state of the hourly aggregate: the paid orders' totals per
// hour and country, indexed by hour × country. Outcomes arrive in the order
// the orders ended, not in the order they were placed, so every window stays
// open to end of input. Its fields are exported for gob, which encodes the
// state of an Aggregate in a checkpoint (-state).
type hourly struct {
	Rows []AggRow
}

// AggRow is one hour and country of [hourly].
type AggRow struct {
	Orders, Units  int
	RevenueEURCent int64
}

func foldHourly(h *hourly, o Outcome) {
	if o.Status == statusAbandoned {
		return // no revenue
	}
	i := int(o.At/3600)*len(countries) + int(o.Country)
	if i >= len(h.Rows) {
		h.Rows = slices.Grow(h.Rows, i+1-len(h.Rows))[:i+1]
	}
	r := &h.Rows[i]
	r.Orders++
	r.Units += int(o.Quantity)
	r.RevenueEURCent += o.TotalEUR
}

// emitHourly emits the rows by hour, then country code.
func emitHourly(h hourly, emit func(Row)) {
	byCode := make([]int, len(countries))
	for i := range byCode {
		byCode[i] = i
	}
	slices.SortFunc(byCode, func(a, b int) int { return strings.Compare(countries[a].code, countries[b].code) })
	for base := 0; base < len(h.Rows); base += len(countries) {
		for _, c := range byCode {
			if base+c >= len(h.Rows) || h.Rows[base+c].Orders == 0 {
				continue
			}
			r := h.Rows[base+c]
			rev := float64(r.RevenueEURCent) / 100
			emit(Row{Hour: epoch.Add(time.Duration(base/len(countries)) * time.Hour), Country: countries[c].code, Region: countries[c].region,
				Orders: r.Orders, Units: r.Units, RevenueEUR: rev, AvgEUR: float64(int64(rev/float64(r.Orders)*100)) / 100})
		}
	}
}

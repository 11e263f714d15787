// Command pipeline is the stagefsm demo: it generates a data set of online
// shop orders as CSV and runs it through a four-stage pipeline of
// supervised FSM stages,
//
//	read (CSV lines) → parse (Order) → enrich (validate, convert to EUR)
//	  → hourly (revenue per country and hour) → write (JSON lines)
//
// with progress on stderr, and prints a summary: items in, out and
// dead-lettered per stage, each stage's state timeline, throughput, the
// accounting check and where the output, the dead letters and the journal
// are. Flags inject faults; with any of them every item is still accounted
// for. Run it with -h for the flags.
//
//	go run ./examples/pipeline
//	go run ./examples/pipeline -fail-rate 0.01 -panic-every 50000
//	go run ./examples/pipeline -fatal-at 600000
//	go run ./examples/pipeline -slow-sink 200us -drain-after 1s
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/stagefsm/stagefsm/stage"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// config is what the flags say.
type config struct {
	n          int
	in         string
	out        string
	failRate   float64
	panicEvery int64
	fatalAt    int64
	slowSink   time.Duration
	drainAfter time.Duration
	batch      int
	capacity   int
	seed       uint64
	progress   time.Duration
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("pipeline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.n, "n", 1_000_000, "generate `N` orders")
	fs.StringVar(&c.in, "in", "", "read orders from this CSV `file` instead of generating them (header: "+csvHeader+")")
	fs.StringVar(&c.out, "out", "", "write the output, dead letters and journal to `dir` (default: a new temporary directory)")
	fs.Float64Var(&c.failRate, "fail-rate", 0.001, "fraction of generated rows that are broken: malformed (parse rejects them) or invalid (enrich rejects them); each is dead-lettered, the pipeline goes on")
	fs.Int64Var(&c.panicEvery, "panic-every", 0, "the enrich handler panics on every order whose id is a multiple of `K` (0: never); each panic fails that order only")
	fs.Int64Var(&c.fatalAt, "fatal-at", 0, "the enrich handler fails fatally at order id `ID` (0: never): enrich fails, the source drains, the stages after it drain what they have")
	fs.DurationVar(&c.slowSink, "slow-sink", 0, "the sink waits `D` per row written (backpressure: watch the in-flight count stay bounded)")
	fs.DurationVar(&c.drainAfter, "drain-after", 0, "ask the pipeline to drain after `D`: the source stops, everything in flight is still delivered")
	fs.IntVar(&c.batch, "batch", 0, "items per batch between stages (0: the library default, 128)")
	fs.IntVar(&c.capacity, "capacity", 0, "batches each channel between stages holds (0: the library default, 4)")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the generated data")
	fs.DurationVar(&c.progress, "progress", 100*time.Millisecond, "interval of the progress line on stderr (0: none)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: pipeline [flags]

Generates %s orders as CSV (or reads -in) and runs them through
  read → parse → enrich → hourly → write
each stage a supervised FSM (stagefsm/stage). Progress goes to stderr; the
summary to stdout. Ctrl-C drains the pipeline gracefully; a second Ctrl-C
aborts it. The exit status is 1 if a stage failed or the pipeline was
aborted.

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
	case c.n < 0 || c.failRate < 0 || c.failRate > 1 || c.panicEvery < 0 || c.fatalAt < 0 || c.slowSink < 0 || c.drainAfter < 0:
		return c, errors.New("negative values (and -fail-rate above 1) make no sense")
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

func demo(c config, stdout, stderr io.Writer) error {
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
	input := c.in
	if input == "" {
		input = filepath.Join(out, "orders.csv")
		fmt.Fprintf(stderr, "generating %s orders into %s ...\n", group(uint64(c.n)), input)
		t0 := time.Now()
		if err := generate(input, c.n, c.failRate, c.seed); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "generated in %s\n", time.Since(t0).Round(time.Millisecond))
	}

	journal, err := stage.OpenFileJournal(filepath.Join(out, "journal.jsonl"))
	if err != nil {
		return err
	}
	defer journal.Close()
	dead, err := newJSONLines(filepath.Join(out, "dead_letters.jsonl"))
	if err != nil {
		return err
	}
	defer dead.Close()
	var causes causeCounts

	rows := &jsonSink{path: filepath.Join(out, "hourly_revenue.jsonl"), slow: c.slowSink}
	read := stage.From("read", stage.Source[string](&csvSource{path: input}))
	parsed := stage.Then(read, "parse", stage.TransformFunc[string, Order](parseOrder))
	enriched := stage.Then(parsed, "enrich", stage.Transform[Order, Order](enricher{panicEvery: c.panicEvery, fatalAt: c.fatalAt}))
	hours := stage.Then(enriched, "hourly", stage.Transform[Order, Row](&hourly{}))
	p := stage.To(hours, "write", stage.Sink[Row](rows),
		stage.WithName("orders"),
		stage.WithJournal(journal),
		stage.WithBatchSize(c.batch),
		stage.WithCapacity(c.capacity),
		stage.WithDeadLetter(func(it stage.Item[any]) {
			causes.add(it.Err)
			dead.write(deadLetter{Stage: failedAt(it.Err), Origin: it.Origin, Seq: it.Seq, Error: it.Err.Error(), Payload: it.Payload})
		}))

	ctx := context.Background()
	start := time.Now()
	if err := p.Start(ctx); err != nil {
		return err
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
	showProgress(p, start, c.progress, stderr)
	runErr := p.Wait(ctx)
	elapsed := time.Since(start)
	if err := dead.Close(); err != nil && runErr == nil {
		runErr = err
	}
	if err := journal.Close(); err != nil && runErr == nil {
		runErr = err
	}

	summarize(stdout, summary{
		stats: p.Stats(), start: start, elapsed: elapsed, err: runErr, causes: &causes,
		output: rows.path, deadLetters: dead.path, journal: journal.Path(), input: input,
	})
	return runErr
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

// jsonSink writes rows as JSON lines.
type jsonSink struct {
	path string
	slow time.Duration
	f    *os.File
	w    *bufio.Writer
	enc  *json.Encoder
	rows atomic.Int64
}

func (s *jsonSink) Open(context.Context) error {
	f, err := os.Create(s.path)
	if err != nil {
		return err
	}
	s.f, s.w = f, bufio.NewWriterSize(f, 1<<16)
	s.enc = json.NewEncoder(s.w)
	return nil
}

func (s *jsonSink) Consume(ctx context.Context, r Row) error {
	if s.slow > 0 {
		t := time.NewTimer(s.slow)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if err := s.enc.Encode(r); err != nil {
		return fatal(err) // the file is broken: no point going on
	}
	s.rows.Add(1)
	return nil
}

func (s *jsonSink) Flush(context.Context) error { return s.w.Flush() }

func (s *jsonSink) Close() error {
	ferr := s.w.Flush()
	if err := s.f.Close(); err != nil {
		return err
	}
	return ferr
}

// fatal marks err as fatal for its stage.
func fatal(err error) error { return stage.Fatal(err) }

// deadLetter is one line of dead_letters.jsonl.
type deadLetter struct {
	Stage   string `json:"failed_at"`
	Origin  string `json:"origin"`
	Seq     uint64 `json:"seq"`
	Error   string `json:"error"`
	Payload any    `json:"payload"`
}

func failedAt(err error) string {
	var ie *stage.ItemError
	if errors.As(err, &ie) {
		return ie.Stage
	}
	return ""
}

// jsonLines appends JSON values to a file, one per line. The dead-letter
// writer is called serially, so it needs no lock.
type jsonLines struct {
	path string
	f    *os.File
	w    *bufio.Writer
	enc  *json.Encoder
	err  error
}

func newJSONLines(path string) (*jsonLines, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriter(f)
	return &jsonLines{path: path, f: f, w: w, enc: json.NewEncoder(w)}, nil
}

func (j *jsonLines) write(v any) {
	if err := j.enc.Encode(v); err != nil && j.err == nil {
		j.err = err
	}
}

func (j *jsonLines) Close() error {
	if j.f == nil {
		return j.err
	}
	ferr := j.w.Flush()
	cerr := j.f.Close()
	j.f = nil
	return errors.Join(j.err, ferr, cerr)
}

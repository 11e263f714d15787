// Command crashtest checks the promise of checkpoints on the demo of
// examples/pipeline: after a crash and a restart, every output is as if
// the crash never happened.
//
// Usage:
//
//	go run ./cmd/crashtest [-rounds 10] [-seed S] [-n 1000000]
//
// It builds the demo (go build, into a temporary directory; run it from
// inside the module), generates its input with one reference run that
// never crashes, then runs the demo again on the same input with a
// checkpoint directory (-state): it starts the demo, kills it with SIGKILL
// after a random delay (seeded by -seed), and starts it again with the same
// state, -rounds times, then lets the last start run to completion. It
// compares the output files of that run item by item with the reference's:
// hourly_revenue.jsonl and high_value.jsonl line by line, alerts.jsonl as a
// set of lines (the end of input reaches the orders still open in the keyed
// stage's slot order, which a restore changes). It prints one line,
//
//	crashtest: rounds=N kills=K exact=true
//
// or exact=false followed by the first difference, and exits with status 1
// unless exact (2 when it could not run at all). K counts the starts that
// were really killed, not those that had already finished; a start that
// finishes before its kill ends the rounds early. A start after a kill must
// say that it resumed from a checkpoint (the demo's -state line) at least
// once, else the test proved nothing and is not exact either. Details (the
// seed, the delays, which starts resumed) go to stderr.
//
// Each delay counts from the moment the demo says it started its pipeline
// (its -state line, after the checkpoint is restored), so that a slow
// start or restore does not eat it; and three kills in four wait, beyond
// the delay, for the start's first checkpoint stored (the demo's line
// saying so), so that the run makes progress from kill to kill, while the
// fourth may land anywhere, before it too. The delays are drawn between
// 0.3 and 1.1 times the reference run's time divided by -rounds, so that
// the kills land inside the run and the run is not over before the last
// round.
//
// The demo runs with -abandon-after 10m by default: its timeout is real
// time, so which orders a short one abandons, by the timeout or at end of
// input, depends on the machine's speed, not only on the input; with 10m
// every unpaid order is abandoned at end of input, and each open order's
// timeout is still armed and checkpointed. With a shorter -abandon-after
// (under a minute) the timeouts fire during the run and after each
// restore, with the time they had left; the alerts are then compared
// without their abandoned_by field (timeout or end of input), so that what
// is checked is that no paid order is abandoned by a timeout that fired
// too early, as one that counted the downtime would.
//
// With -restart-finished it then starts the finished run once more, with
// its state, and compares again: what a kill between the demo's final
// checkpoint and its exit leads to.
//
// Child processes and temporary directories are removed on every exit,
// also on an interrupt (on Linux a child also dies with crashtest).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// demoPackage is the demo crashtest builds.
const demoPackage = "github.com/stagefsm/stagefsm/examples/pipeline"

// outputs are the demo's output files crashtest compares, and whether their
// order is part of the output.
var outputs = []struct {
	name    string
	ordered bool
}{
	{"hourly_revenue.jsonl", true},
	{"high_value.jsonl", true},
	{"alerts.jsonl", false},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type config struct {
	rounds  int
	seed    uint64
	n       int
	every   time.Duration
	demo    string
	verbose bool
	again   bool
	abandon time.Duration
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	c := config{}
	fs := flag.NewFlagSet("crashtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.rounds, "rounds", 10, "kill the demo `N` times before letting it finish")
	fs.Uint64Var(&c.seed, "seed", 0, "seed of the kill delays (0: from the clock; the seed used is printed on stderr)")
	fs.IntVar(&c.n, "n", 1_000_000, "orders in the demo's input (`N`; the run should last long enough to be killed mid-stream)")
	fs.DurationVar(&c.every, "checkpoint-every", 100*time.Millisecond, "the demo's -checkpoint-every `D`")
	fs.StringVar(&c.demo, "demo", "", "the demo binary to run (default: go build "+demoPackage+")")
	fs.DurationVar(&c.abandon, "abandon-after", 10*time.Minute, "the demo's -abandon-after `D` (under a minute: the alerts are compared without abandoned_by)")
	fs.BoolVar(&c.verbose, "v", false, "copy the demo's stderr to stderr")
	fs.BoolVar(&c.again, "restart-finished", false, "after the run finished, start it once more with its state and compare again: a kill between the final checkpoint and the exit")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	case c.rounds < 0 || c.n <= 0 || c.every <= 0 || c.abandon <= 0:
		return c, errors.New("-rounds must be 0 or more, -n, -checkpoint-every and -abandon-after positive")
	}
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	return c, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	c, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "crashtest:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := crashtest(ctx, c, stderr)
	if err != nil {
		fmt.Fprintln(stdout, "crashtest: error:", err)
		return 2
	}
	fmt.Fprintln(stdout, r.line())
	if r.diff != "" {
		return 1
	}
	return 0
}

// result is what a crash test found.
type result struct {
	rounds, kills, resumes int
	diff                   string // the first difference; "" when exact
}

func (r result) line() string {
	if r.diff != "" {
		return fmt.Sprintf("crashtest: rounds=%d kills=%d exact=false: %s", r.rounds, r.kills, r.diff)
	}
	return fmt.Sprintf("crashtest: rounds=%d kills=%d exact=true", r.rounds, r.kills)
}

// crashtest runs the reference and the crash run and compares them. An
// error means it could not test (no go command, a reference run that
// failed, an interrupt); a demo that fails in the crash run is a
// difference.
func crashtest(ctx context.Context, c config, stderr io.Writer) (result, error) {
	r := result{rounds: c.rounds}
	tmp, err := os.MkdirTemp("", "crashtest-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(tmp)
	bin := c.demo
	if bin == "" {
		if bin, err = build(ctx, tmp); err != nil {
			return r, err
		}
	}
	common := []string{"-progress", "0", "-abandon-after", c.abandon.String()}
	cmp := comparison{ref: filepath.Join(tmp, "reference"), out: filepath.Join(tmp, "crash"), loose: c.abandon < time.Minute}
	ref, out, state := cmp.ref, cmp.out, filepath.Join(tmp, "state")
	fmt.Fprintf(stderr, "crashtest: seed=%d n=%d rounds=%d checkpoint-every=%s abandon-after=%s\n", c.seed, c.n, c.rounds, c.every, c.abandon)

	t0 := time.Now()
	ch := start(ctx, bin, append(common, "-n", strconv.Itoa(c.n), "-out", ref))
	if st := ch.wait(); st.err != nil || st.code != 0 {
		return r, fmt.Errorf("the reference run failed: %s", st.describe(ch))
	}
	took := time.Since(t0)
	fmt.Fprintf(stderr, "crashtest: reference run: %s\n", took.Round(time.Millisecond))
	if c.verbose {
		fmt.Fprint(stderr, ch.stderr)
	}

	crash := append(common, "-in", ref, "-out", out, "-state", state, "-checkpoint-every", c.every.String())
	rng := rand.New(rand.NewPCG(c.seed, 14))
	lo, hi := took*3/10/time.Duration(max(c.rounds, 1)), took*11/10/time.Duration(max(c.rounds, 1))
	finished := false
	for round := 1; round <= c.rounds && !finished; round++ {
		delay := lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
		early := rng.IntN(4) == 0
		ch := start(ctx, bin, crash)
		st := ch.killAfter(delay, early)
		r.resumes += ch.resumed()
		if c.verbose {
			fmt.Fprint(stderr, ch.stderr)
		}
		switch {
		case ctx.Err() != nil:
			return r, ctx.Err()
		case st.killed:
			r.kills++
			if early {
				fmt.Fprintf(stderr, "crashtest: round %d: killed %s after its start\n", round, delay.Round(time.Millisecond))
			} else {
				fmt.Fprintf(stderr, "crashtest: round %d: killed %s after its start, and after its first checkpoint\n", round, delay.Round(time.Millisecond))
			}
		case st.err == nil && st.code == 0:
			finished = true
			fmt.Fprintf(stderr, "crashtest: round %d: the demo finished before its kill after %s; no more rounds\n", round, delay.Round(time.Millisecond))
		default:
			r.diff = fmt.Sprintf("round %d: %s", round, st.describe(ch))
			return r, nil
		}
	}
	if !finished {
		ch := start(ctx, bin, crash)
		st := ch.wait()
		r.resumes += ch.resumed()
		if c.verbose {
			fmt.Fprint(stderr, ch.stderr)
		}
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		if st.err != nil || st.code != 0 {
			r.diff = "the last start: " + st.describe(ch)
			return r, nil
		}
	}
	fmt.Fprintf(stderr, "crashtest: %d of %d starts after a kill resumed from a checkpoint\n", r.resumes, r.kills)
	if r.kills > 0 && r.resumes == 0 {
		// The outputs would match, and prove nothing.
		r.diff = "no start after a kill resumed from a checkpoint (the demo did not checkpoint, or every kill came before its first checkpoint)"
		return r, nil
	}
	if r.diff, err = cmp.compare(); err != nil || r.diff != "" || !c.again {
		return r, err
	}
	ch = start(ctx, bin, crash)
	st := ch.wait()
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if st.err != nil || st.code != 0 {
		r.diff = "the start after the end: " + st.describe(ch)
		return r, nil
	}
	if r.diff, err = cmp.compare(); r.diff != "" {
		r.diff = "after a start of the finished run: " + r.diff
	}
	return r, err
}

// build builds the demo into dir.
func build(ctx context.Context, dir string) (string, error) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("building the demo needs the go command: %w", err)
	}
	bin := filepath.Join(dir, "pipeline")
	cmd := exec.CommandContext(ctx, goCmd, "build", "-o", bin, demoPackage)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s (run crashtest from inside the module): %w\n%s", demoPackage, err, b)
	}
	return bin, nil
}

// child is one start of the demo.
type child struct {
	cmd    *exec.Cmd
	stderr *watcher
	err    error // of Start
}

// watcher keeps what the demo writes to stderr. It closes started when the
// demo has said what it started from (its first -state line: its pipeline
// runs), and stored when it has said that it stored its first checkpoint.
type watcher struct {
	mu              sync.Mutex
	buf             bytes.Buffer
	started, stored chan struct{}
	start, store    sync.Once
}

// The demo's -state lines: what it started from, and its first checkpoint.
var (
	startMarks = [][]byte{[]byte("resuming from checkpoint"), []byte("starting from the beginning")}
	storeMark  = []byte(" stored\n")
)

func newWatcher() *watcher {
	return &watcher{started: make(chan struct{}), stored: make(chan struct{})}
}

func (w *watcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for _, m := range startMarks {
		if bytes.Contains(w.buf.Bytes(), m) {
			w.start.Do(func() { close(w.started) })
		}
	}
	if bytes.Contains(w.buf.Bytes(), storeMark) {
		w.store.Do(func() { close(w.stored) })
	}
	return len(p), nil
}

func (w *watcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// status is how a child ended.
type status struct {
	killed bool  // by crashtest's SIGKILL
	code   int   // exit status, when it exited
	err    error // it did not start, or did not exit normally
}

func (s status) describe(ch *child) string {
	msg := "exit status " + strconv.Itoa(s.code)
	if s.err != nil {
		msg = s.err.Error()
	}
	if tail := lastLines(ch.stderr.String(), 3); tail != "" {
		msg += ": " + tail
	}
	return "the demo failed: " + msg
}

func start(ctx context.Context, bin string, args []string) *child {
	ch := &child{stderr: newWatcher()}
	ch.cmd = exec.CommandContext(ctx, bin, args...)
	ch.cmd.Stdout = io.Discard
	ch.cmd.Stderr = ch.stderr
	ch.cmd.SysProcAttr = sysProcAttr()
	ch.err = ch.cmd.Start()
	return ch
}

// wait waits for the child to end.
func (ch *child) wait() status {
	if ch.err != nil {
		return status{err: ch.err}
	}
	return exitStatus(ch.cmd.Wait())
}

// killAfter kills the child with SIGKILL d after its pipeline started
// and, unless early is set, not before it stored a checkpoint; unless it
// ended before. It waits for the child to end.
func (ch *child) killAfter(d time.Duration, early bool) status {
	if ch.err != nil {
		return status{err: ch.err}
	}
	done := make(chan error, 1)
	go func() { done <- ch.cmd.Wait() }()
	select {
	case err := <-done:
		return exitStatus(err)
	case <-ch.stderr.started:
	}
	t := time.NewTimer(d)
	select {
	case err := <-done:
		t.Stop()
		return exitStatus(err)
	case <-t.C:
	}
	if !early {
		select {
		case err := <-done:
			return exitStatus(err)
		case <-ch.stderr.stored:
		}
	}
	sigErr := ch.cmd.Process.Signal(syscall.SIGKILL)
	err := <-done
	var ee *exec.ExitError
	if sigErr == nil && errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return status{killed: true}
		}
	}
	return exitStatus(err)
}

func exitStatus(err error) status {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return status{}
	case errors.As(err, &ee) && ee.Exited():
		return status{code: ee.ExitCode()}
	}
	return status{err: err}
}

// resumed reports whether the child said it resumed from a checkpoint (the
// demo's -state line), as 0 or 1.
func (ch *child) resumed() int {
	if strings.Contains(ch.stderr.String(), "resuming from checkpoint") {
		return 1
	}
	return 0
}

// comparison compares the output files of the reference run in ref with
// the crash run's in out; loose drops the alerts' abandoned_by field.
type comparison struct {
	ref, out string
	loose    bool
}

// abandonedBy is the field of an alert loose comparisons drop.
var abandonedBy = regexp.MustCompile(`"abandoned_by":"[^"]*",`)

// compare returns the first difference ("" if none).
func (c comparison) compare() (string, error) {
	for _, o := range outputs {
		want, err := c.read(filepath.Join(c.ref, o.name), o.ordered)
		if err != nil {
			return "", err
		}
		if len(want) == 0 {
			return "", fmt.Errorf("the reference wrote no %s: nothing to compare", o.name)
		}
		got, err := c.read(filepath.Join(c.out, o.name), o.ordered)
		if err != nil {
			return err.Error(), nil
		}
		name := o.name
		if !o.ordered {
			name += " (sorted)"
		}
		for i := range min(len(want), len(got)) {
			if want[i] != got[i] {
				return fmt.Sprintf("%s line %d: reference %s, crash run %s", name, i+1, clip(want[i]), clip(got[i])), nil
			}
		}
		if len(want) != len(got) {
			return fmt.Sprintf("%s: reference %d lines, crash run %d", name, len(want), len(got)), nil
		}
	}
	return "", nil
}

// read reads the lines of a file, sorted unless ordered (and without
// abandoned_by when loose and not ordered).
func (c comparison) read(path string, ordered bool) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(b), "\n")
	if n := len(lines); lines[n-1] == "" {
		lines = lines[:n-1]
	} else {
		lines[n-1] += " (no newline at the end)"
	}
	if !ordered {
		if c.loose {
			for i, l := range lines {
				lines[i] = abandonedBy.ReplaceAllLiteralString(l, "")
			}
		}
		slices.Sort(lines)
	}
	return lines, nil
}

func clip(s string) string {
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return strconv.Quote(s)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

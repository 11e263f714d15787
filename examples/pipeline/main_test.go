package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(childArgsEnv); ok {
		os.Exit(childMain(strings.Split(args, "\n")))
	}
	goleak.VerifyTestMain(m)
}

// stageNames are the stages of the demo's graph.
var stageNames = []string{"orders", "parse", "enrich", "customers", "parse-customers", "join", "lifecycle",
	"fan", "hourly", "write", "triage", "alerts", "high-value", "standard"}

// demoRun runs the demo with args and a temporary output directory.
func demoRun(t *testing.T, args ...string) (code int, stdout, stderr string, out string) {
	t.Helper()
	out = t.TempDir()
	var o, e bytes.Buffer
	code = run(append([]string{"-out", out, "-progress", "0"}, args...), &o, &e)
	return code, o.String(), e.String(), out
}

// expected is what the generated files imply, computed from the CSV files
// alone, without the demo's parsing or machines.
type expected struct {
	shipped, abandoned, unshipped, highValue int
	unmatched                                int
	deadAt                                   map[string]int // dead letters by failing stage
	hourlyRows                               int
	revenueCents                             int64
}

func expect(t *testing.T, dir string, highValueCents int64) expected {
	t.Helper()
	country := map[string]string{}
	forLines(t, filepath.Join(dir, "customers.csv"), func(f []string) {
		require.Len(t, f, 3)
		country[f[0]] = f[2]
	})
	type order struct {
		ok, paid, shipped bool
		cust              string
		cents             int64
		hour              int64
	}
	orders := map[string]*order{}
	get := func(id string) *order {
		if orders[id] == nil {
			orders[id] = &order{}
		}
		return orders[id]
	}
	x := expected{deadAt: map[string]int{}}
	forLines(t, filepath.Join(dir, "orders.csv"), func(f []string) {
		known := len(f) > 3 && country[f[3]] != ""
		switch f[0] {
		case "placed":
			o := get(f[1])
			o.cust = f[3]
			at, terr := time.Parse(time.RFC3339, f[2])
			if len(f) != 8 || terr != nil {
				x.deadAt["parse"]++
				return
			}
			qty, qerr := strconv.Atoi(f[5])
			price, perr := strconv.ParseFloat(f[6], 64)
			if qerr != nil || perr != nil {
				x.deadAt["parse"]++
				return
			}
			rate, rok := eurPer[f[7]]
			if qty <= 0 || price <= 0 || !rok {
				x.deadAt["enrich"]++
				return
			}
			if !known {
				x.unmatched++
				return
			}
			o.ok = true
			o.cents = int64(float64(int64(math.Round(price*100))*int64(qty)) * rate)
			o.hour = int64(at.Sub(epoch) / time.Hour)
		case "paid", "shipped":
			o := get(f[1])
			switch {
			case !known:
				x.unmatched++
			case !o.ok:
				x.deadAt["lifecycle"]++ // an event of an order never placed
			case f[0] == "paid":
				o.paid = true
			default:
				o.shipped = true
			}
		default:
			t.Fatalf("unknown event %q", f[0])
		}
	})
	hours := map[[2]string]bool{}
	for _, o := range orders {
		switch {
		case !o.ok:
			continue
		case !o.paid:
			x.abandoned++
			continue
		case !o.shipped:
			x.unshipped++
		case o.cents >= highValueCents:
			x.highValue++
			x.shipped++
		default:
			x.shipped++
		}
		hours[[2]string{strconv.FormatInt(o.hour, 10), country[o.cust]}] = true
		x.revenueCents += o.cents
	}
	x.hourlyRows = len(hours)
	return x
}

// forLines calls f with the fields of each line of a CSV file after its
// header.
func forLines(t *testing.T, path string, f func([]string)) {
	t.Helper()
	file, err := os.Open(path)
	require.NoError(t, err)
	defer file.Close()
	sc := bufio.NewScanner(file)
	require.True(t, sc.Scan(), "header")
	for sc.Scan() {
		f(strings.Split(sc.Text(), ","))
	}
	require.NoError(t, sc.Err())
}

// outputs reads what the demo wrote.
type outputs struct {
	byStatus     map[string]int // alerts.jsonl by status
	highValue    int
	hourlyRows   int
	revenueCents int64
	deadAt       map[string]int
}

func readOutputs(t *testing.T, dir string) outputs {
	t.Helper()
	o := outputs{byStatus: map[string]int{}, deadAt: map[string]int{}}
	forJSON(t, filepath.Join(dir, "alerts.jsonl"), func(b []byte) {
		var a struct{ Status string }
		require.NoError(t, json.Unmarshal(b, &a))
		o.byStatus[a.Status]++
	})
	forJSON(t, filepath.Join(dir, "high_value.jsonl"), func(b []byte) {
		var a struct{ Status string }
		require.NoError(t, json.Unmarshal(b, &a))
		assert.Equal(t, "shipped", a.Status)
		o.highValue++
	})
	forJSON(t, filepath.Join(dir, "hourly_revenue.jsonl"), func(b []byte) {
		var r Row
		require.NoError(t, json.Unmarshal(b, &r))
		o.hourlyRows++
		o.revenueCents += int64(math.Round(r.RevenueEUR * 100))
	})
	forJSON(t, filepath.Join(dir, "dead_letters.jsonl"), func(b []byte) {
		var d deadLetter
		require.NoError(t, json.Unmarshal(b, &d))
		o.deadAt[d.Stage]++
	})
	return o
}

func forJSON(t *testing.T, path string, f func([]byte)) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	for line := range bytes.Lines(b) {
		f(line)
	}
}

// statsLine returns the fields of a stage's row in the summary table.
func statsLine(t *testing.T, stdout, name string) []string {
	t.Helper()
	for line := range strings.Lines(stdout) {
		if f := strings.Fields(line); len(f) > 2 && f[0] == name && (f[1] == "join" || f[1] == "keyed" || f[1] == "source" ||
			f[1] == "transform" || f[1] == "sink" || f[1] == "broadcast" || f[1] == "route") {
			return f
		}
	}
	t.Fatalf("no row for stage %s in\n%s", name, stdout)
	return nil
}

func num(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.ReplaceAll(s, ",", ""))
	require.NoError(t, err, s)
	return n
}

// TestDemoCountsMatchTheData runs the demo and checks every count against
// what the generated files imply. The timeout is long, so every unpaid order
// is abandoned by the drain event, whatever the machine's speed.
func TestDemoCountsMatchTheData(t *testing.T) {
	code, stdout, stderr, out := demoRun(t, "-n", "20000", "-fail-rate", "0.02", "-abandon-after", "1m")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "20,000 orders")
	assert.Contains(t, stdout, "✓")
	assert.NotContains(t, stdout, "MISMATCH")

	x := expect(t, out, 150_000)
	got := readOutputs(t, out)
	require.Positive(t, x.abandoned)
	require.Positive(t, x.unshipped)
	require.Positive(t, x.highValue)
	require.Positive(t, x.unmatched)
	assert.Equal(t, x.abandoned, got.byStatus["abandoned"], "abandoned orders")
	assert.Equal(t, x.unshipped, got.byStatus["unshipped"], "paid, never shipped")
	assert.Len(t, got.byStatus, 2, "alerts are abandoned or unshipped orders")
	assert.Equal(t, x.highValue, got.highValue, "high-value orders")
	assert.Equal(t, x.hourlyRows, got.hourlyRows, "hourly rows")
	assert.InDelta(t, x.revenueCents, got.revenueCents, float64(got.hourlyRows), "revenue (each row rounded to a cent)")
	assert.Equal(t, x.deadAt, got.deadAt, "dead letters by stage")

	assert.Equal(t, x.unmatched, num(t, statsLine(t, stdout, "join")[9]), "join: unmatched")
	assert.Equal(t, x.unmatched, num(t, statsLine(t, stdout, "join")[6]), "join: dropped (inner)")
	lc := statsLine(t, stdout, "lifecycle")
	assert.Equal(t, "0", lc[7], "no live key at the end")
	assert.Equal(t, "0", lc[8], "no timeout fired: the drain event abandoned the unpaid orders")
	assert.Equal(t, x.shipped-x.highValue, num(t, statsLine(t, stdout, "standard")[4]), "standard orders")
	assertJournal(t, filepath.Join(out, "journal.jsonl"), "drained")
}

// TestDemoTimeouts: with a short timeout, unpaid orders are abandoned by
// the lifecycle's timeout while the run goes on; every item is still
// accounted for.
func TestDemoTimeouts(t *testing.T) {
	code, stdout, stderr, out := demoRun(t, "-n", "30000", "-abandon-after", "1ms")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "✓")
	assert.NotContains(t, stdout, "MISMATCH")
	timeouts := num(t, statsLine(t, stdout, "lifecycle")[8])
	assert.Positive(t, timeouts)
	got := readOutputs(t, out)
	assert.GreaterOrEqual(t, got.byStatus["abandoned"], timeouts, "each timeout abandoned an order")
}

func TestDemoFaultsAreAccountedFor(t *testing.T) {
	in := t.TempDir()
	require.NoError(t, generate(filepath.Join(in, "orders.csv"), filepath.Join(in, "customers.csv"), 20000, 0.05, 1))
	fatalAt := ""
	forLines(t, filepath.Join(in, "orders.csv"), func(f []string) {
		id, _ := strconv.Atoi(f[1])
		if fatalAt != "" || f[0] != "placed" || id < 15000 || id%997 == 0 || len(f) != 8 {
			return
		}
		_, terr := time.Parse(time.RFC3339, f[2])
		if qty, err := strconv.Atoi(f[5]); terr == nil && err == nil && qty > 0 && eurPer[f[7]] > 0 {
			fatalAt = f[1] // an order enrich gets to
		}
	})
	require.NotEmpty(t, fatalAt)
	code, stdout, stderr, out := demoRun(t, "-in", in, "-panic-every", "997", "-fatal-at", fatalAt)
	assert.Equal(t, 1, code, "a failed stage fails the run")
	assert.Contains(t, stderr, "currency service unreachable")
	assert.Contains(t, stdout, "✓", "every item is still accounted for")
	assert.NotContains(t, stdout, "MISMATCH")
	assert.Contains(t, stdout, "handler panic (recovered)")
	assert.Contains(t, stdout, "left behind by a failed stage")
	assert.Contains(t, stdout, "event of an order that is not open")
	assert.Positive(t, countLines(t, filepath.Join(out, "dead_letters.jsonl")))
	assertJournal(t, filepath.Join(out, "journal.jsonl"), "failed")
}

func TestDemoDrainAfter(t *testing.T) {
	code, stdout, stderr, _ := demoRun(t, "-n", "50000", "-slow-sink", "50us", "-drain-after", "50ms", "-batch", "64")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "draining")
	assert.Contains(t, stdout, "✓")
	assert.NotContains(t, stdout, "MISMATCH")
	assert.NotContains(t, stdout, "50,000 orders", "the drain stopped the source early")
}

func TestDemoFlags(t *testing.T) {
	var o, e bytes.Buffer
	assert.Equal(t, 0, run([]string{"-h"}, &o, &e))
	for _, f := range []string{"-fail-rate", "-panic-every", "-fatal-at", "-slow-sink", "-drain-after", "-out", "-n", "-in",
		"-flaky-sink", "-max-restarts", "-restart-backoff", "-abandon-after", "-high-value", "-mermaid"} {
		assert.Contains(t, e.String(), f)
	}
	assert.Equal(t, 2, run([]string{"-n", "-1"}, &o, &e))
	assert.Equal(t, 2, run([]string{"extra"}, &o, &e))
	assert.Equal(t, 2, run([]string{"-nope"}, &o, &e))
	assert.Equal(t, 2, run([]string{"-flaky-sink", "-5"}, &o, &e))
	assert.Equal(t, 2, run([]string{"-abandon-after", "0s"}, &o, &e))
}

// TestDemoReadsInput runs the demo on the files of an earlier run.
func TestDemoReadsInput(t *testing.T) {
	code, first, stderr, out := demoRun(t, "-n", "5000", "-abandon-after", "1m")
	require.Equal(t, 0, code, stderr)
	code, again, stderr, _ := demoRun(t, "-in", out, "-abandon-after", "1m")
	require.Equal(t, 0, code, stderr)
	assert.NotContains(t, stderr, "generating")
	line := func(s string) string {
		for l := range strings.Lines(s) {
			if strings.Contains(l, "outputs:") {
				return l
			}
		}
		return ""
	}
	assert.NotEmpty(t, line(first))
	assert.Equal(t, line(first), line(again))

	code, _, stderr, _ = demoRun(t, "-in", t.TempDir())
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "orders.csv")
}

func TestDemoFlakySinkIsRestarted(t *testing.T) {
	code, stdout, stderr, out := demoRun(t, "-n", "20000", "-flaky-sink", "1000")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "restart policy of high-value")
	assert.Contains(t, stdout, "✓", "every item is still accounted for")
	assert.NotContains(t, stdout, "MISMATCH")
	assert.Contains(t, stdout, "connection reset (-flaky-sink)")
	restarts := assertJournal(t, filepath.Join(out, "journal.jsonl"), "drained")
	assert.Positive(t, restarts["high-value"], "the high-value stage was restarted")
	assert.Len(t, restarts, 1, "and no other stage")
	assert.Contains(t, stdout, "↻ 1:", "the timeline shows the restarts")
}

func TestDemoFlakySinkGivesUp(t *testing.T) {
	code, stdout, stderr, out := demoRun(t, "-n", "20000", "-flaky-sink", "100", "-max-restarts", "2")
	assert.Equal(t, 1, code, "the policy gave up: the high-value stage failed")
	assert.Contains(t, stderr, "restart intensity exceeded")
	assert.Contains(t, stdout, "✓", "every item is still accounted for")
	assert.NotContains(t, stdout, "MISMATCH")
	assert.Contains(t, stdout, "left behind by a failed stage")
	restarts := assertJournal(t, filepath.Join(out, "journal.jsonl"), "failed")
	assert.Equal(t, map[string]int{"high-value": 2}, restarts)
}

// TestMermaid: -mermaid prints the graph, and the README shows it as is.
func TestMermaid(t *testing.T) {
	var o, e bytes.Buffer
	require.Equal(t, 0, run([]string{"-mermaid"}, &o, &e), e.String())
	graph := o.String()
	assert.True(t, strings.HasPrefix(graph, "flowchart"), graph)
	for _, name := range stageNames {
		assert.Contains(t, graph, `"`+name+`<br/>`)
	}
	assert.Contains(t, graph, "join")
	assert.Contains(t, graph, "keyed")
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	assert.True(t, strings.Contains(string(readme), "```mermaid\n"+graph+"```"), "the README's demo section shows the graph of -mermaid:\n%s", graph)

	o.Reset()
	require.Equal(t, 0, run([]string{"-mermaid-lifecycle"}, &o, &e), e.String())
	assert.True(t, strings.HasPrefix(o.String(), "stateDiagram-v2"), o.String())
	assert.Contains(t, o.String(), "abandoned")
	assert.True(t, strings.Contains(string(readme), "```mermaid\n"+o.String()+"```"), "the README shows the lifecycle of -mermaid-lifecycle:\n%s", o.String())
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.Count(string(b), "\n")
}

// assertJournal checks that every journal line is JSON, that each stage
// and the pipeline completed once, and that the pipeline's completion has
// the outcome. It returns the number of restart entries per stage.
func assertJournal(t *testing.T, path, outcome string) (restarts map[string]int) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	completions, restarts := map[string]int{}, map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct{ Stage, Kind, Outcome string }
		require.NoError(t, json.Unmarshal(sc.Bytes(), &e), sc.Text())
		switch e.Kind {
		case "completed":
			completions[e.Stage]++
			if e.Stage == "" {
				assert.Equal(t, outcome, e.Outcome)
			}
		case "restart":
			restarts[e.Stage]++
		}
	}
	require.NoError(t, sc.Err())
	want := map[string]int{"": 1}
	for _, n := range stageNames {
		want[n] = 1
	}
	assert.Equal(t, want, completions)
	return restarts
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const sample = `goos: linux
goarch: amd64
pkg: github.com/stagefsm/stagefsm
cpu: Test CPU
BenchmarkRunTransition-2         	 100	 30.0 ns/op	 0 B/op	 0 allocs/op
BenchmarkRunTransition-2         	 100	 40.0 ns/op	 0 B/op	 0 allocs/op
BenchmarkRunTransition-2         	 100	 35.0 ns/op	 0 B/op	 0 allocs/op
BenchmarkHandRolledTransition-2  	 100	 20.0 ns/op	 0 B/op	 0 allocs/op
BenchmarkHandRolledTransition-2  	 100	 20.0 ns/op	 0 B/op	 0 allocs/op
BenchmarkRunContinue-2           	 100	 13.0 ns/op	 0 B/op	 0 allocs/op
BenchmarkHandRolledContinue-2    	 100	 10.0 ns/op	 0 B/op	 0 allocs/op
BenchmarkRunTransitionZapInfo-2  	 100	 30.0 ns/op	 0 B/op	 0 allocs/op
    bench_test.go:12: a log line of the benchmark
BenchmarkRunContinueZapInfo-2    	 100	 13.0 ns/op	 16 B/op	 1 allocs/op
ok  	github.com/stagefsm/stagefsm	1.0s
pkg: github.com/stagefsm/stagefsm/stage
BenchmarkPerItem-2   	 25	 78.1 bare-ns/item	 58.2 pipeline-ns/item	 0.7451 ratio	 130553 B/op	 190 allocs/op
`

func TestParse(t *testing.T) {
	res, err := parse(strings.NewReader(sample), module)
	require.NoError(t, err)
	assert.Equal(t, "Test CPU", res.cpu)
	rt := res.get(".", "RunTransition")
	require.NotNil(t, rt)
	assert.Equal(t, []float64{30, 40, 35}, rt.samples["ns/op"])
	assert.InDelta(t, 35, rt.median("ns/op"), 1e-9)
	pi := res.get("stage", "PerItem")
	require.NotNil(t, pi)
	assert.InDelta(t, 0.7451, pi.median("ratio"), 1e-9)
	assert.Equal(t, "pipeline-ns/item", primaryUnit(pi))
	assert.Nil(t, res.get("stage", "RunTransition"))

	q, ok := ratioOf(res, ".", "RunTransition", "HandRolledTransition", "ns/op")
	require.True(t, ok)
	assert.InDelta(t, 1.75, q, 1e-9)
}

// TestPairedRatio: with one sample per round on both sides the ratio is
// the median of the per-round ratios, which a drift of the machine's speed
// between rounds does not move; with unequal counts, the ratio of medians.
func TestPairedRatio(t *testing.T) {
	x := &bench{samples: map[string][]float64{"ns/op": {20, 40, 60}}} // the machine slows down
	y := &bench{samples: map[string][]float64{"ns/op": {10, 20, 30}}}
	q, lo, hi, ok := pairedRatio(x, y, "ns/op", "ns/op")
	require.True(t, ok)
	assert.InDelta(t, 2, q, 1e-9)
	assert.InDelta(t, 2, lo, 1e-9)
	assert.InDelta(t, 2, hi, 1e-9)

	y.samples["ns/op"] = []float64{10, 30}
	q, lo, hi, ok = pairedRatio(x, y, "ns/op", "ns/op")
	require.True(t, ok)
	assert.InDelta(t, 2, q, 1e-9, "40 / 20")
	assert.Equal(t, q, lo)
	assert.Equal(t, q, hi)

	_, _, _, ok = pairedRatio(x, nil, "ns/op", "ns/op")
	assert.False(t, ok)
	_, _, _, ok = pairedRatio(x, y, "ns/op", "B/op")
	assert.False(t, ok)
}

func TestParseRejectsABadValue(t *testing.T) {
	_, err := parse(strings.NewReader("BenchmarkX-2  10  abc ns/op\n"), module)
	assert.Error(t, err)
}

func TestMedian(t *testing.T) {
	assert.InDelta(t, 2.5, median([]float64{4, 1, 3, 2}), 1e-9)
	assert.InDelta(t, 3, median([]float64{5, 3, 1}), 1e-9)
	assert.Zero(t, median(nil))
}

// TestTargets checks a verdict of each kind on the sample: ratios over
// their limit (1.75× > 1.5×, 1.3× > 1.2×), an allocation in one of the
// benchmarks that must not allocate, benchmarks absent, and a ratio met.
func TestTargets(t *testing.T) {
	res, err := parse(strings.NewReader(sample), module)
	require.NoError(t, err)
	verdicts := map[string]string{}
	figures := map[string]string{}
	for _, tg := range targets {
		figures[tg.what], verdicts[tg.what] = tg.eval(res, nil)
	}
	assert.Equal(t, missed, verdicts[targets[0].what], "Transition 1.75× > 1.5×")
	assert.Equal(t, missed, verdicts[targets[1].what], "Continue 1.3× > 1.2×")
	assert.Equal(t, missed, verdicts[targets[2].what], "one allocation in RunContinueZapInfo")
	assert.Contains(t, figures[targets[2].what], "at most 1 allocs/op")
	assert.Equal(t, notMeasured, verdicts[targets[3].what], "no mealy benchmark in the sample")
	assert.Contains(t, figures[targets[3].what], "benchmark absent")
	for _, tg := range targets {
		if strings.Contains(tg.what, "per-item") {
			assert.Equal(t, met, verdicts[tg.what], "0.75× ≤ 1.0×")
		}
	}
}

func TestRunWritesTheReport(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "bench.txt")
	require.NoError(t, os.WriteFile(raw, []byte(sample), 0o600))
	scalePath := filepath.Join(dir, "scale.json")
	require.NoError(t, os.WriteFile(scalePath, []byte(`{"go_version":"go1.26","idle":[{"name":"stage.Pipeline stage","stages":10000,
		"bytes_per_stage":5000,"stack_per_stage":4096,"heap_per_stage":904,"idle_cpu_ns":200000,"baseline_cpu_ns":150000,
		"interval_ns":2000000000,"cpu_known":true}],"runs":{"runs":100000,"transitions_per_run":12,"run_ns":1000000000}}`), 0o600))

	var out bytes.Buffer
	require.NoError(t, run(meta{machine: "Test CPU, 2 cores", goVersion: "go1.26"}, raw, "", scalePath, &out))
	md := out.String()
	for _, want := range []string{
		"**Machine:** Test CPU, 2 cores · go1.26",
		"| #2 | `Run`: a Transition iteration ≤ 1.5× the hand-rolled loop | 1.75× (RunTransition / HandRolledTransition, per-round range 1.75–1.75; medians 35 / 20 ns/op) | **missed** |",
		"| RunTransition | 35 ns/op | 30–40 | HandRolledTransition | 1.75× | 0 | 0 |  |",
		"| stage.Pipeline stage | 10,000 |",
		"stage.Pipeline stage: 5,000 B (stack 4,096 + heap 904)",
		"## How to reproduce",
	} {
		assert.Contains(t, md, want)
	}
	assert.NotContains(t, md, "## benchstat", "no benchstat section without its file")

	assert.Error(t, run(meta{}, filepath.Join(dir, "missing.txt"), "", "", &out))
	empty := filepath.Join(dir, "empty.txt")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	assert.ErrorContains(t, run(meta{}, empty, "", "", &out), "no benchmark results")
}

func TestNum(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 5: "5", 6.525: "6.53", 70.15: "70.2", 314.8: "315", 578018: "578,018", -2.5: "-2.50"} {
		assert.Equal(t, want, num(v), "%v", v)
	}
}

func TestRatioVerdict(t *testing.T) {
	assert.Equal(t, met, ratioVerdict(1.1, 1.0, 1.2, 1.25))
	assert.Equal(t, met+" (borderline: some rounds above the limit)", ratioVerdict(1.2, 1.1, 1.4, 1.25))
	assert.Equal(t, missed+" (borderline: some rounds within the limit)", ratioVerdict(1.6, 1.4, 2.5, 1.5))
	assert.Equal(t, missed, ratioVerdict(1.6, 1.55, 2.5, 1.5))
}

// A benchmark that reports none of the units the report looks for (its
// ns/op set to 0, as BenchmarkPerItem does) has an empty spread, not a
// panic.
func TestSpreadOfAnAbsentUnit(t *testing.T) {
	lo, hi := (&bench{samples: map[string][]float64{}}).spread("ns/op")
	assert.Zero(t, lo)
	assert.Zero(t, hi)
}

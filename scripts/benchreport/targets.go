package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/stagefsm/stagefsm/internal/scalereport"
)

// Verdicts of a target.
const (
	met         = "met"
	missed      = "**missed**"
	notMeasured = "not measured"
	reported    = "reported"
)

// target is one performance target stated in an issue.
type target struct {
	issue string
	what  string
	// eval returns the figure that decides the target and the verdict.
	eval func(r *results, s *scalereport.Report) (figure, verdict string)
}

// absent is the verdict of a target whose benchmarks did not run.
func absent(names ...string) (string, string) {
	return "benchmark absent: " + strings.Join(names, ", "), notMeasured
}

// ratioOf returns the ratio of a to b in unit (see pairedRatio), and
// whether both ran.
func ratioOf(r *results, pkg, a, b, unit string) (float64, bool) {
	q, _, _, ok := pairedRatio(r.get(pkg, a), r.get(pkg, b), unit, unit)
	return q, ok
}

// pairedRatio returns the ratio of x in unit ux to y in unit uy, with its
// range: when both have one sample per round (as scripts/bench.sh runs
// them), the median of the per-round ratios, each from two runs seconds
// apart; otherwise the ratio of the medians (lo and hi are then the
// same). ok is false when either did not run.
func pairedRatio(x, y *bench, ux, uy string) (q, lo, hi float64, ok bool) {
	if !x.has(ux) || !y.has(uy) {
		return 0, 0, 0, false
	}
	xs, ys := x.samples[ux], y.samples[uy]
	if len(xs) != len(ys) || len(xs) < 2 {
		if m := median(ys); m != 0 {
			q = median(xs) / m
			return q, q, q, true
		}
		return 0, 0, 0, false
	}
	rs := make([]float64, 0, len(xs))
	for i := range xs {
		if ys[i] != 0 {
			rs = append(rs, xs[i]/ys[i])
		}
	}
	if len(rs) == 0 {
		return 0, 0, 0, false
	}
	return median(rs), slices.Min(rs), slices.Max(rs), true
}

// maxAllocs returns the largest allocs/op of any sample of the named
// benchmarks, and whether they all ran.
func maxAllocs(r *results, pkg string, names ...string) (float64, bool) {
	most := 0.0
	for _, n := range names {
		b := r.get(pkg, n)
		if !b.has("allocs/op") {
			return 0, false
		}
		most = max(most, slices.Max(b.samples["allocs/op"]))
	}
	return most, true
}

func atMost(v, limit float64) string {
	if v <= limit {
		return met
	}
	return missed
}

// ratioVerdict judges a median ratio q against limit, and says when the
// rounds disagree: some of them (range lo–hi) on the other side of it.
func ratioVerdict(q, lo, hi, limit float64) string {
	switch {
	case q <= limit && hi > limit:
		return met + " (borderline: some rounds above the limit)"
	case q <= limit:
		return met
	case lo <= limit:
		return missed + " (borderline: some rounds within the limit)"
	default:
		return missed
	}
}

// ratioTarget is a target "a ≤ limit × b" in unit.
func ratioTarget(pkg, a, b, unit string, limit float64) func(*results, *scalereport.Report) (string, string) {
	return func(r *results, _ *scalereport.Report) (string, string) {
		x, y := r.get(pkg, a), r.get(pkg, b)
		q, lo, hi, ok := pairedRatio(x, y, unit, unit)
		if !ok {
			return absent(a, b)
		}
		return fmt.Sprintf("%s× (%s / %s, per-round range %s–%s; medians %s / %s %s)", num(q), a, b,
			num(lo), num(hi), num(x.median(unit)), num(y.median(unit)), unit), ratioVerdict(q, lo, hi, limit)
	}
}

// zeroAllocs is a target "0 allocs/op" for the named benchmarks.
func zeroAllocs(pkg string, names ...string) func(*results, *scalereport.Report) (string, string) {
	return func(r *results, _ *scalereport.Report) (string, string) {
		most, ok := maxAllocs(r, pkg, names...)
		if !ok {
			return absent(names...)
		}
		return fmt.Sprintf("at most %s allocs/op in any run of %s", num(most), strings.Join(names, ", ")), atMost(most, 0)
	}
}

// metricTarget is a target on one metric of one benchmark: its median at
// most limit (atLeast false) or at least limit (atLeast true), with the
// range of the rounds.
func metricTarget(pkg, name, unit string, limit float64, atLeast bool) func(*results, *scalereport.Report) (string, string) {
	return func(r *results, _ *scalereport.Report) (string, string) {
		b := r.get(pkg, name)
		if !b.has(unit) {
			return absent(name)
		}
		q := b.median(unit)
		lo, hi := b.spread(unit)
		fig := fmt.Sprintf("%s %s (median of %d rounds, range %s–%s)", num(q), unit, len(b.samples[unit]), num(lo), num(hi))
		if atLeast {
			// q ≥ limit is -q ≤ -limit.
			return fig, ratioVerdict(-q, -hi, -lo, -limit)
		}
		return fig, ratioVerdict(q, lo, hi, limit)
	}
}

// reportedMetrics reports the medians of some metrics of one benchmark.
func reportedMetrics(pkg, name string, units ...string) func(*results, *scalereport.Report) (string, string) {
	return func(r *results, _ *scalereport.Report) (string, string) {
		b := r.get(pkg, name)
		var parts []string
		for _, u := range units {
			if !b.has(u) {
				return absent(name)
			}
			lo, hi := b.spread(u)
			parts = append(parts, fmt.Sprintf("%s %s (range %s–%s)", num(b.median(u)), u, num(lo), num(hi)))
		}
		return strings.Join(parts, "; "), reported
	}
}

var targets = []target{
	{"#2", "`Run`: a Transition iteration ≤ 1.5× the hand-rolled loop",
		ratioTarget(".", "RunTransition", "HandRolledTransition", "ns/op", 1.5)},
	{"#2", "`Run`: a Continue iteration ≤ 1.2× the hand-rolled loop",
		ratioTarget(".", "RunContinue", "HandRolledContinue", "ns/op", 1.2)},
	{"#2", "`Run`: 0 allocs/op for Transition and Continue, with the Nop logger and with a production zap logger at Info",
		zeroAllocs(".", "RunTransition", "RunContinue", "RunTransitionZapInfo", "RunContinueZapInfo")},
	{"#3", "`mealy`: steady-state `Handle` with a static action list, 0 allocs/op",
		zeroAllocs("mealy", "Handle/To", "Handle/ToTimed", "Handle/Stay", "Handle/Choose")},
	{"#3", "`Run` over `mealy` ≤ 4× the hand-rolled baseline (same file, same run)",
		func(r *results, s *scalereport.Report) (string, string) {
			fig, verdict := ratioTarget("mealy", "RunMealy", "Baseline", "ns/op", 4)(r, s)
			if q, ok := ratioOf(r, "mealy", "RunMealy", "BaselineMealy", "ns/op"); ok {
				fig += fmt.Sprintf("; against the same hand-rolled loop over the mealy machine (BaselineMealy): %s×", num(q))
			}
			return fig, verdict
		}},
	{"#3", "looplab adapter: `Handle` ≤ 1.25× looplab's bare `Event`",
		func(r *results, s *scalereport.Report) (string, string) {
			il := r.get("looplab", "LooplabHandle/interleaved")
			seq, seqOK := ratioOf(r, "looplab", "LooplabHandle/adapter", "LooplabHandle/bare-Event", "ns/op")
			if !il.has("adapter/bare") {
				if !seqOK {
					return absent("LooplabHandle/interleaved", "LooplabHandle/adapter", "LooplabHandle/bare-Event")
				}
				return fmt.Sprintf("%s× (adapter / bare-Event)", num(seq)), atMost(seq, 1.25)
			}
			q := il.median("adapter/bare")
			lo, hi := il.spread("adapter/bare")
			fig := fmt.Sprintf("%s× (interleaved batches, median of %d rounds, range %s–%s)", num(q), len(il.samples["adapter/bare"]), num(lo), num(hi))
			if seqOK {
				fig += fmt.Sprintf("; %s× from the separate adapter and bare-Event rows", num(seq))
			}
			return fig, ratioVerdict(q, lo, hi, 1.25)
		}},
	{"#3", "looplab adapter: no allocations of its own beyond looplab's",
		func(r *results, _ *scalereport.Report) (string, string) {
			a, okA := maxAllocs(r, "looplab", "LooplabHandle/adapter")
			b, okB := maxAllocs(r, "looplab", "LooplabHandle/bare-Event")
			if !okA || !okB {
				return absent("LooplabHandle/adapter", "LooplabHandle/bare-Event")
			}
			return fmt.Sprintf("%s allocs/op (adapter) vs %s (bare Event)", num(a), num(b)), atMost(a, b)
		}},
	{"#4", "Observer: 0 allocs/op in the Transition benchmark when none is set",
		func(r *results, s *scalereport.Report) (string, string) {
			fig, verdict := zeroAllocs(".", "LoopTransition")(r, s)
			if q, ok := ratioOf(r, ".", "LoopTransitionObserver", "LoopTransition", "ns/op"); ok {
				fig += fmt.Sprintf("; with an observer set: %s× the time, %s allocs/op", num(q), num(r.get(".", "LoopTransitionObserver").median("allocs/op")))
			}
			return fig, verdict
		}},
	{"#5", "`Pipeline`: per-item cost ≤ 1.0× a bare 3-goroutine channel pipeline (cap 128); must not exceed 2×",
		func(r *results, _ *scalereport.Report) (string, string) {
			pi := r.get("stage", "PerItem")
			if !pi.has("ratio") {
				return absent("PerItem")
			}
			q := pi.median("ratio")
			lo, hi := pi.spread("ratio")
			fig := fmt.Sprintf("%s× (interleaved, median of %d rounds, range %s–%s: %s vs %s ns/item)", num(q), len(pi.samples["ratio"]),
				num(lo), num(hi), num(pi.median("pipeline-ns/item")), num(pi.median("bare-ns/item")))
			if q > 1 && q <= 2 {
				return fig, ratioVerdict(q, lo, hi, 1) + ", within the 2× limit"
			}
			return fig, ratioVerdict(q, lo, hi, 1)
		}},
	{"#5", "Memory per idle stage measured and reported",
		func(r *results, s *scalereport.Report) (string, string) {
			var parts []string
			if b := r.get("stage", "IdleStageMemory"); b.has("bytes/stage") {
				parts = append(parts, fmt.Sprintf("%s bytes/stage (BenchmarkIdleStageMemory, 1,002 stages, measured right after Start)", num(b.median("bytes/stage"))))
			}
			if s != nil {
				for _, i := range s.Idle {
					parts = append(parts, fmt.Sprintf("%s bytes/stage (stagescale, %s)", num(i.BytesPerStage), i.Name))
				}
			}
			if len(parts) == 0 {
				return absent("IdleStageMemory", "stagescale")
			}
			return strings.Join(parts, "; "), reported
		}},
	{"#5, #7", "10,000 idle stages: ≤ 4 KiB each, goroutine included",
		func(_ *results, s *scalereport.Report) (string, string) {
			if s == nil || len(s.Idle) == 0 {
				return "stagescale did not run", notMeasured
			}
			verdict := met
			var parts []string
			for _, i := range s.Idle {
				parts = append(parts, fmt.Sprintf("%s: %s B (stack %s + heap %s)", i.Name, num(i.BytesPerStage), num(i.StackPerStage), num(i.HeapPerStage)))
				if i.BytesPerStage > 4096 {
					verdict = missed
				}
			}
			return strings.Join(parts, "; "), verdict
		}},
	{"#5, #7", "10,000 idle stages: CPU while idle indistinguishable from zero",
		func(_ *results, s *scalereport.Report) (string, string) {
			if s == nil || len(s.Idle) == 0 {
				return "stagescale did not run", notMeasured
			}
			verdict := met
			var parts []string
			for _, i := range s.Idle {
				if !i.CPUKnown {
					return "no getrusage on this platform", notMeasured
				}
				ex := i.ExcessCPU()
				parts = append(parts, fmt.Sprintf("%s: %s over %s (no stage: %s)", i.Name, cpu(i.IdleCPU), i.Interval, cpu(i.BaselineCPU)))
				if ex > time.Millisecond {
					verdict = missed
				}
			}
			return strings.Join(parts, "; ") + " — threshold: 1 ms of CPU per second above the no-stage baseline", verdict
		}},
	{"#18", "Metrics on (`stage.WithLatency` + a scraped `promstage.Collector`): `BenchmarkPerItem`'s ratio grows by ≤ 1.2×",
		func(r *results, _ *scalereport.Report) (string, string) {
			pi := r.get("contrib/promstage", "PerItem")
			if !pi.has("on/off") {
				return absent("contrib/promstage PerItem")
			}
			q := pi.median("on/off")
			lo, hi := pi.spread("on/off")
			return fmt.Sprintf("%s× (interleaved, median of %d rounds, range %s–%s; ratio to bare channels %s× off, %s× on)", num(q),
				len(pi.samples["on/off"]), num(lo), num(hi), num(pi.median("ratio-off")), num(pi.median("ratio-on"))), ratioVerdict(q, lo, hi, 1.2)
		}},
	{"#13", "`BenchmarkPerItem` (linear pipeline over bare channels) ≤ 0.5",
		metricTarget("stage", "PerItem", "ratio", 0.5, false)},
	{"#13", "`BenchmarkKeyedIdleMemory`: ≤ 256 bytes per idle key (16-byte state, armed timeout)",
		metricTarget("stage", "KeyedIdleMemory", "bytes/key", 256, false)},
	{"#13", "`BenchmarkKeyedVsHand`: a keyed mealy stage ≤ 2.0× a hand-written map-and-switch loop (100,000 keys)",
		metricTarget("stage", "KeyedVsHand", "ratio", 2.0, false)},
	{"#13", "`BenchmarkParallelCPU`: 2 workers ≥ 1.6× 1 worker on a CPU-bound transform",
		metricTarget("stage", "ParallelCPU", "speedup", 1.6, true)},
	{"#13", "Keyed timeouts: lateness with 1,000,000 armed (none lost, else the benchmark fails)",
		reportedMetrics("stage", "KeyedTimeoutLateness", "p50-late-ns", "p99-late-ns")},
	{"#14", "Incremental checkpoint, 1,000,000 keys with 1% changed: ≤ 100 ms",
		metricTarget("checkpoint", "Checkpoint/delta", "ms/checkpoint", 100, false)},
	{"#14", "Checkpointing while running: the demo (1,000,000 orders) with checkpoints every second ≤ 1.25× the time without",
		metricTarget("examples/pipeline", "CheckpointOverhead", "ratio", 1.25, false)},
	{"#16", "kafkastage, 1 member, pass-through: ≥ 0.8× a hand-written franz-go loop",
		metricTarget("contrib/kafkastage", "PassThrough", "ratio", 0.8, true)},
}

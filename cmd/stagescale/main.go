// Command stagescale measures stagefsm at scale: what an idle stage costs
// (memory, CPU while idle, time to start and to drain thousands of them)
// and how fast many concurrent Runs of a small stage complete. It prints a
// table and states the issues' scale targets as met or missed.
//
// Usage:
//
//	go run ./cmd/stagescale [-stages 10000] [-runs 100000] [-idle 2s] [-json]
//
// It runs four scenarios, each in a fresh child process of its own (the
// runtime reuses the descriptors of ended goroutines and sizes new stacks
// after the ones it has seen, so scenarios sharing a process would skew
// each other):
//
//   - start: -stages stages started with stagefsm.Start, each blocked in a
//     ControlBlock state waiting for a control event, over a two-state
//     hand-written machine — the floor: the loop, the handle with its
//     control queue, the goroutine;
//   - mealy: the same over a mealy machine;
//   - pipeline: one stage.Pipeline of -stages stages (a source waiting for
//     input, transforms, a sink), each blocked on its input;
//   - runs: -runs stagefsm.Run calls of a small mealy stage, each on its own
//     goroutine, all alive at once at a barrier, then released to count to
//     10 and terminate (12 transitions each).
//
// Memory is the growth of live heap objects plus goroutine stacks, after
// collections, divided by the number of stages. Idle CPU is the process's
// user+system time (getrusage) over -idle with every stage idle, next to
// the same interval measured in the same process before any stage existed.
// Start is the time until every stage waits; drain the time from the
// signal to end (the gates' control event, or the source's end of input)
// until every stage has finished. The peak of the concurrent Runs is the
// memory the runtime held from the OS (close to the resident size) above
// what it held before.
//
// -json prints the figures for scripts/bench.sh; -memprofile writes a heap
// profile of each idle scenario with every stage idle, to see where the
// bytes go (go tool pprof -sample_index=inuse_space). -scenario runs one
// scenario in the current process and prints its figures as JSON; the
// command runs its children that way.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"text/tabwriter"
	"time"

	"github.com/stagefsm/stagefsm/internal/scalereport"
)

// Targets of the issues, checked in the report.
const (
	targetBytesPerStage = 4096
	// targetIdleCPU is how much more CPU than the baseline the idle
	// interval may use, per second, and still count as no CPU at all: a
	// thousandth of one core.
	targetIdleCPU = time.Millisecond
)

type config struct {
	stages      int
	runs        int
	ticks       int
	idle        time.Duration
	baselineCPU time.Duration
}

func main() {
	var cfg config
	flag.IntVar(&cfg.stages, "stages", 10_000, "idle stages per scenario (at least 3)")
	flag.IntVar(&cfg.runs, "runs", 100_000, "concurrent Runs of the small stage (0 skips the scenario)")
	flag.DurationVar(&cfg.idle, "idle", 2*time.Second, "interval over which idle CPU is measured")
	asJSON := flag.Bool("json", false, "print the figures as JSON instead of a table")
	memprofile := flag.String("memprofile", "", "write a heap profile of each idle scenario, with every stage idle, to `prefix`.<scenario>.pprof")
	only := flag.String("scenario", "", "run only this scenario (start, mealy, pipeline or runs) in this process and print its figures as JSON; "+
		"without it each scenario runs in a fresh child process")
	flag.Parse()
	cfg.ticks = 10
	if cfg.stages < 3 || cfg.runs < 0 || cfg.idle <= 0 {
		fail(errors.New("-stages must be at least 3, -runs at least 0 and -idle positive"), 2)
	}
	if *only != "" {
		if *memprofile != "" {
			runtime.MemProfileRate = 1
		}
		res, err := runScenario(*only, cfg, *memprofile)
		if err != nil {
			fail(fmt.Errorf("%s: %w", *only, err), 1)
		}
		if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
			fail(err, 1)
		}
		return
	}

	rep, err := measure(cfg, *memprofile, os.Stderr)
	if err != nil {
		fail(err, 1)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = printReport(rep, os.Stdout)
	}
	if err != nil {
		fail(err, 1)
	}
}

func fail(err error, code int) {
	fmt.Fprintln(os.Stderr, "stagescale:", err)
	os.Exit(code)
}

// scenarios are the scenario names, in the order they run.
var scenarios = []string{"start", "mealy", "pipeline", "runs"}

// result is what one scenario measured: Idle for the idle scenarios, Runs
// for the concurrent Runs.
type result struct {
	Idle *scalereport.Idle `json:"idle,omitempty"`
	Runs *scalereport.Runs `json:"runs,omitempty"`
}

// runScenario runs the scenario name in this process. An idle scenario
// first measures the baseline CPU of this process with no stage.
func runScenario(name string, cfg config, profile string) (result, error) {
	if profile != "" {
		profile += "." + name + ".pprof"
	}
	if name == "runs" {
		r, err := concurrentRuns(cfg.runs, cfg.ticks)
		return result{Runs: &r}, err
	}
	var build func(gateState) (gateMachine, error)
	switch name {
	case "start":
		build = func(initial gateState) (gateMachine, error) { return &handGate{state: initial}, nil }
	case "mealy":
		var err error
		if build, err = mealyGate(); err != nil {
			return result{}, err
		}
	case "pipeline":
	default:
		return result{}, fmt.Errorf("unknown scenario %q (want one of %v)", name, scenarios)
	}
	cfg.baselineCPU, _ = idleCPU(cfg.idle)
	var r scalereport.Idle
	var err error
	if build == nil {
		r, err = idlePipeline(cfg.stages, cfg, profile)
	} else {
		r, err = idleGates(scenarioNames[name], cfg.stages, build, cfg, profile)
	}
	return result{Idle: &r}, err
}

var scenarioNames = map[string]string{
	"start":    "stagefsm.Start, hand-written FSM",
	"mealy":    "stagefsm.Start, mealy FSM",
	"pipeline": "stage.Pipeline stage",
	"runs":     "concurrent Runs",
}

// measure runs every scenario, each in a child process of its own so that
// none inherits the goroutines, stacks or heap of another (the runtime
// reuses the descriptors of ended goroutines and sizes new stacks after
// the ones it has seen). Progress goes to progress.
func measure(cfg config, profile string, progress io.Writer) (*scalereport.Report, error) {
	begin := time.Now()
	rep := &scalereport.Report{
		GoVersion: runtime.Version(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH,
		NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this program to run the scenarios: %w", err)
	}
	for _, name := range scenarios {
		if name == "runs" && cfg.runs == 0 {
			continue
		}
		n := cfg.stages
		if name == "runs" {
			n = cfg.runs
		}
		fmt.Fprintf(progress, "%s: %s ...\n", scenarioNames[name], scalereport.Thousands(int64(n)))
		args := []string{"-scenario", name, "-stages", fmt.Sprint(cfg.stages), "-runs", fmt.Sprint(cfg.runs), "-idle", cfg.idle.String()}
		if profile != "" {
			args = append(args, "-memprofile", profile)
		}
		cmd := exec.Command(exe, args...)
		cmd.Stderr = progress
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", scenarioNames[name], err)
		}
		var res result
		if err := json.Unmarshal(out, &res); err != nil {
			return nil, fmt.Errorf("%s: read its figures: %w", scenarioNames[name], err)
		}
		if res.Idle != nil {
			rep.Idle = append(rep.Idle, *res.Idle)
		}
		if res.Runs != nil {
			rep.Runs = *res.Runs
		}
	}
	rep.Elapsed = time.Since(begin).Seconds()
	return rep, nil
}

// printReport writes the report as aligned tables.
func printReport(rep *scalereport.Report, w io.Writer) error {
	fmt.Fprintf(w, "stagescale: %s %s/%s, %d CPUs (GOMAXPROCS %d), %.1fs\n\n",
		rep.GoVersion, rep.GOOS, rep.GOARCH, rep.NumCPU, rep.GOMAXPROCS, rep.Elapsed)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "idle stages\tstages\tstart\tdrain\tbytes/stage\tstack\theap\tidle CPU\tbaseline CPU\t")
	for _, r := range rep.Idle {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			r.Name, scalereport.Thousands(int64(r.Stages)), round(r.Start), round(r.Drain),
			scalereport.Thousands(int64(r.BytesPerStage)), scalereport.Thousands(int64(r.StackPerStage)), scalereport.Thousands(int64(r.HeapPerStage)),
			cpu(r.IdleCPU, r.CPUKnown), cpu(r.BaselineCPU, r.CPUKnown))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Idle) > 0 {
		fmt.Fprintf(w, "(CPU: user+system time of the whole process over %v)\n", rep.Idle[0].Interval)
	}
	if r := rep.Runs; r.Runs > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(tw, "concurrent Runs\ttransitions each\tspawn\trun\truns/s\tbytes/Run waiting\tpeak memory\t")
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n",
			scalereport.Thousands(int64(r.Runs)), r.Transitions, round(r.Spawn), round(r.Run),
			rate(r.Runs, r.Run), scalereport.Thousands(int64(r.BytesPerRun)), mib(r.Peak))
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)
	for _, v := range verdicts(rep) {
		fmt.Fprintln(w, v)
	}
	return nil
}

// verdicts states the scale targets of the issues as met or missed.
func verdicts(rep *scalereport.Report) []string {
	var out []string
	for _, r := range rep.Idle {
		verdict := "met"
		if r.BytesPerStage > targetBytesPerStage {
			verdict = "MISSED"
		}
		out = append(out, fmt.Sprintf("%-34s ≤ 4 KiB per idle stage: %s (%s bytes)", r.Name, verdict, scalereport.Thousands(int64(r.BytesPerStage))))
		if !r.CPUKnown {
			out = append(out, fmt.Sprintf("%-34s ~0 CPU while idle: unknown (no getrusage)", r.Name))
			continue
		}
		verdict = "met"
		if r.ExcessCPU() > targetIdleCPU {
			verdict = "MISSED"
		}
		out = append(out, fmt.Sprintf("%-34s ~0 CPU while idle: %s (%s per second above the baseline)", r.Name, verdict, r.ExcessCPU()))
	}
	return out
}

func writeHeapProfile(path string) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("heap").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "stagescale: heap profile:", err)
	}
}

func round(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

func cpu(d time.Duration, known bool) string {
	if !known {
		return "?"
	}
	return d.Round(10 * time.Microsecond).String()
}

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// rate formats n per d, or "-" when d is too short to tell.
func rate(n int, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return scalereport.Thousands(int64(float64(n) / d.Seconds()))
}

// Package scalereport is the JSON that cmd/stagescale writes with -json and
// scripts/benchreport reads into BENCHMARKS.md, so that producer and
// consumer share one schema, and the number formatting both print with.
package scalereport

import (
	"strconv"
	"time"
)

// Report is everything stagescale measured.
type Report struct {
	GoVersion  string  `json:"go_version"`
	GOOS       string  `json:"goos"`
	GOARCH     string  `json:"goarch"`
	NumCPU     int     `json:"num_cpu"`
	GOMAXPROCS int     `json:"gomaxprocs"`
	Idle       []Idle  `json:"idle"`
	Runs       Runs    `json:"runs"`
	Elapsed    float64 `json:"elapsed_s"`
}

// Idle is what one idle-stages scenario measured.
type Idle struct {
	Name   string `json:"name"`
	Stages int    `json:"stages"`
	// Start is the time from the first start to every stage waiting
	// (for the pipeline: building it and Pipeline.Start).
	Start time.Duration `json:"start_ns"`
	// Drain is the time from the signal to end to every stage finished.
	Drain time.Duration `json:"drain_ns"`
	// Bytes per idle stage, after collections: heap objects and stacks.
	BytesPerStage float64 `json:"bytes_per_stage"`
	HeapPerStage  float64 `json:"heap_per_stage"`
	StackPerStage float64 `json:"stack_per_stage"`
	// IdleCPU is the process's CPU time over Interval with every stage
	// idle; BaselineCPU the same before any stage existed.
	IdleCPU     time.Duration `json:"idle_cpu_ns"`
	BaselineCPU time.Duration `json:"baseline_cpu_ns"`
	Interval    time.Duration `json:"interval_ns"`
	CPUKnown    bool          `json:"cpu_known"`
}

// ExcessCPU is the idle interval's CPU above the baseline, per second of
// interval; 0 for an empty interval.
func (i Idle) ExcessCPU() time.Duration {
	if i.Interval <= 0 {
		return 0
	}
	return time.Duration(float64(max(i.IdleCPU-i.BaselineCPU, 0)) / i.Interval.Seconds())
}

// Runs is what the concurrent-Runs scenario measured.
type Runs struct {
	Runs        int `json:"runs"`
	Transitions int `json:"transitions_per_run"`
	// Spawn is the time to start every Run and have it wait at the
	// barrier; Run the time from the barrier's release to the last Run's
	// return.
	Spawn time.Duration `json:"spawn_ns"`
	Run   time.Duration `json:"run_ns"`
	// BytesPerRun is the memory of one Run waiting at the barrier (heap
	// and stack, after collections).
	BytesPerRun float64 `json:"bytes_per_run"`
	// Peak is the most memory the runtime held from the OS during the
	// scenario, above what it held before.
	Peak uint64 `json:"peak_bytes"`
}

// Thousands formats n with comma separators: 1234567 is "1,234,567".
func Thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	sign := ""
	if n < 0 {
		sign, s = "-", s[1:]
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return sign + s
}

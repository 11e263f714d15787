package main

import (
	"encoding/json"
	"os"
	"time"
)

// scale is the JSON that go run ./cmd/stagescale -json prints (the fields
// the report uses).
type scale struct {
	GoVersion string `json:"go_version"`
	Idle      []struct {
		Name          string        `json:"name"`
		Stages        int           `json:"stages"`
		Start         time.Duration `json:"start_ns"`
		Drain         time.Duration `json:"drain_ns"`
		BytesPerStage float64       `json:"bytes_per_stage"`
		HeapPerStage  float64       `json:"heap_per_stage"`
		StackPerStage float64       `json:"stack_per_stage"`
		IdleCPU       time.Duration `json:"idle_cpu_ns"`
		BaselineCPU   time.Duration `json:"baseline_cpu_ns"`
		Interval      time.Duration `json:"interval_ns"`
		CPUKnown      bool          `json:"cpu_known"`
	} `json:"idle"`
	Runs struct {
		Runs        int           `json:"runs"`
		Transitions int           `json:"transitions_per_run"`
		Spawn       time.Duration `json:"spawn_ns"`
		Run         time.Duration `json:"run_ns"`
		BytesPerRun float64       `json:"bytes_per_run"`
		Peak        uint64        `json:"peak_bytes"`
	} `json:"runs"`
	Elapsed float64 `json:"elapsed_s"`
}

func readScale(path string) (*scale, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s scale
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// excessCPU is the idle interval's CPU above the baseline, per second of
// interval (as stagescale computes it).
func excessCPU(idle, baseline, interval time.Duration) time.Duration {
	if interval <= 0 {
		return 0
	}
	return time.Duration(float64(max(idle-baseline, 0)) / interval.Seconds())
}

package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkCheckpointOverhead runs the demo on the same generated input
// (1,000,000 orders, the default) without and with checkpoints every second
// (-state, a fresh directory each run), one after the other in every
// iteration, and reports ratio, the time with checkpoints over the time
// without (the target of #14: at most 1.25), and each run's time. A run
// without checkpoints warms the page cache first, untimed.
func BenchmarkCheckpointOverhead(b *testing.B) {
	in := b.TempDir()
	if err := generate(filepath.Join(in, "orders.csv"), filepath.Join(in, "customers.csv"), 1_000_000, 0.001, 1); err != nil {
		b.Fatal(err)
	}
	once := func(checkpoints bool) time.Duration {
		out := b.TempDir()
		defer os.RemoveAll(out)
		args := []string{"-in", in, "-out", out, "-progress", "0"}
		if checkpoints {
			state := b.TempDir()
			defer os.RemoveAll(state)
			args = append(args, "-state", state, "-checkpoint-every", "1s")
		}
		c, err := parseFlags(args, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := demo(c, io.Discard, io.Discard); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	once(false)
	var with, without time.Duration
	runs := 0
	for b.Loop() {
		without += once(false)
		with += once(true)
		runs++
	}
	b.ReportMetric(float64(with)/float64(without), "ratio")
	b.ReportMetric(without.Seconds()/float64(runs), "s/run-without")
	b.ReportMetric(with.Seconds()/float64(runs), "s/run-with")
}

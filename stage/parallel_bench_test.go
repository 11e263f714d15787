package stage_test

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/stagefsm/stagefsm/stage"
)

// hashRounds makes one call of the CPU-bound benchmark transform cost
// about 20µs: that many SHA-256 rounds over 32 bytes.
const hashRounds = 200

// hashing is a CPU-bound transform safe for concurrent use: it hashes its
// input hashRounds times and emits the first byte.
var hashing = stage.TransformFunc[int, int](func(_ context.Context, in int, emit func(int)) error {
	var sum [32]byte
	sum[0] = byte(in)
	for range hashRounds {
		sum = sha256.Sum256(sum[:])
	}
	emit(int(sum[0]))
	return nil
})

// runHashing runs items items through hashing on workers workers and
// returns how long it took.
func runHashing(b *testing.B, items, workers int) time.Duration {
	b.Helper()
	sink := stage.SinkFunc[int](func(context.Context, int) error { return nil })
	p := parPipeline(&numbers{n: items}, hashing, stage.Parallel[int]{Workers: workers}, sink)
	start := time.Now()
	if err := p.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := p.Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	if st := p.Stats(); st.Delivered != uint64(2*items) {
		b.Fatalf("delivered %d, want %d", st.Delivered, 2*items)
	}
	return d
}

// BenchmarkParallelCPU runs a CPU-bound transform (about 20µs per item) on
// one worker and on two, in the same run, and reports the speedup of two
// over one (ideal on two idle cores: 2). ns/op is not meaningful.
func BenchmarkParallelCPU(b *testing.B) {
	const items = 2048
	var one, two time.Duration
	for b.Loop() {
		one += runHashing(b, items, 1)
		two += runHashing(b, items, 2)
	}
	b.ReportMetric(float64(one)/float64(two), "speedup")
	b.ReportMetric(float64(one.Nanoseconds())/float64(b.N*items), "ns/item-1w")
	b.ReportMetric(float64(two.Nanoseconds())/float64(b.N*items), "ns/item-2w")
	b.ReportMetric(0, "ns/op")
}

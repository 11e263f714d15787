package stage_test

import (
	"context"
	"io"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stagefsm/stagefsm/stage"
)

// benchItems is how many items each benchmark iteration pushes through a
// fresh pipeline; start-up and teardown are amortized over them.
const benchItems = 100_000

// runBare pushes n items through source → transform → sink goroutines
// connected by per-item channels of capacity 128: the baseline.
func runBare(n int) int {
	a, b := make(chan int, 128), make(chan int, 128)
	done := make(chan int)
	go func() {
		for i := range n {
			a <- i
		}
		close(a)
	}()
	go func() {
		for v := range a {
			b <- v + 1
		}
		close(b)
	}()
	go func() {
		sum := 0
		for v := range b {
			sum += v
		}
		done <- sum
	}()
	return <-done
}

// runPipeline pushes n items through a Pipeline with the same trivial
// handlers.
func runPipeline(tb testing.TB, n int, opts ...stage.Option) int {
	i, sum := 0, 0
	src := stage.SourceFunc[int](func(_ context.Context, emit func(int)) error {
		if i == n {
			return io.EOF
		}
		emit(i)
		i++
		return nil
	})
	inc := stage.TransformFunc[int, int](func(_ context.Context, v int, emit func(int)) error {
		emit(v + 1)
		return nil
	})
	sink := stage.SinkFunc[int](func(_ context.Context, v int) error {
		sum += v
		return nil
	})
	p := stage.To(stage.Then(stage.From("src", src), "inc", inc), "sum", sink, opts...)
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	if err := p.Wait(ctx); err != nil {
		tb.Fatal(err)
	}
	return sum
}

func reportPerItem(b *testing.B, d time.Duration, name string) {
	b.ReportMetric(float64(d.Nanoseconds())/float64(b.N*benchItems), name)
}

// BenchmarkPerItem compares the per-item cost of a source → transform →
// sink Pipeline with trivial handlers against three goroutines over
// buffered channels of capacity 128, interleaved in the same iterations so
// that both see the same machine load. ratio is pipeline/bare.
func BenchmarkPerItem(b *testing.B) {
	b.ReportAllocs()
	var bare, pipe time.Duration
	for b.Loop() {
		t0 := time.Now()
		runBare(benchItems)
		t1 := time.Now()
		runPipeline(b, benchItems)
		pipe += time.Since(t1)
		bare += t1.Sub(t0)
	}
	reportPerItem(b, bare, "bare-ns/item")
	reportPerItem(b, pipe, "pipeline-ns/item")
	b.ReportMetric(float64(pipe)/float64(bare), "ratio")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkBare and BenchmarkPipeline measure each side alone, with its
// allocations per item.
func BenchmarkBare(b *testing.B) {
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		runBare(benchItems)
	}
	reportPerItem(b, time.Since(start), "ns/item")
}

func BenchmarkPipeline(b *testing.B) {
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		runPipeline(b, benchItems)
	}
	reportPerItem(b, time.Since(start), "ns/item")
}

// BenchmarkIdleStageMemory starts a pipeline of idleTransforms transforms
// whose source has no input yet, and reports the memory (heap and stacks,
// after a collection) each idle stage costs.
func BenchmarkIdleStageMemory(b *testing.B) {
	const idleTransforms = 1000
	var total uint64
	for b.Loop() {
		release := make(chan struct{})
		src := stage.SourceFunc[int](func(ctx context.Context, _ func(int)) error {
			select {
			case <-release:
				return io.EOF
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		c := stage.From("src", src)
		for i := range idleTransforms {
			c = stage.Then(c, "t"+strconv.Itoa(i), stage.TransformFunc[int, int](func(_ context.Context, v int, emit func(int)) error {
				emit(v)
				return nil
			}))
		}
		p := stage.To(c, "sink", stage.SinkFunc[int](func(context.Context, int) error { return nil }))
		before := memInUse()
		if err := p.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		total += memInUse() - before
		close(release)
		if err := p.Wait(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(total)/float64(b.N*(idleTransforms+2)), "bytes/stage")
	b.ReportMetric(0, "ns/op")
}

func memInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

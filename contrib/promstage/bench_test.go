package promstage_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stagefsm/stagefsm/contrib/promstage"
	"github.com/stagefsm/stagefsm/stage"
)

// benchItems is how many items each benchmark iteration pushes through.
const benchItems = 100_000

// runBare pushes n items through three goroutines over buffered channels
// of capacity 128: the baseline of stage's BenchmarkPerItem.
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

// runPipeline pushes n items through source → transform → sink with
// trivial handlers. With metrics, the pipeline times its batches and a
// registry with its Collector is gathered once while it runs.
func runPipeline(tb testing.TB, n int, metrics bool) {
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
	var opts []stage.Option
	if metrics {
		opts = append(opts, stage.WithLatency(true))
	}
	p := stage.To(stage.Then(stage.From("src", src), "inc", inc), "sum", sink, opts...)
	gathered := make(chan error, 1)
	if metrics {
		reg := prometheus.NewRegistry()
		c, err := promstage.New("bench", p)
		if err != nil {
			tb.Fatal(err)
		}
		reg.MustRegister(c)
		go func() { _, err := reg.Gather(); gathered <- err }()
	} else {
		gathered <- nil
	}
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	if err := p.Wait(ctx); err != nil {
		tb.Fatal(err)
	}
	if err := <-gathered; err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkPerItem is stage's BenchmarkPerItem twice over: the same
// pipeline without metrics and with them (stage.WithLatency and a scraped
// Collector), each against the bare channels, interleaved in the same
// iterations. ratio-off and ratio-on are pipeline/bare; on/off is their
// quotient, the cost of the metrics (issue 18 bounds it by 1.2).
func BenchmarkPerItem(b *testing.B) {
	var bare, off, on time.Duration
	for b.Loop() {
		t0 := time.Now()
		runBare(benchItems)
		t1 := time.Now()
		runPipeline(b, benchItems, false)
		t2 := time.Now()
		runPipeline(b, benchItems, true)
		on += time.Since(t2)
		off += t2.Sub(t1)
		bare += t1.Sub(t0)
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N*benchItems) }
	b.ReportMetric(per(bare), "bare-ns/item")
	b.ReportMetric(per(off), "off-ns/item")
	b.ReportMetric(per(on), "on-ns/item")
	b.ReportMetric(float64(off)/float64(bare), "ratio-off")
	b.ReportMetric(float64(on)/float64(bare), "ratio-on")
	b.ReportMetric(float64(on)/float64(off), "on/off")
	b.ReportMetric(0, "ns/op")
}

package stage_test

import (
	"context"
	"fmt"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stagefsm/stagefsm/stage"
)

// countTo is a source of 0..n-1.
func countTo(n int) stage.Source[int] {
	i := 0
	return stage.SourceFunc[int](func(_ context.Context, emit func(int)) error {
		if i == n {
			return io.EOF
		}
		emit(i)
		i++
		return nil
	})
}

// Each sink batch of one item takes 3ms of (fake) time, so every
// observation falls in the (2.5ms, 5ms] bucket; the transform takes no time.
func TestWithLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pass := stage.TransformFunc[int, int](func(_ context.Context, v int, emit func(int)) error {
			emit(v)
			return nil
		})
		slow := stage.SinkFunc[int](func(context.Context, int) error {
			time.Sleep(3 * time.Millisecond)
			return nil
		})
		p := stage.To(stage.Then(stage.From("src", countTo(4)), "pass", pass), "slow", slow,
			stage.WithBatchSize(1), stage.WithLatency(true))
		if err := p.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		st := p.Stats()
		if st.Stages[0].Latency != nil {
			t.Errorf("source Latency = %+v, want nil", st.Stages[0].Latency)
		}
		pl, sl := st.Stages[1].Latency, st.Stages[2].Latency
		if pl == nil || sl == nil {
			t.Fatalf("Latency pass=%v slow=%v, want both set", pl, sl)
		}
		if pl.Count != 4 || pl.Counts[0] != 4 || pl.Sum != 0 {
			t.Errorf("pass Latency = %+v, want 4 batches in the first bucket, sum 0", pl)
		}
		want := make([]uint64, len(stage.LatencyBounds)+1)
		want[8] = 4 // LatencyBounds[8] is 5ms
		if fmt.Sprint(sl.Counts) != fmt.Sprint(want) || sl.Count != 4 || sl.Sum != 0.012 {
			t.Errorf("slow Latency = %+v, want Counts %v, Count 4, Sum 0.012", sl, want)
		}
	})
}

func TestWithoutLatency(t *testing.T) {
	p := stage.To(stage.From("src", countTo(3)), "sink", stage.SinkFunc[int](func(context.Context, int) error { return nil }))
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Stats().Stages {
		if s.Latency != nil {
			t.Errorf("stage %s Latency = %+v, want nil without WithLatency", s.Name, s.Latency)
		}
	}
}

// WithLatency times each batch a transform or sink processes.
func ExampleWithLatency() {
	sink := stage.SinkFunc[int](func(context.Context, int) error { return nil })
	p := stage.To(stage.From("numbers", countTo(10)), "discard", sink,
		stage.WithBatchSize(5), stage.WithLatency(true))
	if err := p.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Wait(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	lat := p.Stats().Stages[1].Latency
	fmt.Println("batches timed:", lat.Count, "buckets:", len(lat.Counts))
	// Output:
	// batches timed: 2 buckets: 20
}

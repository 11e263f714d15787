package promstage_test

import (
	"context"
	"errors"
	"github.com/stagefsm/stagefsm/internal/metricdef"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stagefsm/stagefsm/contrib/promstage"
	"github.com/stagefsm/stagefsm/stage"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// lines is a source of text lines.
func lines(text string) stage.Source[string] {
	rest := strings.Split(text, "\n")
	return stage.SourceFunc[string](func(_ context.Context, emit func(string)) error {
		if len(rest) == 0 {
			return io.EOF
		}
		emit(rest[0])
		rest = rest[1:]
		return nil
	})
}

// numbers builds read → parse → square → print over text, parse failing
// on what is not a number.
func numbers(text string, opts ...stage.Option) *stage.Pipeline {
	parse := stage.TransformFunc[string, int](func(_ context.Context, line string, emit func(int)) error {
		n, err := strconv.Atoi(line)
		if err != nil {
			return err
		}
		emit(n)
		return nil
	})
	square := stage.TransformFunc[int, int](func(_ context.Context, n int, emit func(int)) error {
		emit(n * n)
		return nil
	})
	discard := stage.SinkFunc[int](func(context.Context, int) error { return nil })
	src := stage.From("read", lines(text))
	return stage.To(stage.Then(stage.Then(src, "parse", parse), "square", square), "print", discard, opts...)
}

func run(t *testing.T, p *stage.Pipeline) {
	t.Helper()
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
}

const wantCounts = `
# HELP stagefsm_stage_items_received_total Items the stage received, error items included.
# TYPE stagefsm_stage_items_received_total counter
stagefsm_stage_items_received_total{kind="sink",pipeline="numbers",stage="print"} 4
stagefsm_stage_items_received_total{kind="source",pipeline="numbers",stage="read"} 0
stagefsm_stage_items_received_total{kind="transform",pipeline="numbers",stage="parse"} 4
stagefsm_stage_items_received_total{kind="transform",pipeline="numbers",stage="square"} 4
# HELP stagefsm_stage_items_emitted_total Items the stage created.
# TYPE stagefsm_stage_items_emitted_total counter
stagefsm_stage_items_emitted_total{kind="sink",pipeline="numbers",stage="print"} 0
stagefsm_stage_items_emitted_total{kind="source",pipeline="numbers",stage="read"} 4
stagefsm_stage_items_emitted_total{kind="transform",pipeline="numbers",stage="parse"} 3
stagefsm_stage_items_emitted_total{kind="transform",pipeline="numbers",stage="square"} 3
# HELP stagefsm_stage_items_delivered_total Items the stage's handler consumed without error.
# TYPE stagefsm_stage_items_delivered_total counter
stagefsm_stage_items_delivered_total{kind="sink",pipeline="numbers",stage="print"} 3
stagefsm_stage_items_delivered_total{kind="source",pipeline="numbers",stage="read"} 0
stagefsm_stage_items_delivered_total{kind="transform",pipeline="numbers",stage="parse"} 3
stagefsm_stage_items_delivered_total{kind="transform",pipeline="numbers",stage="square"} 3
# HELP stagefsm_stage_items_dead_lettered_total Dead letters that failed at the stage.
# TYPE stagefsm_stage_items_dead_lettered_total counter
stagefsm_stage_items_dead_lettered_total{kind="sink",pipeline="numbers",stage="print"} 0
stagefsm_stage_items_dead_lettered_total{kind="source",pipeline="numbers",stage="read"} 0
stagefsm_stage_items_dead_lettered_total{kind="transform",pipeline="numbers",stage="parse"} 1
stagefsm_stage_items_dead_lettered_total{kind="transform",pipeline="numbers",stage="square"} 0
# HELP stagefsm_pipeline_items_in_flight Items emitted and not yet delivered or dead-lettered: in channels or in stages' hands.
# TYPE stagefsm_pipeline_items_in_flight gauge
stagefsm_pipeline_items_in_flight{pipeline="numbers"} 0
`

// After a known run the counters hold its exact counts.
func TestCollectorCounts(t *testing.T) {
	p := numbers("1\n2\nthree\n4")
	run(t, p)
	c, err := promstage.New("numbers", p)
	if err != nil {
		t.Fatal(err)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(wantCounts),
		"stagefsm_stage_items_received_total", "stagefsm_stage_items_emitted_total",
		"stagefsm_stage_items_delivered_total", "stagefsm_stage_items_dead_lettered_total",
		"stagefsm_pipeline_items_in_flight"); err != nil {
		t.Error(err)
	}
}

// The failure of parse is classed "error"; every stage ends Drained.
func TestCollectorFailuresAndState(t *testing.T) {
	p := numbers("1\n2\nthree\n4")
	run(t, p)
	c, err := promstage.New("numbers", p, promstage.WithStages("parse"))
	if err != nil {
		t.Fatal(err)
	}
	const want = `
# HELP stagefsm_stage_failures_total Dead letters that failed at the stage, by the class of their error.
# TYPE stagefsm_stage_failures_total counter
stagefsm_stage_failures_total{cause="aborted",kind="transform",pipeline="numbers",stage="parse"} 0
stagefsm_stage_failures_total{cause="error",kind="transform",pipeline="numbers",stage="parse"} 1
stagefsm_stage_failures_total{cause="fatal",kind="transform",pipeline="numbers",stage="parse"} 0
stagefsm_stage_failures_total{cause="panic",kind="transform",pipeline="numbers",stage="parse"} 0
stagefsm_stage_failures_total{cause="restarted",kind="transform",pipeline="numbers",stage="parse"} 0
stagefsm_stage_failures_total{cause="stage_failed",kind="transform",pipeline="numbers",stage="parse"} 0
# HELP stagefsm_stage_state 1 for the state the stage is in, 0 for the others.
# TYPE stagefsm_stage_state gauge
stagefsm_stage_state{kind="transform",pipeline="numbers",stage="parse",state="Created"} 0
stagefsm_stage_state{kind="transform",pipeline="numbers",stage="parse",state="Draining"} 0
stagefsm_stage_state{kind="transform",pipeline="numbers",stage="parse",state="Drained"} 1
stagefsm_stage_state{kind="transform",pipeline="numbers",stage="parse",state="Failed"} 0
stagefsm_stage_state{kind="transform",pipeline="numbers",stage="parse",state="Hydrating"} 0
stagefsm_stage_state{kind="transform",pipeline="numbers",stage="parse",state="Initialized"} 0
stagefsm_stage_state{kind="transform",pipeline="numbers",stage="parse",state="Running"} 0
stagefsm_stage_state{kind="transform",pipeline="numbers",stage="parse",state="WaitingForGun"} 0
# HELP stagefsm_stage_restarts_total Times the stage was restarted after a failure.
# TYPE stagefsm_stage_restarts_total counter
stagefsm_stage_restarts_total{kind="transform",pipeline="numbers",stage="parse"} 0
# HELP stagefsm_stage_queued_batches Batches waiting in the stage's input channel.
# TYPE stagefsm_stage_queued_batches gauge
stagefsm_stage_queued_batches{kind="transform",pipeline="numbers",stage="parse"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"stagefsm_stage_failures_total", "stagefsm_stage_state", "stagefsm_stage_restarts_total",
		"stagefsm_stage_queued_batches"); err != nil {
		t.Error(err)
	}
	// Only parse is collected, and no pipeline gauge: 15 single-value
	// families minus the histogram (no WithLatency), with 6 causes and one
	// series per state.
	if n, want := testutil.CollectAndCount(c), 12+6+len(metricdef.States); n != want {
		t.Errorf("CollectAndCount = %d, want %d", n, want)
	}
}

// A transform's transitions follow its lifecycle: Created → Initialized →
// Running → Draining → Drained is 4 changes, and the source waits for the
// gun as well: 5.
func TestCollectorTransitions(t *testing.T) {
	p := numbers("1")
	run(t, p)
	c, err := promstage.New("numbers", p, promstage.WithStages("read", "square"))
	if err != nil {
		t.Fatal(err)
	}
	const want = `
# HELP stagefsm_stage_transitions_total Changes of the stage's state, restarts to Created included.
# TYPE stagefsm_stage_transitions_total counter
stagefsm_stage_transitions_total{kind="source",pipeline="numbers",stage="read"} 5
stagefsm_stage_transitions_total{kind="transform",pipeline="numbers",stage="square"} 4
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "stagefsm_stage_transitions_total"); err != nil {
		t.Error(err)
	}
}

// With stage.WithLatency, the sink and transforms export the batch
// histogram; in a synctest bubble the handlers take no time, so every
// batch is in the first bucket and the sum is 0.
func TestCollectorLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := numbers("1\n2\n3", stage.WithBatchSize(1), stage.WithLatency(true))
		run(t, p)
		c, err := promstage.New("numbers", p, promstage.WithStages("print"))
		if err != nil {
			t.Fatal(err)
		}
		want := `
# HELP stagefsm_stage_batch_duration_seconds Time the stage took to process an input batch (only with stage.WithLatency).
# TYPE stagefsm_stage_batch_duration_seconds histogram
`
		for _, b := range []string{"1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025",
			"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"} {
			want += `stagefsm_stage_batch_duration_seconds_bucket{kind="sink",pipeline="numbers",stage="print",le="` + b + `"} 3` + "\n"
		}
		want += `stagefsm_stage_batch_duration_seconds_sum{kind="sink",pipeline="numbers",stage="print"} 0
stagefsm_stage_batch_duration_seconds_count{kind="sink",pipeline="numbers",stage="print"} 3
`
		if err := testutil.CollectAndCompare(c, strings.NewReader(want), "stagefsm_stage_batch_duration_seconds"); err != nil {
			t.Error(err)
		}
	})
}

// The exported metrics follow the Prometheus naming conventions.
func TestCollectorLint(t *testing.T) {
	p := numbers("1\nx", stage.WithLatency(true))
	run(t, p)
	c, err := promstage.New("numbers", p)
	if err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatalf("pedantic registry rejects the collector: %v", err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("Gather: %v", err)
	}
}

func TestNewNil(t *testing.T) {
	if _, err := promstage.New("x", nil); !errors.Is(err, promstage.ErrNoStats) {
		t.Errorf("New(nil) error = %v, want ErrNoStats", err)
	}
}

package otelstage_test

import (
	"context"
	"errors"
	"io"
	"sort"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/stagefsm/stagefsm/contrib/otelstage"
	"github.com/stagefsm/stagefsm/internal/metricdef"
	"github.com/stagefsm/stagefsm/stage"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
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

// numbers builds read → parse → print over text, parse failing on what is
// not a number.
func numbers(text string, opts ...stage.Option) *stage.Pipeline {
	parse := stage.TransformFunc[string, int](func(_ context.Context, line string, emit func(int)) error {
		n, err := strconv.Atoi(line)
		if err != nil {
			return err
		}
		emit(n)
		return nil
	})
	discard := stage.SinkFunc[int](func(context.Context, int) error { return nil })
	return stage.To(stage.Then(stage.From("read", lines(text)), "parse", parse), "print", discard, opts...)
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

// collect reads every data point through a manual reader, keyed
// "name{k=v,...}" with the attributes sorted.
func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			var points []metricdata.DataPoint[float64]
			switch d := m.Data.(type) {
			case metricdata.Sum[float64]:
				if !d.IsMonotonic || d.Temporality != metricdata.CumulativeTemporality {
					t.Errorf("%s: want a cumulative monotonic sum", m.Name)
				}
				points = d.DataPoints
			case metricdata.Gauge[float64]:
				points = d.DataPoints
			default:
				t.Fatalf("%s: unexpected data %T", m.Name, m.Data)
			}
			for _, p := range points {
				var kv []string
				for _, a := range p.Attributes.ToSlice() {
					kv = append(kv, string(a.Key)+"="+a.Value.AsString())
				}
				sort.Strings(kv)
				got[m.Name+"{"+strings.Join(kv, ",")+"}"] = p.Value
			}
		}
	}
	return got
}

func setup(t *testing.T, p *stage.Pipeline, opts ...otelstage.Option) *sdkmetric.ManualReader {
	t.Helper()
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	if _, err := otelstage.Register(mp.Meter("test"), "numbers", p, opts...); err != nil {
		t.Fatal(err)
	}
	return r
}

// After a known run the instruments hold its exact counts.
func TestRegisterValues(t *testing.T) {
	p := numbers("1\n2\nthree\n4")
	r := setup(t, p)
	run(t, p)
	got := collect(t, r)
	want := map[string]float64{
		"stagefsm.stage.items.received{kind=transform,pipeline=numbers,stage=parse}":       4,
		"stagefsm.stage.items.emitted{kind=source,pipeline=numbers,stage=read}":            4,
		"stagefsm.stage.items.emitted{kind=transform,pipeline=numbers,stage=parse}":        3,
		"stagefsm.stage.items.delivered{kind=sink,pipeline=numbers,stage=print}":           3,
		"stagefsm.stage.items.dead_lettered{kind=transform,pipeline=numbers,stage=parse}":  1,
		"stagefsm.stage.failures{cause=error,kind=transform,pipeline=numbers,stage=parse}": 1,
		"stagefsm.stage.failures{cause=panic,kind=transform,pipeline=numbers,stage=parse}": 0,
		"stagefsm.stage.state{kind=sink,pipeline=numbers,stage=print,state=Drained}":       1,
		"stagefsm.stage.state{kind=sink,pipeline=numbers,stage=print,state=Running}":       0,
		"stagefsm.stage.transitions{kind=transform,pipeline=numbers,stage=parse}":          4,
		"stagefsm.stage.transitions{kind=source,pipeline=numbers,stage=read}":              5,
		"stagefsm.stage.restarts{kind=sink,pipeline=numbers,stage=print}":                  0,
		"stagefsm.stage.queued{kind=sink,pipeline=numbers,stage=print}":                    0,
		"stagefsm.stage.keys{kind=sink,pipeline=numbers,stage=print}":                      0,
		"stagefsm.pipeline.items.in_flight{pipeline=numbers}":                              0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	// Per stage: 12 single-value instruments + 6 causes + one per state; no
	// histogram without WithLatency; plus the pipeline gauge.
	if n, w := len(got), 3*(12+6+len(metricdef.States))+1; n != w {
		t.Errorf("%d data points, want %d", n, w)
	}
}

// In a synctest bubble the handlers take no time: every batch is in every
// cumulative bucket, and the sum is 0.
func TestRegisterLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := numbers("1\n2\n3", stage.WithBatchSize(1), stage.WithLatency(true))
		r := setup(t, p, otelstage.WithStages("print"))
		run(t, p)
		got := collect(t, r)
		attrs := "kind=sink,pipeline=numbers,stage=print"
		if got["stagefsm.stage.batch.duration.count{"+attrs+"}"] != 3 || got["stagefsm.stage.batch.duration.sum{"+attrs+"}"] != 0 {
			t.Errorf("count/sum = %v/%v, want 3/0", got["stagefsm.stage.batch.duration.count{"+attrs+"}"], got["stagefsm.stage.batch.duration.sum{"+attrs+"}"])
		}
		for _, b := range metricdef.Bounds {
			k := "stagefsm.stage.batch.duration.bucket{kind=sink,le=" + strconv.FormatFloat(b, 'g', -1, 64) + ",pipeline=numbers,stage=print}"
			if got[k] != 3 {
				t.Errorf("%s = %v, want 3", k, got[k])
			}
		}
		if _, ok := got["stagefsm.pipeline.items.in_flight{pipeline=numbers}"]; ok {
			t.Error("WithStages still observes the pipeline gauge")
		}
		for k := range got {
			if !strings.Contains(k, "stage=print") && strings.Contains(k, "stage=") {
				t.Errorf("WithStages(print) observes %s", k)
			}
		}
	})
}

// After Unregister, a collection observes nothing.
func TestUnregister(t *testing.T) {
	p := numbers("1")
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	reg, err := otelstage.Register(mp.Meter("test"), "numbers", p)
	if err != nil {
		t.Fatal(err)
	}
	run(t, p)
	if len(collect(t, r)) == 0 {
		t.Fatal("no data points while registered")
	}
	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, r); len(got) != 0 {
		t.Errorf("%d data points after Unregister, want 0", len(got))
	}
}

func TestRegisterNil(t *testing.T) {
	mp := sdkmetric.NewMeterProvider()
	defer func() { _ = mp.Shutdown(context.Background()) }()
	if _, err := otelstage.Register(mp.Meter("x"), "p", nil); !errors.Is(err, otelstage.ErrNoStats) {
		t.Errorf("nil stats: %v, want ErrNoStats", err)
	}
	if _, err := otelstage.Register(nil, "p", numbers("")); !errors.Is(err, otelstage.ErrNoStats) {
		t.Errorf("nil meter: %v, want ErrNoStats", err)
	}
}

// Every shared definition has an instrument of its OpenTelemetry name.
func TestSharesDefinitions(t *testing.T) {
	p := numbers("1", stage.WithLatency(true))
	r := setup(t, p)
	run(t, p)
	var rm metricdata.ResourceMetrics
	if err := r.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	names := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			names[m.Name] = m
		}
	}
	for _, d := range append(metricdef.Stage, &metricdef.InFlight) {
		name := d.OTel
		if d.Kind == metricdef.Histogram {
			name += ".count"
		}
		m, ok := names[name]
		if !ok {
			t.Errorf("no instrument %s", name)
			continue
		}
		if d.Kind != metricdef.Histogram && (m.Unit != d.Unit || m.Description != d.Help) {
			t.Errorf("%s: unit %q help %q, want %q %q", name, m.Unit, m.Description, d.Unit, d.Help)
		}
	}
}

package otelstage

import (
	"context"
	"errors"
	"strconv"

	"github.com/stagefsm/stagefsm/internal/metricdef"
	"github.com/stagefsm/stagefsm/stage"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ErrNoStats is returned by [Register] when it is given no meter or no
// source of stats.
var ErrNoStats = errors.New("otelstage: nil meter or stats source")

// Stater is what the instruments read at collection time;
// [*stage.Pipeline] implements it. Stats is called once per collection,
// from the SDK's collecting goroutine, and must be safe to call
// concurrently with the pipeline.
type Stater interface {
	Stats() stage.PipelineStats
}

// Option configures [Register].
type Option interface{ apply(*options) }

type options struct {
	stages []string // nil: every stage
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithStages restricts the instruments to the stages named, for single
// stages; the pipeline's in-flight gauge is then not observed. Names that
// are not stages of the pipeline observe nothing.
//
// Default: every stage, and the pipeline gauge.
func WithStages(names ...string) Option {
	return optionFunc(func(o *options) { o.stages = append([]string{}, names...) })
}

// Register creates the instruments on meter and registers the callback
// that observes src's stats, labelled pipeline=pipeline. Unregister the
// returned registration to stop observing (the instruments stay, as the
// API has no way to remove them). It returns [ErrNoStats] for a nil meter
// or src, and the meter's error if an instrument cannot be created.
func Register(meter metric.Meter, pipeline string, src Stater, opts ...Option) (metric.Registration, error) {
	if meter == nil || src == nil {
		return nil, ErrNoStats
	}
	o := options{}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	var only map[string]bool
	if o.stages != nil {
		only = make(map[string]bool, len(o.stages))
		for _, s := range o.stages {
			only[s] = true
		}
	}

	var all []metric.Observable
	var errs []error
	counter := func(name, unit, help string) metric.Float64ObservableCounter {
		c, err := meter.Float64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(help))
		errs = append(errs, err)
		all = append(all, c)
		return c
	}
	gauge := func(name, unit, help string) metric.Float64ObservableGauge {
		g, err := meter.Float64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(help))
		errs = append(errs, err)
		all = append(all, g)
		return g
	}

	type single struct {
		def *metricdef.Def
		obs metric.Float64Observable
	}
	var singles []single
	var count, sum, bucket metric.Float64ObservableCounter
	for _, d := range metricdef.Stage {
		switch d.Kind {
		case metricdef.Counter:
			singles = append(singles, single{d, counter(d.OTel, d.Unit, d.Help)})
		case metricdef.Gauge:
			singles = append(singles, single{d, gauge(d.OTel, d.Unit, d.Help)})
		case metricdef.Histogram:
			count = counter(d.OTel+".count", "{batch}", "Batches timed: "+d.Help)
			sum = counter(d.OTel+".sum", d.Unit, "Total duration: "+d.Help)
			bucket = counter(d.OTel+".bucket", "{batch}", "Batches at most le seconds long: "+d.Help)
		}
	}
	var inFlight metric.Float64ObservableGauge
	if only == nil {
		inFlight = gauge(metricdef.InFlight.OTel, metricdef.InFlight.Unit, metricdef.InFlight.Help)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	les := make([]attribute.KeyValue, len(metricdef.Bounds))
	for i, b := range metricdef.Bounds {
		les[i] = attribute.String("le", strconv.FormatFloat(b, 'g', -1, 64))
	}
	pipelineAttr := attribute.String(metricdef.LabelPipeline, pipeline)
	return meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		st := src.Stats()
		if inFlight != nil {
			obs.ObserveFloat64(inFlight, float64(st.InFlight), metric.WithAttributes(pipelineAttr))
		}
		for i := range st.Stages {
			s := &st.Stages[i]
			if only != nil && !only[s.Name] {
				continue
			}
			base := []attribute.KeyValue{pipelineAttr,
				attribute.String(metricdef.LabelStage, s.Name), attribute.String(metricdef.LabelKind, s.Kind)}
			set := attribute.NewSet(base...)
			for _, m := range singles {
				m.def.Values(s, func(label string, v float64) {
					if m.def.Label == "" {
						obs.ObserveFloat64(m.obs, v, metric.WithAttributeSet(set))
						return
					}
					obs.ObserveFloat64(m.obs, v, metric.WithAttributes(append(base[:3:3], attribute.String(m.def.Label, label))...))
				})
			}
			if l := s.Latency; l != nil {
				obs.ObserveFloat64(count, float64(l.Count), metric.WithAttributeSet(set))
				obs.ObserveFloat64(sum, l.Sum, metric.WithAttributeSet(set))
				var cum uint64
				for j := range les {
					if j < len(l.Counts) {
						cum += l.Counts[j]
					}
					obs.ObserveFloat64(bucket, float64(cum), metric.WithAttributes(append(base[:3:3], les[j])...))
				}
			}
		}
		return nil
	}, all...)
}

package promstage

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stagefsm/stagefsm/internal/metricdef"
	"github.com/stagefsm/stagefsm/stage"
)

// ErrNoStats is returned by [New] when it is given no source of stats.
var ErrNoStats = errors.New("promstage: nil stats source")

// Stater is what a [Collector] reads at scrape time; [*stage.Pipeline]
// implements it. Stats is called once per scrape, from the scraping
// goroutine, and must be safe to call concurrently with the pipeline.
type Stater interface {
	Stats() stage.PipelineStats
}

// Collector is a [prometheus.Collector] for one pipeline. It keeps no state
// of its own: every Collect takes one [stage.Pipeline.Stats] snapshot and
// turns it into constant metrics, so a pipeline pays nothing for being
// collected between scrapes, and nothing at all when no Collector is
// registered. The metrics are those of internal/metricdef, labelled
// pipeline, stage and kind (see the package doc).
type Collector struct {
	pipeline string
	src      Stater
	only     map[string]bool // nil: every stage
	descs    []*prometheus.Desc
	inFlight *prometheus.Desc
}

// New returns a Collector of the stats of src, labelled pipeline=pipeline.
// It returns [ErrNoStats] if src is nil. The stages are those of src's
// stats, unless [WithStages] names some.
func New(pipeline string, src Stater, opts ...Option) (*Collector, error) {
	if src == nil {
		return nil, ErrNoStats
	}
	o := options{}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	c := &Collector{pipeline: pipeline, src: src}
	if o.stages != nil {
		c.only = make(map[string]bool, len(o.stages))
		for _, s := range o.stages {
			c.only[s] = true
		}
	} else {
		c.inFlight = prometheus.NewDesc(metricdef.InFlight.Name, metricdef.InFlight.Help,
			[]string{metricdef.LabelPipeline}, nil)
	}
	for _, d := range metricdef.Stage {
		labels := []string{metricdef.LabelPipeline, metricdef.LabelStage, metricdef.LabelKind}
		if d.Label != "" {
			labels = append(labels, d.Label)
		}
		c.descs = append(c.descs, prometheus.NewDesc(d.Name, d.Help, labels, nil))
	}
	return c, nil
}

// Describe sends the descriptors of every metric the Collector can export.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	if c.inFlight != nil {
		ch <- c.inFlight
	}
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect takes one snapshot of the stats and sends the metrics. The batch
// duration histogram is sent only for stages that time their batches
// ([stage.WithLatency]).
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	if c.inFlight != nil {
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(st.InFlight), c.pipeline)
	}
	for i := range st.Stages {
		s := &st.Stages[i]
		if c.only != nil && !c.only[s.Name] {
			continue
		}
		for j, d := range metricdef.Stage {
			desc := c.descs[j]
			switch d.Kind {
			case metricdef.Histogram:
				if s.Latency != nil {
					ch <- histogram(desc, s.Latency, c.pipeline, s.Name, s.Kind)
				}
			default:
				vt := prometheus.CounterValue
				if d.Kind == metricdef.Gauge {
					vt = prometheus.GaugeValue
				}
				d.Values(s, func(label string, v float64) {
					if d.Label == "" {
						ch <- prometheus.MustNewConstMetric(desc, vt, v, c.pipeline, s.Name, s.Kind)
					} else {
						ch <- prometheus.MustNewConstMetric(desc, vt, v, c.pipeline, s.Name, s.Kind, label)
					}
				})
			}
		}
	}
}

// histogram turns a stage's non-cumulative bucket counts into a constant
// Prometheus histogram (cumulative buckets; the last count is +Inf's).
func histogram(desc *prometheus.Desc, l *stage.Latency, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(metricdef.Bounds))
	var cum uint64
	for i, b := range metricdef.Bounds {
		if i < len(l.Counts) {
			cum += l.Counts[i]
		}
		buckets[b] = cum
	}
	return prometheus.MustNewConstHistogram(desc, l.Count, l.Sum, buckets, labels...)
}

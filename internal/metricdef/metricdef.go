// Package metricdef defines the metrics that contrib/promstage and
// contrib/otelstage export for a stage pipeline: one list of names, help
// texts, units and the way each value is read from a [stage.Stats], so
// that the Prometheus and the OpenTelemetry views cannot drift apart. It
// depends on nothing outside the module.
//
// Every stage metric carries the labels pipeline, stage and kind (and at
// most one more, of a fixed small set of values: cause or state); none
// carries a key or a payload.
package metricdef

import (
	"maps"
	"slices"
	"strings"

	"github.com/stagefsm/stagefsm/stage"
)

// Kind is the instrument kind of a metric.
type Kind uint8

// The instrument kinds.
const (
	// Counter is a cumulative count that only grows (restarts of the
	// process aside).
	Counter Kind = iota
	// Gauge is a value that goes up and down.
	Gauge
	// Histogram is a distribution: for a stage, [stage.Stats.Latency].
	Histogram
)

// The labels every stage metric carries, in this order.
const (
	LabelPipeline = "pipeline"
	LabelStage    = "stage"
	LabelKind     = "kind"
)

// Def defines one metric.
type Def struct {
	// Name is the Prometheus name: stagefsm_ prefix, _total for counters,
	// base units (seconds).
	Name string
	// OTel is the OpenTelemetry instrument name.
	OTel string
	// Unit is the UCUM unit for OpenTelemetry: "s", or an annotation such
	// as "{item}".
	Unit string
	Help string
	Kind Kind
	// Label is the extra label of the metric ("cause", "state"), or "".
	Label string
	// Values calls f for every sample of the metric in s: label is the
	// value of Label ("" when Label is ""). Nil for a Histogram, whose
	// value is s.Latency.
	Values func(s *stage.Stats, f func(label string, v float64))
}

// Causes are the classes of [stage.Stats.DeadLetterCauses], each exported
// (also at 0) as a cause label value of [Failures].
var Causes = []string{"error", "panic", "fatal", "aborted", "stage_failed", "restarted"}

// States lists the names of the stage states, in lifecycle order: the
// values of the state label of [State].
var States = func() []string {
	var s []string
	for k := stage.StateKind(0); !strings.HasPrefix(k.String(), "StateKind("); k++ {
		s = append(s, k.String())
	}
	return s
}()

func one(get func(s *stage.Stats) float64) func(*stage.Stats, func(string, float64)) {
	return func(s *stage.Stats, f func(string, float64)) { f("", get(s)) }
}

// The stage metrics, also listed in [Stage].
var (
	Received = Def{Name: "stagefsm_stage_items_received_total", OTel: "stagefsm.stage.items.received", Unit: "{item}", Kind: Counter,
		Help:   "Items the stage received, error items included.",
		Values: one(func(s *stage.Stats) float64 { return float64(s.Counts.In) })}
	Sent = Def{Name: "stagefsm_stage_items_sent_total", OTel: "stagefsm.stage.items.sent", Unit: "{item}", Kind: Counter,
		Help:   "Items the stage sent downstream: those it emitted and the error items it passed on.",
		Values: one(func(s *stage.Stats) float64 { return float64(s.Counts.Out) })}
	Emitted = Def{Name: "stagefsm_stage_items_emitted_total", OTel: "stagefsm.stage.items.emitted", Unit: "{item}", Kind: Counter,
		Help:   "Items the stage created.",
		Values: one(func(s *stage.Stats) float64 { return float64(s.Counts.Emitted) })}
	Delivered = Def{Name: "stagefsm_stage_items_delivered_total", OTel: "stagefsm.stage.items.delivered", Unit: "{item}", Kind: Counter,
		Help:   "Items the stage's handler consumed without error.",
		Values: one(func(s *stage.Stats) float64 { return float64(s.Counts.Delivered) })}
	DeadLettered = Def{Name: "stagefsm_stage_items_dead_lettered_total", OTel: "stagefsm.stage.items.dead_lettered", Unit: "{item}", Kind: Counter,
		Help:   "Dead letters that failed at the stage.",
		Values: one(func(s *stage.Stats) float64 { return float64(s.Counts.DeadLettered) })}
	Dropped = Def{Name: "stagefsm_stage_items_dropped_total", OTel: "stagefsm.stage.items.dropped", Unit: "{item}", Kind: Counter,
		Help:   "Items the stage ended on purpose, by a rule it names (a join's unmatched items).",
		Values: one(func(s *stage.Stats) float64 { return float64(s.Counts.Dropped) })}
	Failures = Def{Name: "stagefsm_stage_failures_total", OTel: "stagefsm.stage.failures", Unit: "{item}", Kind: Counter, Label: "cause",
		Help: "Dead letters that failed at the stage, by the class of their error.",
		Values: func(s *stage.Stats, f func(string, float64)) {
			for _, c := range Causes {
				f(c, float64(s.DeadLetterCauses[c]))
			}
			for _, c := range slices.Sorted(maps.Keys(s.DeadLetterCauses)) {
				if !slices.Contains(Causes, c) { // a class newer than this list
					f(c, float64(s.DeadLetterCauses[c]))
				}
			}
		}}
	Restarts = Def{Name: "stagefsm_stage_restarts_total", OTel: "stagefsm.stage.restarts", Unit: "{restart}", Kind: Counter,
		Help:   "Times the stage was restarted after a failure.",
		Values: one(func(s *stage.Stats) float64 { return float64(s.Restarts) })}
	Transitions = Def{Name: "stagefsm_stage_transitions_total", OTel: "stagefsm.stage.transitions", Unit: "{transition}", Kind: Counter,
		Help:   "Changes of the stage's state, restarts to Created included.",
		Values: one(func(s *stage.Stats) float64 { return float64(max(len(s.Timeline)-1, 0)) })}
	State = Def{Name: "stagefsm_stage_state", OTel: "stagefsm.stage.state", Unit: "1", Kind: Gauge, Label: "state",
		Help: "1 for the state the stage is in, 0 for the others.",
		Values: func(s *stage.Stats, f func(string, float64)) {
			for _, name := range States {
				v := 0.0
				if s.State.Kind.String() == name {
					v = 1
				}
				f(name, v)
			}
		}}
	Queued = Def{Name: "stagefsm_stage_queued_batches", OTel: "stagefsm.stage.queued", Unit: "{batch}", Kind: Gauge,
		Help:   "Batches waiting in the stage's input channel.",
		Values: one(func(s *stage.Stats) float64 { return float64(s.Queued) })}
	Keys = Def{Name: "stagefsm_stage_live_keys", OTel: "stagefsm.stage.keys", Unit: "{key}", Kind: Gauge,
		Help:   "Live keys of a keyed stage.",
		Values: one(func(s *stage.Stats) float64 { return float64(s.Keys) })}
	Timeouts = Def{Name: "stagefsm_stage_timeouts_total", OTel: "stagefsm.stage.timeouts", Unit: "{timeout}", Kind: Counter,
		Help:   "Per-key timeouts a keyed stage fired.",
		Values: one(func(s *stage.Stats) float64 { return float64(s.Timeouts) })}
	Unmatched = Def{Name: "stagefsm_stage_unmatched_total", OTel: "stagefsm.stage.unmatched", Unit: "{item}", Kind: Counter,
		Help:   "Stream items a join found no reference for.",
		Values: one(func(s *stage.Stats) float64 { return float64(s.Unmatched) })}
	BatchDuration = Def{Name: "stagefsm_stage_batch_duration_seconds", OTel: "stagefsm.stage.batch.duration", Unit: "s", Kind: Histogram,
		Help: "Time the stage took to process an input batch (only with stage.WithLatency)."}
)

// Stage lists the stage metrics.
var Stage = []*Def{
	&Received, &Sent, &Emitted, &Delivered, &DeadLettered, &Dropped, &Failures,
	&Restarts, &Transitions, &State, &Queued, &Keys, &Timeouts, &Unmatched, &BatchDuration,
}

// InFlight is the one pipeline metric: it carries the pipeline label only,
// and its value is [stage.PipelineStats.InFlight].
var InFlight = Def{Name: "stagefsm_pipeline_items_in_flight", OTel: "stagefsm.pipeline.items.in_flight", Unit: "{item}", Kind: Gauge,
	Help: "Items emitted and not yet delivered or dead-lettered: in channels or in stages' hands."}

// Bounds are the upper bounds, in seconds, of [BatchDuration]'s buckets.
var Bounds = stage.LatencyBounds

// Package otelstage exports the metrics of a [stage.Pipeline] through the
// OpenTelemetry metric API: asynchronous instruments whose one callback
// reads [stage.Pipeline.Stats] when the SDK collects. The instruments are
// those of contrib/promstage, with the same definitions (help, units,
// attributes pipeline, stage, kind, and cause or state), under their
// OpenTelemetry names (stagefsm.stage.items.received, …).
//
//	reg, err := otelstage.Register(otel.Meter("orders"), "orders", pipeline)
//	if err != nil { ... }
//	defer reg.Unregister()
//
// A pipeline pays nothing between collections, and nothing at all when it
// is not registered. The batch duration is the one exception in shape: the
// OpenTelemetry API has no asynchronous histogram, so the histogram that
// [stage.WithLatency] keeps is exported as three counters,
// stagefsm.stage.batch.duration.count, .sum (seconds) and .bucket (the
// cumulative count of the batches at most le seconds long, with an le
// attribute per bucket bound, as Prometheus does).
package otelstage

// Package promstage exports the metrics of a [stage.Pipeline] to
// Prometheus: a [Collector] to register with a [prometheus.Registerer],
// which reads [stage.Pipeline.Stats] at scrape time.
//
//	c, err := promstage.New("orders", pipeline) // before or after Start
//	if err != nil { ... }
//	prometheus.MustRegister(c)
//	http.Handle("/metrics", promhttp.Handler())
//
// # Metrics
//
// Every stage metric is labelled pipeline, stage and kind ("source",
// "transform", "sink"); failures add cause, state adds state. No label
// ever holds a key or a payload, so the number of series is bounded by the
// number of stages.
//
//	stagefsm_stage_items_received_total       counter  items the stage received
//	stagefsm_stage_items_sent_total           counter  items it sent downstream
//	stagefsm_stage_items_emitted_total        counter  items it created
//	stagefsm_stage_items_delivered_total      counter  items its handler consumed
//	stagefsm_stage_items_dead_lettered_total  counter  dead letters that failed at it
//	stagefsm_stage_items_dropped_total        counter  items it ended on purpose
//	stagefsm_stage_failures_total{cause}      counter  dead letters by class: error, panic,
//	                                                   fatal, aborted, stage_failed, restarted
//	stagefsm_stage_restarts_total             counter  restarts after a failure
//	stagefsm_stage_transitions_total          counter  changes of state
//	stagefsm_stage_state{state}               gauge    1 for the current state, 0 for the others
//	stagefsm_stage_queued_batches             gauge    batches waiting on its input
//	stagefsm_stage_live_keys                  gauge    live keys of a keyed stage
//	stagefsm_stage_timeouts_total             counter  per-key timeouts fired
//	stagefsm_stage_unmatched_total            counter  join items with no reference
//	stagefsm_stage_batch_duration_seconds     histogram  batch processing time, only for a
//	                                                   pipeline built with stage.WithLatency
//	stagefsm_pipeline_items_in_flight         gauge    items emitted and not yet ended
//
// # Cost
//
// Collect takes one Stats snapshot per scrape; between scrapes the
// pipeline does nothing for its metrics. The only hot-path cost is the
// opt-in [stage.WithLatency]: two clock reads per batch.
//
// The dashboards directory holds a Grafana dashboard for these names.
package promstage

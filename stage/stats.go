package stage

import (
	"sync/atomic"
	"time"
)

// Counts are a stage's item counters. Every item is emitted once — by the
// source, or by the transform whose handler produced it — and ends once:
// delivered (a transform or the sink took it and returned no error) or
// dead-lettered. Summed over the stages of a pipeline that has ended,
// Emitted == Delivered + DeadLettered.
type Counts struct {
	// In counts the items the stage received, error items included.
	In uint64 `json:"in,omitempty"`
	// Out counts the items the stage sent downstream: the ones it emitted
	// and the error items it passed on.
	Out uint64 `json:"out,omitempty"`
	// Emitted counts the items the stage created.
	Emitted uint64 `json:"emitted"`
	// Delivered counts the ok items the stage's handler consumed without
	// error.
	Delivered uint64 `json:"delivered"`
	// DeadLettered counts the dead letters that failed at this stage
	// (attributed by [ItemError.Stage]). Most are dead-lettered by the sink
	// stage, so the count can still grow after this stage completed; it is
	// final once the pipeline has ended.
	DeadLettered uint64 `json:"dead_lettered"`
	// Dropped counts the items the stage ended on purpose, by a rule it
	// names (an inner join's unmatched stream items). Dropped is not lost:
	// summed over a graph that has ended, Emitted == Delivered +
	// DeadLettered + Dropped.
	Dropped uint64 `json:"dropped,omitempty"`
}

// counters are a stage's live Counts. A stage adds to them once per batch,
// and adds to emitted before the items it counts become visible downstream,
// so that a reader who loads delivered and dead-lettered before emitted
// never sees more items ended than emitted.
type counters struct {
	in, out, emitted, delivered, deadLettered, dropped atomic.Uint64
	causes                                             [len(causeNames)]atomic.Uint64 // dead letters by causeOf
}

func (c *counters) load() Counts {
	var s Counts
	s.Delivered = c.delivered.Load()
	s.DeadLettered = c.deadLettered.Load()
	s.Dropped = c.dropped.Load()
	s.In = c.in.Load()
	s.Out = c.out.Load()
	s.Emitted = c.emitted.Load()
	return s
}

// Step is one entry of a stage's state timeline: the state it entered and
// when.
type Step struct {
	State State
	At    time.Time
}

// Stats is a snapshot of one stage.
type Stats struct {
	Name string
	// Kind is "source", "transform" or "sink".
	Kind   string
	State  State
	Counts Counts
	// Restarts counts the times the stage was restarted after a failure
	// (see [WithRestart]).
	Restarts int
	// Keys is the number of live keys of a keyed stage (see [Keyed]): the
	// instances created and not yet removed. 0 for other kinds.
	Keys int
	// Timeouts counts the per-key timeouts a keyed stage fired.
	Timeouts uint64
	// Unmatched counts the stream items a join found no reference for,
	// whatever its strategy did with them (dropped, passed on, failed).
	Unmatched uint64
	// Queued is the number of batches waiting in the stage's input channel
	// when the snapshot was taken. 0 for a source.
	Queued int
	// DeadLetterCauses counts the dead letters attributed to the stage by
	// the class of their error: "error", "panic", "fatal", "aborted",
	// "stage_failed", "restarted". Classes with no dead letter are absent.
	DeadLetterCauses map[string]uint64
	// Latency is the stage's batch processing time; nil for a source and
	// unless the pipeline was built [WithLatency].
	Latency *Latency
	// Timeline lists the states the stage entered, in order, starting with
	// Created at the time the pipeline was built. A restart starts again
	// from Created.
	Timeline []Step
}

// PipelineStats is a snapshot of a pipeline, taken by [Pipeline.Stats].
type PipelineStats struct {
	// Emitted, Delivered, DeadLettered and Dropped sum the stages' Counts.
	Emitted, Delivered, DeadLettered, Dropped uint64
	// InFlight is Emitted - Delivered - DeadLettered - Dropped: items in
	// channels or in stages' hands. It is 0 once the pipeline has ended.
	InFlight uint64
	// Checkpoints counts the checkpoints stored and CheckpointFailures
	// those that failed (a cut given up, a capture or a store that
	// failed); CheckpointErr is the latest failure's error. All are 0
	// without [WithCheckpoint].
	Checkpoints, CheckpointFailures uint64
	CheckpointErr                   error
	Stages                          []Stats
}

package stage

import (
	"sync/atomic"
	"time"
)

// LatencyBounds are the upper bounds, in seconds, of the buckets of
// [Latency]: from 10µs to 10s, about three per decade.
var LatencyBounds = []float64{
	0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// Latency is a histogram of the time a stage took to process its input
// batches (see [WithLatency]): one observation per batch, from receiving it
// to having handed its last item to the handler and sent the outputs, so a
// slow downstream (backpressure) counts too.
type Latency struct {
	// Counts has one entry per bucket of [LatencyBounds] and a last one for
	// the batches slower than the largest bound. The counts are not
	// cumulative.
	Counts []uint64
	// Count is the number of batches observed: the sum of Counts.
	Count uint64
	// Sum is the total of the observed durations, in seconds.
	Sum float64
}

// WithLatency makes every transform and sink of the pipeline time each
// input batch it processes, reported in [Stats.Latency]. Timing costs two
// clock reads per batch, not per item; without it a stage pays one nil
// check per batch.
//
// Default: false.
func WithLatency(on bool) Option {
	return optionFunc(func(o *options) { o.latency = on })
}

// latency is a stage's live Latency.
type latency struct {
	counts [len(latencyBounds) + 1]atomic.Uint64
	nanos  atomic.Uint64
}

// latencyBounds are LatencyBounds in nanoseconds, fixed at compile time so
// that a caller changing LatencyBounds cannot break a running stage.
var latencyBounds = [...]time.Duration{
	10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// since observes the time elapsed since start. Called by defer.
func (l *latency) since(start time.Time) {
	d := time.Since(start)
	i := 0
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	l.counts[i].Add(1)
	l.nanos.Add(uint64(d))
}

func (l *latency) load() *Latency {
	s := &Latency{Counts: make([]uint64, len(l.counts))}
	for i := range l.counts {
		s.Counts[i] = l.counts[i].Load()
		s.Count += s.Counts[i]
	}
	s.Sum = time.Duration(l.nanos.Load()).Seconds()
	return s
}

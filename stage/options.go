package stage

import "go.uber.org/zap"

// Defaults of the options, documented on each option.
const (
	defaultBatchSize = 128
	defaultCapacity  = 4
	defaultName      = "pipeline"
)

// An Option configures a [Pipeline] (see [To]).
type Option interface {
	apply(*options)
}

type options struct {
	name       string
	batchSize  int
	capacity   int
	journal    Journal
	deadLetter func(Item[any])
	logger     *zap.Logger
}

func newOptions(opts []Option) options {
	o := options{
		name:      defaultName,
		batchSize: defaultBatchSize,
		capacity:  defaultCapacity,
		logger:    zap.NewNop(),
	}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	return o
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithName names the pipeline in its journal entries and logs. An empty
// name falls back to the default.
//
// Default: "pipeline".
func WithName(name string) Option {
	return optionFunc(func(o *options) {
		if name == "" {
			name = defaultName
		}
		o.name = name
	})
}

// WithBatchSize sets how many items a stage gathers before it sends them
// downstream as one batch. A stage also sends a smaller batch when its input
// batch is done, at end of input, and when a source call emits nothing, so
// batching adds no waiting. n < 1 falls back to the default.
//
// Default: 128.
func WithBatchSize(n int) Option {
	return optionFunc(func(o *options) {
		if n < 1 {
			n = defaultBatchSize
		}
		o.batchSize = n
	})
}

// WithCapacity sets how many batches the channel between two stages holds.
// A stage whose downstream channel is full waits (backpressure), so at most
// about (capacity+2) × batch size items are in flight per channel. n < 1
// falls back to the default.
//
// Default: 4.
func WithCapacity(n int) Option {
	return optionFunc(func(o *options) {
		if n < 1 {
			n = defaultCapacity
		}
		o.capacity = n
	})
}

// WithJournal sets the [Journal] that receives every stage's state changes
// and completion, and the pipeline's completion. nil means none.
//
// Default: none.
func WithJournal(j Journal) Option {
	return optionFunc(func(o *options) { o.journal = j })
}

// WithDeadLetter sets the function that receives every dead letter: each
// error item that reaches the sink, each item a sink failed to consume, and
// each item left behind by a failed stage or an aborted pipeline. Its Err is
// an [*ItemError] naming the stage where the item failed. Calls are
// serialized (never concurrent) and come from the stages' goroutines, so f
// must not block for long. nil means none: dead letters are only counted.
//
// Default: none.
func WithDeadLetter(f func(Item[any])) Option {
	return optionFunc(func(o *options) { o.deadLetter = f })
}

// WithLogger sets the logger each stage's supervision loop writes to (see
// [github.com/stagefsm/stagefsm.WithLogger]). nil means no logging.
//
// Default: zap.NewNop().
func WithLogger(l *zap.Logger) Option {
	return optionFunc(func(o *options) {
		if l == nil {
			l = zap.NewNop()
		}
		o.logger = l
	})
}

package stage

import (
	"time"

	"go.uber.org/zap"

	"github.com/stagefsm/stagefsm/checkpoint"

	"github.com/stagefsm/stagefsm"
)

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
	restart    map[string]stagefsm.RestartPolicy // by stage name
	latency    bool
	store      checkpoint.Store // nil: no checkpoints
	every      time.Duration
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

// WithRestart makes the stage named stage restart after a failure instead
// of failing for good, under policy (see
// [github.com/stagefsm/stagefsm.WithRestart] for the intensity, the
// backoff and the error classes). It applies to a source, a transform or
// the sink; give one WithRestart per stage to restart, and a later one for
// the same stage replaces an earlier one. [Pipeline.Start] reports a name
// that is not a stage of the pipeline, and a policy the core rejects.
//
// A failure of the stage — a fatal handler error, a hook's error or panic
// while it runs — does not close its output, does not drain the pipeline
// and writes no completion entry. Instead:
//   - the item whose handler failed is dead-lettered with its error, as
//     without a policy; the rest of the input batch it was in, which the
//     stage never tried, waits for the next incarnation, and so do the
//     outputs the stage had not sent yet;
//   - while the stage waits out its backoff, a goroutine of the pipeline
//     keeps taking what reaches its input, so upstream never blocks on a
//     restarting stage: as many items as its input channel holds when full
//     ([WithCapacity] × [WithBatchSize]) are parked for the next
//     incarnation, in order; batches beyond that are dead-lettered with
//     [ErrRestarted], which also wraps the failure (a backoff shorter
//     than the time upstream takes to fill that room loses nothing);
//   - after the backoff the stage starts again from Created, with the same
//     handler: its Open hook runs again (after the Close of the failed
//     incarnation), then it takes the parked items and its input again,
//     and its output goes on where it was (Seq keeps counting);
//   - the journal gets an [EntryRestart] entry, and [Stats].Restarts
//     counts the restart.
//
// When the policy gives up — the failure is permanent
// ([github.com/stagefsm/stagefsm.ErrPermanent]) or restarts are too frequent
// — the stage fails as it would without a policy (see the package doc): it
// forwards end of input, the source is asked to drain, the stage
// dead-letters with [ErrFailed] what reaches it until its upstream
// ends, and [Pipeline.Wait] returns a [*Error] whose error wraps
// [github.com/stagefsm/stagefsm.ErrRestartIntensity] (when that is why) and
// the last failure.
//
// Some failures are never restarted: a failure to open during
// [Pipeline.Start] (the start is aborted as without a policy), a failure
// once the stage has drained (its Drain, Flush or Close hook: its input
// has ended, there is nothing left to redo), and the end of the pipeline's
// context ([Pipeline.Abort]).
//
// Default: no stage is restarted.
func WithRestart(stage string, policy stagefsm.RestartPolicy) Option {
	return optionFunc(func(o *options) {
		if o.restart == nil {
			o.restart = make(map[string]stagefsm.RestartPolicy)
		}
		o.restart[stage] = policy
	})
}

package natsstage

import (
	"time"

	"go.uber.org/zap"

	"github.com/stagefsm/stagefsm/checkpoint"
)

// Defaults of the options, documented on each option.
const (
	defaultPrefetch       = 256
	defaultMaxOutage      = 30 * time.Second
	defaultMaxInFlight    = 256
	defaultPublishTimeout = 5 * time.Second
)

// A SourceOption configures a [Source] (see [NewSource]).
type SourceOption interface {
	applySource(*sourceOptions)
}

// A SinkOption configures a [Sink] (see [NewSink]).
type SinkOption interface {
	applySink(*sinkOptions)
}

// An Option configures both a [Source] and a [Sink].
type Option interface {
	SourceOption
	SinkOption
}

type sourceOptions struct {
	prefetch    int
	maxOutage   time.Duration
	retries     uint64
	retryDelay  time.Duration
	ackOnCommit bool
}

func newSourceOptions(opts []SourceOption) sourceOptions {
	o := sourceOptions{prefetch: defaultPrefetch, maxOutage: defaultMaxOutage}
	for _, opt := range opts {
		if opt != nil {
			opt.applySource(&o)
		}
	}
	return o
}

type sinkOptions struct {
	maxInFlight    int
	publishTimeout time.Duration
	maxOutage      time.Duration
}

func newSinkOptions(opts []SinkOption) sinkOptions {
	o := sinkOptions{
		maxInFlight:    defaultMaxInFlight,
		publishTimeout: defaultPublishTimeout,
		maxOutage:      defaultMaxOutage,
	}
	for _, opt := range opts {
		if opt != nil {
			opt.applySink(&o)
		}
	}
	return o
}

type sourceOption func(*sourceOptions)

func (f sourceOption) applySource(o *sourceOptions) { f(o) }

type sinkOption func(*sinkOptions)

func (f sinkOption) applySink(o *sinkOptions) { f(o) }

type outageOption time.Duration

func (d outageOption) applySource(o *sourceOptions) { o.maxOutage = time.Duration(d) }
func (d outageOption) applySink(o *sinkOptions)     { o.maxOutage = time.Duration(d) }

// WithMaxOutage bounds how long a stage rides out a lost connection or an
// unreachable JetStream (a server restart, a network cut): meanwhile the
// NATS client reconnects on its own, the [Source] keeps waiting for
// messages and the [Sink] republishes what was not acknowledged (with the
// same message id, so nothing is stored twice). Once d has passed without
// recovery, or at once when the connection is closed for good, the stage
// fails with an error wrapping [ErrUnavailable], which the pipeline
// reports (see [stage.Pipeline.Wait]). d ≤ 0 fails at the first sign of an
// outage.
//
// Default: 30s.
func WithMaxOutage(d time.Duration) Option { return outageOption(d) }

// WithPrefetch sets how many messages the [Source] asks JetStream for in
// one pull request, and how many it keeps ready for the pipeline: it holds
// up to 2n messages not yet emitted. A larger value hides the network's
// latency; every prefetched message is pending on the consumer and counts
// against its MaxAckPending and AckWait. n < 1 falls back to the default.
//
// Default: 256.
func WithPrefetch(n int) SourceOption {
	return sourceOption(func(o *sourceOptions) {
		if n < 1 {
			n = defaultPrefetch
		}
		o.prefetch = n
	})
}

// WithRetry sets what happens to a message that a handler rejected (a
// non-fatal error, or a panic, in a transform or the sink): while JetStream
// has delivered it at most times times, it is negatively acknowledged with
// delay, so JetStream redelivers it after delay (to any worker) and the
// pipeline tries again; after that it is terminated (JetStream will not
// redeliver it) and goes to the dead-letter function given to
// [DeadLetter]. times must stay below the consumer's MaxDeliver, or
// [Source.Open] fails. A negative delay counts as 0 (redelivered at once).
// A Source made with [WithAckOnCommit] retries nothing.
//
// Default: times = 0, a rejected message is terminated at once.
func WithRetry(times int, delay time.Duration) SourceOption {
	return sourceOption(func(o *sourceOptions) {
		o.retries = uint64(max(times, 0))
		o.retryDelay = max(delay, 0)
	})
}

// WithAckOnCommit makes a [Source] fit for a pipeline that checkpoints
// ([stage.WithCheckpoint]): with on, a message is acknowledged only when
// the pipeline commits a stored checkpoint that covers it (see
// [Source.Commit]), not once its outputs are published, so that a crash
// loses no input the restored state has not seen; and the Source emits
// each stream sequence at most once, in order, skipping what a checkpoint
// covers (see [Source.Resume]). A rejected message is then terminated and
// dead-lettered at once, whatever [WithRetry] says: redelivered, it would
// come back behind the position. Every message held counts against the
// consumer's MaxAckPending until the next checkpoint: set it to at least
// the messages of one checkpoint interval (or -1, no limit), and AckWait
// longer than the interval. Use it only under [stage.WithCheckpoint]:
// without checkpoints nothing would ever be acknowledged.
//
// Default: false — acknowledged once published, [Source.Position] fails.
func WithAckOnCommit(on bool) SourceOption {
	return sourceOption(func(o *sourceOptions) { o.ackOnCommit = on })
}

// WithMaxInFlight sets how many messages the [Sink] publishes ahead of
// their acknowledgements from JetStream (asynchronous publishing). A larger
// value raises throughput; every message in flight is one whose input is
// not acknowledged yet. n < 1 falls back to the default.
//
// Default: 256.
func WithMaxInFlight(n int) SinkOption {
	return sinkOption(func(o *sinkOptions) {
		if n < 1 {
			n = defaultMaxInFlight
		}
		o.maxInFlight = n
	})
}

// WithPublishTimeout sets how long the [Sink] waits for JetStream to
// acknowledge a publish before it publishes the message again (same
// message id). d ≤ 0 falls back to the default.
//
// Default: 5s.
func WithPublishTimeout(d time.Duration) SinkOption {
	return sinkOption(func(o *sinkOptions) {
		if d <= 0 {
			d = defaultPublishTimeout
		}
		o.publishTimeout = d
	})
}

// A StoreOption configures a [Store] (see [NewStore]).
type StoreOption interface {
	applyStore(*storeOptions)
}

type storeOptions struct {
	logger     *zap.Logger
	checkpoint []checkpoint.Option // the options of the checkpoint.BlobStore
}

func newStoreOptions(opts []StoreOption) storeOptions {
	o := storeOptions{logger: zap.NewNop()}
	for _, opt := range opts {
		if opt != nil {
			opt.applyStore(&o)
		}
	}
	return o
}

type storeOption func(*storeOptions)

func (f storeOption) applyStore(o *storeOptions) { f(o) }

// WithStoreLogger sets the logger a [Store] reports to: a Warn line for
// each torn, corrupt or missing checkpoint that [Store.Load] skips, for a
// corrupt head, for a failed compaction and for an object it could not
// remove. nil means no logging.
//
// Default: zap.NewNop().
func WithStoreLogger(l *zap.Logger) StoreOption {
	return storeOption(func(o *storeOptions) {
		if l == nil {
			l = zap.NewNop()
		}
		o.logger = l
	})
}

// WithCompaction sets when a [Store] starts a compaction in the background
// (see [Store]): once the deltas saved since the last full checkpoint add
// up to ratio × its size. A smaller ratio makes [Store.Load] faster and the
// bucket smaller, and compactions (which read and write the whole state)
// more frequent. ratio ≤ 0 compacts after every delta; NaN falls back to
// the default.
//
// Default: 1 (the deltas may grow as large as the full checkpoint).
func WithCompaction(ratio float64) StoreOption {
	return storeOption(func(o *storeOptions) {
		o.checkpoint = append(o.checkpoint, checkpoint.WithCompaction(ratio))
	})
}

package kafkastage

import "time"

// Defaults of the options, documented on each option.
const (
	defaultMaxOutage      = 30 * time.Second
	defaultMaxPoll        = 512
	defaultMaxRecordBytes = 1 << 20
)

// A SourceOption configures a [Source] (see [NewSource]).
type SourceOption interface {
	applySource(*sourceOptions)
}

// A SinkOption configures a [Sink] (see [NewSink]) and a [DeadLetters]
// writer (see [NewDeadLetters]).
type SinkOption interface {
	applySink(*sinkOptions)
}

// An Option configures a [Source], a [Sink] and a [DeadLetters] writer.
type Option interface {
	SourceOption
	SinkOption
}

type sourceOptions struct {
	maxOutage          time.Duration
	maxPoll            int
	commitOnCheckpoint bool
	partitions         []int32 // nil: the group assigns them
}

func newSourceOptions(opts []SourceOption) sourceOptions {
	o := sourceOptions{maxOutage: defaultMaxOutage, maxPoll: defaultMaxPoll}
	for _, opt := range opts {
		if opt != nil {
			opt.applySource(&o)
		}
	}
	return o
}

type sinkOptions struct {
	maxOutage      time.Duration
	maxRecordBytes int
}

func newSinkOptions(opts []SinkOption) sinkOptions {
	o := sinkOptions{maxOutage: defaultMaxOutage, maxRecordBytes: defaultMaxRecordBytes}
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

// WithMaxOutage bounds how long a stage rides out brokers that do not
// answer (a broker restart, a network cut): meanwhile the client
// reconnects on its own, the [Source] keeps polling and the [Sink] keeps
// retrying its produce requests (idempotently, so nothing is written
// twice). Once d has passed without an answer, the stage fails with an
// error wrapping [ErrUnavailable], which the pipeline reports (see
// [stage.Pipeline.Wait]). A [Sink] waits at least 1s (the client's
// minimum). d ≤ 0 falls back to the default.
//
// Default: 30s.
func WithMaxOutage(d time.Duration) Option {
	if d <= 0 {
		d = defaultMaxOutage
	}
	return outageOption(d)
}

// WithMaxPoll sets how many records one call of [Source.Next] emits at
// most. n < 1 falls back to the default.
//
// Default: 512.
func WithMaxPoll(n int) SourceOption {
	return sourceOption(func(o *sourceOptions) {
		if n < 1 {
			n = defaultMaxPoll
		}
		o.maxPoll = n
	})
}

// WithCommitOnCheckpoint makes a [Source] fit for a pipeline that
// checkpoints ([stage.WithCheckpoint]): with on, the Source commits its
// offsets when the pipeline commits a stored checkpoint that covers them
// (see [Source.Commit]), not when a record's outputs are delivered, so
// that stateful stages after it (a keyed stage, an accumulator, a join,
// an aggregate) may absorb, split or drop records; and it is a
// [stage.Resumable] whose position is the next offset of each partition
// it reads (see [Source.Position]). It must be combined with
// [WithPartitions]: a group rebalance would move a partition away from
// the state that saw its input, so the Source reads a fixed set of
// partitions instead of joining the group's rebalances; [Source.Open]
// fails with an error wrapping [ErrPosition] otherwise, and for a Source
// of [NewExactlyOnce]. Use it only under [stage.WithCheckpoint]: without
// checkpoints nothing is ever committed.
//
// Default: false — offsets commit as records are delivered, and
// [Source.Position] fails.
func WithCommitOnCheckpoint(on bool) SourceOption {
	return sourceOption(func(o *sourceOptions) { o.commitOnCheckpoint = on })
}

// WithPartitions makes a [Source] read partitions ids of each of its
// topics (for co-partitioned topics, the same key's partition of each),
// assigned directly rather than by the group, which it then uses only
// for its committed offsets (see [WithCommitOnCheckpoint], which it
// requires). A worker that owns these partitions owns their checkpoint:
// give each set of partitions its own checkpoint store, and let a worker
// that takes a set over resume from that store. Repeated ids count once;
// a negative id fails [Source.Open].
//
// Default: none — the group assigns the partitions.
func WithPartitions(ids ...int32) SourceOption {
	ids = append([]int32(nil), ids...)
	return sourceOption(func(o *sourceOptions) { o.partitions = ids })
}

// WithMaxRecordBytes sets the largest record (key, value and headers) a
// [Sink] or a [DeadLetters] writer produces; a larger one is rejected with
// [ErrOversize] and dead-lettered (a [DeadLetters] writer drops its value
// and keeps the headers). It should not exceed the topic's
// max.message.bytes. n < 1 falls back to the default.
//
// Default: 1 MiB.
func WithMaxRecordBytes(n int) SinkOption {
	return sinkOption(func(o *sinkOptions) {
		if n < 1 {
			n = defaultMaxRecordBytes
		}
		o.maxRecordBytes = n
	})
}

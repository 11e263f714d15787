package checkpoint

import "go.uber.org/zap"

const defaultCompaction = 1.0

// An Option configures a [BlobStore] (see [NewBlobStore]) or a [Dir] (see
// [OpenDir]).
type Option interface {
	apply(*options)
}

type options struct {
	logger     *zap.Logger
	compaction float64
}

func newOptions(opts []Option) options {
	o := options{logger: zap.NewNop(), compaction: defaultCompaction}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	return o
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithLogger sets the logger a [BlobStore] (or [Dir]) reports to: a Warn
// line for each torn or corrupt checkpoint that Load skips, for a corrupt
// head, for a failed compaction and for a blob it could not remove. nil
// means no logging.
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

// WithCompaction sets when a [BlobStore] (or [Dir]) starts a compaction
// in the background (see [BlobStore]): once the deltas written since the
// last full checkpoint add up to ratio × its size. A smaller ratio makes
// Load faster and the storage smaller, and compactions (which read and
// write the whole state) more frequent. ratio ≤ 0 compacts after every delta. NaN falls
// back to the default.
//
// Default: 1 (the deltas may grow as large as the full checkpoint).
func WithCompaction(ratio float64) Option {
	return optionFunc(func(o *options) {
		if ratio != ratio { // NaN
			ratio = defaultCompaction
		}
		o.compaction = ratio
	})
}

package promstage

// Option configures a [Collector].
type Option interface{ apply(*options) }

type options struct {
	stages []string // nil: every stage
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithStages restricts the Collector to the stages named, for a dashboard
// of single stages; names that are not stages of the pipeline export
// nothing. A Collector of chosen stages does not export the pipeline's
// in-flight gauge. Called with no names, it exports no stage at all.
//
// Default: every stage, and the pipeline gauge.
func WithStages(names ...string) Option {
	return optionFunc(func(o *options) { o.stages = append([]string{}, names...) })
}

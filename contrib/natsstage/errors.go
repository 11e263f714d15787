package natsstage

import "errors"

// ErrUnavailable is matched (with [errors.Is]) by the error a [Source] or a
// [Sink] fails its stage with when the NATS connection is closed for good
// or JetStream stayed unreachable longer than [WithMaxOutage]. The error
// also wraps the last error seen from the client, if any.
var ErrUnavailable = errors.New("natsstage: JetStream unavailable")

// ErrInvalidMsg is the non-fatal error a [Sink] or a [Transform] returns
// for a nil [*Msg] or one without an ID: the item is dead-lettered, the
// stage goes on.
var ErrInvalidMsg = errors.New("natsstage: invalid message")

// ErrUnsupportedConsumer is returned by [Source.Open] when the consumer is
// not a pull consumer with explicit acknowledgements, or when its
// MaxDeliver leaves no room for the redeliveries asked with [WithRetry].
var ErrUnsupportedConsumer = errors.New("natsstage: unsupported consumer")

// ErrAlreadyOpened is returned by [Source.Open] and [Sink.Open] for a
// handler that was opened before: each serves one pipeline, once.
var ErrAlreadyOpened = errors.New("natsstage: handler already opened")

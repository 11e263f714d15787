package kafkastage

import "errors"

// ErrUnavailable is matched (with [errors.Is]) by the error a [Source] or a
// [Sink] fails its stage with when no broker answered for longer than
// [WithMaxOutage], or when its client was closed. The error also wraps the
// last error seen from the client, if any.
var ErrUnavailable = errors.New("kafkastage: Kafka unavailable")

// ErrInvalidRecord is the non-fatal error a [Sink] returns for a nil
// [*Record]: the item is dead-lettered, the stage goes on.
var ErrInvalidRecord = errors.New("kafkastage: invalid record")

// ErrOversize is the non-fatal error a [Sink] returns for a record larger
// than [WithMaxRecordBytes]: the item is dead-lettered, the partition goes
// on.
var ErrOversize = errors.New("kafkastage: record too large")

// ErrAlreadyOpened is returned by [Source.Open] and [Sink.Open] for a
// handler that was opened before: each serves one pipeline, once.
var ErrAlreadyOpened = errors.New("kafkastage: handler already opened")

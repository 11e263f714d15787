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

// ErrPosition is matched (with [errors.Is]) by the error of
// [Source.Position], [Source.Resume] and [Source.Commit] when the Source
// cannot serve a checkpoint — it was made without
// [WithCommitOnCheckpoint], or the position is not one of its partitions
// (it does not decode, or names other topics or partitions) — and by the
// error of [Source.Open] for a checkpoint mode it cannot run:
// [WithCommitOnCheckpoint] without [WithPartitions] or the other way
// round, or either on a Source of [NewExactlyOnce].
var ErrPosition = errors.New("kafkastage: no checkpoint position")

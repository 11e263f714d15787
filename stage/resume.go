package stage

import "context"

// Resumable is an optional interface of a [Source] or a [Sink] whose place
// in its input or output a checkpoint records (see [WithCheckpoint]). A
// pipeline that checkpoints requires it of every source: a source that
// cannot go back to a position would feed restored state its input twice.
//
// Position returns the position just after the last item the handler
// handled: for a source, the last item its Next emitted; for a sink, the
// last item Consume took, after Flush when the sink is a [Flusher]. The
// stage calls it from its own goroutine between calls to Next (Consume), so
// it needs no lock. The bytes are the handler's own encoding (a byte
// offset, a stream sequence, partition offsets).
//
// Resume moves the handler to pos, a value Position returned in an earlier
// run, and is called once, after Open and before the first Next (Consume),
// when the pipeline resumes from a checkpoint. A source goes on with the
// item after pos; a sink discards what it wrote after pos (a file sink
// truncates), so that outputs the crash left behind are written once. An
// error fails the start of the pipeline.
type Resumable interface {
	Position() ([]byte, error)
	Resume(ctx context.Context, pos []byte) error
}

// Committer is an optional interface of a [Source] that acknowledges its
// input (a JetStream ack, a Kafka commit). In a pipeline that checkpoints,
// the stage calls Commit with a position Position returned once a
// checkpoint holding that position is stored: the source may then
// acknowledge all its input up to pos, never earlier, so that input a
// crash could lose is redelivered. Commit is called from the source's own
// goroutine between calls to Next. Positions only grow, so a Commit that
// fails is logged and the next one covers its input.
type Committer interface {
	Commit(ctx context.Context, pos []byte) error
}

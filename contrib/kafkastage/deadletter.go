package kafkastage

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stagefsm/stagefsm/stage"
)

// Headers a [DeadLetters] writer adds to each dead-letter record.
const (
	// HeaderCause holds the error's text.
	HeaderCause = "kafkastage-cause"
	// HeaderTopic, HeaderPartition and HeaderOffset hold where the input
	// record was read (absent when no [Source] read it).
	HeaderTopic     = "kafkastage-origin-topic"
	HeaderPartition = "kafkastage-origin-partition"
	HeaderOffset    = "kafkastage-origin-offset"
)

// DeadLetters writes a pipeline's dead letters to a Kafka topic; pass its
// Write method to [stage.WithDeadLetter]. It is part of the [Source]'s
// contract: an offset becomes committable only once its record is
// produced or written here.
//
// Each dead letter that carries a [*Record] becomes a record of the
// dead-letter topic with the input's key, value and headers, plus
// [HeaderCause] and the origin headers. An item that was not processed —
// the pipeline was aborted ([stage.ErrAborted]) or a stage failed
// ([stage.ErrFailed], or an error made with [stage.Fatal], such as
// [ErrUnavailable]) — is not a dead letter, whatever its payload: its
// offset is left uncommitted, for the group to read again (in a
// checkpointing pipeline, the input after the last checkpoint is read
// again). Dead letters without a [*Record] (a source's error item, a
// stateful stage's state) are written with the cause only.
//
// A dead letter that cannot be written (the brokers did not acknowledge it
// within [WithMaxOutage]) leaves its offset uncommitted too, and counts in
// [DeadLetterStats.Failed].
type DeadLetters struct {
	topic  string
	o      sinkOptions
	client *kgo.Client  // nil in exactly-once mode: the session's is used
	tx     *ExactlyOnce // exactly-once mode (see ExactlyOnce), or nil
	err    error
	stats  struct{ written, released, failed atomic.Uint64 }
}

// NewDeadLetters returns a [DeadLetters] writer to topic with a client
// made from kopts. The client is created at once; an error is returned by
// every Write (counted as failed) and by Close. Close it after the
// pipeline has ended.
func NewDeadLetters(kopts []kgo.Opt, topic string, opts ...SinkOption) *DeadLetters {
	d := &DeadLetters{topic: topic, o: newSinkOptions(opts)}
	d.client, d.err = newProducer(kopts, d.o)
	if d.err == nil && topic == "" {
		d.client.Close()
		d.client, d.err = nil, errors.New("kafkastage: NewDeadLetters was given an empty topic")
	}
	return d
}

var interruptions = []error{stage.ErrAborted, stage.ErrFailed, stage.ErrFatal, stage.ErrRestarted,
	context.Canceled, context.DeadlineExceeded, ErrUnavailable}

func interrupted(err error) bool {
	for _, target := range interruptions {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// Write writes one dead letter (see [DeadLetters]) and waits for its
// acknowledgement. It is safe for concurrent use.
func (d *DeadLetters) Write(it stage.Item[any]) {
	r, _ := it.Payload.(*Record)
	if interrupted(it.Err) {
		d.stats.released.Add(1)
		if r != nil && r.t != nil {
			r.t.release()
		}
		return
	}
	client := d.client
	if d.tx != nil && d.err == nil {
		client = nil // no transaction to join: not written
		if r != nil && r.t != nil && r.t.p.src.tx == d.tx {
			client = d.tx.producer()
		}
	}
	if client == nil {
		d.stats.failed.Add(1)
		if r != nil && r.t != nil {
			r.t.release()
		}
		return
	}
	cause := "unknown"
	if it.Err != nil {
		cause = it.Err.Error()
	}
	out := &kgo.Record{Topic: d.topic}
	if r != nil {
		out.Key = r.Key
		out.Value = r.Value
		out.Headers = append(append([]kgo.RecordHeader(nil), r.Headers...),
			kgo.RecordHeader{Key: HeaderTopic, Value: []byte(r.Topic)},
			kgo.RecordHeader{Key: HeaderPartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
			kgo.RecordHeader{Key: HeaderOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))})
		if r.size() > d.o.maxRecordBytes {
			out.Value = nil // an oversize record keeps its place and cause, not its body
		}
	}
	out.Headers = append(out.Headers, kgo.RecordHeader{Key: HeaderCause, Value: []byte(cause)})
	if err := client.ProduceSync(context.Background(), out).FirstErr(); err != nil {
		d.stats.failed.Add(1)
		if r != nil && r.t != nil {
			r.t.release()
		}
		return
	}
	d.stats.written.Add(1)
	if r != nil && r.t != nil {
		r.t.finish()
	}
}

// Close closes the client. It returns the error NewDeadLetters met, if any.
func (d *DeadLetters) Close() error {
	if d.client != nil {
		d.client.Close()
	}
	if d.err != nil {
		return fmt.Errorf("kafkastage: dead-letter client: %w", d.err)
	}
	return nil
}

// DeadLetterStats counts what a [DeadLetters] writer did.
type DeadLetterStats struct {
	// Written counts the dead letters acknowledged by the brokers.
	Written uint64
	// Released counts the interrupted items, not written (their input is
	// read again).
	Released uint64
	// Failed counts the dead letters that could not be written.
	Failed uint64
}

// Stats returns a snapshot of the counts. It is safe to call at any time.
func (d *DeadLetters) Stats() DeadLetterStats {
	return DeadLetterStats{Written: d.stats.written.Load(), Released: d.stats.released.Load(),
		Failed: d.stats.failed.Load()}
}

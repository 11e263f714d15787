package kafkastage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stagefsm/stagefsm/stage"
)

var (
	_ stage.Sink[*Record] = (*Sink)(nil)
	_ stage.Opener        = (*Sink)(nil)
	_ stage.Flusher       = (*Sink)(nil)
	_ io.Closer           = (*Sink)(nil)
)

// Sink is a [stage.Sink] of [*Record] that produces each record to a
// Kafka topic with its key and headers, through an idempotent producer:
// a produce request retried after a lost answer is written once.
//
// Producing is asynchronous: Consume hands the record to the client and
// returns; when the brokers acknowledge it, the input offset it came from
// becomes committable (see [Source]). Flush, at the end of input, waits
// until every record is acknowledged.
//
// The client retries on its own for up to [WithMaxOutage]; a record not
// acknowledged by then, or refused for good, fails the stage with an error
// wrapping [ErrUnavailable] (or the broker's error), which the pipeline
// reports (see [stage.Pipeline.Wait]); its input offset stays uncommitted,
// so the group reads it again. A record larger than [WithMaxRecordBytes]
// is rejected with [ErrOversize] and dead-lettered.
//
// A Sink made by [ExactlyOnce.Sink] produces within the session's
// transactions instead, through the session's client: an acknowledged
// record is visible to read_committed readers only once its transaction
// commits.
//
// A Sink serves one pipeline, once, and owns its client. Its methods are
// called by the stage (see [stage.Sink]); [Sink.Stats] may be called at
// any time.
type Sink struct {
	kopts []kgo.Opt
	topic string
	o     sinkOptions

	// Owned by the stage: Open, Consume, Flush and Close.
	used   bool
	opened bool
	closed bool
	client *kgo.Client // nil in exactly-once mode: the session's is used

	tx       *ExactlyOnce             // exactly-once mode (see ExactlyOnce), or nil
	acked    chan struct{}            // exactly-once mode: poked at each acknowledgement
	promised func(*kgo.Record, error) // s.promise, made once

	failed atomic.Bool // err is set: Consume checks this, not the lock
	mu     sync.Mutex
	err    error // why the sink failed, set by a produce callback

	// Written by the produce promises, on the client's goroutine, once per
	// record: kept off the cache lines Consume reads, which would
	// otherwise move between cores at every record.
	_        [64]byte
	stats    sinkCounters
	inflight atomic.Int64 // exactly-once mode: produced, not yet acknowledged
}

// NewSink returns a [Sink] that produces to topic with a client made from
// kopts (which must name the seed brokers, [kgo.SeedBrokers]). Do not pass
// [kgo.DisableIdempotentWrite]: the Sink relies on idempotent writes. The
// client does not linger ([kgo.ProducerLinger] 0, franz-go's default is
// 10ms) unless kopts sets a linger: records produced while a request is in
// flight are batched into the next one anyway.
func NewSink(kopts []kgo.Opt, topic string, opts ...SinkOption) *Sink {
	return &Sink{kopts: kopts, topic: topic, o: newSinkOptions(opts)}
}

// Open creates the client. It returns an error for an empty topic or
// options the client refuses, and [ErrAlreadyOpened] when called twice.
func (s *Sink) Open(context.Context) error {
	if s.used {
		return ErrAlreadyOpened
	}
	s.used = true
	if s.topic == "" {
		return errors.New("kafkastage: NewSink was given an empty topic")
	}
	s.acked = make(chan struct{}, 1)
	s.promised = s.promise
	if s.tx == nil {
		client, err := newProducer(s.kopts, s.o)
		if err != nil {
			return fmt.Errorf("kafkastage: sink client: %w", err)
		}
		s.client = client
	}
	s.opened = true
	return nil
}

func newProducer(kopts []kgo.Opt, o sinkOptions) (*kgo.Client, error) {
	// No linger by default (kopts may set one): a record goes out with the
	// next produce request, and records arriving while requests are in
	// flight batch up on their own — what a consume loop that flushes
	// after each poll gets.
	return kgo.NewClient(append(append([]kgo.Opt{kgo.ProducerLinger(0)}, kopts...),
		kgo.RecordDeliveryTimeout(max(o.maxOutage, time.Second)), // the client's minimum
		kgo.ProducerBatchMaxBytes(int32(max(o.maxRecordBytes+4096, 1<<20))),
	)...)
}

// Consume produces r, asynchronously. It returns an error wrapping
// [ErrInvalidRecord] for a nil r and [ErrOversize] for one larger than
// [WithMaxRecordBytes] (both non-fatal: r is dead-lettered), and an error
// made with [stage.Fatal] once the sink has failed.
func (s *Sink) Consume(ctx context.Context, r *Record) error {
	switch {
	case !s.opened || s.closed:
		return stage.Fatal(errors.New("kafkastage: Sink.Consume outside Open and Close"))
	case r == nil:
		return fmt.Errorf("%w: nil *Record", ErrInvalidRecord)
	case r.size() > s.o.maxRecordBytes:
		return fmt.Errorf("%w: %d bytes from %s/%d@%d, limit %d",
			ErrOversize, r.size(), r.Topic, r.Partition, r.Offset, s.o.maxRecordBytes)
	case s.tx != nil && (r.t == nil || r.t.p.src.tx != s.tx):
		return fmt.Errorf("%w: the record was not read by the session's Source", ErrInvalidRecord)
	}
	if s.failed.Load() {
		return stage.Fatal(s.failure())
	}
	client := s.client
	if s.tx != nil {
		if client = s.tx.producer(); client == nil {
			return stage.Fatal(fmt.Errorf("%w: produce to %q: the session is closed", ErrUnavailable, s.topic))
		}
	}
	var out *kgo.Record
	if t := r.t; t != nil {
		if out = t.claim(); out == nil {
			out = new(kgo.Record)
		}
		*out = kgo.Record{Topic: s.topic, Key: r.Key, Value: r.Value, Headers: r.Headers, Context: t}
	} else {
		out = &kgo.Record{Topic: s.topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
	}
	if s.tx != nil {
		s.inflight.Add(1)
	}
	client.Produce(context.Background(), out, s.promised)
	return nil
}

// promise settles the input offset of a record produced (see ticket).
func (s *Sink) promise(r *kgo.Record, err error) {
	if s.tx != nil {
		defer s.ack()
	}
	t, _ := r.Context.(*ticket)
	if err != nil {
		s.fail(err)
		s.stats.unconfirmed.Add(1)
		if t != nil {
			t.release()
		}
		return
	}
	s.stats.produced.Add(1)
	if t != nil {
		t.finish()
	}
}

// ack counts one acknowledged (or failed) record and wakes Flush, in
// exactly-once mode (otherwise Flush waits for the client's own).
func (s *Sink) ack() {
	s.inflight.Add(-1)
	select {
	case s.acked <- struct{}{}:
	default:
	}
}

func (s *Sink) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = producerError(s.topic, err)
		s.failed.Store(true)
	}
}

// producerError wraps err with ErrUnavailable when the brokers did not
// answer in time.
func producerError(topic string, err error) error {
	if errors.Is(err, kgo.ErrRecordTimeout) || errors.Is(err, kgo.ErrRecordRetries) ||
		errors.Is(err, kgo.ErrClientClosed) {
		return fmt.Errorf("%w: produce to %q: %w", ErrUnavailable, topic, err)
	}
	return fmt.Errorf("kafkastage: produce to %q: %w", topic, err)
}

func (s *Sink) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Flush waits until every record produced is acknowledged, and returns the
// sink's failure, if it failed, or ctx.Err(). In exactly-once mode the
// Source ends the last transaction, when it closes.
func (s *Sink) Flush(ctx context.Context) error {
	if !s.opened || s.closed {
		return errors.New("kafkastage: Sink.Flush outside Open and Close")
	}
	if s.tx == nil {
		if err := s.client.Flush(ctx); err != nil {
			return err
		}
		return s.failure()
	}
	// The session's client is shared: wait for this sink's records only
	// (the Source ends their transaction).
	for s.inflight.Load() > 0 {
		select {
		case <-s.acked:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.failure()
}

// Close closes the client; records not yet acknowledged fail, and their
// input offsets stay uncommitted. In exactly-once mode it leaves the
// session's client to the Source. Calling it again, or on a Sink never
// opened, does nothing.
func (s *Sink) Close() error {
	if !s.opened || s.closed {
		return nil
	}
	s.closed = true
	if s.client != nil {
		s.client.Close()
	}
	return nil
}

// SinkStats counts what a [Sink] did.
type SinkStats struct {
	// Produced counts the records the brokers acknowledged.
	Produced uint64
	// Unconfirmed counts the records given up without an acknowledgement;
	// their input offsets stay uncommitted.
	Unconfirmed uint64
}

type sinkCounters struct {
	produced, unconfirmed atomic.Uint64
}

// Stats returns a snapshot of the sink's counts. It is safe to call at any
// time.
func (s *Sink) Stats() SinkStats {
	return SinkStats{Produced: s.stats.produced.Load(), Unconfirmed: s.stats.unconfirmed.Load()}
}

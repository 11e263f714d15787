package kafkastage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stagefsm/stagefsm/stage"
)

// ExactlyOnce is one worker's Kafka transaction session: the [Source],
// the [Sink]s and the [DeadLetters] writers it hands out share one
// transactional client ([kgo.GroupTransactSession]), so that the records
// a transaction produces and the input offsets it consumed commit
// together, or not at all.
//
// The Source reads a batch (up to [WithMaxPoll] records), begins a
// transaction and emits the batch; the Sinks and DeadLetters produce into
// that transaction; once every record of the batch is produced or
// dead-lettered, the Source commits the transaction with the batch's
// offsets and reads the next batch. If any record of the batch was not
// delivered (the pipeline was aborted, a produce failed) or the group
// took partitions from this member meanwhile, the transaction is aborted
// instead and the batch is read again — by this member or by the
// partitions' next owner. See the package doc, "Exactly once", for what
// this guarantees and assumes.
//
// A transaction costs a few requests to the brokers (offsets, a heartbeat,
// its end), so larger batches ([WithMaxPoll]) give more throughput and
// fewer, larger transactions.
//
// Each ExactlyOnce serves one pipeline, once: call [ExactlyOnce.Source]
// once, and [ExactlyOnce.Sink] and [ExactlyOnce.DeadLetters] for each
// output topic, before the pipeline starts.
type ExactlyOnce struct {
	src  *Source
	txID string

	mu       sync.Mutex
	client   *kgo.Client // the session's client while the Source is open
	maxBytes int         // the largest record a Sink or DeadLetters takes
}

// fit makes the session's producer batches hold a record of n bytes.
func (x *ExactlyOnce) fit(n int) {
	x.mu.Lock()
	x.maxBytes = max(x.maxBytes, n)
	x.mu.Unlock()
}

// NewExactlyOnce returns an [ExactlyOnce] whose Source joins the consumer
// group group and consumes topics, with a client made from kopts (which
// must name the seed brokers, [kgo.SeedBrokers]). The input is read with
// [kgo.ReadCommitted] isolation, so a topic that is itself the output of
// transactions is read without its aborted records.
//
// kopts may carry [kgo.TransactionalID], [kgo.TransactionTimeout] and the
// group's timeouts; do not pass [kgo.ConsumerGroup], [kgo.ConsumeTopics],
// commit, isolation or rebalance-callback options. Without
// [kgo.TransactionalID] the session gets a random one, which is correct
// but means that the open transaction of a member that died is aborted
// only when its transaction timeout (Kafka's default: 40s in franz-go)
// expires, holding back read_committed readers of the output until then;
// a stable ID per worker (its host name, a pod name) lets a restarted
// worker abort its predecessor's transaction at once.
func NewExactlyOnce(kopts []kgo.Opt, group string, topics []string, opts ...SourceOption) *ExactlyOnce {
	x := &ExactlyOnce{txID: group + "-" + randomID()}
	x.src = NewSource(kopts, group, topics, opts...)
	x.src.tx = x
	return x
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// Source returns the session's [Source]. Every call returns the same one.
func (x *ExactlyOnce) Source() *Source { return x.src }

// Sink returns a [Sink] that produces to topic within the session's
// transactions. It takes only records read by the session's Source (the
// record itself, changed or not); any other is rejected with
// [ErrInvalidRecord]. opts set [WithMaxRecordBytes]; the outage budget
// is the Source's.
func (x *ExactlyOnce) Sink(topic string, opts ...SinkOption) *Sink {
	s := NewSink(nil, topic, opts...)
	s.tx = x
	x.fit(s.o.maxRecordBytes)
	return s
}

// DeadLetters returns a [DeadLetters] writer to topic that writes within
// the session's transactions: a dead letter is visible to read_committed
// readers once, with the transaction that commits its input offset. A
// dead letter that carries no record read by the session's Source has no
// transaction to join: it is not written and counts in
// [DeadLetterStats.Failed].
func (x *ExactlyOnce) DeadLetters(topic string, opts ...SinkOption) *DeadLetters {
	d := &DeadLetters{topic: topic, o: newSinkOptions(opts), tx: x}
	if topic == "" {
		d.err = errors.New("kafkastage: ExactlyOnce.DeadLetters was given an empty topic")
	}
	x.fit(d.o.maxRecordBytes)
	return d
}

// producer returns the session's client, nil while the Source is not open.
func (x *ExactlyOnce) producer() *kgo.Client {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.client
}

func (x *ExactlyOnce) setProducer(c *kgo.Client) {
	x.mu.Lock()
	x.client = c
	x.mu.Unlock()
}

// openSession creates the session's client and joins the group.
func (s *Source) openSession() error {
	// The random transactional ID and no linger (as for a Sink) go first:
	// kopts override them.
	kopts := append([]kgo.Opt{kgo.TransactionalID(s.tx.txID), kgo.ProducerLinger(0)}, s.kopts...)
	kopts = append(kopts,
		kgo.ConsumerGroup(s.group),
		kgo.ConsumeTopics(s.topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordDeliveryTimeout(max(s.o.maxOutage, time.Second)), // the client's minimum
		kgo.ProducerBatchMaxBytes(int32(max(s.tx.maxBytes+4096, 1<<20))),
		kgo.OnPartitionsRevoked(s.revokedInTransaction),
		kgo.OnPartitionsLost(s.lost),
	)
	sess, err := kgo.NewGroupTransactSession(kopts...)
	if err != nil {
		return fmt.Errorf("kafkastage: transactional client: %w", err)
	}
	s.sess = sess
	s.client = sess.Client()
	s.tx.setProducer(s.client)
	s.lastProbe = time.Now()
	s.opened = true
	return nil
}

// nextInTransaction is Next in exactly-once mode: it ends the open
// transaction once its batch has settled, then reads the next batch and
// emits it in a new transaction.
func (s *Source) nextInTransaction(ctx context.Context, emit func(*Record)) error {
	if s.txOpen {
		if s.txFresh {
			// Return without emitting, so that the stage sends the batch on.
			s.txFresh = false
			if s.outstanding.Load() > 0 {
				return nil
			}
		}
		if !s.awaitSettled(ctx, pollWait) {
			return ctx.Err() // nil: called again, still waiting
		}
		if err := s.endTransaction(); err != nil {
			return stage.Fatal(err)
		}
	}
	fs, err := s.poll(ctx, s.sess)
	if err != nil {
		return err
	}
	n := fs.NumRecords()
	if n == 0 {
		return s.check(ctx)
	}
	s.downSince = time.Time{}
	if err := s.sess.Begin(); err != nil {
		return stage.Fatal(fmt.Errorf("kafkastage: group %s: begin transaction: %w", s.group, err))
	}
	s.txOpen, s.txFresh, s.txRecords = true, true, n
	s.emitAll(fs, emit)
	return nil
}

// awaitSettled waits up to d until every emitted record has settled, and
// reports whether they have.
func (s *Source) awaitSettled(ctx context.Context, d time.Duration) bool {
	if s.outstanding.Load() == 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for s.outstanding.Load() > 0 {
		select {
		case <-s.settled:
		case <-timer.C:
			return s.outstanding.Load() == 0
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// endTransaction commits the open transaction — its records and the
// batch's offsets — if every record of the batch was delivered, and aborts
// it otherwise; the session aborts it too when the group took partitions
// meanwhile. After an abort the client reads again from the committed
// offsets.
func (s *Source) endTransaction() error {
	commit := !s.spoiled.Load() && s.outstanding.Load() == 0
	ctx, cancel := context.WithTimeout(context.Background(), max(s.o.maxOutage, commitTimeout))
	committed, err := s.sess.End(ctx, kgo.TransactionEndTry(commit))
	cancel()
	n := uint64(s.txRecords)
	s.txOpen, s.txFresh, s.txRecords = false, false, 0
	s.spoiled.Store(false)
	s.resetPending()
	if err != nil {
		s.stats.commitErrors.Add(1)
		s.stats.aborted.Add(n)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrClientClosed) {
			return fmt.Errorf("%w: group %s: end transaction: %w", ErrUnavailable, s.group, err)
		}
		return fmt.Errorf("kafkastage: group %s: end transaction: %w", s.group, err)
	}
	if committed {
		s.stats.committable.Add(n)
	} else {
		s.stats.aborted.Add(n)
	}
	return nil
}

// resetPending forgets the tickets of the transaction that ended: what it
// did not commit is read again with new ones.
func (s *Source) resetPending() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.parts {
		p.mu.Lock()
		clear(p.pending)
		p.pending = p.pending[:0]
		p.mu.Unlock()
	}
}

// revokedInTransaction runs before partitions leave this member in
// exactly-once mode. The session has already doomed the open transaction
// (it aborts at its end, and its batch is read again by the partitions'
// next owner), so the revocation need not wait for anything.
func (s *Source) revokedInTransaction(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.forget(lost)
}

// closeSession ends the open transaction — committing it if its batch
// settles within settleWait — and closes the client, leaving the group.
func (s *Source) closeSession() {
	if s.txOpen {
		s.awaitSettled(context.Background(), settleWait)
		_ = s.endTransaction() // counted in CommitErrors; Close reports nothing
	}
	s.tx.setProducer(nil)
	s.sess.Close()
}

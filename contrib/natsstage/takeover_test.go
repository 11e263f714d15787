package natsstage_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/contrib/natsstage"
	"github.com/stagefsm/stagefsm/stage"
)

// The takeover test's input: keys partitioned over two subjects, each
// read by the durable consumer of its partition.
const (
	tkPartitions = 2
	tkKeys       = 12 // keys k0 … k11; key i is in partition i % 2
	tkPhase      = 600
	tkSumsSubj   = "out.sums"
)

// sum is a key's aggregate, the keyed stage's state (gob-encoded in the
// checkpoints).
type sum struct{ Total, Count int64 }

// tkKey is the key of input message i, whose value is i.
func tkKey(i int) int { return i % tkKeys }

// partitionWorker is one pipeline of a worker, on the consumer of one
// partition: source → gate → per-key sum → sink of the final sums, with
// checkpoints in the shared JetStream bucket under the partition's name.
type partitionWorker struct {
	src *natsstage.Source
	p   *stage.Pipeline
}

// startPartition starts the pipeline of partition part on js. gate, when
// not nil, is called for each message before the sum and may block.
func startPartition(t *testing.T, js jetstream.JetStream, worker string, part int,
	gate func(ctx context.Context, m *natsstage.Msg) error) *partitionWorker {
	t.Helper()
	store, err := natsstage.NewStore(context.Background(), js, "checkpoints", fmt.Sprintf("p%d", part))
	require.NoError(t, err)
	w := &partitionWorker{
		src: natsstage.NewSource(js, inStream, fmt.Sprintf("p%d", part), natsstage.WithAckOnCommit(true), natsstage.WithPrefetch(64)),
	}
	pass := stage.TransformFunc[*natsstage.Msg, *natsstage.Msg](func(ctx context.Context, m *natsstage.Msg, emit func(*natsstage.Msg)) error {
		if gate != nil {
			if err := gate(ctx, m); err != nil {
				return err
			}
		}
		emit(m)
		return nil
	})
	sums := stage.KeyedAccumulator[*natsstage.Msg, string, sum, *natsstage.Msg]{
		Key: func(m *natsstage.Msg) string { k, _, _ := strings.Cut(string(m.Data), "="); return k },
		Fold: func(s *sum, m *natsstage.Msg) error {
			_, v, _ := strings.Cut(string(m.Data), "=")
			n, err := strconv.ParseInt(v, 10, 64)
			s.Total += n
			s.Count++
			return err
		},
		// At the end of input, one output per key, its id the key's: a
		// repeated output is stored once.
		Emit: func(k string, s sum, emit func(*natsstage.Msg)) error {
			emit(&natsstage.Msg{ID: "sum:" + k, Data: fmt.Appendf(nil, "%s %d %d", k, s.Total, s.Count)})
			return nil
		},
	}
	w.p = stage.To(stage.ThenKeyedAccumulate(stage.Then(stage.From("in", w.src), "gate", pass), "sum", sums),
		"out", natsstage.NewSink(js, tkSumsSubj),
		stage.WithName(fmt.Sprintf("%s/p%d", worker, part)), stage.WithBatchSize(16),
		stage.WithCheckpoint(store, 20*time.Millisecond),
		stage.WithDeadLetter(natsstage.DeadLetter(func(it stage.Item[any]) { t.Errorf("dead letter: %v", it) })))
	require.NoError(t, w.p.Start(context.Background()))
	t.Cleanup(func() {
		w.p.Abort()
		_ = w.p.Wait(context.Background())
		_ = store.Close()
	})
	return w
}

// finish drains the pipeline once its partition's consumer has every
// message acknowledged — which the Source does only for messages a stored
// checkpoint covers — and waits for it to end.
func (w *partitionWorker) finish(t *testing.T, js jetstream.JetStream, part int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("partition %d acknowledged to its end", part), func() bool {
		cons, err := js.Consumer(context.Background(), inStream, fmt.Sprintf("p%d", part))
		require.NoError(t, err)
		info := cons.CachedInfo()
		return info.NumPending == 0 && info.NumAckPending == 0
	})
	w.p.Drain()
	select {
	case <-w.p.Done():
	case <-time.After(waitLimit):
		t.Fatal("pipeline still running")
	}
	require.NoError(t, w.p.Wait(context.Background()))
}

// publishPhase publishes input messages from … to-1 and returns the stream
// sequence of the last message of each partition.
func publishPhase(t *testing.T, js jetstream.JetStream, from, to int, last *[tkPartitions]uint64) {
	t.Helper()
	for i := from; i < to; i++ {
		k := tkKey(i)
		ack, err := js.Publish(context.Background(), fmt.Sprintf("in.p%d.k%d", k%tkPartitions, k), fmt.Appendf(nil, "k%d=%d", k, i))
		require.NoError(t, err)
		last[k%tkPartitions] = ack.Sequence
	}
}

// TestTakeoverResumesKeyedStateExactly is the acceptance test of #14 for
// natsstage: worker A, killed mid-stream, leaves its partition's keyed
// state in its last checkpoint; worker B takes the partition over,
// resumes from that checkpoint and finishes it; the final per-key sums are
// exactly those of the input.
//
// The test would fail if resuming were broken, and checks that each way
// it could break is exercised:
//   - A acknowledged input on its checkpoints' commits (asserted below):
//     JetStream never delivers that input again, so without the restored
//     state B's sums would miss it;
//   - A had emitted input that no checkpoint covers when it was killed (the
//     gate holds a message, so no cut completes after it; B's source sees
//     redeliveries, asserted below): B must process it once, so a restored
//     state whose source did not skip what the checkpoint covers — or did
//     not replay what it does not — would count some input twice or not at
//     all;
//   - the checkpoint B resumes from holds A's sums (asserted below).
func TestTakeoverResumesKeyedStateExactly(t *testing.T) {
	ns := startServer(t)
	_, js := ns.connect(t)
	ctx := context.Background()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: inStream, Subjects: []string{"in.>"}})
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: outStream, Subjects: []string{"out.>"}})
	require.NoError(t, err)
	for part := range tkPartitions {
		_, err := js.CreateOrUpdateConsumer(ctx, inStream, jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("p%d", part), FilterSubject: fmt.Sprintf("in.p%d.>", part),
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: 2 * time.Second, MaxAckPending: -1,
		})
		require.NoError(t, err)
	}
	var last [tkPartitions]uint64
	publishPhase(t, js, 0, tkPhase, &last)
	phase1 := last[0]

	// Worker A owns partition 0, worker B partition 1; each has its own
	// connection.
	ncA, jsA := ns.connect(t)
	_, jsB := ns.connect(t)
	blocked := make(chan struct{})
	var block sync.Once
	var passedPhase2 atomic.Int64
	a := startPartition(t, jsA, "A", 0, func(ctx context.Context, m *natsstage.Msg) error {
		_, v, _ := strings.Cut(string(m.Data), "=")
		if i, err := strconv.Atoi(v); err != nil || i < tkPhase || passedPhase2.Add(1) <= tkPhase/4 {
			return nil
		}
		block.Do(func() { close(blocked) })
		<-ctx.Done() // killed
		return ctx.Err()
	})
	b1 := startPartition(t, jsB, "B", 1, nil)

	// A's checkpoints cover the first phase and A acknowledges it.
	waitUntil(t, "A's commit of the first phase", func() bool { return a.src.Stats().Acked >= uint64(tkPhase/tkPartitions) })
	assert.Positive(t, a.p.Stats().Checkpoints)

	// The second phase: A folds a quarter of its part into its sums, then
	// holds a message in the gate — and is killed: its connection closed
	// (no checkpoint, acknowledgement or hand-back after this) and its
	// pipeline aborted.
	publishPhase(t, js, tkPhase, 2*tkPhase, &last)
	select {
	case <-blocked:
	case <-time.After(waitLimit):
		t.Fatal("A never reached the gate")
	}
	ackedByA := a.src.Stats().Acked
	ncA.Close()
	a.p.Abort()
	_ = a.p.Wait(ctx)
	require.Less(t, ackedByA, uint64(tkPhase), "A was killed mid-stream: part of its input unacknowledged")

	// The checkpoint A left holds its partition's sums and position.
	peek, err := natsstage.NewStore(ctx, js, "checkpoints", "p0")
	require.NoError(t, err)
	snap, err := peek.Load(ctx)
	require.NoError(t, err)
	require.NoError(t, peek.Close())
	keys := 0
	for k := range snap.Stages["sum"].State {
		if strings.HasPrefix(k, "k") { // a key's state; the stage keeps others
			keys++
		}
	}
	assert.Equal(t, tkKeys/tkPartitions, keys, "A's sums of every key of partition 0")
	assert.NotEmpty(t, snap.Stages["in"].Position)

	// B takes partition 0 over, resumes from A's checkpoint, and finishes
	// both partitions.
	b0 := startPartition(t, jsB, "B", 0, nil)
	b0.finish(t, js, 0)
	b1.finish(t, js, 1)
	assert.Positive(t, b0.src.Stats().Redelivered, "B processed input A had emitted after its last checkpoint")
	assert.Greater(t, last[0], phase1)

	// The final sums: one per key, each exactly the input's.
	want := map[string]sum{}
	for i := range 2 * tkPhase {
		k := fmt.Sprintf("k%d", tkKey(i))
		s := want[k]
		s.Total += int64(i)
		s.Count++
		want[k] = s
	}
	bodies, _ := output(t, js)
	got := map[string]sum{}
	for body, n := range bodies {
		var k string
		var s sum
		_, err := fmt.Sscanf(body, "%s %d %d", &k, &s.Total, &s.Count)
		require.NoError(t, err, "output %q", body)
		assert.Equal(t, 1, n, "output %q stored once", body)
		_, dup := got[k]
		assert.False(t, dup, "one output for key %s", k)
		got[k] = s
	}
	assert.Equal(t, want, got)
}

package kafkastage_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stagefsm/stagefsm/checkpoint"
	"github.com/stagefsm/stagefsm/contrib/kafkastage"
	"github.com/stagefsm/stagefsm/stage"
)

// The checkpoint tests' input: value i, keyed k(i % ckKeys), written to
// partition i % partitions, so that every key lives in one partition.
const (
	ckGroup = "sums"
	ckKeys  = 12
)

// sum is a key's aggregate, the keyed stage's state (gob-encoded in the
// checkpoints).
type sum struct{ Total, Count int64 }

// fillKeyed produces values from … from+n-1 of the checkpoint tests'
// input.
func (k *cluster) fillKeyed(t *testing.T, from, n int) {
	t.Helper()
	c := k.client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	recs := make([]*kgo.Record, 0, n)
	for i := from; i < from+n; i++ {
		recs = append(recs, &kgo.Record{Topic: inTopic, Partition: int32(i % partitions),
			Key: fmt.Appendf(nil, "k%d", i%ckKeys), Value: []byte(strconv.Itoa(i))})
	}
	require.NoError(t, c.ProduceSync(context.Background(), recs...).FirstErr())
}

// committed returns the group's committed offset of each partition of
// the input topic, -1 for none.
func (k *cluster) committed(t *testing.T) [partitions]int64 {
	t.Helper()
	c, err := kgo.NewClient(kgo.SeedBrokers(k.addrs...))
	require.NoError(t, err)
	defer c.Close()
	os, err := kadm.NewClient(c).FetchOffsets(context.Background(), ckGroup)
	if !errors.Is(err, kerr.GroupIDNotFound) {
		require.NoError(t, err)
	}
	var at [partitions]int64
	for p := range partitions {
		at[p] = -1
		if o, ok := os.Lookup(inTopic, int32(p)); ok {
			at[p] = o.At
		}
	}
	return at
}

// waitCommitted waits until the group's committed offsets of parts are
// the ends of the input's first n values.
func (k *cluster) waitCommitted(t *testing.T, n int, parts ...int32) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("partitions %v committed to the end of %d values", parts, n), func() bool {
		at := k.committed(t)
		for _, p := range parts {
			if at[p] != int64(perPartition(n)) {
				return false
			}
		}
		return true
	})
}

// perPartition is how many of the first n values each partition holds
// (n a multiple of partitions).
func perPartition(n int) int { return n / partitions }

// ckWorker is one worker: it reads a fixed set of partitions — source →
// gate → per-key sum → sink of the final sums — and checkpoints to the
// store of that set.
type ckWorker struct {
	src   *kafkastage.Source
	dl    *kafkastage.DeadLetters
	p     *stage.Pipeline
	store *checkpoint.Dir
	once  sync.Once
}

// startCkWorker starts a worker on parts, checkpointing to dir. gate,
// when not nil, is called for each record before the sum and may block
// or fail it.
func startCkWorker(t *testing.T, k *cluster, name, dir string, parts []int32,
	gate func(ctx context.Context, r *kafkastage.Record) error) *ckWorker {
	t.Helper()
	store, err := checkpoint.OpenDir(dir)
	require.NoError(t, err)
	w := &ckWorker{
		src: kafkastage.NewSource(k.opts(), ckGroup, []string{inTopic},
			kafkastage.WithCommitOnCheckpoint(true), kafkastage.WithPartitions(parts...), kafkastage.WithMaxPoll(32)),
		dl:    kafkastage.NewDeadLetters(k.opts(), dlqTopic),
		store: store,
	}
	pass := stage.TransformFunc[*kafkastage.Record, *kafkastage.Record](
		func(ctx context.Context, r *kafkastage.Record, emit func(*kafkastage.Record)) error {
			if gate != nil {
				if err := gate(ctx, r); err != nil {
					return err
				}
			}
			emit(r)
			return nil
		})
	sums := stage.KeyedAccumulator[*kafkastage.Record, string, sum, *kafkastage.Record]{
		Key: func(r *kafkastage.Record) string { return string(r.Key) },
		Fold: func(s *sum, r *kafkastage.Record) error {
			n, err := strconv.ParseInt(string(r.Value), 10, 64)
			s.Total += n
			s.Count++
			return err
		},
		// At the end of input, one output per key.
		Emit: func(key string, s sum, emit func(*kafkastage.Record)) error {
			emit(&kafkastage.Record{Key: []byte(key), Value: fmt.Appendf(nil, "%s %d %d", key, s.Total, s.Count)})
			return nil
		},
	}
	w.p = stage.To(stage.ThenKeyedAccumulate(stage.Then(stage.From("in", w.src), "gate", pass), "sum", sums),
		"out", kafkastage.NewSink(k.opts(), outTopic),
		stage.WithName(name), stage.WithBatchSize(16),
		stage.WithCheckpoint(store, 20*time.Millisecond),
		stage.WithDeadLetter(w.dl.Write))
	require.NoError(t, w.p.Start(context.Background()))
	t.Cleanup(w.kill)
	return w
}

// kill aborts the worker: no drain, no final checkpoint.
func (w *ckWorker) kill() {
	w.once.Do(func() {
		w.p.Abort()
		_ = w.p.Wait(context.Background())
		_ = w.dl.Close()
		_ = w.store.Close()
	})
}

// finish drains the worker, which emits its sums, and waits for it.
func (w *ckWorker) finish(t *testing.T) {
	t.Helper()
	w.p.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, w.p.Wait(ctx))
	w.kill()
}

// faultCommits makes the cluster refuse, while on, the offset commits of
// any of parts of the input topic.
func (k *cluster) faultCommits(on *atomic.Bool, parts ...int32) {
	k.c.ControlKey(kmsg.OffsetCommit.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.c.KeepControl()
		cr := req.(*kmsg.OffsetCommitRequest)
		hit := false
		for _, rt := range cr.Topics {
			for _, rp := range rt.Partitions {
				hit = hit || slices.Contains(parts, rp.Partition) // the group commits the input only
			}
		}
		if !on.Load() || !hit {
			return nil, nil, false
		}
		resp := cr.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range cr.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.GroupAuthorizationFailed.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}

// TestCheckpointTakeoverResumesKeyedStateExactly is the acceptance test
// of checkpoint mode: worker A, reading partitions 0 and 1, is killed
// mid-stream; worker C takes its partitions over with A's checkpoint
// store, resumes A's keyed sums and position, and finishes; worker B
// reads partitions 2 and 3 throughout. The final per-key sums are exactly
// those of the input: none lost, none twice.
//
// Each way it could break is exercised:
//   - A's checkpoints commit the first phase (asserted): a successor that
//     ignored the checkpoint's state would miss that input;
//   - the commits of A's second phase fail (the cluster refuses them,
//     asserted), while checkpoints covering part of that phase are stored
//     (asserted): the group's offsets trail A's last checkpoint, so a
//     successor that started from them rather than from the checkpoint's
//     position would count that part twice;
//   - A had emitted input no checkpoint covers when it was killed (the
//     gate holds a record): C must read it once more;
//   - one record is rejected and dead-lettered, once.
func TestCheckpointTakeoverResumesKeyedStateExactly(t *testing.T) {
	const (
		phase1 = 400 // committed by A's checkpoints
		phase2 = 200 // checkpointed by A, commits refused
		phase3 = 200 // emitted by A, never checkpointed
		total  = phase1 + phase2 + phase3
		reject = 13 // dead-lettered: partition 1, A's
	)
	k := startCluster(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	partsA, partsB := []int32{0, 1}, []int32{2, 3}
	errRejected := errors.New("rejected")
	k.fillKeyed(t, 0, phase1)

	var passedA atomic.Int64 // second-phase records A folded
	blocked := make(chan struct{})
	var block sync.Once
	gate := func(ctx context.Context, r *kafkastage.Record) error {
		i, err := strconv.Atoi(string(r.Value))
		switch {
		case err != nil:
			return err
		case i == reject:
			return errRejected
		case i >= phase1+phase2:
			block.Do(func() { close(blocked) })
			<-ctx.Done() // killed
			return ctx.Err()
		case i >= phase1:
			passedA.Add(1)
		}
		return nil
	}
	rejectOnly := func(_ context.Context, r *kafkastage.Record) error {
		if string(r.Value) == strconv.Itoa(reject) {
			return errRejected
		}
		return nil
	}
	a := startCkWorker(t, k, "A", dirA, partsA, gate)
	b := startCkWorker(t, k, "B", dirB, partsB, rejectOnly)

	// A's checkpoints commit the first phase.
	k.waitCommitted(t, phase1, partsA...)
	assert.Positive(t, a.p.Stats().Checkpoints)

	// The second phase: A's commits are refused; A folds the phase and
	// stores checkpoints covering it.
	var refuse atomic.Bool
	refuse.Store(true)
	k.faultCommits(&refuse, partsA...)
	k.fillKeyed(t, phase1, phase2)
	waitUntil(t, "A folded the second phase", func() bool { return passedA.Load() == int64(phase2/2) })
	cps := a.p.Stats().Checkpoints
	waitUntil(t, "a checkpoint of A covering the second phase", func() bool { return a.p.Stats().Checkpoints >= cps+2 })
	waitUntil(t, "A's commit of it refused", func() bool { return a.src.Stats().CommitErrors > 0 })

	// The third phase: A emits it, holds a record in the gate, and is
	// killed: no drain, no checkpoint after it.
	k.fillKeyed(t, phase1+phase2, phase3)
	select {
	case <-blocked:
	case <-time.After(waitLimit):
		t.Fatal("A never reached the gate")
	}
	a.kill()
	refuse.Store(false)
	at := k.committed(t)
	for _, p := range partsA {
		require.EqualValues(t, perPartition(phase1), at[p], "partition %d: the group's offset trails A's last checkpoint", p)
	}

	// The checkpoint A left holds its sums of partitions 0 and 1.
	peek, err := checkpoint.OpenDir(dirA)
	require.NoError(t, err)
	snap, err := peek.Load(context.Background())
	require.NoError(t, err)
	require.NoError(t, peek.Close())
	keys := 0
	for key := range snap.Stages["sum"].State {
		if strings.HasPrefix(key, "k") { // a key's state; the stage keeps others
			keys++
		}
	}
	assert.Equal(t, ckKeys/2, keys, "A's sums of every key of partitions 0 and 1")
	assert.NotEmpty(t, snap.Stages["in"].Position)

	// C takes A's partitions over from A's store; both finish once their
	// checkpoints commit every offset.
	c := startCkWorker(t, k, "A", dirA, partsA, rejectOnly)
	k.waitCommitted(t, total, partsA...)
	k.waitCommitted(t, total, partsB...)
	c.finish(t)
	b.finish(t)
	assert.EqualValues(t, phase3/2, c.src.Stats().Received,
		"C read what A emitted after its last checkpoint, and only that")

	// The final sums: one per key, each exactly the input's.
	want := map[string]sum{}
	for i := range total {
		if i == reject {
			continue
		}
		key := fmt.Sprintf("k%d", i%ckKeys)
		s := want[key]
		s.Total += int64(i)
		s.Count++
		want[key] = s
	}
	got := map[string]sum{}
	for _, r := range k.read(t, outTopic, ckKeys) {
		var key string
		var s sum
		_, err := fmt.Sscanf(string(r.Value), "%s %d %d", &key, &s.Total, &s.Count)
		require.NoError(t, err, "output %q", r.Value)
		_, dup := got[key]
		assert.False(t, dup, "one output for key %s", key)
		got[key] = s
	}
	assert.Equal(t, want, got)
	assert.EqualValues(t, 1, a.dl.Stats().Written+b.dl.Stats().Written+c.dl.Stats().Written,
		"the rejected record dead-lettered once, the killed worker's in-flight records not at all")
	dead := k.read(t, dlqTopic, 1)
	require.Len(t, dead, 1)
	assert.Equal(t, strconv.Itoa(reject), string(dead[0].Value))
	assert.Contains(t, header(dead[0], kafkastage.HeaderCause), errRejected.Error())
}

// failingStore is a checkpoint store whose saves fail while failing is
// set.
type failingStore struct {
	checkpoint.Store
	failing atomic.Bool
}

var errSave = errors.New("save refused")

func (s *failingStore) Save(ctx context.Context, u *checkpoint.Update) (uint64, error) {
	if s.failing.Load() {
		return 0, errSave
	}
	return s.Store.Save(ctx, u)
}

// absorbing counts each key's records into its state, and folded, and
// emits nothing: its input is committed only by checkpoints.
func absorbing(folded *atomic.Int64) stage.KeyedAccumulator[*kafkastage.Record, string, int, *kafkastage.Record] {
	return stage.KeyedAccumulator[*kafkastage.Record, string, int, *kafkastage.Record]{
		Key:  func(r *kafkastage.Record) string { return string(r.Key) },
		Fold: func(s *int, _ *kafkastage.Record) error { *s++; folded.Add(1); return nil },
		Emit: func(string, int, func(*kafkastage.Record)) error { return nil },
	}
}

// TestCheckpointCommitsOnlyStoredCheckpoints checks that offsets commit
// after a checkpoint is stored, never on delivery or on capture: while the
// store refuses every save, the group's offsets stay where the last
// stored checkpoint put them, though the records are all folded.
func TestCheckpointCommitsOnlyStoredCheckpoints(t *testing.T) {
	const n = 200
	k := startCluster(t)
	dir, err := checkpoint.OpenDir(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = dir.Close() })
	store := &failingStore{Store: dir}
	src := kafkastage.NewSource(k.opts(), ckGroup, []string{inTopic},
		kafkastage.WithCommitOnCheckpoint(true), kafkastage.WithPartitions(0, 1, 2, 3))
	var folded atomic.Int64
	p := stage.To(stage.ThenKeyedAccumulate(stage.From("in", src), "count", absorbing(&folded)),
		"out", kafkastage.NewSink(k.opts(), outTopic), stage.WithCheckpoint(store, 20*time.Millisecond))
	require.NoError(t, p.Start(context.Background()))
	t.Cleanup(func() { p.Abort(); _ = p.Wait(context.Background()) })

	k.fillKeyed(t, 0, n)
	k.waitCommitted(t, n, 0, 1, 2, 3)
	store.failing.Store(true)
	k.fillKeyed(t, n, n)
	waitUntil(t, "the second half folded", func() bool { return folded.Load() == 2*n })
	failures := p.Stats().CheckpointFailures
	waitUntil(t, "checkpoints refused after it", func() bool { return p.Stats().CheckpointFailures >= failures+2 })
	assert.ErrorIs(t, p.Stats().CheckpointErr, errSave)
	for part, at := range k.committed(t) {
		assert.EqualValues(t, perPartition(n), at, "partition %d: nothing committed past the last stored checkpoint", part)
	}

	store.failing.Store(false)
	k.waitCommitted(t, 2*n, 0, 1, 2, 3)
	waitUntil(t, "the commit counted", func() bool { return src.Stats().Committable == 2*n })
	assert.Zero(t, src.Stats().CommitErrors)
}

// openCk opens a checkpoint-mode Source of parts, closed at the test's
// end.
func openCk(t *testing.T, k *cluster, topics []string, parts ...int32) *kafkastage.Source {
	t.Helper()
	src := kafkastage.NewSource(k.opts(), ckGroup, topics,
		kafkastage.WithCommitOnCheckpoint(true), kafkastage.WithPartitions(parts...), kafkastage.WithMaxPoll(5))
	require.NoError(t, src.Open(context.Background()))
	t.Cleanup(func() { _ = src.Close() })
	return src
}

// nextUntil calls Next until the records emitted satisfy done.
func nextUntil(t *testing.T, src *kafkastage.Source, done func([]*kafkastage.Record) bool) []*kafkastage.Record {
	t.Helper()
	var got []*kafkastage.Record
	deadline := time.Now().Add(waitLimit)
	for !done(got) {
		require.True(t, time.Now().Before(deadline), "timed out reading")
		require.NoError(t, src.Next(context.Background(), func(r *kafkastage.Record) { got = append(got, r) }))
	}
	return got
}

func TestCheckpointPositionRoundTrip(t *testing.T) {
	const n = 80
	k := startCluster(t)
	k.fillKeyed(t, 0, n)
	ctx := context.Background()

	first := openCk(t, k, []string{inTopic}, 0, 1)
	read := nextUntil(t, first, func(rs []*kafkastage.Record) bool { return len(rs) >= 10 })
	last := map[int32]int64{0: -1, 1: -1}
	for _, r := range read {
		require.Contains(t, []int32{0, 1}, r.Partition)
		last[r.Partition] = r.Offset
	}
	pos, err := first.Position()
	require.NoError(t, err)
	require.NoError(t, first.Close())

	// The group's offsets ahead of the position (as when the store fell
	// back to an older checkpoint): Resume ignores them.
	ahead := openCk(t, k, []string{inTopic}, 0, 1)
	nextUntil(t, ahead, func(rs []*kafkastage.Record) bool { return len(rs) == n/2 })
	end, err := ahead.Position()
	require.NoError(t, err)
	require.NoError(t, ahead.Commit(ctx, end))
	require.NoError(t, ahead.Close())
	assert.Equal(t, [partitions]int64{n / 4, n / 4, -1, -1}, k.committed(t))

	second := openCk(t, k, []string{inTopic}, 1, 0, 1) // the same set, another order
	require.NoError(t, second.Resume(ctx, pos))
	again, err := second.Position()
	require.NoError(t, err)
	assert.Equal(t, pos, again)
	firstOf := map[int32]int64{}
	rest := nextUntil(t, second, func(rs []*kafkastage.Record) bool { return len(rs) >= n/2-len(read) })
	for _, r := range rest {
		if _, ok := firstOf[r.Partition]; !ok {
			firstOf[r.Partition] = r.Offset
		}
	}
	assert.Equal(t, map[int32]int64{0: last[0] + 1, 1: last[1] + 1}, firstOf, "each partition goes on after the position")
	assert.Len(t, rest, n/2-len(read), "nothing read twice")

	again, err = second.Position()
	require.NoError(t, err)
	assert.Equal(t, end, again, "the same end as the first reader's")

	// Commit makes the position the group's offsets, also one behind them.
	require.NoError(t, second.Commit(ctx, pos))
	assert.Equal(t, [partitions]int64{last[0] + 1, last[1] + 1, -1, -1}, k.committed(t))
	require.NoError(t, second.Commit(ctx, end))
	assert.Equal(t, [partitions]int64{n / 4, n / 4, -1, -1}, k.committed(t))
	assert.EqualValues(t, n/2-last[0]-last[1]-2, second.Stats().Committable, "the offsets the commits moved")
}

func TestCheckpointBadPositions(t *testing.T) {
	k := startCluster(t)
	ctx := context.Background()
	src := openCk(t, k, []string{inTopic}, 0, 1)
	other := openCk(t, k, []string{inTopic}, 0)
	otherTopic := openCk(t, k, []string{outTopic}, 0, 1)
	both := openCk(t, k, []string{inTopic, outTopic}, 0, 1)
	good, err := src.Position()
	require.NoError(t, err)
	positions := map[string][]byte{"empty": nil, "garbage": []byte("12"), "truncated": good[:len(good)-3]}
	for name, s := range map[string]*kafkastage.Source{"a partition less": other, "another topic": otherTopic, "a topic more": both} {
		pos, err := s.Position()
		require.NoError(t, err)
		positions[name] = pos
	}
	positions["a later version"] = []byte(strings.Replace(string(good), "/v1;", "/v2;", 1))
	positions["a negative offset"] = []byte(strings.Replace(string(good), "=0", "=-5", 1))
	for name, pos := range positions {
		assert.ErrorIs(t, src.Resume(ctx, pos), kafkastage.ErrPosition, name)
		assert.ErrorIs(t, src.Commit(ctx, pos), kafkastage.ErrPosition, name)
	}
	require.NoError(t, src.Resume(ctx, good))

	// Resume after Next is refused: the stage resumes before the first
	// Next.
	require.NoError(t, src.Next(ctx, func(*kafkastage.Record) {}))
	err = src.Resume(ctx, good)
	require.Error(t, err)
	assert.NotErrorIs(t, err, kafkastage.ErrPosition)
}

func TestCheckpointModeMisuse(t *testing.T) {
	k := startCluster(t)
	ctx := context.Background()
	for name, opts := range map[string][]kafkastage.SourceOption{
		"WithCommitOnCheckpoint without partitions": {kafkastage.WithCommitOnCheckpoint(true)},
		"WithPartitions without the mode":           {kafkastage.WithPartitions(0)},
		"WithPartitions of none":                    {kafkastage.WithCommitOnCheckpoint(true), kafkastage.WithPartitions()},
	} {
		src := kafkastage.NewSource(k.opts(), ckGroup, []string{inTopic}, opts...)
		assert.ErrorIs(t, src.Open(ctx), kafkastage.ErrPosition, name)
	}
	eos := kafkastage.NewExactlyOnce(k.opts(), ckGroup, []string{inTopic},
		kafkastage.WithCommitOnCheckpoint(true), kafkastage.WithPartitions(0))
	assert.ErrorIs(t, eos.Source().Open(ctx), kafkastage.ErrPosition)
	negative := kafkastage.NewSource(k.opts(), ckGroup, []string{inTopic},
		kafkastage.WithCommitOnCheckpoint(true), kafkastage.WithPartitions(-1))
	assert.Error(t, negative.Open(ctx))

	// A group-mode Source has no position: a checkpointing pipeline's cuts
	// fail, with ErrPosition.
	grouped := kafkastage.NewSource(k.opts(), "g", []string{inTopic})
	_, err := grouped.Position()
	assert.ErrorIs(t, err, kafkastage.ErrPosition)
	assert.ErrorIs(t, grouped.Resume(ctx, []byte("kafkastage/v1;in:0=0")), kafkastage.ErrPosition)
	assert.ErrorIs(t, grouped.Commit(ctx, []byte("kafkastage/v1;in:0=0")), kafkastage.ErrPosition)
	store, err := checkpoint.OpenDir(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	dl := kafkastage.NewDeadLetters(k.opts(), dlqTopic)
	t.Cleanup(func() { _ = dl.Close() })
	p := stage.To(stage.From("in", grouped), "out", kafkastage.NewSink(k.opts(), outTopic),
		stage.WithCheckpoint(store, 20*time.Millisecond), stage.WithDeadLetter(dl.Write))
	require.NoError(t, p.Start(ctx))
	waitUntil(t, "a checkpoint failure", func() bool { return p.Stats().CheckpointFailures > 0 })
	assert.ErrorIs(t, p.Stats().CheckpointErr, kafkastage.ErrPosition)
	assert.Zero(t, p.Stats().Checkpoints)
	p.Abort()
	_ = p.Wait(ctx)

	// Position of a checkpoint-mode Source not opened.
	unopened := kafkastage.NewSource(k.opts(), ckGroup, []string{inTopic},
		kafkastage.WithCommitOnCheckpoint(true), kafkastage.WithPartitions(0))
	_, err = unopened.Position()
	assert.ErrorIs(t, err, kafkastage.ErrPosition)
}

// TestCheckpointDrainCommitsFinal: with no periodic checkpoint in the run
// (an interval longer than it), the drain's final checkpoint is the only
// one, and its offsets become the group's.
func TestCheckpointDrainCommitsFinal(t *testing.T) {
	const n = 40
	k := startCluster(t)
	k.fillKeyed(t, 0, n)
	store, err := checkpoint.OpenDir(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	src := kafkastage.NewSource(k.opts(), ckGroup, []string{inTopic},
		kafkastage.WithCommitOnCheckpoint(true), kafkastage.WithPartitions(0, 1, 2, 3))
	var folded atomic.Int64
	p := stage.To(stage.ThenKeyedAccumulate(stage.From("in", src), "count", absorbing(&folded)),
		"out", kafkastage.NewSink(k.opts(), outTopic), stage.WithCheckpoint(store, time.Hour))
	require.NoError(t, p.Start(context.Background()))
	t.Cleanup(func() { p.Abort(); _ = p.Wait(context.Background()) })

	waitUntil(t, "every value folded", func() bool { return folded.Load() == n })
	assert.Equal(t, [partitions]int64{-1, -1, -1, -1}, k.committed(t), "nothing committed before a checkpoint")
	p.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, p.Wait(ctx))
	assert.EqualValues(t, 1, p.Stats().Checkpoints)
	assert.Equal(t, [partitions]int64{n / 4, n / 4, n / 4, n / 4}, k.committed(t))
}

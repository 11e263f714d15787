package kafkastage_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stagefsm/stagefsm/contrib/kafkastage"
	"github.com/stagefsm/stagefsm/stage"
)

// waitLimit bounds every wait of a test on the cluster.
const waitLimit = 30 * time.Second

const (
	inTopic, outTopic, dlqTopic = "in", "out", "dlq"
	partitions                  = 4
)

type cluster struct {
	c     *kfake.Cluster
	once  sync.Once
	addrs []string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, inTopic, outTopic, dlqTopic),
		kfake.GroupMinSessionTimeout(100*time.Millisecond))
	require.NoError(t, err)
	k := &cluster{c: c, addrs: c.ListenAddrs()}
	t.Cleanup(k.close)
	return k
}

func (k *cluster) close() { k.once.Do(k.c.Close) }

// opts are the client options of the stages: fast group heartbeats so
// that rebalances take little time.
func (k *cluster) opts() []kgo.Opt { return memberOpts(k.addrs) }

func memberOpts(seeds []string) []kgo.Opt {
	return []kgo.Opt{kgo.SeedBrokers(seeds...),
		kgo.HeartbeatInterval(50 * time.Millisecond), kgo.SessionTimeout(time.Second),
		kgo.RebalanceTimeout(5 * time.Second), kgo.RetryBackoffFn(func(int) time.Duration { return 20 * time.Millisecond })}
}

func (k *cluster) client(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	c, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(k.addrs...)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// fill produces values "0".."n-1" to the input topic, keyed by value.
func (k *cluster) fill(t *testing.T, from, n int) {
	t.Helper()
	c := k.client(t)
	recs := make([]*kgo.Record, 0, n)
	for i := from; i < from+n; i++ {
		v := []byte(strconv.Itoa(i))
		recs = append(recs, &kgo.Record{Topic: inTopic, Key: v, Value: v,
			Headers: []kgo.RecordHeader{{Key: "n", Value: v}}})
	}
	require.NoError(t, c.ProduceSync(context.Background(), recs...).FirstErr())
}

// read returns every record of topic, reading until it has want of them
// or waitLimit passed.
func (k *cluster) read(t *testing.T, topic string, want int) []*kgo.Record {
	t.Helper()
	c := k.client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	return readFrom(c, want)
}

// readCommitted reads topic as a read_committed consumer, until it has
// want records or waitLimit passed, and then on until a poll of 500ms
// finds nothing more (so that duplicates beyond want show up too).
func (k *cluster) readCommitted(t *testing.T, topic string, want int) []*kgo.Record {
	t.Helper()
	c := k.client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	out := readFrom(c, want)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		more := c.PollFetches(ctx).Records()
		cancel()
		if len(more) == 0 {
			return out
		}
		out = append(out, more...)
	}
}

func readFrom(c *kgo.Client, want int) []*kgo.Record {
	var out []*kgo.Record
	deadline := time.Now().Add(waitLimit)
	for len(out) < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := c.PollFetches(ctx)
		cancel()
		out = append(out, fs.Records()...)
	}
	return out
}

// member is one worker: a pipeline from the input topic to the output
// topic, with dead letters to the DLQ topic.
type member struct {
	src  *kafkastage.Source
	sink *kafkastage.Sink
	dl   *kafkastage.DeadLetters
	p    *stage.Pipeline
	mu   sync.Mutex
	seen int
}

type process func(ctx context.Context, r *kafkastage.Record, emit func(*kafkastage.Record)) error

func passOn(_ context.Context, r *kafkastage.Record, emit func(*kafkastage.Record)) error {
	emit(r)
	return nil
}

func startMember(t *testing.T, k *cluster, f process, srcOpts []kafkastage.SourceOption, sinkOpts ...kafkastage.SinkOption) *member {
	t.Helper()
	return startMemberWith(t, k, k.opts(), f, srcOpts, sinkOpts...)
}

func startMemberWith(t *testing.T, k *cluster, srcKopts []kgo.Opt, f process, srcOpts []kafkastage.SourceOption, sinkOpts ...kafkastage.SinkOption) *member {
	t.Helper()
	m := &member{
		src:  kafkastage.NewSource(srcKopts, "g", []string{inTopic}, srcOpts...),
		sink: kafkastage.NewSink(k.opts(), outTopic, sinkOpts...),
		dl:   kafkastage.NewDeadLetters(k.opts(), dlqTopic, sinkOpts...),
	}
	count := func(ctx context.Context, r *kafkastage.Record, emit func(*kafkastage.Record)) error {
		m.mu.Lock()
		m.seen++
		m.mu.Unlock()
		return f(ctx, r, emit)
	}
	work := stage.Then(stage.From("in", m.src), "work", stage.TransformFunc[*kafkastage.Record, *kafkastage.Record](count))
	m.p = stage.To(work, "out", m.sink, stage.WithDeadLetter(m.dl.Write))
	require.NoError(t, m.p.Start(context.Background()))
	t.Cleanup(func() {
		m.p.Abort()
		_ = m.p.Wait(context.Background())
		_ = m.dl.Close()
	})
	return m
}

func (m *member) processed() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.seen
}

// stop drains the member and returns the pipeline's error.
func (m *member) stop(t *testing.T) error {
	t.Helper()
	m.p.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	return m.p.Wait(ctx)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func values(recs []*kgo.Record) map[string]int {
	m := make(map[string]int, len(recs))
	for _, r := range recs {
		m[string(r.Value)]++
	}
	return m
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

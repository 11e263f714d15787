package kafkastage_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stagefsm/stagefsm/contrib/kafkastage"
	"github.com/stagefsm/stagefsm/stage"
)

// eosOpts are the client options of exactly-once members: the cluster's,
// and a transaction timeout short enough that the open transaction of a
// killed member is aborted within the test.
func eosOpts(seeds []string) []kgo.Opt {
	return append(memberOpts(seeds), kgo.TransactionTimeout(5*time.Second))
}

// startEOSMember starts a worker in exactly-once mode: its source, sink and
// dead letters share one transactional session.
func startEOSMember(t *testing.T, k *cluster, f process, srcOpts ...kafkastage.SourceOption) *member {
	t.Helper()
	m := newEOSMember(eosOpts(k.addrs), f, srcOpts)
	require.NoError(t, m.p.Start(context.Background()))
	t.Cleanup(func() {
		m.p.Abort()
		_ = m.p.Wait(context.Background())
		_ = m.dl.Close()
	})
	return m
}

func newEOSMember(kopts []kgo.Opt, f process, srcOpts []kafkastage.SourceOption, popts ...stage.Option) *member {
	x := kafkastage.NewExactlyOnce(kopts, "g", []string{inTopic}, srcOpts...)
	m := &member{src: x.Source(), sink: x.Sink(outTopic), dl: x.DeadLetters(dlqTopic)}
	count := func(ctx context.Context, r *kafkastage.Record, emit func(*kafkastage.Record)) error {
		m.mu.Lock()
		m.seen++
		m.mu.Unlock()
		return f(ctx, r, emit)
	}
	work := stage.Then(stage.From("in", m.src), "work", stage.TransformFunc[*kafkastage.Record, *kafkastage.Record](count))
	m.p = stage.To(work, "out", m.sink, append(popts, stage.WithDeadLetter(m.dl.Write))...)
	return m
}

// assertExactlyOnce checks, value by value, that the read_committed output
// of topic holds each of want exactly once and nothing else.
func assertExactlyOnce(t *testing.T, k *cluster, topic string, want []string) {
	t.Helper()
	got := values(k.readCommitted(t, topic, len(want)))
	lost, dup := 0, 0
	for _, v := range want {
		switch c := got[v]; {
		case c == 0:
			lost++
			t.Errorf("%s: lost", v)
		case c > 1:
			dup += c - 1
			t.Errorf("%s: %d times", v, c)
		}
		delete(got, v)
	}
	assert.Empty(t, got, "unexpected outputs")
	assert.Zero(t, lost, "lost")
	assert.Zero(t, dup, "duplicates")
}

func upTo(n int, except ...string) []string {
	out := make([]string, 0, n)
	for i := range n {
		if v := strconv.Itoa(i); !contains(except, v) {
			out = append(out, v)
		}
	}
	return out
}

func contains(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

func TestExactlyOnceCleanRun(t *testing.T) {
	const n = 1000
	k := startCluster(t)
	k.fill(t, 0, n)
	f := func(_ context.Context, r *kafkastage.Record, emit func(*kafkastage.Record)) error {
		if string(r.Value) == "42" {
			return errPoison
		}
		r.Value = append([]byte("out-"), r.Value...)
		emit(r)
		return nil
	}
	m := startEOSMember(t, k, f, kafkastage.WithMaxPoll(100))
	waitUntil(t, "all input committed", func() bool { return m.src.Stats().Committable == n })
	require.NoError(t, m.stop(t))

	want := upTo(n, "42")
	for i := range want {
		want[i] = "out-" + want[i]
	}
	assertExactlyOnce(t, k, outTopic, want)
	assertExactlyOnce(t, k, dlqTopic, []string{"42"})
	st := m.src.Stats()
	assert.EqualValues(t, n, st.Received)
	assert.Zero(t, st.Aborted)
	assert.Zero(t, st.CommitErrors)
	assert.EqualValues(t, n-1, m.sink.Stats().Produced)
	assert.EqualValues(t, 1, m.dl.Stats().Written)
}

func TestExactlyOnceMembersJoinAndLeaveMidStream(t *testing.T) {
	k := startCluster(t)
	filled := 0
	feed := func(what string, cond func() bool) {
		deadline := time.Now().Add(waitLimit)
		for !cond() {
			require.True(t, time.Now().Before(deadline), "timed out waiting for %s", what)
			k.fill(t, filled, 50)
			filled += 50
			time.Sleep(20 * time.Millisecond)
		}
	}
	a := startEOSMember(t, k, passOn, kafkastage.WithMaxPoll(64))
	feed("a under way", func() bool { return a.processed() > 0 })
	b := startEOSMember(t, k, passOn, kafkastage.WithMaxPoll(64))
	feed("b under way", func() bool { return b.processed() > 0 })
	c := startEOSMember(t, k, passOn, kafkastage.WithMaxPoll(64))
	feed("c under way", func() bool { return c.processed() > 0 })
	require.NoError(t, a.stop(t), "a leaves mid-stream")
	k.fill(t, filled, 500)
	filled += 500
	n := filled
	committed := func() uint64 {
		return a.src.Stats().Committable + b.src.Stats().Committable + c.src.Stats().Committable
	}
	waitUntil(t, "all input committed", func() bool { return committed() >= uint64(n) })
	require.NoError(t, b.stop(t))
	require.NoError(t, c.stop(t))
	assert.EqualValues(t, n, committed(), "each input offset committed once")
	assertExactlyOnce(t, k, outTopic, upTo(n))
	aborted := a.src.Stats().Aborted + b.src.Stats().Aborted + c.src.Stats().Aborted
	t.Logf("%d records; processed a=%d b=%d c=%d; aborted and read again %d",
		n, a.processed(), b.processed(), c.processed(), aborted)
}

// The killed member runs in a child process (this test binary, see
// TestMain), which the test kills with SIGKILL: its client neither leaves
// the group nor ends its open transaction.
const (
	killedMemberEnv = "KAFKASTAGE_TEST_KILLED_MEMBER_SEEDS"
	stuckAt         = 60 // the child stops delivering at this offset of a partition
)

func TestExactlyOnceKilledMember(t *testing.T) {
	const n = 2000
	k := startCluster(t)
	k.fill(t, 0, n)

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), killedMemberEnv+"="+strings.Join(k.addrs, ","))
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	var once sync.Once
	kill := func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(kill)
	watchdog := time.AfterFunc(waitLimit, kill) // a child that never gets stuck ends the scan
	defer watchdog.Stop()
	lines := bufio.NewScanner(stdout)
	stuck := false
	for !stuck && lines.Scan() {
		stuck = lines.Text() == "stuck"
	}
	require.True(t, stuck, "the child member got stuck with an open transaction")
	kill()

	survivor := startEOSMember(t, k, passOn, kafkastage.WithMaxPoll(100))
	assertExactlyOnce(t, k, outTopic, upTo(n))
	require.NoError(t, survivor.stop(t))
	assert.Positive(t, survivor.processed())
	// The killed member's open transaction had produced records: they
	// are in the topic, and read_committed skips them.
	all := k.read(t, outTopic, n+1)
	assert.Greater(t, len(all), n, "the killed member's aborted outputs are in the log")
}

// runKilledMember is the child of TestExactlyOnceKilledMember: a member in
// exactly-once mode that, once its open transaction has produced records,
// stops delivering, says "stuck" and waits to be killed.
func runKilledMember() {
	seeds := strings.Split(os.Getenv(killedMemberEnv), ",")
	var m *member
	stuckOnce := make(chan struct{})
	f := func(ctx context.Context, r *kafkastage.Record, emit func(*kafkastage.Record)) error {
		if r.Offset < stuckAt {
			emit(r)
			return nil
		}
		select {
		case <-stuckOnce:
		default:
			close(stuckOnce)
			// Produced within the open transaction: more than committed.
			for m.sink.Stats().Produced <= m.src.Stats().Committable {
				time.Sleep(time.Millisecond)
			}
			fmt.Println("stuck")
		}
		<-ctx.Done()
		return ctx.Err()
	}
	// Batches of one item: what the transform delivered reaches the sink
	// although the transform is stuck.
	m = newEOSMember(eosOpts(seeds), f, []kafkastage.SourceOption{kafkastage.WithMaxPoll(50)},
		stage.WithBatchSize(1))
	if err := m.p.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "killed member:", err)
		os.Exit(2)
	}
	select {}
}

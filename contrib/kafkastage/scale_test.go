package kafkastage_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stagefsm/stagefsm/contrib/kafkastage"
)

// assertNoneLost checks that every input value 0..n-1 is in the output.
func assertNoneLost(t *testing.T, k *cluster, n int) {
	t.Helper()
	got := values(k.read(t, outTopic, n))
	lost := 0
	for i := range n {
		if got[strconv.Itoa(i)] == 0 {
			lost++
		}
	}
	assert.Zero(t, lost, "records lost")
}

func TestRebalanceMembersJoinAndLeaveMidStream(t *testing.T) {
	k := startCluster(t)
	filled := 0
	// feed fills the input, 50 records at a time, until cond holds: a new
	// member gets records only once the group has given it partitions.
	feed := func(what string, cond func() bool) {
		deadline := time.Now().Add(waitLimit)
		for !cond() {
			require.True(t, time.Now().Before(deadline), "timed out waiting for %s", what)
			k.fill(t, filled, 50)
			filled += 50
			time.Sleep(20 * time.Millisecond)
		}
	}
	a := startMember(t, k, passOn, nil)
	feed("a under way", func() bool { return a.processed() > 0 })
	b := startMember(t, k, passOn, nil)
	feed("b under way", func() bool { return b.processed() > 0 })
	c := startMember(t, k, passOn, nil)
	feed("c under way", func() bool { return c.processed() > 0 })
	require.NoError(t, a.stop(t), "a leaves mid-stream")
	k.fill(t, filled, 500)
	filled += 500
	n := filled
	waitUntil(t, "all input committable", func() bool {
		return b.src.Stats().Committable+c.src.Stats().Committable+a.src.Stats().Committable >= uint64(n)
	})
	require.NoError(t, b.stop(t))
	require.NoError(t, c.stop(t))
	assertNoneLost(t, k, n)
	t.Logf("%d records; processed a=%d b=%d c=%d", n, a.processed(), b.processed(), c.processed())
}

func TestKilledMemberLosesNothing(t *testing.T) {
	const n = 2000
	k := startCluster(t)
	k.fill(t, 0, n)
	// A static member does not leave the group when its client closes:
	// the group notices only when its session expires, as for a crash.
	killedOpts := append(k.opts(), kgo.InstanceID("killed"))
	// It dies with records in hand: from offset 75 of a partition on, it stops delivering.
	stuck := func(ctx context.Context, r *kafkastage.Record, emit func(*kafkastage.Record)) error {
		if r.Offset >= 75 {
			<-ctx.Done()
			return ctx.Err()
		}
		emit(r)
		return nil
	}
	killed := startMemberWith(t, k, killedOpts, stuck, nil)
	waitUntil(t, "killed member under way", func() bool { return killed.processed() > 0 })
	waitUntil(t, "killed member stuck", func() bool { return killed.processed() > 0 })
	killed.p.Abort() // in-flight records are dropped, their offsets stay uncommitted
	_ = killed.p.Wait(t.Context())
	survivor := startMember(t, k, passOn, nil)
	waitUntil(t, "the rest committable", func() bool {
		return killed.src.Stats().Committable+survivor.src.Stats().Committable >= n
	})
	require.NoError(t, survivor.stop(t))
	assertNoneLost(t, k, n)
	assert.Less(t, killed.src.Stats().Committable, uint64(n), "the killed member left records uncommitted")
	assert.Positive(t, killed.src.Stats().Released)
	assert.Positive(t, survivor.processed())
}

package natsstage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/contrib/natsstage"
	"github.com/stagefsm/stagefsm/stage"
)

// openSource opens a Source on the test consumer, as a stage would; the
// test calls its methods from its own goroutine, as the stage does from
// its. The Source is closed when the test ends.
func openSource(t *testing.T, js jetstream.JetStream, opts ...natsstage.SourceOption) *natsstage.Source {
	t.Helper()
	src := natsstage.NewSource(js, inStream, durable, opts...)
	require.NoError(t, src.Open(context.Background()))
	t.Cleanup(func() { _ = src.Close() })
	return src
}

// next calls Next until the source has emitted n messages (at least)
// and returns them.
func next(t *testing.T, src *natsstage.Source, n int) []*natsstage.Msg {
	t.Helper()
	var got []*natsstage.Msg
	deadline := time.Now().Add(waitLimit)
	for len(got) < n {
		require.True(t, time.Now().Before(deadline), "still waiting for %d messages, got %d", n, len(got))
		require.NoError(t, src.Next(context.Background(), func(m *natsstage.Msg) { got = append(got, m) }))
	}
	return got
}

// pending returns the test consumer's counts of messages not delivered
// and delivered but not acknowledged.
func pending(t *testing.T, js jetstream.JetStream) (notDelivered, unacked int) {
	t.Helper()
	cons, err := js.Consumer(context.Background(), inStream, durable)
	require.NoError(t, err)
	info := cons.CachedInfo()
	return int(info.NumPending), info.NumAckPending
}

// waitPending waits until the test consumer has unacked messages delivered
// and not acknowledged, and none undelivered (acknowledgements are sent
// without waiting for an answer, so they take effect a little later).
func waitPending(t *testing.T, js jetstream.JetStream, unacked int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d unacknowledged", unacked), func() bool {
		n, u := pending(t, js)
		return n == 0 && u == unacked
	})
}

func ids(ms []*natsstage.Msg) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func inputIDs(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s:%d", inStream, i))
	}
	return out
}

func TestSourceAcknowledgesOnCommit(t *testing.T) {
	_, js := startServer(t).connect(t)
	setup(t, js, jetstream.ConsumerConfig{AckWait: time.Minute})
	publishInput(t, js, 10)
	src := openSource(t, js, natsstage.WithAckOnCommit(true), natsstage.WithPrefetch(4))

	first := next(t, src, 1)
	require.Less(t, len(first), 10, "the prefetch limits what one Next emits")
	p1, err := src.Position()
	require.NoError(t, err)
	rest := next(t, src, 10-len(first))
	p2, err := src.Position()
	require.NoError(t, err)
	assert.Equal(t, inputIDs(1, 10), ids(append(first, rest...)), "in stream order, once each")
	_, unacked := pending(t, js)
	assert.Equal(t, 10, unacked, "nothing acknowledged before a commit")

	require.NoError(t, src.Commit(context.Background(), p1))
	waitPending(t, js, 10-len(first)) // the messages up to the first position are acknowledged
	require.NoError(t, src.Commit(context.Background(), p1), "a commit again is harmless")
	require.NoError(t, src.Commit(context.Background(), p2))
	waitPending(t, js, 0)
	assert.Equal(t, uint64(10), src.Stats().Acked)
}

func TestSourceResumeSkipsWhatTheCheckpointCovers(t *testing.T) {
	_, js := startServer(t).connect(t)
	setup(t, js, jetstream.ConsumerConfig{AckWait: time.Minute})
	publishInput(t, js, 10)

	// Worker A emits some messages, its checkpoint records the position
	// after the first of them, and it stops before the commit.
	a := natsstage.NewSource(js, inStream, durable, natsstage.WithAckOnCommit(true), natsstage.WithPrefetch(4))
	require.NoError(t, a.Open(context.Background()))
	covered := next(t, a, 1)
	require.Less(t, len(covered), 10, "the prefetch limits what one Next emits")
	pos, err := a.Position()
	require.NoError(t, err)
	next(t, a, 10-len(covered))
	require.NoError(t, a.Close())
	assert.Equal(t, uint64(10), a.Stats().Released, "handed back: no checkpoint was stored")

	// Worker B resumes from that position: it emits the rest, once.
	b := openSource(t, js, natsstage.WithAckOnCommit(true))
	require.NoError(t, b.Resume(context.Background(), pos))
	got := next(t, b, 10-len(covered))
	assert.Equal(t, inputIDs(len(covered)+1, 10), ids(got))
	st := b.Stats()
	assert.Equal(t, uint64(len(covered)), st.Skipped)
	assert.Equal(t, uint64(len(covered)), st.Acked, "the covered ones are acknowledged at once")
	p, err := b.Position()
	require.NoError(t, err)
	require.NoError(t, b.Commit(context.Background(), p))
	waitPending(t, js, 0)
}

// TestSourceResumeAfterAKilledWorker resumes after a worker that died
// without handing anything back: its successor gets the new messages at
// once and the dead worker's only after the AckWait, out of stream order,
// and must still emit exactly those the checkpoint does not cover.
func TestSourceResumeAfterAKilledWorker(t *testing.T) {
	ns := startServer(t)
	_, js := ns.connect(t)
	setup(t, js, jetstream.ConsumerConfig{AckWait: 2 * time.Second})
	publishInput(t, js, 10)

	ncA, jsA := ns.connect(t)
	a := natsstage.NewSource(jsA, inStream, durable, natsstage.WithAckOnCommit(true), natsstage.WithPrefetch(4))
	require.NoError(t, a.Open(context.Background()))
	covered := next(t, a, 1)
	require.Less(t, len(covered), 10, "the prefetch limits what one Next emits")
	pos, err := a.Position()
	require.NoError(t, err)
	next(t, a, 10-len(covered))
	ncA.Close() // killed: nothing acknowledged, nothing handed back
	require.NoError(t, a.Close())

	for i := 10; i < 15; i++ {
		_, err := js.Publish(context.Background(), "in.x", []byte(fmt.Sprint(i)))
		require.NoError(t, err)
	}
	b := openSource(t, js, natsstage.WithAckOnCommit(true))
	require.NoError(t, b.Resume(context.Background(), pos))
	got := next(t, b, 15-len(covered))
	assert.ElementsMatch(t, inputIDs(len(covered)+1, 15), ids(got), "each message the checkpoint does not cover, once")
	assert.Equal(t, inputIDs(11, 15), ids(got[:5]), "the new messages came first")
	waitUntil(t, "the covered redeliveries", func() bool {
		require.NoError(t, b.Next(context.Background(), func(m *natsstage.Msg) { t.Errorf("emitted %s again", m.ID) }))
		return b.Stats().Skipped == uint64(len(covered))
	})
	p, err := b.Position()
	require.NoError(t, err)
	require.NoError(t, b.Commit(context.Background(), p))
	waitPending(t, js, 0)
	require.NoError(t, b.Commit(context.Background(), p)) // the acknowledgements have arrived: the floor moves
	p2, err := b.Position()
	require.NoError(t, err)
	assert.Less(t, len(p2), len(p), "the acknowledgement floor shortens the position")
}

func TestSourceSkipsARedeliveryItHolds(t *testing.T) {
	_, js := startServer(t).connect(t)
	setup(t, js, jetstream.ConsumerConfig{AckWait: 200 * time.Millisecond})
	publishInput(t, js, 5)
	src := openSource(t, js, natsstage.WithAckOnCommit(true))
	got := next(t, src, 5)
	assert.Equal(t, inputIDs(1, 5), ids(got))

	// The AckWait passes before the checkpoint: JetStream redelivers
	// what the source holds, and the source does not emit it again.
	waitUntil(t, "the redeliveries", func() bool {
		require.NoError(t, src.Next(context.Background(), func(m *natsstage.Msg) {
			t.Errorf("emitted %s twice", m.ID)
		}))
		return src.Stats().Skipped >= 5
	})
	p, err := src.Position()
	require.NoError(t, err)
	require.NoError(t, src.Commit(context.Background(), p))
	waitPending(t, js, 0)
}

func TestSourcePositionErrors(t *testing.T) {
	_, js := startServer(t).connect(t)
	setup(t, js, jetstream.ConsumerConfig{})
	ctx := context.Background()

	plain := openSource(t, js)
	_, err := plain.Position()
	require.ErrorIs(t, err, natsstage.ErrPosition, "without WithAckOnCommit")
	require.ErrorIs(t, plain.Resume(ctx, []byte("IN/workers:1")), natsstage.ErrPosition)
	require.ErrorIs(t, plain.Commit(ctx, []byte("IN/workers:1")), natsstage.ErrPosition)

	src := natsstage.NewSource(js, inStream, durable, natsstage.WithAckOnCommit(true))
	other := natsstage.NewSource(js, inStream, "another", natsstage.WithAckOnCommit(true))
	pos, err := other.Position()
	require.NoError(t, err)
	for _, bad := range [][]byte{nil, []byte("garbage"), []byte("IN/workers:x"), []byte("IN/workers:-1"), pos} {
		assert.ErrorIs(t, src.Resume(ctx, bad), natsstage.ErrPosition, "%q", bad)
		assert.ErrorIs(t, src.Commit(ctx, bad), natsstage.ErrPosition, "%q", bad)
	}
}

func TestSourceOnCommitTerminatesRejects(t *testing.T) {
	_, js := startServer(t).connect(t)
	setup(t, js, jetstream.ConsumerConfig{AckWait: time.Minute})
	publishInput(t, js, 2)
	src := openSource(t, js, natsstage.WithAckOnCommit(true), natsstage.WithRetry(3, 0))
	got := next(t, src, 2)

	var dead []stage.Item[any]
	dl := natsstage.DeadLetter(func(it stage.Item[any]) { dead = append(dead, it) })
	rejected := errors.New("rejected")
	dl(stage.Item[any]{Payload: got[0], Err: rejected})
	require.Len(t, dead, 1, "terminated and passed on, not retried behind the position")
	assert.ErrorIs(t, dead[0].Err, rejected)
	assert.Equal(t, uint64(1), src.Stats().Terminated)

	p, err := src.Position()
	require.NoError(t, err)
	require.NoError(t, src.Commit(context.Background(), p))
	st := src.Stats()
	assert.Equal(t, uint64(1), st.Acked, "the terminated message is not acknowledged again")
	waitPending(t, js, 0)
}

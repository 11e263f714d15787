package natsstage_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/contrib/natsstage"
	"github.com/stagefsm/stagefsm/stage"
)

// testPrefetch keeps each worker's share small, so that work spreads.
var testSource = []natsstage.SourceOption{natsstage.WithPrefetch(64)}

func TestThreeWorkersOutputEachMessageOnce(t *testing.T) {
	const n = 3000
	ns := startServer(t)
	_, js := ns.connect(t)
	setup(t, js, jetstream.ConsumerConfig{})
	var workers []*worker
	for _, name := range []string{"w1", "w2", "w3"} {
		_, wjs := ns.connect(t) // one connection per worker, as on separate machines
		workers = append(workers, startWorker(t, wjs, name, passOn, testSource, nil))
	}
	publishInput(t, js, n)
	waitUntil(t, "all input processed", settled(t, js, n))
	for _, w := range workers {
		require.NoError(t, w.drain(t))
		assert.NotZero(t, w.src.Stats().Received, "worker %s got work", w.name)
		assert.Empty(t, w.dead.all(), "no dead letters")
		assert.Zero(t, w.src.Stats().SettleErrors)
	}
	requireExactlyOnce(t, js, n)
}

func TestKilledWorkerLosesNothing(t *testing.T) {
	const n, killAt = 3000, 200
	ns := startServer(t)
	_, js := ns.connect(t)
	setup(t, js, jetstream.ConsumerConfig{})
	reached := make(chan struct{})
	// The victim takes its killAt-th message and hangs on it, unacknowledged,
	// until it is killed.
	victimWork := func(ctx context.Context, w *worker, k int64, m *natsstage.Msg, emit func(*natsstage.Msg)) error {
		if k == killAt {
			close(reached)
			<-ctx.Done()
			return ctx.Err()
		}
		return passOn(ctx, w, k, m, emit)
	}
	var survivors []*worker
	_, js1 := ns.connect(t)
	survivors = append(survivors, startWorker(t, js1, "w1", passOn, testSource, nil))
	victimConn, js2 := ns.connect(t)
	victim := startWorker(t, js2, "w2", victimWork, testSource, nil)
	_, js3 := ns.connect(t)
	survivors = append(survivors, startWorker(t, js3, "w3", passOn, testSource, nil))

	publishInput(t, js, n)
	<-reached
	// A crash: the connection goes first, so the victim settles nothing;
	// JetStream redelivers its messages after the consumer's AckWait.
	victimConn.Close()
	victim.p.Abort()
	require.Error(t, victim.wait(t))

	waitUntil(t, "all input processed", settled(t, js, n))
	var redelivered uint64
	for _, w := range survivors {
		require.NoError(t, w.drain(t))
		redelivered += w.src.Stats().Redelivered
	}
	assert.NotZero(t, redelivered, "the victim's messages went to the survivors")
	requireExactlyOnce(t, js, n)
}

func TestAbortedWorkerHandsItsMessagesBack(t *testing.T) {
	const n, abortAt = 2000, 200
	ns := startServer(t)
	_, js := ns.connect(t)
	// An AckWait longer than the test: only the messages handed back come
	// back in time.
	setup(t, js, jetstream.ConsumerConfig{AckWait: 2 * waitLimit})
	reached := make(chan struct{})
	victimWork := func(ctx context.Context, w *worker, k int64, m *natsstage.Msg, emit func(*natsstage.Msg)) error {
		if k == abortAt {
			close(reached)
			<-ctx.Done()
			return ctx.Err()
		}
		return passOn(ctx, w, k, m, emit)
	}
	_, js1 := ns.connect(t)
	victim := startWorker(t, js1, "victim", victimWork, testSource, nil)
	publishInput(t, js, n)
	<-reached
	victim.p.Abort()
	require.ErrorIs(t, victim.wait(t), stage.ErrAborted)
	st := victim.src.Stats()
	assert.NotZero(t, st.Released, "the victim handed messages back")
	assert.Zero(t, st.SettleErrors)
	assert.Empty(t, victim.dead.all(), "nothing is dead")
	t.Logf("victim: %+v %+v", st, victim.sink.Stats())

	_, js2 := ns.connect(t)
	survivor := startWorker(t, js2, "survivor", passOn, testSource, nil)
	waitUntil(t, "all input processed", settled(t, js, n))
	require.NoError(t, survivor.drain(t))
	assert.NotZero(t, survivor.src.Stats().Redelivered)
	requireExactlyOnce(t, js, n)
}

package natsstage_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/contrib/natsstage"
	"github.com/stagefsm/stagefsm/stage"
)

// signalAt returns a process that passes messages on and closes reached
// when the worker takes its k-th message.
func signalAt(k int64, reached chan struct{}) process {
	return func(ctx context.Context, w *worker, n int64, m *natsstage.Msg, emit func(*natsstage.Msg)) error {
		if n == k {
			close(reached)
		}
		return passOn(ctx, w, n, m, emit)
	}
}

func TestServerRestartIsSurvived(t *testing.T) {
	const n, restartAt = 2000, 300
	ns := startServer(t)
	_, js := ns.connect(t)
	setup(t, js, jetstream.ConsumerConfig{})
	reached := make(chan struct{})
	budget := natsstage.WithMaxOutage(waitLimit)
	srcOpts := append([]natsstage.SourceOption{budget}, testSource...)
	sinkOpts := []natsstage.SinkOption{budget}
	var workers []*worker
	_, js1 := ns.connect(t)
	workers = append(workers, startWorker(t, js1, "w1", signalAt(restartAt, reached), srcOpts, sinkOpts))
	_, js2 := ns.connect(t)
	workers = append(workers, startWorker(t, js2, "w2", passOn, srcOpts, sinkOpts))

	publishInput(t, js, n)
	<-reached
	ns.restart() // same port, same store: the streams and the consumer come back

	waitUntil(t, "all input processed", settled(t, js, n))
	for _, w := range workers {
		require.NoError(t, w.drain(t), "worker %s rode out the restart", w.name)
		t.Logf("%s: %+v %+v %+v", w.name, w.src.Stats(), w.sink.Stats(), w.p.Stats().Delivered)
	}
	requireExactlyOnce(t, js, n)
}

func TestOutageBeyondBudgetIsReported(t *testing.T) {
	const n, stopAt = 1000, 100
	ns := startServer(t)
	_, js := ns.connect(t)
	setup(t, js, jetstream.ConsumerConfig{})
	reached := make(chan struct{})
	budget := natsstage.WithMaxOutage(200 * time.Millisecond)
	srcOpts := append([]natsstage.SourceOption{budget}, testSource...)
	_, wjs := ns.connect(t)
	w := startWorker(t, wjs, "w1", signalAt(stopAt, reached), srcOpts, []natsstage.SinkOption{budget})

	publishInput(t, js, n)
	<-reached
	ns.stop() // and it does not come back

	err := w.wait(t)
	assert.ErrorIs(t, err, natsstage.ErrUnavailable)
	var se *stage.Error
	assert.ErrorAs(t, err, &se)
	assert.Empty(t, w.dead.all(), "the messages in flight are handed back, not dead")
	t.Logf("%v\n%+v %+v", err, w.src.Stats(), w.sink.Stats())
}

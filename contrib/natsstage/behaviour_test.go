package natsstage_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/contrib/natsstage"
	"github.com/stagefsm/stagefsm/stage"
)

var errPoison = errors.New("poison")

func TestRejectedMessageIsRetriedThenTerminated(t *testing.T) {
	const n, poison, retries = 100, "42", 2
	ns := startServer(t)
	_, js := ns.connect(t)
	setup(t, js, jetstream.ConsumerConfig{MaxDeliver: retries + 2})
	var seen []uint64 // Delivered of each attempt at the poison message
	reject := func(ctx context.Context, w *worker, k int64, m *natsstage.Msg, emit func(*natsstage.Msg)) error {
		if string(m.Data) == poison {
			seen = append(seen, m.Delivered)
			assert.Equal(t, m.Delivered > 1, m.Redelivered())
			return errPoison
		}
		return passOn(ctx, w, k, m, emit)
	}
	w := startWorker(t, js, "w1", reject,
		[]natsstage.SourceOption{natsstage.WithRetry(retries, 10*time.Millisecond)}, nil)
	publishInput(t, js, n)
	waitUntil(t, "the poison message given up", func() bool { return len(w.dead.all()) > 0 })
	waitUntil(t, "all input processed", settled(t, js, n-1))
	require.NoError(t, w.drain(t))

	assert.Equal(t, []uint64{1, 2, 3}, seen, "tried, retried twice, then given up")
	dead := w.dead.all()
	require.Len(t, dead, 1)
	assert.ErrorIs(t, dead[0].Err, errPoison)
	m, ok := dead[0].Payload.(*natsstage.Msg)
	require.True(t, ok)
	assert.Equal(t, poison, string(m.Data))
	assert.True(t, m.Redelivered())
	st := w.src.Stats()
	assert.EqualValues(t, retries, st.Retried)
	assert.EqualValues(t, 1, st.Terminated)
	assert.EqualValues(t, n-1, w.sink.Stats().Published)
	bodies, _ := output(t, js)
	assert.Len(t, bodies, n-1)
	assert.NotContains(t, bodies, poison)
}

func TestTransformFiltersAndFansOut(t *testing.T) {
	const n = 200
	ns := startServer(t)
	_, js := ns.connect(t)
	setup(t, js, jetstream.ConsumerConfig{AckWait: 2 * waitLimit}) // no redelivery can help
	// Even numbers are dropped, odd ones split in two.
	split := func(_ context.Context, _ *worker, _ int64, m *natsstage.Msg, emit func(*natsstage.Msg)) error {
		i, err := strconv.Atoi(string(m.Data))
		if err != nil {
			return err
		}
		if i%2 == 1 {
			emit(&natsstage.Msg{Data: []byte(m.ID + " a")})
			emit(&natsstage.Msg{Data: []byte(m.ID + " b"), ID: "custom-" + m.ID})
		}
		return nil
	}
	w := startWorker(t, js, "w1", split, nil, nil)
	publishInput(t, js, n)
	waitUntil(t, "all input acknowledged", settled(t, js, n))
	require.NoError(t, w.drain(t))
	st := w.src.Stats()
	assert.EqualValues(t, n, st.Acked, "dropped and split inputs are acknowledged alike")
	bodies, ids := output(t, js)
	assert.Len(t, bodies, n)
	assert.Len(t, ids, n)
	for id := range ids {
		assert.Regexp(t, `^(IN:\d+/1|custom-IN:\d+)$`, id)
	}
}

func TestOpenChecksTheConsumerAndTheStream(t *testing.T) {
	ns := startServer(t)
	_, js := ns.connect(t)
	setup(t, js, jetstream.ConsumerConfig{MaxDeliver: 3})
	ctx := context.Background()
	_, err := js.CreateOrUpdateConsumer(ctx, inStream, jetstream.ConsumerConfig{
		Durable: "acknone", AckPolicy: jetstream.AckNonePolicy})
	require.NoError(t, err)
	sink := func() *natsstage.Sink { return natsstage.NewSink(js, outSubj) }
	for name, tc := range map[string]struct {
		src  *natsstage.Source
		sink *natsstage.Sink
		want error
	}{
		"ack none":          {natsstage.NewSource(js, inStream, "acknone"), sink(), natsstage.ErrUnsupportedConsumer},
		"retries too many":  {natsstage.NewSource(js, inStream, durable, natsstage.WithRetry(3, 0)), sink(), natsstage.ErrUnsupportedConsumer},
		"no such consumer":  {natsstage.NewSource(js, inStream, "nobody"), sink(), jetstream.ErrConsumerNotFound},
		"no stream to sink": {natsstage.NewSource(js, inStream, durable), natsstage.NewSink(js, "nowhere"), jetstream.ErrStreamNotFound},
	} {
		t.Run(name, func(t *testing.T) {
			p := stage.To(stage.From("in", tc.src), "out", tc.sink)
			err := p.Start(ctx)
			assert.ErrorIs(t, err, tc.want)
			var se *stage.Error
			assert.ErrorAs(t, err, &se)
		})
	}
}

func TestInvalidMessagesAreDeadLettered(t *testing.T) {
	ns := startServer(t)
	_, js := ns.connect(t)
	setup(t, js, jetstream.ConsumerConfig{})
	msgs := []*natsstage.Msg{{ID: "a", Data: []byte("ok")}, nil, {Data: []byte("no id")}}
	i := 0
	src := stage.SourceFunc[*natsstage.Msg](func(_ context.Context, emit func(*natsstage.Msg)) error {
		if i == len(msgs) {
			return errEOF
		}
		emit(msgs[i])
		i++
		return nil
	})
	dead := &deadLetters{}
	sink := natsstage.NewSink(js, outSubj)
	p := stage.To(stage.From("made", src), "out", sink, stage.WithDeadLetter(natsstage.DeadLetter(dead.add)))
	require.NoError(t, p.Start(context.Background()))
	require.NoError(t, p.Wait(context.Background()))
	letters := dead.all()
	require.Len(t, letters, 2)
	for _, it := range letters {
		assert.ErrorIs(t, it.Err, natsstage.ErrInvalidMsg)
	}
	assert.EqualValues(t, 1, sink.Stats().Published, "a message no source read is published too")
}

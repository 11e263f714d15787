package natsstage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/contrib/natsstage"
	"github.com/stagefsm/stagefsm/stage"
)

// The streams and the durable consumer every test uses.
const (
	inStream  = "IN"
	outStream = "OUT"
	durable   = "workers"
	outSubj   = "out.done"
)

// waitLimit guards every wait on the embedded server against a hang. The
// tests do not time anything: they wait for a condition, and fail only if
// it never comes.
const waitLimit = 30 * time.Second

// natsServer is an embedded JetStream server on a random loopback port
// with its store in a temporary directory; it can be restarted on the same
// port and store.
type natsServer struct {
	t    *testing.T
	dir  string
	port int
	s    *server.Server
}

func startServer(t *testing.T) *natsServer {
	t.Helper()
	ns := &natsServer{t: t, dir: t.TempDir(), port: server.RANDOM_PORT}
	ns.start()
	ns.port = ns.s.Addr().(*net.TCPAddr).Port
	t.Cleanup(ns.stop)
	return ns
}

func (ns *natsServer) start() {
	ns.t.Helper()
	s, err := server.NewServer(&server.Options{
		ServerName: "natsstage-test",
		Host:       "127.0.0.1",
		Port:       ns.port,
		JetStream:  true,
		StoreDir:   ns.dir,
		NoLog:      true,
		NoSigs:     true,
	})
	require.NoError(ns.t, err)
	s.Start()
	require.True(ns.t, s.ReadyForConnections(waitLimit), "server ready")
	ns.s = s
}

// stop shuts the server down and waits until it has.
func (ns *natsServer) stop() {
	if ns.s != nil {
		ns.s.Shutdown()
		ns.s.WaitForShutdown()
		ns.s = nil
	}
}

func (ns *natsServer) restart() {
	ns.t.Helper()
	ns.stop()
	ns.start()
}

func (ns *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", ns.port) }

// connect opens a connection that reconnects quickly and forever, and a
// JetStream context on it; both are closed when the test ends.
func (ns *natsServer) connect(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(ns.url(),
		nats.ReconnectWait(20*time.Millisecond),
		nats.MaxReconnects(-1),
		nats.NoCallbacksAfterClientClose())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(2*time.Second))
	require.NoError(t, err)
	return nc, js
}

// setup creates the input and output streams and the durable consumer of
// the input.
func setup(t *testing.T, js jetstream.JetStream, cfg jetstream.ConsumerConfig) {
	t.Helper()
	ctx := context.Background()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: inStream, Subjects: []string{"in.>"}})
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: outStream, Subjects: []string{"out.>"}})
	require.NoError(t, err)
	cfg.Durable = durable
	if cfg.AckPolicy == jetstream.AckNonePolicy {
		cfg.AckPolicy = jetstream.AckExplicitPolicy
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = time.Second
	}
	_, err = js.CreateOrUpdateConsumer(ctx, inStream, cfg)
	require.NoError(t, err)
}

// publishInput publishes the messages "0" … "n-1" to the input stream.
func publishInput(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	for i := range n {
		_, err := js.PublishAsync("in."+strconv.Itoa(i%8), []byte(strconv.Itoa(i)))
		require.NoError(t, err)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(waitLimit):
		t.Fatal("input not acknowledged")
	}
}

// worker is one pipeline: JetStream source, a transform that marks each
// message as processed by the worker, JetStream sink.
type worker struct {
	name      string
	src       *natsstage.Source
	sink      *natsstage.Sink
	p         *stage.Pipeline
	processed atomic.Int64
	dead      *deadLetters
}

// process is a worker's transform body; n is how many messages the worker
// processed, this one included.
type process func(ctx context.Context, w *worker, n int64, m *natsstage.Msg, emit func(*natsstage.Msg)) error

// passOn processes a message by upper-casing nothing: it passes it on with
// a header naming the worker.
func passOn(_ context.Context, w *worker, _ int64, m *natsstage.Msg, emit func(*natsstage.Msg)) error {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header.Set("Worker", w.name)
	emit(m)
	return nil
}

func startWorker(t *testing.T, js jetstream.JetStream, name string, f process,
	srcOpts []natsstage.SourceOption, sinkOpts []natsstage.SinkOption) *worker {
	t.Helper()
	w := &worker{name: name, dead: &deadLetters{}}
	w.src = natsstage.NewSource(js, inStream, durable, srcOpts...)
	w.sink = natsstage.NewSink(js, outSubj, sinkOpts...)
	work := natsstage.Transform(func(ctx context.Context, m *natsstage.Msg, emit func(*natsstage.Msg)) error {
		return f(ctx, w, w.processed.Add(1), m, emit)
	})
	w.p = stage.To(stage.Then(stage.From("in", w.src), "work", work), "out", w.sink,
		stage.WithName(name), stage.WithBatchSize(32),
		stage.WithDeadLetter(natsstage.DeadLetter(w.dead.add)))
	require.NoError(t, w.p.Start(context.Background()))
	t.Cleanup(func() {
		w.p.Abort()
		_ = w.p.Wait(context.Background())
	})
	return w
}

// drain drains the worker's pipeline and returns how it ended.
func (w *worker) drain(t *testing.T) error {
	t.Helper()
	w.p.Drain()
	return w.wait(t)
}

// wait waits for the worker's pipeline to end and returns how it ended.
func (w *worker) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-w.p.Done():
	case <-time.After(waitLimit):
		t.Fatalf("worker %s still running after %v", w.name, waitLimit)
	}
	return w.p.Wait(context.Background())
}

// deadLetters records what reaches a pipeline's dead-letter function after
// natsstage.DeadLetter.
type deadLetters struct {
	mu    sync.Mutex
	items []stage.Item[any]
}

func (d *deadLetters) add(it stage.Item[any]) {
	d.mu.Lock()
	d.items = append(d.items, it)
	d.mu.Unlock()
}

func (d *deadLetters) all() []stage.Item[any] {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]stage.Item[any](nil), d.items...)
}

// waitUntil waits for cond, polling; it fails the test after waitLimit.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after %v", what, waitLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settled reports whether the durable consumer has delivered and seen
// acknowledged every input message, and the output stream holds want
// messages.
func settled(t *testing.T, js jetstream.JetStream, want uint64) func() bool {
	return func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ci, err := js.Consumer(ctx, inStream, durable)
		if err != nil {
			return false
		}
		info := ci.CachedInfo()
		st, err := js.Stream(ctx, outStream)
		if err != nil {
			return false
		}
		return info.NumPending == 0 && info.NumAckPending == 0 && st.CachedInfo().State.Msgs >= want
	}
}

// output reads the whole output stream: how many times each body occurs,
// and the message ids.
func output(t *testing.T, js jetstream.JetStream) (bodies map[string]int, ids map[string]int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	st, err := js.Stream(ctx, outStream)
	require.NoError(t, err)
	total := st.CachedInfo().State.Msgs
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	bodies, ids = map[string]int{}, map[string]int{}
	for read := uint64(0); read < total; {
		batch, err := cons.Fetch(int(min(500, total-read)), jetstream.FetchMaxWait(waitLimit))
		require.NoError(t, err)
		for m := range batch.Messages() {
			bodies[string(m.Data())]++
			ids[m.Headers().Get(jetstream.MsgIDHeader)]++
			read++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			require.NoError(t, err)
		}
	}
	return bodies, ids
}

// requireExactlyOnce checks that the output stream holds each of the n
// input messages exactly once.
func requireExactlyOnce(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	bodies, ids := output(t, js)
	require.Len(t, bodies, n, "distinct outputs")
	for i := range n {
		require.Equal(t, 1, bodies[strconv.Itoa(i)], "output of input %d", i)
	}
	require.Len(t, ids, n, "distinct message ids")
}

// errEOF ends a hand-written source.
var errEOF = io.EOF

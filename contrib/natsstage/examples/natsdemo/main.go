// Command natsdemo runs stage pipelines as workers over NATS JetStream and
// measures them: it fills an input stream, starts N workers that share one
// durable consumer (each a stage.Pipeline with its own connection, as if on
// its own machine), waits until every message is in the output stream,
// then prints per-worker counts, end-to-end totals and the throughput.
//
// By default it starts an embedded JetStream server on a random loopback
// port with its store in a temporary directory; -server nats://host:port
// uses a running server instead. The demo (re)creates the streams
// DEMO_IN and DEMO_OUT there, deleting any previous ones.
//
// -workers takes a list: "-workers 1,3 -rounds 3" measures 1 and 3 workers,
// interleaved, three times each, and prints the median throughput of each
// and its ratio to the first. Each worker upper-cases the payload; -hash N
// adds N rounds of SHA-256 per message, to play a CPU-bound stage.
//
//	go run ./examples/natsdemo -workers 1,3 -rounds 3 -messages 50000
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stagefsm/stagefsm/contrib/natsstage"
	"github.com/stagefsm/stagefsm/stage"
)

const (
	inStream  = "DEMO_IN"
	outStream = "DEMO_OUT"
	inSubj    = "demo.in"
	outSubj   = "demo.out"
	durable   = "demo-workers"
)

type config struct {
	url      string
	workers  []int
	rounds   int
	messages int
	size     int
	prefetch int
	inFlight int
	hash     int
	limit    time.Duration
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "natsdemo:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("natsdemo", flag.ContinueOnError)
	var c config
	var workers string
	fs.StringVar(&c.url, "server", "", "NATS server URL (nats://host:port); empty starts an embedded server")
	fs.StringVar(&workers, "workers", "3", "number of workers, or a comma-separated list of numbers to compare")
	fs.IntVar(&c.rounds, "rounds", 1, "runs of each worker count, interleaved")
	fs.IntVar(&c.messages, "messages", 20000, "messages to process per run")
	fs.IntVar(&c.size, "size", 128, "payload size in bytes")
	fs.IntVar(&c.prefetch, "prefetch", 256, "messages each worker pulls ahead")
	fs.IntVar(&c.inFlight, "inflight", 256, "publishes each worker keeps in flight")
	fs.IntVar(&c.hash, "hash", 0, "CPU work per message: rounds of SHA-256 over the payload")
	fs.DurationVar(&c.limit, "timeout", 2*time.Minute, "give up a run after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for f := range strings.SplitSeq(workers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-workers: %q is not a positive number", f)
		}
		c.workers = append(c.workers, n)
	}
	if c.rounds < 1 || c.messages < 1 || c.size < 1 || c.hash < 0 {
		return errors.New("-rounds, -messages and -size must be positive, -hash not negative")
	}

	if c.url == "" {
		srv, dir, err := embedded()
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
		c.url = srv.ClientURL()
		fmt.Fprintf(out, "embedded JetStream server at %s, store in %s\n", c.url, dir)
	}

	rates := map[int][]float64{}
	for round := 1; round <= c.rounds; round++ {
		for _, n := range c.workers {
			fmt.Fprintf(out, "\n== round %d, %d worker(s), %d messages of %d bytes, %d hash rounds each\n",
				round, n, c.messages, c.size, c.hash)
			rate, err := measure(c, n, out)
			if err != nil {
				return err
			}
			rates[n] = append(rates[n], rate)
		}
	}
	if len(c.workers) > 1 || c.rounds > 1 {
		fmt.Fprintf(out, "\n== summary (median of %d round(s))\n", c.rounds)
		base := median(rates[c.workers[0]])
		for _, n := range c.workers {
			m := median(rates[n])
			fmt.Fprintf(out, "%d worker(s): %8.0f msgs/s  (%.2fx %d worker(s))\n", n, m, m/base, c.workers[0])
		}
	}
	return nil
}

// embedded starts a JetStream server on a random loopback port with its
// store in a new temporary directory.
func embedded() (*server.Server, string, error) {
	dir, err := os.MkdirTemp("", "natsdemo-")
	if err != nil {
		return nil, "", err
	}
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		os.RemoveAll(dir)
		return nil, "", errors.New("embedded server not ready")
	}
	return srv, dir, nil
}

// worker is one pipeline with its own connection.
type worker struct {
	nc   *nats.Conn
	src  *natsstage.Source
	sink *natsstage.Sink
	p    *stage.Pipeline
}

// measure runs one round with n workers and returns its throughput in
// messages per second.
func measure(c config, n int, out io.Writer) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.limit)
	defer cancel()
	nc, js, err := connect(c.url)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	if err := reset(ctx, js, c, n); err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := fill(ctx, js, c); err != nil {
		return 0, err
	}
	fmt.Fprintf(out, "input:    %d messages published in %v\n", c.messages, time.Since(t0).Round(time.Millisecond))

	workers := make([]*worker, 0, n)
	defer func() {
		for _, w := range workers {
			w.p.Abort()
			_ = w.p.Wait(context.Background())
			w.nc.Close()
		}
	}()
	start := time.Now()
	for range n {
		w, err := startWorker(ctx, c)
		if err != nil {
			return 0, err
		}
		workers = append(workers, w)
	}
	if err := awaitOutput(ctx, js, uint64(c.messages)); err != nil {
		return 0, err
	}
	elapsed := time.Since(start)

	var received, redelivered, published, duplicates uint64
	for i, w := range workers {
		w.p.Drain()
		if err := w.p.Wait(ctx); err != nil {
			return 0, fmt.Errorf("worker %d: %w", i+1, err)
		}
		ss, ks := w.src.Stats(), w.sink.Stats()
		fmt.Fprintf(out, "worker %d: received %6d (redelivered %d), published %6d (duplicates dropped %d)\n",
			i+1, ss.Received, ss.Redelivered, ks.Published, ks.Duplicates)
		received += ss.Received
		redelivered += ss.Redelivered
		published += ks.Published
		duplicates += ks.Duplicates
	}
	st, err := js.Stream(ctx, outStream)
	if err != nil {
		return 0, err
	}
	stored := st.CachedInfo().State.Msgs
	rate := float64(c.messages) / elapsed.Seconds()
	fmt.Fprintf(out, "total:    received %d (redelivered %d), published %d (duplicates dropped %d), output stream holds %d of %d\n",
		received, redelivered, published, duplicates, stored, c.messages)
	fmt.Fprintf(out, "time:     %v end to end, %.0f msgs/s\n", elapsed.Round(time.Millisecond), rate)
	if stored != uint64(c.messages) {
		return 0, fmt.Errorf("output stream holds %d messages, want %d", stored, c.messages)
	}
	return rate, nil
}

func connect(url string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// reset (re)creates the input and output streams and the durable
// consumer.
func reset(ctx context.Context, js jetstream.JetStream, c config, n int) error {
	for _, name := range []string{inStream, outStream} {
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: inStream, Subjects: []string{inSubj}}); err != nil {
		return err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: outStream, Subjects: []string{outSubj}}); err != nil {
		return err
	}
	_, err := js.CreateOrUpdateConsumer(ctx, inStream, jetstream.ConsumerConfig{
		Durable:       durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 2 * n * (c.prefetch + c.inFlight),
	})
	return err
}

// fill publishes the input messages.
func fill(ctx context.Context, js jetstream.JetStream, c config) error {
	payload := bytes.Repeat([]byte("x"), c.size)
	for i := range c.messages {
		if _, err := js.PublishAsync(inSubj, payload); err != nil {
			return fmt.Errorf("publish input %d: %w", i, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// digest hashes data rounds times, as a stand-in for real work.
func digest(data []byte, rounds int) string {
	sum := sha256.Sum256(data)
	for range rounds - 1 {
		sum = sha256.Sum256(sum[:])
	}
	return hex.EncodeToString(sum[:])
}

// startWorker starts a pipeline: the shared consumer, a transform that
// upper-cases the payload (and hashes it, with -hash), the output stream.
func startWorker(ctx context.Context, c config) (*worker, error) {
	nc, js, err := connect(c.url)
	if err != nil {
		return nil, err
	}
	w := &worker{
		nc:   nc,
		src:  natsstage.NewSource(js, inStream, durable, natsstage.WithPrefetch(c.prefetch)),
		sink: natsstage.NewSink(js, outSubj, natsstage.WithMaxInFlight(c.inFlight)),
	}
	upper := natsstage.Transform(func(_ context.Context, m *natsstage.Msg, emit func(*natsstage.Msg)) error {
		m.Data = bytes.ToUpper(m.Data)
		if c.hash > 0 {
			m.Header = nats.Header{"Sha256": []string{digest(m.Data, c.hash)}}
		}
		emit(m)
		return nil
	})
	w.p = stage.To(stage.Then(stage.From("in", w.src), "upper", upper), "out", w.sink,
		stage.WithDeadLetter(natsstage.DeadLetter(func(it stage.Item[any]) {
			fmt.Fprintf(os.Stderr, "dead letter: %v\n", it)
		})))
	if err := w.p.Start(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return w, nil
}

// awaitOutput polls the output stream until it holds want messages.
func awaitOutput(ctx context.Context, js jetstream.JetStream, want uint64) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := js.Stream(ctx, outStream)
		if err != nil {
			return err
		}
		if st.CachedInfo().State.Msgs >= want {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the output: %w", ctx.Err())
		}
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

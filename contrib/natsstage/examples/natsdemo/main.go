// Command natsdemo runs stage pipelines as workers over NATS JetStream and
// measures how they scale out: it fills an input stream, lets N workers
// share it, waits until every message is in the output stream, checks that
// each input is there exactly once and that every key's outputs are in
// input order, and prints per-worker counts, totals and the throughput.
//
// # Per-key order
//
// Each input has a key (-keys of them, in turn) and is published on
// demo.in.<key>. The input stream maps that subject to
// demo.in.<partition>.<key> with partition(-partitions, key), a hash the
// server computes; each partition has a durable consumer of its own, and a
// worker runs a partition only while it holds the partition's lease in the
// KV bucket DEMO_LEASES (TTL -lease, renewed every quarter of it). A worker
// holds at most ceil(partitions / workers alive); a partition whose worker
// died is free one lease later, and the worker that takes it resets its
// consumer to the message after the last acknowledged one, so that the
// unacknowledged ones come again, in order, before any later one — those
// already in the output are dropped as duplicates. Within a partition the
// pipeline keeps input order. -partitions 0 lets the workers share one
// consumer instead and process in any order (no per-key order; the count
// of violations is still reported). partition.go has the details.
//
// # Where things run
//
// By default the workers run in the demo's process, each with its own
// connection; -procs runs each as its own OS process (the demo re-executes
// itself), connected over loopback. JetStream is one embedded server in the
// demo's process, on a random loopback port with its store in a temporary
// directory; -cluster 3 starts a JetStream cluster of three nodes instead,
// each in a process of its own, and the streams get three replicas;
// -server nats://host:port uses a running server. The demo (re)creates the
// streams DEMO_IN and DEMO_OUT there before each run, deleting any previous
// ones.
//
// # The workload
//
// Each worker upper-cases the payload. -latency D makes each message wait D
// first, a stand-in for a call to another service, with -concurrency
// messages in flight per worker: such a stage is bound by the wait, not by
// the CPU, and scales with workers on any machine. -hash N adds N rounds of
// SHA-256 per message, a CPU-bound stage.
//
// # Runs and the summary
//
// -workers takes a list: "-workers 1,4 -rounds 3" measures 1 and 4
// workers, and a baseline — the same work written as a plain nats.go loop
// (fetch, process, publish asynchronously, acknowledge), one worker — three
// times each, interleaved. A list that does not start with 1 gets 1 put
// first. The last line is always
//
//	scale: workers=N ratio=R lost=L duplicates=D raw_ratio=Q
//
// where N is the last worker count of the list, R the median throughput of
// N workers over that of 1, L the inputs missing from the output stream and
// D the inputs present more than once (summed over every run), and Q the
// median throughput of 1 natsstage worker over that of the raw loop. The
// line before it gives order_violations, the outputs stored after the
// output of a later input of their key (summed over every run); a
// partitioned natsstage run with any fails, unless a node was killed in it
// (per-key order is not guaranteed across a stream leader's failover). A run that fails leaves R or Q
// at 0 and the demo exits with status 1. The raw loop reads the whole input
// with one consumer: it has no partitions.
//
// # Crashes
//
// -kill-worker (with -procs) SIGKILLs the last worker once a third of the
// output is in; -kill-node (with -cluster) SIGKILLs the cluster node that
// leads the input stream, and restarts it after the run. Both apply to the
// runs of N workers, whose throughput then includes the recovery (a dead
// worker's partitions wait one -lease for a new owner; with -partitions 0
// its messages come again after the consumer's AckWait, 3s), so R means
// little there; L, D and the order violations are what they check.
//
//	go run ./examples/natsdemo -procs -workers 1,4 -latency 2ms -rounds 3
//	go run ./examples/natsdemo -procs -cluster 3 -kill-worker -workers 1,4 -latency 2ms -rounds 3
//	go run ./examples/natsdemo -procs -cluster 3 -kill-node -workers 1,4 -latency 2ms -rounds 3
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	inStream  = "DEMO_IN"
	outStream = "DEMO_OUT"
	inSubj    = "demo.in" // inputs are published on demo.in.<key>
	outSubj   = "demo.out"
	durable   = "demo-workers"
	// ackWait is the consumer's AckWait: how long a dead worker's messages
	// wait for their redelivery.
	ackWait = 3 * time.Second
	// stopWait bounds a worker's drain once told to stop.
	stopWait = 30 * time.Second
)

type config struct {
	url        string
	workers    []int
	rounds     int
	messages   int
	size       int
	keys       int
	procs      bool
	cluster    int
	killWorker bool
	killNode   bool
	limit      time.Duration
	w          workerConfig
}

func main() {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(childMain(role, os.Args[1:]))
	}
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "natsdemo:", err)
		os.Exit(1)
	}
}

// errUsage is the error, matched with errors.Is, of flags that do not make
// sense together or values out of range.
var errUsage = errors.New("bad flags")

// errOrder is the error, matched with errors.Is, of a partitioned run whose
// output has a key's outputs out of their inputs' order (a run with a node
// killed only reports them).
var errOrder = errors.New("per-key order violated")

func parse(args []string) (config, error) {
	fs := flag.NewFlagSet("natsdemo", flag.ContinueOnError)
	var c config
	var workers string
	fs.StringVar(&c.url, "server", "", "NATS server URL (nats://host:port); empty starts an embedded server")
	fs.StringVar(&workers, "workers", "1,3", "comma-separated worker counts to compare (1 is always measured first)")
	fs.IntVar(&c.rounds, "rounds", 1, "runs of each worker count, interleaved")
	fs.IntVar(&c.messages, "messages", 20000, "messages to process per run")
	fs.IntVar(&c.size, "size", 128, "payload size in bytes")
	fs.IntVar(&c.keys, "keys", 256, "distinct keys among the inputs, each in order across workers")
	fs.IntVar(&c.w.partitions, "partitions", 8, "partitions of the input by key, each owned by one worker at a time (0: one shared consumer, no per-key order)")
	fs.DurationVar(&c.w.lease, "lease", 2*time.Second, "TTL of a worker's lease on a partition: how long a dead worker's partitions wait for a new owner")
	fs.BoolVar(&c.procs, "procs", false, "run each worker as its own OS process")
	fs.IntVar(&c.cluster, "cluster", 0, "start a JetStream cluster of this many nodes, each its own process (0: one embedded server)")
	fs.BoolVar(&c.killWorker, "kill-worker", false, "SIGKILL the last worker mid-stream (needs -procs)")
	fs.BoolVar(&c.killNode, "kill-node", false, "SIGKILL the input stream's leader node mid-stream (needs -cluster)")
	fs.IntVar(&c.w.prefetch, "prefetch", 256, "messages each worker pulls ahead")
	fs.IntVar(&c.w.inFlight, "inflight", 256, "publishes each worker keeps in flight")
	fs.IntVar(&c.w.concurrency, "concurrency", 8, "messages each worker processes at once")
	fs.DurationVar(&c.w.latency, "latency", 0, "I/O-bound work per message: a wait of this long")
	fs.IntVar(&c.w.hash, "hash", 0, "CPU-bound work per message: rounds of SHA-256 over the payload")
	fs.DurationVar(&c.limit, "timeout", 2*time.Minute, "give up a run after this long")
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("%w: %w", errUsage, err)
	}
	c.workers = []int{1}
	for f := range strings.SplitSeq(workers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return c, fmt.Errorf("%w: -workers: %q is not a positive number", errUsage, f)
		}
		if !slices.Contains(c.workers, n) {
			c.workers = append(c.workers, n)
		}
	}
	switch {
	case c.rounds < 1 || c.messages < 1 || c.size < 1 || c.keys < 1 || c.w.prefetch < 1 || c.w.inFlight < 1 || c.w.concurrency < 1:
		return c, fmt.Errorf("%w: -rounds, -messages, -size, -keys, -prefetch, -inflight and -concurrency must be positive", errUsage)
	case c.w.hash < 0 || c.w.latency < 0 || c.cluster < 0 || c.w.partitions < 0:
		return c, fmt.Errorf("%w: -hash, -latency, -cluster and -partitions must not be negative", errUsage)
	case c.w.lease < 100*time.Millisecond:
		return c, fmt.Errorf("%w: -lease must be 100ms or more", errUsage)
	case c.killWorker && (!c.procs || slices.Max(c.workers) < 2):
		return c, fmt.Errorf("%w: -kill-worker needs -procs and a worker count of 2 or more", errUsage)
	case c.killNode && c.cluster < 3:
		return c, fmt.Errorf("%w: -kill-node needs -cluster 3 or more", errUsage)
	case c.cluster > 0 && c.url != "":
		return c, fmt.Errorf("%w: -cluster and -server exclude each other", errUsage)
	}
	return c, nil
}

// result is what one run measured.
type result struct {
	rate            float64
	lost, duplicate int
	disorder        int // outputs stored before an earlier input of their key
}

func run(args []string, out io.Writer) (err error) {
	var n, lost, dups, disorder int
	rates := map[int][]float64{}
	var raw []float64
	defer func() {
		ratio, rawRatio := 0.0, 0.0
		if err == nil {
			ratio = median(rates[n]) / median(rates[1])
			rawRatio = median(rates[1]) / median(raw)
		}
		fmt.Fprintf(out, "scale: workers=%d ratio=%.2f lost=%d duplicates=%d raw_ratio=%.2f\n",
			n, ratio, lost, dups, rawRatio)
	}()
	c, err := parse(args)
	if err != nil {
		return err
	}
	n = c.workers[len(c.workers)-1]

	var srv *servers
	if c.url == "" {
		if srv, err = startServers(c.cluster); err != nil {
			return err
		}
		defer srv.close()
		c.url = srv.url
		if c.cluster > 0 {
			fmt.Fprintf(out, "JetStream cluster of %d node processes at %s, stores in %s\n", c.cluster, c.url, srv.dir)
		} else {
			fmt.Fprintf(out, "embedded JetStream server at %s, store in %s\n", c.url, srv.dir)
		}
	} else {
		srv = &servers{url: c.url, replicas: 1}
	}
	c.w.url = c.url

	for round := 1; round <= c.rounds; round++ {
		for _, k := range append([]int{0}, c.workers...) { // 0: the raw loop
			name := fmt.Sprintf("%d natsstage worker(s)", k)
			if k == 0 {
				name = "raw nats.go loop, 1 worker"
			}
			fmt.Fprintf(out, "\n== round %d, %s, %d messages of %d bytes, latency %v x %d in flight, %d hash rounds\n",
				round, name, c.messages, c.size, c.w.latency, c.w.concurrency, c.w.hash)
			r, err := measure(c, srv, k, k == n && (c.killWorker || c.killNode), out)
			lost += r.lost
			dups += r.duplicate
			disorder += r.disorder
			if err != nil {
				return err
			}
			if k == 0 {
				raw = append(raw, r.rate)
			} else {
				rates[k] = append(rates[k], r.rate)
			}
		}
	}
	fmt.Fprintf(out, "\n== summary (median of %d round(s))\n", c.rounds)
	if c.w.partitions > 0 {
		fmt.Fprintf(out, "per-key order: %d keys in %d partitions, order_violations=%d\n", c.keys, c.w.partitions, disorder)
	} else {
		fmt.Fprintf(out, "per-key order: not asked (-partitions 0), order_violations=%d\n", disorder)
	}
	base := median(rates[1])
	fmt.Fprintf(out, "raw loop:     %8.0f msgs/s  (1 natsstage worker: %.2fx)\n", median(raw), base/median(raw))
	for _, k := range c.workers {
		m := median(rates[k])
		fmt.Fprintf(out, "%2d worker(s): %8.0f msgs/s  (%.2fx 1 worker)\n", k, m, m/base)
	}
	return nil
}

// handle is a running worker: a process, or a goroutine of the demo.
type handle struct {
	proc *child
	stop chan struct{}
	done chan workerResult
}

type workerResult struct {
	st  workerStats
	err error
}

func startWorker(c config, raw bool, id string) (*handle, error) {
	wc := c.w
	wc.raw, wc.id = raw, id
	if c.procs {
		p, err := startChild(roleWorker, workerArgs(wc), 30*time.Second)
		if err != nil {
			return nil, err
		}
		return &handle{proc: p}, nil
	}
	h := &handle{stop: make(chan struct{}), done: make(chan workerResult, 1)}
	ready := make(chan struct{})
	go func() {
		st, err := runWorker(wc, h.stop, func() { close(ready) })
		h.done <- workerResult{st, err}
	}()
	select {
	case <-ready:
		return h, nil
	case r := <-h.done:
		return nil, r.err
	}
}

func (h *handle) finish() (workerStats, error) {
	if h.proc != nil {
		return stopWorker(h.proc, stopWait)
	}
	close(h.stop)
	r := <-h.done
	return r.st, r.err
}

// measure runs one round with k workers (k = 0: the raw loop) and returns
// its throughput and what the output stream lacks or holds twice. With
// crash set it SIGKILLs what the flags say once a third of the output is in.
func measure(c config, srv *servers, k int, crash bool, out io.Writer) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.limit)
	defer cancel()
	nc, js, err := connect(c.url)
	if err != nil {
		return result{}, err
	}
	defer nc.Close()
	if err := retry(ctx, 15*time.Second, func(ctx context.Context) error { return reset(ctx, js, c, srv.replicas, max(k, 1)) }); err != nil {
		return result{}, fmt.Errorf("creating the streams: %w", err)
	}

	workers := make([]*handle, 0, max(k, 1))
	killed := -1
	defer func() { // on failure
		for i, w := range workers {
			if i != killed {
				_, _ = w.finish()
			}
		}
	}()
	for i := range max(k, 1) {
		w, err := startWorker(c, k == 0, "w"+strconv.Itoa(i+1))
		if err != nil {
			return result{}, err
		}
		workers = append(workers, w)
	}
	if k > 0 && c.w.partitions > 0 {
		if err := awaitBalanced(ctx, js, c.w.partitions, k); err != nil {
			return result{}, err
		}
	}

	start := time.Now()
	if err := fill(ctx, js, c); err != nil {
		return result{}, err
	}
	fmt.Fprintf(out, "input:    %d messages published in %v\n", c.messages, time.Since(start).Round(time.Millisecond))
	var killedNode string
	trigger := func(stored uint64) error {
		if !crash || stored < uint64(c.messages)/3 || killed >= 0 || killedNode != "" {
			return nil
		}
		if c.killWorker {
			killed = len(workers) - 1
			workers[killed].proc.kill()
			fmt.Fprintf(out, "killed:   worker %d (SIGKILL) with %d of %d outputs in\n", killed+1, stored, c.messages)
		}
		if c.killNode {
			var leader string
			if err := retry(ctx, requestWait, func(ctx context.Context) error {
				st, err := js.Stream(ctx, inStream)
				if err == nil {
					leader = st.CachedInfo().Cluster.Leader
				}
				return err
			}); err != nil {
				return err
			}
			killedNode = leader
			if err := srv.kill(killedNode); err != nil {
				return err
			}
			fmt.Fprintf(out, "killed:   node %s (SIGKILL), the leader of %s, with %d of %d outputs in\n",
				killedNode, inStream, stored, c.messages)
		}
		return nil
	}
	if err := awaitOutput(ctx, js, uint64(c.messages), trigger); err != nil {
		return result{}, err
	}
	elapsed := time.Since(start)

	var total workerStats
	for i, w := range workers {
		if i == killed {
			fmt.Fprintf(out, "worker %d: killed\n", i+1)
			continue
		}
		st, err := w.finish()
		if err != nil {
			workers = workers[i+1:]
			killed = -1
			return result{}, fmt.Errorf("worker %d: %w", i+1, err)
		}
		fmt.Fprintf(out, "worker %d: %v\n", i+1, st)
		total.add(st)
	}
	workers = nil
	r := result{rate: float64(c.messages) / elapsed.Seconds()}
	var stored int
	if err := retry(ctx, 30*time.Second, func(ctx context.Context) (err error) {
		stored, r.lost, r.duplicate, r.disorder, err = verify(ctx, js, c.messages)
		return err
	}); err != nil {
		return r, fmt.Errorf("reading the output: %w", err)
	}
	fmt.Fprintf(out, "total:    %v; output stream holds %d: %d inputs lost, %d duplicated, order_violations=%d\n",
		total, stored, r.lost, r.duplicate, r.disorder)
	fmt.Fprintf(out, "time:     %v end to end, %.0f msgs/s\n", elapsed.Round(time.Millisecond), r.rate)
	switch {
	case k == 0 || c.w.partitions == 0 || r.disorder == 0:
	case killedNode != "":
		// Not guaranteed across a failover: see "Per-key order" in the
		// README of natsstage.
		fmt.Fprintf(out, "order:    %d outputs out of their key's order after the node kill\n", r.disorder)
	default:
		return r, fmt.Errorf("%w: %d outputs stored before an earlier input of their key", errOrder, r.disorder)
	}
	if killedNode != "" {
		if err := srv.restart(); err != nil {
			return r, err
		}
		fmt.Fprintf(out, "restarted: node %s\n", killedNode)
	}
	return r, nil
}

// requestWait bounds one request to JetStream made by the demo.
const requestWait = 2 * time.Second

// retry calls f until it succeeds or ctx ends, each time with a context
// of its own that ends after wait: a cluster answers errors, or nothing,
// while it elects leaders, and a request sent to a node just killed is
// never answered.
func retry(ctx context.Context, wait time.Duration, f func(ctx context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, wait)
		err := f(actx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		}
	}
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
// consumer, for n workers.
func reset(ctx context.Context, js jetstream.JetStream, c config, replicas, n int) error {
	for _, name := range []string{inStream, outStream} {
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
	}
	in := jetstream.StreamConfig{Name: inStream, Subjects: []string{inSubj + ".*"}, Replicas: replicas}
	if p := c.w.partitions; p > 0 {
		// demo.in.<key> is stored as demo.in.<partition>.<key>.
		in.SubjectTransform = &jetstream.SubjectTransformConfig{
			Source:      inSubj + ".*",
			Destination: fmt.Sprintf("%s.{{partition(%d,1)}}.{{wildcard(1)}}", inSubj, p),
		}
	}
	out := jetstream.StreamConfig{Name: outStream, Subjects: []string{outSubj}, Replicas: replicas}
	for _, cfg := range []jetstream.StreamConfig{in, out} {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			return err
		}
	}
	pending := 2 * (c.w.prefetch + c.w.inFlight + c.w.concurrency)
	consumers := []jetstream.ConsumerConfig{{Durable: durable, MaxAckPending: n * pending}} // the shared one, and the raw loop's
	for p := range c.w.partitions {
		consumers = append(consumers, jetstream.ConsumerConfig{Durable: partConsumer(p), FilterSubject: partFilter(p), MaxAckPending: pending})
	}
	for _, cc := range consumers {
		cc.AckPolicy, cc.AckWait = jetstream.AckExplicitPolicy, ackWait
		if _, err := js.CreateOrUpdateConsumer(ctx, inStream, cc); err != nil {
			return err
		}
	}
	if err := js.DeleteKeyValue(ctx, leaseBucket); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return err
	}
	_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: leaseBucket, TTL: c.w.lease, Replicas: replicas, Storage: jetstream.MemoryStorage})
	return err
}

// fill publishes the input messages, the i-th with the key k<i mod keys>
// (on the subject demo.in.<key>, and in a header that its output keeps).
func fill(ctx context.Context, js jetstream.JetStream, c config) error {
	payload := bytes.Repeat([]byte("x"), c.size)
	for i := range c.messages {
		key := "k" + strconv.Itoa(i%c.keys)
		m := &nats.Msg{Subject: inSubj + "." + key, Header: nats.Header{keyHeader: []string{key}}, Data: payload}
		if _, err := js.PublishMsgAsync(m); err != nil {
			return fmt.Errorf("publish input %d: %w", i, err)
		}
		if (i+1)%fillWindow == 0 || i+1 == c.messages {
			select { // keep the client's window of unacknowledged publishes
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// fillWindow is how many inputs fill publishes before it waits for their
// acknowledgements: below the client's limit of 4000 pending publishes,
// past which it fails them once they stall.
const fillWindow = 2000

// awaitOutput polls the output stream until it holds want messages,
// calling trigger with each count it sees.
func awaitOutput(ctx context.Context, js jetstream.JetStream, want uint64, trigger func(uint64) error) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		// Each request has a bound of its own: one sent to a node that is
		// killed, or lost while the cluster elects a leader, is never
		// answered, and would otherwise hold the run until its timeout.
		rctx, cancel := context.WithTimeout(ctx, requestWait)
		st, err := js.Stream(rctx, outStream)
		cancel()
		if err == nil { // errors pass while a cluster elects a leader
			n := st.CachedInfo().State.Msgs
			if n >= want {
				return nil
			}
			if err := trigger(n); err != nil {
				return err
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the output: %w", ctx.Err())
		}
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

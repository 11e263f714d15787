package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stagefsm/stagefsm/contrib/natsstage"
	"github.com/stagefsm/stagefsm/stage"
)

// workerConfig is what one worker needs; a worker process gets it as
// flags (see workerArgs).
type workerConfig struct {
	url         string
	id          string // the worker's name among the workers of a run
	raw         bool   // the hand-written nats.go loop instead of natsstage
	partitions  int    // 0: one consumer shared by the workers, no per-key order
	lease       time.Duration
	prefetch    int
	inFlight    int
	concurrency int
	latency     time.Duration
	hash        int
}

// workerStats is what a worker reports when it ends.
type workerStats struct {
	received, redelivered, published, duplicates uint64
	// partitions counts the partitions the worker took (and handed over
	// or finished), 0 for a shared consumer.
	partitions uint64
}

func (s *workerStats) add(o workerStats) {
	s.received += o.received
	s.redelivered += o.redelivered
	s.published += o.published
	s.duplicates += o.duplicates
	s.partitions += o.partitions
}

func (s workerStats) String() string {
	str := fmt.Sprintf("received %6d (redelivered %d), published %6d (duplicates dropped %d)",
		s.received, s.redelivered, s.published, s.duplicates)
	if s.partitions > 0 {
		str += fmt.Sprintf(", partitions taken %d", s.partitions)
	}
	return str
}

// keyHeader is the header that carries a message's key, from the input to
// its output.
const keyHeader = "Demo-Key"

// work is the processing of one message, the same for natsstage and the raw
// loop: wait the simulated call's latency (holding one of the worker's
// slots, sem), upper-case the payload and, with -hash, add its digest as a
// header. It returns the output's payload and headers (h, plus the digest).
func work(c workerConfig, sem chan struct{}, data []byte, h nats.Header) ([]byte, nats.Header) {
	if c.latency > 0 {
		sem <- struct{}{}
		time.Sleep(c.latency)
		<-sem
	}
	data = bytes.ToUpper(data)
	out := nats.Header{}
	for k, v := range h {
		out[k] = v
	}
	if c.hash > 0 {
		out.Set("Sha256", digest(data, c.hash))
	}
	return data, out
}

// digest hashes data rounds times, as a stand-in for CPU-bound work.
func digest(data []byte, rounds int) string {
	sum := sha256.Sum256(data)
	for range rounds - 1 {
		sum = sha256.Sum256(sum[:])
	}
	return hex.EncodeToString(sum[:])
}

// runWorker connects to c.url and processes messages until stop is closed;
// then it drains and returns its counts. ready is called once it consumes.
func runWorker(c workerConfig, stop <-chan struct{}, ready func()) (workerStats, error) {
	nc, js, err := connect(c.url)
	if err != nil {
		return workerStats{}, err
	}
	defer nc.Close()
	switch {
	case c.raw:
		return rawLoop(js, c, stop, ready)
	case c.partitions > 0:
		return runPartitioned(js, c, stop, ready)
	}
	p, src, sink, err := pipeline(js, c, durable, make(chan struct{}, c.concurrency))
	if err != nil {
		return workerStats{}, err
	}
	ready()
	select {
	case <-stop:
		p.Drain()
	case <-p.Done():
	}
	err = p.Wait(context.Background())
	ss, ks := src.Stats(), sink.Stats()
	return workerStats{received: ss.Received, redelivered: ss.Redelivered,
		published: ks.Published, duplicates: ks.Duplicates}, err
}

// pipeline starts a natsstage pipeline: the consumer, the work on
// -concurrency messages at once (in input order for a partition, in any
// order for the shared consumer), the output stream.
func pipeline(js jetstream.JetStream, c workerConfig, consumer string, sem chan struct{}) (*stage.Pipeline, *natsstage.Source, *natsstage.Sink, error) {
	src := natsstage.NewSource(js, inStream, consumer, natsstage.WithPrefetch(c.prefetch))
	sink := natsstage.NewSink(js, outSubj, natsstage.WithMaxInFlight(c.inFlight))
	t := natsstage.Transform(func(_ context.Context, m *natsstage.Msg, emit func(*natsstage.Msg)) error {
		m.Data, m.Header = work(c, sem, m.Data, m.Header)
		emit(m)
		return nil
	})
	in := stage.From("in", src)
	var mid *stage.Chain[*natsstage.Msg]
	order := stage.AnyOrder
	if c.partitions > 0 {
		order = stage.InputOrder
	}
	if c.concurrency > 1 {
		mid = stage.ThenParallel(in, "work", t, stage.Parallel[*natsstage.Msg]{Workers: c.concurrency, Order: order})
	} else {
		mid = stage.Then(in, "work", t)
	}
	p := stage.To(mid, "out", sink,
		stage.WithBatchSize(max(c.concurrency, 1)),
		stage.WithDeadLetter(natsstage.DeadLetter(func(it stage.Item[any]) {
			fmt.Fprintf(os.Stderr, "dead letter: %v\n", it)
		})))
	if err := p.Start(context.Background()); err != nil {
		return nil, nil, nil, err
	}
	return p, src, sink, nil
}

// rawLoop is the baseline written with nats.go alone: fetch a batch, run
// the work on -concurrency messages at once, publish each result
// asynchronously with the input's place as its message id, and acknowledge
// each input once its output is stored.
func rawLoop(js jetstream.JetStream, c workerConfig, stop <-chan struct{}, ready func()) (workerStats, error) {
	ctx := context.Background()
	cons, err := js.Consumer(ctx, inStream, durable)
	if err != nil {
		return workerStats{}, err
	}
	ready()
	var st workerStats
	sem := make(chan struct{}, max(c.concurrency, 1))   // goroutines
	slots := make(chan struct{}, max(c.concurrency, 1)) // waits, as in work
	for {
		select {
		case <-stop:
			return st, nil
		default:
		}
		batch, err := cons.Fetch(c.prefetch, jetstream.FetchMaxWait(250*time.Millisecond))
		if err != nil {
			return st, err
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return st, err
		}
		outs := make([]*nats.Msg, len(msgs))
		var wg sync.WaitGroup
		for i, m := range msgs {
			meta, err := m.Metadata()
			if err != nil {
				return st, err
			}
			st.received++
			if meta.NumDelivered > 1 {
				st.redelivered++
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				data, h := work(c, slots, m.Data(), m.Headers())
				h.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s:%d", meta.Stream, meta.Sequence.Stream))
				outs[i] = &nats.Msg{Subject: outSubj, Header: h, Data: data}
			})
		}
		wg.Wait()
		futures := make([]jetstream.PubAckFuture, len(outs))
		for i, out := range outs {
			if futures[i], err = js.PublishMsgAsync(out); err != nil {
				return st, err
			}
		}
		for i, f := range futures {
			select {
			case ack := <-f.Ok():
				st.published++
				if ack.Duplicate {
					st.duplicates++
				}
				if err := msgs[i].Ack(); err != nil {
					return st, err
				}
			case err := <-f.Err():
				return st, err // the input is redelivered after AckWait
			}
		}
	}
}

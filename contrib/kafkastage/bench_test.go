package kafkastage_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stagefsm/stagefsm/contrib/kafkastage"
	"github.com/stagefsm/stagefsm/stage"
)

// BenchmarkPassThrough measures one pass-through member, kafkastage
// against the hand-written franz-go loop (poll, produce, flush, commit)
// over the same input in the same run, on an in-process kfake cluster.
// Each iteration moves benchRecords records with each (run an even number
// of iterations: the order alternates); the metrics are
// records/s of each and their ratio (kafkastage / hand-written, higher is
// better).
func BenchmarkPassThrough(b *testing.B) {
	const benchRecords = 100000
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, "bench-in"), kfake.AllowAutoTopicCreation())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	kopts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.AllowAutoTopicCreation()}
	benchFill(b, kopts, "bench-in", benchRecords)
	b.ReportAllocs()
	var stageTime, handTime time.Duration
	round := 0
	for b.Loop() {
		round++
		r := strconv.Itoa(round)
		// The order alternates, so that neither side always runs on a
		// cluster the other has just warmed.
		if round%2 == 1 {
			stageTime += benchStage(b, kopts, "bench-in", "bench-out-s"+r, "bench-s"+r, benchRecords)
		}
		handTime += benchHand(b, kopts, "bench-in", "bench-out-h"+r, "bench-h"+r, benchRecords)
		if round%2 == 0 {
			stageTime += benchStage(b, kopts, "bench-in", "bench-out-s"+r, "bench-s"+r, benchRecords)
		}
	}
	n := float64(benchRecords * round)
	b.ReportMetric(n/stageTime.Seconds(), "stage-rec/s")
	b.ReportMetric(n/handTime.Seconds(), "hand-rec/s")
	b.ReportMetric(handTime.Seconds()/stageTime.Seconds(), "ratio")
}

func benchFill(b *testing.B, kopts []kgo.Opt, topic string, n int) {
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	var wg sync.WaitGroup
	for i := range n {
		v := []byte(strconv.Itoa(i))
		wg.Add(1)
		cl.Produce(context.Background(), &kgo.Record{Topic: topic, Key: v, Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				b.Error(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
}

// benchStage runs one kafkastage member until n offsets are committable.
func benchStage(b *testing.B, kopts []kgo.Opt, in, out, group string, n int) time.Duration {
	dl := kafkastage.NewDeadLetters(kopts, out+"-dlq")
	defer dl.Close()
	src := kafkastage.NewSource(kopts, group, []string{in})
	p := stage.To(stage.From("in", src), "out", kafkastage.NewSink(kopts, out), stage.WithDeadLetter(dl.Write))
	start := time.Now()
	if err := p.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	for src.Stats().Committable < uint64(n) {
		time.Sleep(time.Millisecond)
	}
	d := time.Since(start)
	p.Drain()
	if err := p.Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
	return d
}

// benchHand is the plain franz-go loop, timed from the client's creation
// as benchStage is from the pipeline's start.
func benchHand(b *testing.B, kopts []kgo.Opt, in, out, group string, n int) time.Duration {
	start := time.Now()
	cl, err := kgo.NewClient(append(kopts, kgo.ConsumerGroup(group), kgo.ConsumeTopics(in), kgo.DisableAutoCommit())...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	done := 0
	for done < n {
		fs := cl.PollRecords(context.Background(), 512)
		if err := fs.Err0(); err != nil {
			b.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			cl.Produce(context.Background(), &kgo.Record{Topic: out, Key: r.Key, Value: r.Value, Headers: r.Headers}, nil)
			done++
		})
		if err := cl.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		if err := cl.CommitUncommittedOffsets(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

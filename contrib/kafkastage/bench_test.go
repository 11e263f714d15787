package kafkastage_test

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stagefsm/stagefsm/contrib/kafkastage"
	"github.com/stagefsm/stagefsm/stage"
)

// BenchmarkPassThrough measures one pass-through member, kafkastage
// against a hand-written franz-go loop over the same input, on an
// in-process kfake cluster. Each iteration is one pair of runs, one of
// each, in alternating order (so that machine noise hits both sides and
// neither always runs on a cluster the other has just warmed); each run
// moves all benchRecords records of the input topic, with its own group,
// to its own output topic.
//
// Both sides do the same work: the same client defaults (acks from all
// in-sync replicas, idempotent writes), a poll of at most 512 records,
// offsets marked for commit once the records produced from them are
// acknowledged, and committed by the client in the background (and
// synchronously at the end, outside the timing). The hand loop produces
// asynchronously, flushes after each poll, then marks the poll's records;
// kafkastage produces without linger and marks each offset as its
// acknowledgement arrives. A run is timed from the first batch its client
// fetched (so the group join, the same for both and noisy on kfake, is
// left out) until every offset is marked.
//
// Metrics: stage-rec/s and hand-rec/s (over all runs); ratio, the median
// over the pairs of kafkastage's rate / the hand loop's (higher is
// better); stage-allocs/rec and hand-allocs/rec, the process's
// allocations per record during a run, the in-process broker's included.
func BenchmarkPassThrough(b *testing.B) {
	const benchRecords = 100000
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, "bench-in"), kfake.AllowAutoTopicCreation())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	kopts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.AllowAutoTopicCreation()}
	benchFill(b, kopts, "bench-in", benchRecords)
	// One pair first, not counted: the first run on a new cluster pays for
	// what any later one finds ready (a producer ID, the output topic's
	// creation, the connections), and with one pair per round (bench.sh's
	// -benchtime) it would always be the stage's.
	var warm benchRun
	warm.add(benchStage(b, kopts, "bench-in", "bench-out-sw", "bench-sw", benchRecords))
	warm.add(benchHand(b, kopts, "bench-in", "bench-out-hw", "bench-hw", benchRecords))
	b.ReportAllocs()
	var stage, hand benchRun
	var ratios []float64
	round := 0
	for b.Loop() {
		round++
		r := strconv.Itoa(round)
		runStage := func() time.Duration {
			return stage.add(benchStage(b, kopts, "bench-in", "bench-out-s"+r, "bench-s"+r, benchRecords))
		}
		runHand := func() time.Duration {
			return hand.add(benchHand(b, kopts, "bench-in", "bench-out-h"+r, "bench-h"+r, benchRecords))
		}
		var s, h time.Duration
		if round%2 == 1 {
			s, h = runStage(), runHand()
		} else {
			h, s = runHand(), runStage()
		}
		ratios = append(ratios, h.Seconds()/s.Seconds())
	}
	n := float64(benchRecords * round)
	b.ReportMetric(n/stage.time.Seconds(), "stage-rec/s")
	b.ReportMetric(n/hand.time.Seconds(), "hand-rec/s")
	b.ReportMetric(median(ratios), "ratio")
	b.ReportMetric(float64(stage.allocs)/n, "stage-allocs/rec")
	b.ReportMetric(float64(hand.allocs)/n, "hand-allocs/rec")
}

// benchRun sums the runs of one side.
type benchRun struct {
	time   time.Duration
	allocs uint64
}

func (r *benchRun) add(d time.Duration, allocs uint64) time.Duration {
	r.time += d
	r.allocs += allocs
	return d
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
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

// firstFetch is a client hook that notes when the client read its first
// fetched batch: a run is timed from there.
type firstFetch struct {
	base time.Time
	at   atomic.Int64 // since base, +1 so that 0 means not yet
}

func newFirstFetch() *firstFetch { return &firstFetch{base: time.Now()} }

// OnFetchBatchRead implements kgo.HookFetchBatchRead.
func (f *firstFetch) OnFetchBatchRead(kgo.BrokerMetadata, string, int32, kgo.FetchBatchMetrics) {
	if f.at.Load() == 0 {
		f.at.CompareAndSwap(0, int64(time.Since(f.base))+1)
	}
}

// since returns the time from the first fetched batch until now.
func (f *firstFetch) since(b *testing.B) time.Duration {
	at := f.at.Load()
	if at == 0 {
		b.Fatal("timed run without a fetched batch")
	}
	return time.Since(f.base) - time.Duration(at-1)
}

func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

// benchStage runs one kafkastage member until n offsets are marked for
// commit, and returns the time from its first fetched batch and the
// allocations.
func benchStage(b *testing.B, kopts []kgo.Opt, in, out, group string, n int) (time.Duration, uint64) {
	dl := kafkastage.NewDeadLetters(kopts, out+"-dlq")
	defer dl.Close()
	ff := newFirstFetch()
	src := kafkastage.NewSource(append(kopts, kgo.WithHooks(ff)), group, []string{in})
	p := stage.To(stage.From("in", src), "out", kafkastage.NewSink(kopts, out), stage.WithDeadLetter(dl.Write))
	m := mallocs()
	if err := p.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	for src.Stats().Committable < uint64(n) {
		time.Sleep(500 * time.Microsecond)
	}
	d, allocs := ff.since(b), mallocs()-m
	p.Drain() // and the Source commits what it marked
	if err := p.Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
	return d, allocs
}

// benchHand is the plain franz-go loop — poll, produce asynchronously,
// flush, mark — timed as benchStage is; it commits what it marked at the
// end, as the Source does when it closes.
func benchHand(b *testing.B, kopts []kgo.Opt, in, out, group string, n int) (time.Duration, uint64) {
	ff := newFirstFetch()
	m := mallocs()
	cl, err := kgo.NewClient(append(kopts, kgo.WithHooks(ff),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(in), kgo.AutoCommitMarks())...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	var polled []*kgo.Record
	for done := 0; done < n; {
		fs := cl.PollRecords(context.Background(), 512)
		if err := fs.Err0(); err != nil {
			b.Fatal(err)
		}
		polled = polled[:0]
		fs.EachRecord(func(r *kgo.Record) {
			cl.Produce(context.Background(), &kgo.Record{Topic: out, Key: r.Key, Value: r.Value, Headers: r.Headers}, nil)
			polled = append(polled, r)
		})
		if err := cl.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		cl.MarkCommitRecords(polled...)
		done += len(polled)
	}
	d, allocs := ff.since(b), mallocs()-m
	if err := cl.CommitMarkedOffsets(context.Background()); err != nil {
		b.Fatal(err)
	}
	return d, allocs
}

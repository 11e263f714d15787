// Command kafkademo runs kafkastage workers over a Kafka cluster — an
// in-process kfake cluster by default, or a real one with -brokers — and
// compares one pass-through member with a hand-written franz-go
// consume/produce loop over the same input.
//
// With -exactly-once the members run in exactly-once mode
// (kafkastage.ExactlyOnce: Kafka transactions), and the demo reads the
// output back with read_committed isolation and counts what is missing
// and what is there twice.
//
//	cd contrib/kafkastage && go run ./examples/kafkademo [-n 100000] [-members 3] [-exactly-once] [-brokers host:9092]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stagefsm/stagefsm/contrib/kafkastage"
	"github.com/stagefsm/stagefsm/stage"
)

func main() {
	n := flag.Int("n", 100000, "records in the input topic")
	members := flag.Int("members", 3, "kafkastage members in the group")
	brokers := flag.String("brokers", "", "seed brokers of a real cluster (comma-separated); empty: kfake")
	eos := flag.Bool("exactly-once", false, "run the members in exactly-once mode (Kafka transactions)")
	flag.Parse()
	if err := run(*n, *members, *brokers, *eos); err != nil {
		fmt.Fprintln(os.Stderr, "kafkademo:", err)
		os.Exit(1)
	}
}

func run(n, members int, brokers string, eos bool) error {
	seeds := strings.Split(brokers, ",")
	if brokers == "" {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(6))
		if err != nil {
			return err
		}
		defer c.Close()
		seeds = c.ListenAddrs()
	}
	kopts := []kgo.Opt{kgo.SeedBrokers(seeds...), kgo.AllowAutoTopicCreation()}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	in := "demo-in-" + run
	if err := fill(kopts, in, n); err != nil {
		return err
	}

	// N members in one group.
	mode := "at-least-once"
	if eos {
		mode = "exactly-once"
	}
	out := "demo-out-" + run
	d, counts, err := stageRun(kopts, in, out, "demo-"+run, n, members, eos)
	if err != nil {
		return err
	}
	var total, committed uint64
	for i, c := range counts {
		fmt.Printf("member %d: %d records read, %d committed, %d aborted and read again\n",
			i+1, c.Received, c.Committable, c.Aborted)
		total += c.Received
		committed += c.Committable
	}
	fmt.Printf("accounting (%s): input %d = committed %d (lost %d); %d read in all; %d members, %v, %.0f records/s\n",
		mode, n, committed, max(int64(n)-int64(committed), 0), total, members, d.Round(time.Millisecond), float64(n)/d.Seconds())
	if eos {
		missing, twice, err := audit(kopts, out, n)
		if err != nil {
			return err
		}
		fmt.Printf("output read with read_committed: %d missing, %d duplicates\n", missing, twice)
	}

	// One pass-through member against the hand-written loop.
	d1, _, err := stageRun(kopts, in, "demo-out1-"+run, "demo1-"+run, n, 1, false)
	if err != nil {
		return err
	}
	dh, err := handLoop(kopts, in, "demo-outh-"+run, "demoh-"+run, n)
	if err != nil {
		return err
	}
	fmt.Printf("1 member pass-through: kafkastage %.0f records/s, hand-written loop %.0f records/s, ratio %.2fx\n",
		float64(n)/d1.Seconds(), float64(n)/dh.Seconds(), dh.Seconds()/d1.Seconds())
	return nil
}

func fill(kopts []kgo.Opt, topic string, n int) error {
	c, err := kgo.NewClient(kopts...)
	if err != nil {
		return err
	}
	defer c.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := range n {
		v := []byte(strconv.Itoa(i))
		wg.Add(1)
		c.Produce(context.Background(), &kgo.Record{Topic: topic, Key: v, Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				first = err
				mu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	return first
}

// stageRun runs members kafkastage pipelines until n input offsets are
// committable (committed, in exactly-once mode), and returns the time
// taken and each member's counts.
func stageRun(kopts []kgo.Opt, in, out, group string, n, members int, eos bool) (time.Duration, []kafkastage.SourceStats, error) {
	type worker struct {
		src *kafkastage.Source
		p   *stage.Pipeline
	}
	start := time.Now()
	ws := make([]worker, members)
	for i := range ws {
		var (
			src   *kafkastage.Source
			sink  *kafkastage.Sink
			write func(stage.Item[any])
		)
		if eos {
			x := kafkastage.NewExactlyOnce(kopts, group, []string{in})
			src, sink, write = x.Source(), x.Sink(out), x.DeadLetters(out+"-dlq").Write
		} else {
			dl := kafkastage.NewDeadLetters(kopts, out+"-dlq")
			defer dl.Close()
			src, sink, write = kafkastage.NewSource(kopts, group, []string{in}), kafkastage.NewSink(kopts, out), dl.Write
		}
		p := stage.To(stage.From("in", src), "out", sink, stage.WithDeadLetter(write))
		if err := p.Start(context.Background()); err != nil {
			return 0, nil, err
		}
		ws[i] = worker{src, p}
	}
	for {
		var sum uint64
		for _, w := range ws {
			sum += w.src.Stats().Committable
		}
		if sum >= uint64(n) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	d := time.Since(start)
	counts := make([]kafkastage.SourceStats, members)
	for i, w := range ws {
		w.p.Drain()
		if err := w.p.Wait(context.Background()); err != nil {
			return 0, nil, err
		}
		counts[i] = w.src.Stats()
	}
	return d, counts, nil
}

// audit reads topic with read_committed isolation and counts the values
// 0..n-1 missing from it and those in it more than once.
func audit(kopts []kgo.Opt, topic string, n int) (missing, twice int, err error) {
	c, err := kgo.NewClient(append(kopts, kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	seen := make([]int, n)
	read := 0
	deadline := time.Now().Add(30 * time.Second) // a topic missing records ends the audit too
	for quiet := 0; quiet < 3 && time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := c.PollFetches(ctx)
		cancel()
		got := 0
		fs.EachRecord(func(r *kgo.Record) {
			got++
			if i, err := strconv.Atoi(string(r.Value)); err == nil && i >= 0 && i < n {
				seen[i]++
			}
		})
		read += got
		if got == 0 && read >= n {
			quiet++ // everything read once the topic stays quiet
		}
	}
	for _, k := range seen {
		switch {
		case k == 0:
			missing++
		case k > 1:
			twice += k - 1
		}
	}
	return missing, twice, nil
}

// handLoop is the plain franz-go loop: poll, produce each record, flush,
// commit.
func handLoop(kopts []kgo.Opt, in, out, group string, n int) (time.Duration, error) {
	c, err := kgo.NewClient(append(kopts, kgo.ConsumerGroup(group), kgo.ConsumeTopics(in), kgo.DisableAutoCommit())...)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := time.Now()
	done := 0
	for done < n {
		fs := c.PollRecords(context.Background(), 512)
		if err := fs.Err0(); err != nil {
			return 0, err
		}
		fs.EachRecord(func(r *kgo.Record) {
			c.Produce(context.Background(), &kgo.Record{Topic: out, Key: r.Key, Value: r.Value, Headers: r.Headers}, nil)
			done++
		})
		if err := c.Flush(context.Background()); err != nil {
			return 0, err
		}
		if err := c.CommitUncommittedOffsets(context.Background()); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Per-key order across workers.
//
// The input stream maps each published subject demo.in.<key> to
// demo.in.<partition>.<key>, where the partition is partition(P, key), a
// hash of the key computed by the server (a subject transform). Each
// partition has its own durable consumer, demo-p<n>, filtered on its
// subjects. A worker processes a partition only while it holds the
// partition's lease, a key p.<n> in the KV bucket DEMO_LEASES whose TTL is
// -lease: it renews the lease (a compare-and-set on its revision) every
// quarter of the TTL, and stops the partition's pipeline as soon as a
// renewal is refused or the TTL since the last one that succeeded is about
// to pass. A partition whose owner dies is therefore free one TTL later,
// and the next owner resets the consumer (ResetConsumer) to the message
// after the last one acknowledged: the unacknowledged messages come again,
// in order, before any later one, and those whose output is already
// stored are dropped as duplicates by their Nats-Msg-Id. Each partition's
// pipeline keeps input order (a parallel stage in InputOrder, a sink that
// publishes in order), so every key's outputs are stored in input order.
//
// Workers announce themselves with a key w.<id> of the same TTL, and each
// holds at most ceil(P / live workers) partitions: a worker that joins
// makes the others hand over their extra partitions (drained, acknowledged,
// then released), and the partitions of a dead one are taken by the
// survivors.

// leaseBucket is the KV bucket of the partitions' leases and the workers'
// presence.
const leaseBucket = "DEMO_LEASES"

// partConsumer names the durable consumer of partition p.
func partConsumer(p int) string { return "demo-p" + strconv.Itoa(p) }

// partFilter is the filter subject of partition p.
func partFilter(p int) string { return inSubj + "." + strconv.Itoa(p) + ".*" }

func leaseKey(p int) string        { return "p." + strconv.Itoa(p) }
func presenceKey(id string) string { return "w." + id }

// owner runs the partitions one worker holds, each as a pipeline of its
// own; they share the worker's -concurrency slots.
type owner struct {
	c    workerConfig
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	sem  chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	held map[int]*holding // by partition
	st   workerStats      // of the partitions no longer held
}

// holding is a partition the worker holds.
type holding struct {
	release chan struct{} // closed to hand the partition over
	leaving bool          // release is closed
}

// runPartitioned is a worker of a partitioned input: it takes and hands
// over partitions as workers come and go, until stop is closed; then it
// drains every partition it holds, releases their leases and returns its
// counts.
func runPartitioned(js jetstream.JetStream, c workerConfig, stop <-chan struct{}, ready func()) (workerStats, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	kv, err := js.KeyValue(ctx, leaseBucket)
	cancel()
	if err != nil {
		return workerStats{}, fmt.Errorf("lease bucket: %w", err)
	}
	o := &owner{c: c, js: js, kv: kv, sem: make(chan struct{}, c.concurrency), held: map[int]*holding{}}
	o.announce()
	ready()
	tick := time.NewTicker(c.lease / 8)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			o.mu.Lock()
			for _, h := range o.held {
				h.leave()
			}
			o.mu.Unlock()
			o.wg.Wait()
			ctx, cancel := context.WithTimeout(context.Background(), c.lease)
			_ = kv.Delete(ctx, presenceKey(c.id))
			cancel()
			return o.st, nil
		case <-tick.C:
			o.balance()
		}
	}
}

func (h *holding) leave() {
	if !h.leaving {
		h.leaving = true
		close(h.release)
	}
}

// opTimeout bounds one KV operation: a quarter of the lease.
func (o *owner) opTimeout() time.Duration { return o.c.lease / 4 }

// announce renews the worker's presence key.
func (o *owner) announce() {
	ctx, cancel := context.WithTimeout(context.Background(), o.opTimeout())
	defer cancel()
	_, _ = o.kv.PutString(ctx, presenceKey(o.c.id), o.c.id) // a failure shows as absence after the TTL
}

// balance renews the worker's presence, then hands over the partitions it
// holds beyond its share, or takes free ones up to it.
func (o *owner) balance() {
	o.announce()
	ctx, cancel := context.WithTimeout(context.Background(), o.opTimeout())
	defer cancel()
	keys, err := o.kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return // the next tick tries again
	}
	live, taken := 0, map[string]bool{}
	for _, k := range keys {
		if strings.HasPrefix(k, "w.") {
			live++
		} else {
			taken[k] = true
		}
	}
	share := (o.c.partitions + max(live, 1) - 1) / max(live, 1)

	o.mu.Lock()
	defer o.mu.Unlock()
	var active []int
	for p, h := range o.held {
		if !h.leaving {
			active = append(active, p)
		}
	}
	if len(active) > share {
		for _, p := range active[share:] {
			o.held[p].leave()
		}
		return
	}
	// Try the partitions from a place of the worker's own, so that
	// workers that start together do not all race for the same ones.
	first := int(hashString(o.c.id) % uint64(o.c.partitions))
	for i := 0; i < o.c.partitions && len(active) < share; i++ {
		p := (first + i) % o.c.partitions
		if taken[leaseKey(p)] || o.held[p] != nil {
			continue
		}
		sent := time.Now()
		rev, err := o.kv.Create(ctx, leaseKey(p), []byte(o.c.id))
		if err != nil {
			continue // taken by another worker, or no answer
		}
		h := &holding{release: make(chan struct{})}
		o.held[p] = h
		active = append(active, p)
		o.wg.Add(1)
		go o.hold(p, rev, sent, h, share)
	}
}

// hold runs partition p from its consumer's acknowledgement floor while the
// worker holds its lease (revision rev, written at sent), and releases the
// lease once it has drained; share is the number of partitions the worker
// is to hold, which splits its prefetch and publishes in flight.
func (o *owner) hold(p int, rev uint64, sent time.Time, h *holding, share int) {
	defer o.wg.Done()
	defer func() {
		o.mu.Lock()
		delete(o.held, p)
		o.mu.Unlock()
	}()
	lease := o.c.lease
	margin := lease / 4
	deadline := sent.Add(lease - margin)
	key := leaseKey(p)
	release := func() {
		ctx, cancel := context.WithTimeout(context.Background(), o.opTimeout())
		defer cancel()
		_ = o.kv.Delete(ctx, key, jetstream.LastRevision(rev)) // else it expires
	}

	// Resume after the last acknowledged message: what the previous owner
	// left unacknowledged comes again first, in order.
	for {
		ctx, cancel := context.WithTimeout(context.Background(), o.opTimeout())
		_, err := o.js.ResetConsumer(ctx, inStream, partConsumer(p))
		cancel()
		if err == nil {
			break
		}
		if time.Now().Add(o.opTimeout()).After(deadline) {
			fmt.Fprintf(os.Stderr, "natsdemo worker %s: partition %d: reset: %v\n", o.c.id, p, err)
			release()
			return
		}
		time.Sleep(o.opTimeout() / 4)
	}
	wc := o.c
	wc.prefetch = max(wc.concurrency, wc.prefetch/max(share, 1))
	wc.inFlight = max(wc.concurrency, wc.inFlight/max(share, 1))
	pl, src, sink, err := pipeline(o.js, wc, partConsumer(p), o.sem)
	if err != nil {
		fmt.Fprintf(os.Stderr, "natsdemo worker %s: partition %d: %v\n", o.c.id, p, err)
		release()
		return
	}
	renew := time.NewTicker(lease / 4)
	defer renew.Stop()
	lost, leave := false, h.release
	for done := false; !done; {
		select {
		case <-renew.C:
			sent := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), o.opTimeout())
			r, err := o.kv.Update(ctx, key, []byte(o.c.id), rev)
			cancel()
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
				// An earlier renewal that timed out here may have been
				// stored: the lease is still ours if it holds our name,
				// which no other worker writes.
				r, err = o.adopt(key, sent)
			}
			switch {
			case err == nil:
				rev, deadline = r, sent.Add(lease-margin)
			case errors.Is(err, errLeaseLost), time.Now().After(deadline):
				fmt.Fprintf(os.Stderr, "natsdemo worker %s: partition %d: lease lost (%v), stopping it\n", o.c.id, p, err)
				lost = true
				pl.Abort()
				done = true
			}
		case <-leave:
			leave = nil
			pl.Drain()
		case <-pl.Done():
			done = true
		}
	}
	err = pl.Wait(context.Background())
	ss, ks := src.Stats(), sink.Stats()
	o.mu.Lock()
	o.st.add(workerStats{received: ss.Received, redelivered: ss.Redelivered,
		published: ks.Published, duplicates: ks.Duplicates, partitions: 1})
	o.mu.Unlock()
	if err != nil && !lost {
		fmt.Fprintf(os.Stderr, "natsdemo worker %s: partition %d: %v\n", o.c.id, p, err)
	}
	if !lost {
		release()
	}
}

// errLeaseLost is the error of a lease another worker holds, or nobody.
var errLeaseLost = errors.New("the lease is another worker's")

// adopt returns the revision of the lease key if the worker still holds it
// (it holds the worker's name and was written less than a lease before
// sent), or errLeaseLost.
func (o *owner) adopt(key string, sent time.Time) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.opTimeout())
	defer cancel()
	e, err := o.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return 0, errLeaseLost
	case err != nil:
		return 0, err
	case string(e.Value()) != o.c.id || sent.Sub(e.Created()) > o.c.lease:
		return 0, errLeaseLost
	}
	return e.Revision(), nil
}

// hashString is FNV-1a.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := range len(s) {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// awaitBalanced waits until every one of the partitions is held, none of
// the n workers beyond its share, ceil(partitions / n): with partitions a
// multiple of n, each worker holds the same number.
func awaitBalanced(ctx context.Context, js jetstream.JetStream, partitions, n int) error {
	var kv jetstream.KeyValue
	if err := retry(ctx, requestWait, func(ctx context.Context) (err error) {
		kv, err = js.KeyValue(ctx, leaseBucket)
		return err
	}); err != nil {
		return err
	}
	share := (partitions + n - 1) / n
	for {
		owners := map[string]int{}
		held := 0
		for p := range partitions {
			rctx, cancel := context.WithTimeout(ctx, requestWait)
			e, err := kv.Get(rctx, leaseKey(p))
			cancel()
			if err == nil {
				owners[string(e.Value())]++
				held++
			}
		}
		balanced := held == partitions
		for _, k := range owners {
			balanced = balanced && k <= share
		}
		if balanced {
			return nil
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d workers to share %d partitions (%d held by %v): %w",
				n, partitions, held, owners, ctx.Err())
		}
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// verify reads the whole output stream and returns how many messages it
// holds, how many of the inputs 1…n (by their sequence in the input stream,
// which each output carries in its message id) are missing from it, how
// many are there more than once, and how many outputs come after the
// output of a later input of the same key (the key header): per-key order
// holds when that count is 0.
func verify(ctx context.Context, js jetstream.JetStream, n int) (stored, lost, duplicated, disorder int, err error) {
	st, err := js.Stream(ctx, outStream)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	total := int(st.CachedInfo().State.Msgs)
	// A plain consumer, made for this reading, without acknowledgements:
	// it delivers the stream in order. (An ordered consumer recreates
	// itself after an error, in a loop that does not heed ctx: after a
	// node kill it could hold the run for good.)
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute, MemoryStorage: true, Replicas: 1,
	})
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), requestWait)
		defer cancel()
		_ = st.DeleteConsumer(dctx, cons.CachedInfo().Name) // else it goes after InactiveThreshold
	}()
	last := map[string]int{} // by key, the latest input seen

	seen := make([]int, n+1)
	prefix := inStream + ":"
	for stored < total {
		if err := ctx.Err(); err != nil {
			return 0, 0, 0, 0, err
		}
		batch, err := cons.Fetch(min(1000, total-stored), jetstream.FetchMaxWait(requestWait))
		if err != nil {
			return 0, 0, 0, 0, err
		}
		for m := range batch.Messages() {
			stored++
			id := m.Headers().Get(jetstream.MsgIDHeader)
			seq, err := strconv.Atoi(strings.TrimPrefix(id, prefix))
			if !strings.HasPrefix(id, prefix) || err != nil || seq < 1 || seq > n {
				return 0, 0, 0, 0, fmt.Errorf("output %d has the message id %q, not one of an input", stored, id)
			}
			seen[seq]++
			key := m.Headers().Get(keyHeader)
			if seq < last[key] {
				disorder++
			}
			last[key] = max(last[key], seq)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return 0, 0, 0, 0, err
		}
	}
	for _, k := range seen[1:] {
		switch {
		case k == 0:
			lost++
		case k > 1:
			duplicated++
		}
	}
	return stored, lost, duplicated, disorder, nil
}

package stagefsmtest_test

// This file is the worked example of the README section "Testing your
// stages": a custom transform handler tested inside a real pipeline with a
// fake source and a fake sink, with an injected panic and a timeout.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stage"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

// Order and Enriched are the items of the pipeline.
type Order struct{ ID, Customer string }

type Enriched struct {
	Order
	Name string
}

// Enrich is the handler under test: a stage.Transform that looks up each
// order's customer, giving the lookup Timeout per item.
type Enrich struct {
	Lookup  func(ctx context.Context, customer string) (string, error)
	Timeout time.Duration
}

func (e *Enrich) Process(ctx context.Context, o Order, emit func(Enriched)) error {
	ctx, cancel := context.WithTimeout(ctx, e.Timeout)
	defer cancel()
	name, err := e.Lookup(ctx, o.Customer)
	if err != nil {
		return fmt.Errorf("order %s: %w", o.ID, err) // non-fatal: the order is dead-lettered
	}
	emit(Enriched{Order: o, Name: name})
	return nil
}

func TestEnrich(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // fake clock: the timeout takes no real time
		src := stagefsmtest.NewSource[Order]().
			Emit(Order{"o1", "alice"}, Order{"o2", "bob"}).
			Panic("corrupt page"). // injected: the stage recovers it as one bad record
			Emit(Order{"o3", "slowpoke"})
		sink := stagefsmtest.NewSink[Enriched]()
		lookup := func(ctx context.Context, customer string) (string, error) {
			if customer == "slowpoke" {
				<-ctx.Done() // hangs until the handler's deadline
				return "", ctx.Err()
			}
			return strings.ToUpper(customer), nil
		}
		var mu sync.Mutex
		var dead []stage.Item[any]
		p := stage.To(
			stage.Then(stage.From("orders", src), "enrich", &Enrich{Lookup: lookup, Timeout: 2 * time.Second}),
			"store", sink,
			stage.WithDeadLetter(func(it stage.Item[any]) { mu.Lock(); dead = append(dead, it); mu.Unlock() }))
		start := time.Now()

		require.NoError(t, p.Start(t.Context()))
		require.NoError(t, p.Wait(t.Context()))

		assert.Equal(t, []Enriched{{Order{"o1", "alice"}, "ALICE"}, {Order{"o2", "bob"}, "BOB"}}, sink.Delivered())
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, dead, 2)
		var pe *stagefsm.PanicError
		assert.ErrorAs(t, dead[0].Err, &pe, "the source's panic")
		assert.Equal(t, "corrupt page", pe.Value)
		assert.ErrorIs(t, dead[1].Err, context.DeadlineExceeded, "o3's lookup timed out")
		assert.Equal(t, 2*time.Second, time.Since(start), "exactly the timeout")
		stats := p.Stats()
		assert.Equal(t, stats.Emitted, stats.Delivered+stats.DeadLettered, "nothing lost")
	})
}

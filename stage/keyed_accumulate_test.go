package stage_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stage"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

// sale is an input of the accumulator tests: an amount for a shop.
type sale struct {
	Shop string
	N    int
}

// tally is the accumulator state of the tests.
type tally struct{ Sum, Count int }

var errNegative = errors.New("negative sale")

// tallySpec sums the sales of each shop and emits "shop=sum/count". A sale
// of -1 fails Fold, -2 panics in it; a shop named "bad" fails Emit, "boom"
// panics in it.
func tallySpec() stage.KeyedAccumulator[sale, string, tally, string] {
	return stage.KeyedAccumulator[sale, string, tally, string]{
		Key: func(s sale) string { return s.Shop },
		Fold: func(t *tally, s sale) error {
			switch s.N {
			case -1:
				t.Sum += 1000 // changed before failing: put back by the stage
				return errNegative
			case -2:
				panic("fold exploded")
			}
			t.Sum += s.N
			t.Count++
			return nil
		},
		Emit: func(shop string, t tally, emit func(string)) error {
			emit(fmt.Sprintf("%s=%d/%d", shop, t.Sum, t.Count))
			switch shop {
			case "bad":
				return errRejected
			case "boom":
				panic("emit exploded")
			}
			return nil
		},
	}
}

func accRun[I any, K comparable, S, O any](t *testing.T, src stage.Source[I], spec stage.KeyedAccumulator[I, K, S, O]) ([]O, stage.Stats, []stage.Item[any]) {
	t.Helper()
	sink := &collector[O]{}
	dl := &letters{}
	p := stage.To(stage.ThenKeyedAccumulate(stage.From("src", src), "acc", spec), "sink", sink, stage.WithDeadLetter(dl.add))
	require.NoError(t, run(t, p))
	st := assertBalanced(t, p, dl)
	return sink.items(), st.Stages[1], dl.items()
}

func sales(ss ...sale) *stagefsmtest.Source[sale] {
	return stagefsmtest.NewSource[sale]().Emit(ss...)
}

func TestKeyedAccumulatePredicateAndDrain(t *testing.T) {
	spec := tallySpec()
	spec.EmitWhen = func(_ string, t tally) bool { return t.Count == 2 }
	got, st, dl := accRun(t, sales(
		sale{"a", 1}, sale{"b", 10}, sale{"a", 2}, // a emits 3/2 and starts again
		sale{"a", 4}, sale{"b", 20}, sale{"c", 7}, sale{"a", 8},
		sale{"c", 1}, sale{"a", 16}, // c emits; a holds 16/1 at end of input
	), spec)
	assert.Empty(t, dl)
	assert.Equal(t, []string{"a=3/2", "b=30/2", "a=12/2", "c=8/2", "a=16/1"}, got)
	assert.Equal(t, 0, st.Keys, "every state was emitted and removed")
	assert.Equal(t, uint64(9), st.Counts.Delivered)
	assert.Equal(t, uint64(5), st.Counts.Emitted)
	assert.Zero(t, st.Timeouts)
}

func TestKeyedAccumulateInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spec := tallySpec()
		spec.Every = 10 * time.Second
		// A batch goes out when the call after its Emit returns: a1 at 4s,
		// a2 and b5 at 11s, a3 at 31s and b6 with it, at end of input.
		src := stagefsmtest.NewSource[sale]().
			Emit(sale{"a", 1}).Sleep(4*time.Second).                 // a's window: 4s–14s
			Emit(sale{"a", 2}, sale{"b", 5}).Sleep(7 * time.Second). // b's: 11s–21s
			Emit(sale{"a", 3}).Sleep(20 * time.Second).              // a's second: from 31s
			Emit(sale{"b", 6})                                       // b's second, drained with a's
		start := time.Now()
		var at []time.Duration
		spec.Emit = func(shop string, t tally, emit func(string)) error {
			at = append(at, time.Since(start).Round(time.Second))
			emit(fmt.Sprintf("%s=%d/%d", shop, t.Sum, t.Count))
			return nil
		}
		got, st, dl := accRun(t, stage.Source[sale](src), spec)
		assert.Empty(t, dl)
		assert.ElementsMatch(t, []string{"a=3/2", "b=5/1", "a=3/1", "b=6/1"}, got)
		assert.Equal(t, []string{"a=3/2", "b=5/1"}, got[:2])
		assert.Equal(t, []time.Duration{14 * time.Second, 21 * time.Second, 31 * time.Second, 31 * time.Second}, at,
			"each key's window ends Every after its first item; the rest is drained at end of input")
		assert.Equal(t, uint64(2), st.Timeouts, "two interval emits, two drained")
		assert.Equal(t, 0, st.Keys)
	})
}

func TestKeyedAccumulateFailuresAreThatItemsOnly(t *testing.T) {
	spec := tallySpec()
	spec.EmitWhen = func(shop string, t tally) bool {
		if shop == "when" {
			panic("predicate exploded")
		}
		return shop == "bad" && t.Count == 2
	}
	got, st, dl := accRun(t, sales(
		sale{"a", 1}, sale{"a", -1}, sale{"a", 2}, // a's failed sale is put back: 3/2 at drain
		sale{"b", -2}, sale{"b", 5}, // b's first sale panics: b starts from zero after it
		sale{"bad", 1}, sale{"bad", 2}, // the emit after bad's second sale fails: that sale only
		sale{"when", 9}, // the predicate panics
		sale{"boom", 4}, // its emit at drain panics
	), spec)
	assert.Equal(t, []string{"a=3/2", "b=5/1"}, got, "the outputs of a failed emit are discarded")
	assert.Equal(t, 0, st.Keys)
	var pe *stagefsm.PanicError
	items := map[sale]error{}
	states := map[tally]error{}
	for _, it := range dl {
		var ie *stage.ItemError
		require.ErrorAs(t, it.Err, &ie)
		assert.Equal(t, "acc", ie.Stage)
		switch v := it.Payload.(type) {
		case sale:
			items[v] = it.Err
		case tally:
			states[v] = it.Err
		default:
			t.Fatalf("dead letter %#v", it)
		}
	}
	require.Len(t, items, 4)
	assert.ErrorIs(t, items[sale{"a", -1}], errNegative)
	assert.ErrorAs(t, items[sale{"b", -2}], &pe)
	assert.ErrorIs(t, items[sale{"bad", 2}], errRejected)
	assert.ErrorAs(t, items[sale{"when", 9}], &pe)
	// At drain, bad's state (1/1: its failed sale was put back) fails to
	// emit again and boom's panics: each state is dead-lettered.
	require.Len(t, states, 2)
	assert.ErrorIs(t, states[tally{1, 1}], errRejected)
	assert.ErrorAs(t, states[tally{4, 1}], &pe)
	assert.Contains(t, states[tally{4, 1}].Error(), "drain")
	assert.Equal(t, uint64(5), st.Counts.Delivered, "nine sales, four failed: five folded")
}

func TestKeyedAccumulateIntervalEmitFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spec := tallySpec()
		spec.Every = time.Minute
		src := stagefsmtest.NewSource[sale]().Emit(sale{"bad", 3}, sale{"ok", 1}).Sleep(time.Second).Sleep(2 * time.Minute)
		got, st, dl := accRun(t, stage.Source[sale](src), spec)
		assert.Equal(t, []string{"ok=1/1"}, got)
		require.Len(t, dl, 1)
		assert.Equal(t, tally{3, 1}, dl[0].Payload)
		assert.ErrorIs(t, dl[0].Err, errRejected)
		assert.Contains(t, dl[0].Err.Error(), "interval")
		assert.Equal(t, uint64(2), st.Timeouts)
		assert.Equal(t, uint64(1), st.Counts.DeadLettered)
	})
}

func TestKeyedAccumulateFatalFailsTheStage(t *testing.T) {
	spec := tallySpec()
	spec.Fold = func(t *tally, s sale) error {
		if s.N < 0 {
			return stage.Fatal(errNegative)
		}
		t.Sum += s.N
		return nil
	}
	sink := &collector[string]{}
	dl := &letters{}
	p := stage.To(stage.ThenKeyedAccumulate(stage.From("src", stage.Source[sale](sales(sale{"a", 1}, sale{"a", -1}, sale{"b", 2}))), "acc", spec),
		"sink", sink, stage.WithDeadLetter(dl.add))
	err := run(t, p)
	require.ErrorIs(t, err, stage.ErrFatal)
	assert.ErrorIs(t, err, errNegative)
	assertBalanced(t, p, dl)
	assert.NotEmpty(t, dl.items())
}

func TestKeyedAccumulateBadSpec(t *testing.T) {
	for name, spec := range map[string]stage.KeyedAccumulator[sale, string, tally, string]{
		"empty":   {},
		"no fold": {Key: tallySpec().Key, Emit: tallySpec().Emit},
		"workers": func() stage.KeyedAccumulator[sale, string, tally, string] { s := tallySpec(); s.Workers = -1; return s }(),
	} {
		t.Run(name, func(t *testing.T) {
			p := stage.To(stage.ThenKeyedAccumulate(stage.From("src", stage.Source[sale](sales())), "acc", spec), "sink", &collector[string]{})
			err := p.Start(context.Background())
			assert.ErrorIs(t, err, stage.ErrKeyedSpec)
			assert.True(t, strings.Contains(err.Error(), `"acc"`), "the error names the stage: %v", err)
		})
	}
}

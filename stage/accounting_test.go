package stage_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/stage"
)

// faults is a random fault plan, drawn from a seed. Every decision depends
// on the item's value only, so a plan is the same whatever the scheduling.
type faults struct {
	items      int
	failRate   int // 1 in failRate items fails non-fatally in each handler (0: never)
	panicEvery int
	fatalStage int // 0: none, 1: source, 2: first transform, 3: second, 4: sink
	fatalAt    int
	drainAt    int // the sink asks for a drain after this many items (0: never)
	abortAt    int // the sink aborts after this many items (0: never)
	batch, cap int
}

func drawFaults(seed uint64) faults {
	r := rand.New(rand.NewPCG(seed, 42))
	f := faults{
		items: 500 + r.IntN(5000),
		batch: 1 + r.IntN(64),
		cap:   1 + r.IntN(4),
	}
	if r.IntN(3) > 0 {
		f.failRate = 2 + r.IntN(30)
	}
	if r.IntN(3) == 0 {
		f.panicEvery = 5 + r.IntN(50)
	}
	if r.IntN(2) == 0 {
		f.fatalStage, f.fatalAt = 1+r.IntN(4), 1+r.IntN(f.items)
	}
	switch r.IntN(4) {
	case 0:
		f.drainAt = 1 + r.IntN(f.items/2)
	case 1:
		f.abortAt = 1 + r.IntN(f.items/2)
	}
	return f
}

// fault returns the error a handler of stage number at returns for item v.
func (f faults) fault(at, v int) error {
	switch {
	case f.fatalStage == at && v == f.fatalAt:
		return stage.Fatal(fmt.Errorf("fatal at stage %d item %d", at, v))
	case f.panicEvery > 0 && (v+at)%f.panicEvery == 0:
		panic(fmt.Sprintf("panic at stage %d item %d", at, v))
	case f.failRate > 0 && (v*7+at)%f.failRate == 0:
		return errBad
	}
	return nil
}

// TestAccountingUnderRandomFaults runs pipelines with seeded random
// non-fatal errors, panics, a fatal error in a random stage, and a drain or
// an abort at a random point, and checks that every item emitted is
// delivered or dead-lettered, exactly once.
func TestAccountingUnderRandomFaults(t *testing.T) {
	for seed := range uint64(40) {
		f := drawFaults(seed)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("%+v", f)
			dl := &letters{}
			j := &stage.MemoryJournal{}
			var p *stage.Pipeline
			i := 0
			src := stage.SourceFunc[int](func(_ context.Context, emit func(int)) error {
				if i == f.items {
					return errEOF
				}
				i++
				if err := f.fault(1, i); err != nil {
					return err
				}
				emit(i)
				return nil
			})
			step := func(at int) stage.Transform[int, int] {
				return stage.TransformFunc[int, int](func(_ context.Context, v int, emit func(int)) error {
					if err := f.fault(at, v); err != nil {
						return err
					}
					emit(v)
					if v%97 == 0 {
						emit(-v) // fan out now and then
					}
					return nil
				})
			}
			var consumed atomic.Int64
			sink := stage.SinkFunc[int](func(_ context.Context, v int) error {
				if err := f.fault(4, v); err != nil {
					return err
				}
				n := int(consumed.Add(1))
				if n == f.drainAt {
					p.Drain()
				}
				if n == f.abortAt {
					p.Abort()
				}
				return nil
			})
			p = stage.To(stage.Then(stage.Then(stage.From("src", src), "a", step(2)), "b", step(3)), "sink", sink,
				stage.WithBatchSize(f.batch), stage.WithCapacity(f.cap), stage.WithDeadLetter(dl.add), stage.WithJournal(j))
			err := run(t, p)
			if f.fatalStage == 0 && f.abortAt == 0 {
				assert.NoError(t, err)
			}
			st := assertBalanced(t, p, dl)
			assert.EqualValues(t, consumed.Load(), st.Stages[3].Counts.Delivered)
			seen := map[string]bool{}
			for _, it := range dl.items() {
				key := fmt.Sprintf("%s#%d", it.Origin, it.Seq)
				assert.False(t, seen[key], "dead-lettered twice: %s", key)
				seen[key] = true
			}
			c := completions(j.Entries())
			for _, name := range []string{"src", "a", "b", "sink", ""} {
				assert.Len(t, c[name], 1, "one completion for %q", name)
			}
		})
	}
}

var errEOF = fmt.Errorf("end of input: %w", io.EOF) // a wrapped EOF ends input too

// TestFileJournal checks that the JSON-lines journal holds one valid JSON
// entry per line and records each stage's completion exactly once, also
// when a stage fails, and that it only grows.
func TestFileJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.jsonl")
	for range 2 { // a second run appends to the same file
		j, err := stage.OpenFileJournal(path)
		require.NoError(t, err)
		assert.Equal(t, path, j.Path())
		m := &mapper[int, int]{f: double, fail: func(i int) error {
			if i == 50 {
				return stage.Fatal(errFatal)
			}
			return nil
		}}
		p := stage.To(stage.Then(stage.From("src", &numbers{n: 100}), "t", stage.Transform[int, int](m)), "sink",
			&collector[int]{}, stage.WithJournal(j), stage.WithName("orders"))
		assert.ErrorIs(t, run(t, p), errFatal)
		require.NoError(t, j.Close())
		require.NoError(t, j.Close(), "Close is idempotent")
		assert.ErrorIs(t, j.Append(stage.Entry{}), os.ErrClosed)
	}

	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var entries []stage.Entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		require.True(t, json.Valid(sc.Bytes()), "line %d is JSON: %s", len(entries)+1, sc.Text())
		var e stage.Entry
		require.NoError(t, json.Unmarshal(sc.Bytes(), &e))
		assert.Equal(t, "orders", e.Pipeline)
		entries = append(entries, e)
	}
	require.NoError(t, sc.Err())
	c := completions(entries)
	for name, outcome := range map[string]stage.Outcome{"src": stage.OutcomeDrained, "t": stage.OutcomeFailed,
		"sink": stage.OutcomeDrained, "": stage.OutcomeFailed} {
		require.Len(t, c[name], 2, "one completion per run for %q", name)
		for _, e := range c[name] {
			assert.Equal(t, outcome, e.Outcome, name)
			require.NotNil(t, e.Counts)
		}
	}
	assert.Contains(t, c["t"][0].Reason, errFatal.Error())
	assert.Equal(t, c[""][0].Counts.Emitted, c[""][0].Counts.Delivered+c[""][0].Counts.DeadLettered)
}

func TestOpenFileJournalError(t *testing.T) {
	_, err := stage.OpenFileJournal(filepath.Join(t.TempDir(), "missing", "journal.jsonl"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

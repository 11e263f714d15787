package checkpoint_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stagefsm/stagefsm/checkpoint"
)

// The incremental-checkpoint benchmark of the checkpoint design:
// 1,000,000 keys of 16-byte state, 1% of them changed since the last
// checkpoint.
const (
	benchKeys    = 1_000_000
	benchChanged = benchKeys / 100
)

var benchGraph = []string{"src", "count"}

func benchState() (keys []string, state map[string][]byte) {
	keys = make([]string, benchKeys)
	state = make(map[string][]byte, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%07d", i)
		state[keys[i]] = fmt.Appendf(nil, "count=%010d", i)
	}
	return keys, state
}

// changes changes the next 1% of the keys, round robin from *next, in
// state, and returns them.
func changes(keys []string, state map[string][]byte, next *int) map[string][]byte {
	set := make(map[string][]byte, benchChanged)
	for range benchChanged {
		k := keys[*next%len(keys)]
		*next++
		v := fmt.Appendf(nil, "count=%010d", *next)
		state[k] = v
		set[k] = v
	}
	return set
}

func fullUpdate(pos int, state map[string][]byte) *checkpoint.Update {
	return &checkpoint.Update{Graph: benchGraph, Stages: map[string]checkpoint.StageUpdate{
		"src": {Position: fmt.Append(nil, pos)}, "count": {Set: state}}}
}

func mustSave(b *testing.B, d *checkpoint.Dir, u *checkpoint.Update) uint64 {
	seq, err := d.Save(context.Background(), u)
	if err != nil {
		b.Fatal(err)
	}
	return seq
}

func reportCheckpoint(b *testing.B, dir string, start time.Time, n int) time.Duration {
	per := time.Since(start) / time.Duration(n)
	b.ReportMetric(float64(per.Microseconds())/1000, "ms/checkpoint")
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		b.Fatal("no checkpoint files", err)
	}
	fi, err := entries[len(entries)-1].Info() // the newest
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(fi.Size())/1e6, "MB/checkpoint")
	return per
}

// BenchmarkCheckpoint compares, in one run, the plain-file design (every
// checkpoint rewrites the whole state: "full") with the incremental one
// (only the 1% changed keys: "delta"); it measures a background
// compaction ("compaction"), 120 checkpoints with the default compaction,
// one of which starts a compaction that runs while the others save
// ("amortized": the mean and the worst checkpoint), and a Load of a full
// checkpoint and 10 deltas. "delta" reports full-per-delta: how many times cheaper a delta
// is than a full rewrite measured just before it.
func BenchmarkCheckpoint(b *testing.B) {
	keys, state := benchState()
	next := 0

	var fullCost time.Duration
	b.Run("full", func(b *testing.B) {
		path := b.TempDir()
		d, err := checkpoint.OpenDir(path)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = d.Close() })
		n := 0
		start := time.Now()
		for b.Loop() {
			changes(keys, state, &next)
			mustSave(b, d, fullUpdate(n, state))
			n++
		}
		fullCost = reportCheckpoint(b, path, start, n)
	})

	b.Run("delta", func(b *testing.B) {
		path := b.TempDir()
		d, err := checkpoint.OpenDir(path, checkpoint.WithCompaction(1e9))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = d.Close() })
		t0 := time.Now()
		seq := mustSave(b, d, fullUpdate(0, state))
		baseline := time.Since(t0)
		n := 0
		start := time.Now()
		for b.Loop() {
			n++
			seq = mustSave(b, d, &checkpoint.Update{Base: seq, Graph: benchGraph, Stages: map[string]checkpoint.StageUpdate{
				"src": {Position: fmt.Append(nil, n)}, "count": {Set: changes(keys, state, &next)}}})
		}
		per := time.Since(start) / time.Duration(n)
		reportCheckpoint(b, path, start, n)
		if fullCost == 0 {
			fullCost = baseline
		}
		b.ReportMetric(float64(fullCost)/float64(per), "full-per-delta")
	})

	// A compaction, in the background: from the save that starts it to
	// the Close that waits for it.
	b.Run("compaction", func(b *testing.B) {
		path := b.TempDir()
		d, err := checkpoint.OpenDir(path, checkpoint.WithCompaction(0))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = d.Close() })
		seq := mustSave(b, d, fullUpdate(0, state))
		var spent time.Duration
		n := 0
		for b.Loop() {
			n++
			t0 := time.Now()
			mustSave(b, d, &checkpoint.Update{Base: seq, Graph: benchGraph, Stages: map[string]checkpoint.StageUpdate{
				"src": {Position: fmt.Append(nil, n)}, "count": {Set: changes(keys, state, &next)}}})
			if err := d.Close(); err != nil {
				b.Fatal(err)
			}
			spent += time.Since(t0)
			if d, err = checkpoint.OpenDir(path, checkpoint.WithCompaction(0)); err != nil {
				b.Fatal(err)
			}
			cp, err := d.Load(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			seq = cp.Seq
		}
		b.ReportMetric(float64(spent.Microseconds())/float64(n)/1000, "ms/compaction")
	})

	// 120 checkpoints per iteration with the default compaction: the
	// deltas outgrow the full checkpoint once, so one of them compacts.
	b.Run("amortized", func(b *testing.B) {
		const per = 120
		path := b.TempDir()
		d, err := checkpoint.OpenDir(path)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = d.Close() })
		seq := mustSave(b, d, fullUpdate(0, state))
		n := 0
		var worst time.Duration
		start := time.Now()
		for b.Loop() {
			for range per {
				n++
				t0 := time.Now()
				seq = mustSave(b, d, &checkpoint.Update{Base: seq, Graph: benchGraph, Stages: map[string]checkpoint.StageUpdate{
					"src": {Position: fmt.Append(nil, n)}, "count": {Set: changes(keys, state, &next)}}})
				worst = max(worst, time.Since(t0))
			}
		}
		if err := d.Close(); err != nil { // waits for the compaction
			b.Fatal(err)
		}
		compacted := 0
		entries, err := os.ReadDir(path)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range entries {
			if strings.Contains(e.Name(), ".full.") && !strings.HasPrefix(e.Name(), "00000000000000000001.") {
				compacted++
			}
		}
		if compacted == 0 {
			b.Fatal("no compaction ran")
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/float64(n)/1000, "ms/checkpoint")
		b.ReportMetric(float64(worst.Microseconds())/1000, "ms/worst")
	})

	b.Run("load", func(b *testing.B) {
		path := b.TempDir()
		d, err := checkpoint.OpenDir(path, checkpoint.WithCompaction(1e9))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = d.Close() })
		seq := mustSave(b, d, fullUpdate(0, state))
		for i := range 10 {
			seq = mustSave(b, d, &checkpoint.Update{Base: seq, Graph: benchGraph, Stages: map[string]checkpoint.StageUpdate{
				"src": {Position: fmt.Append(nil, i)}, "count": {Set: changes(keys, state, &next)}}})
		}
		n := 0
		start := time.Now()
		for b.Loop() {
			cp, err := d.Load(context.Background())
			if err != nil || len(cp.Stages["count"].State) != benchKeys {
				b.Fatal(err, "or a wrong state")
			}
			n++
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/float64(n)/1000, "ms/load")
	})
}

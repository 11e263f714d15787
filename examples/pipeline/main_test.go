package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// demoRun runs the demo with args and a temporary output directory.
func demoRun(t *testing.T, args ...string) (code int, stdout, stderr string, out string) {
	t.Helper()
	out = t.TempDir()
	var o, e bytes.Buffer
	code = run(append([]string{"-out", out, "-progress", "0"}, args...), &o, &e)
	return code, o.String(), e.String(), out
}

func TestDemoDrains(t *testing.T) {
	code, stdout, stderr, out := demoRun(t, "-n", "20000")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "20,000 orders")
	assert.Contains(t, stdout, "✓")
	assert.NotContains(t, stdout, "MISMATCH")
	rows := countLines(t, filepath.Join(out, "hourly_revenue.jsonl"))
	assert.Positive(t, rows)
	assertJournal(t, filepath.Join(out, "journal.jsonl"), "drained")
}

func TestDemoFaultsAreAccountedFor(t *testing.T) {
	code, stdout, stderr, out := demoRun(t, "-n", "20000", "-fail-rate", "0.05", "-panic-every", "997", "-fatal-at", "15000")
	assert.Equal(t, 1, code, "a failed stage fails the run")
	assert.Contains(t, stderr, "currency service unreachable")
	assert.Contains(t, stdout, "✓", "every item is still accounted for")
	assert.Contains(t, stdout, "handler panic (recovered)")
	assert.Contains(t, stdout, "left behind by a failed stage")
	assert.Positive(t, countLines(t, filepath.Join(out, "dead_letters.jsonl")))
	assertJournal(t, filepath.Join(out, "journal.jsonl"), "failed")
}

func TestDemoDrainAfter(t *testing.T) {
	code, stdout, stderr, _ := demoRun(t, "-n", "200000", "-slow-sink", "1ms", "-drain-after", "50ms")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "draining")
	assert.Contains(t, stdout, "✓")
	assert.NotContains(t, stdout, "200,000 orders", "the drain stopped the source early")
}

func TestDemoFlags(t *testing.T) {
	var o, e bytes.Buffer
	assert.Equal(t, 0, run([]string{"-h"}, &o, &e))
	for _, f := range []string{"-fail-rate", "-panic-every", "-fatal-at", "-slow-sink", "-drain-after", "-out", "-n",
		"-flaky-sink", "-max-restarts", "-restart-backoff"} {
		assert.Contains(t, e.String(), f)
	}
	assert.Equal(t, 2, run([]string{"-n", "-1"}, &o, &e))
	assert.Equal(t, 2, run([]string{"extra"}, &o, &e))
	assert.Equal(t, 2, run([]string{"-nope"}, &o, &e))
	assert.Equal(t, 2, run([]string{"-flaky-sink", "-5"}, &o, &e))
}

func TestDemoFlakySinkIsRestarted(t *testing.T) {
	code, stdout, stderr, out := demoRun(t, "-n", "20000", "-flaky-sink", "1000")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "restart policy of write")
	assert.Contains(t, stdout, "✓", "every item is still accounted for")
	assert.Contains(t, stdout, "connection reset (-flaky-sink)")
	restarts := assertJournal(t, filepath.Join(out, "journal.jsonl"), "drained")
	assert.Positive(t, restarts["write"], "the write stage was restarted")
	assert.Len(t, restarts, 1, "and no other stage")
	assert.Contains(t, stdout, "↻ 1:", "the timeline shows the restarts")
}

func TestDemoFlakySinkGivesUp(t *testing.T) {
	code, stdout, stderr, out := demoRun(t, "-n", "20000", "-flaky-sink", "100", "-max-restarts", "2")
	assert.Equal(t, 1, code, "the policy gave up: the write stage failed")
	assert.Contains(t, stderr, "restart intensity exceeded")
	assert.Contains(t, stdout, "✓", "every item is still accounted for")
	assert.Contains(t, stdout, "left behind by a failed stage")
	restarts := assertJournal(t, filepath.Join(out, "journal.jsonl"), "failed")
	assert.Equal(t, map[string]int{"write": 2}, restarts)
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.Count(string(b), "\n")
}

// assertJournal checks that every journal line is JSON, that each stage
// and the pipeline completed once, and that the pipeline's completion has
// the outcome. It returns the number of restart entries per stage.
func assertJournal(t *testing.T, path, outcome string) (restarts map[string]int) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	completions, restarts := map[string]int{}, map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct{ Stage, Kind, Outcome string }
		require.NoError(t, json.Unmarshal(sc.Bytes(), &e), sc.Text())
		switch e.Kind {
		case "completed":
			completions[e.Stage]++
			if e.Stage == "" {
				assert.Equal(t, outcome, e.Outcome)
			}
		case "restart":
			restarts[e.Stage]++
		}
	}
	require.NoError(t, sc.Err())
	assert.Equal(t, map[string]int{"read": 1, "parse": 1, "enrich": 1, "hourly": 1, "write": 1, "": 1}, completions)
	return restarts
}

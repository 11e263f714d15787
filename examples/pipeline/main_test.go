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
	for _, f := range []string{"-fail-rate", "-panic-every", "-fatal-at", "-slow-sink", "-drain-after", "-out", "-n"} {
		assert.Contains(t, e.String(), f)
	}
	assert.Equal(t, 2, run([]string{"-n", "-1"}, &o, &e))
	assert.Equal(t, 2, run([]string{"extra"}, &o, &e))
	assert.Equal(t, 2, run([]string{"-nope"}, &o, &e))
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.Count(string(b), "\n")
}

// assertJournal checks that every journal line is JSON and that the
// pipeline's completion has the outcome.
func assertJournal(t *testing.T, path, outcome string) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	completions := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct{ Stage, Kind, Outcome string }
		require.NoError(t, json.Unmarshal(sc.Bytes(), &e), sc.Text())
		if e.Kind == "completed" {
			completions[e.Stage]++
			if e.Stage == "" {
				assert.Equal(t, outcome, e.Outcome)
			}
		}
	}
	require.NoError(t, sc.Err())
	assert.Equal(t, map[string]int{"read": 1, "parse": 1, "enrich": 1, "hourly": 1, "write": 1, "": 1}, completions)
}

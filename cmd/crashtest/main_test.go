package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestCrashtest runs the whole crash test, small: two kills, then the run
// to its end, and the outputs as if no kill happened.
func TestCrashtest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo several times")
	}
	var out, errb bytes.Buffer
	code := run([]string{"-rounds", "2", "-n", "150000", "-checkpoint-every", "20ms", "-seed", "7"}, &out, &errb)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", out.String(), errb.String())
	m := regexp.MustCompile(`^crashtest: rounds=2 kills=(\d) exact=true\n$`).FindStringSubmatch(out.String())
	require.NotNil(t, m, "one line: %q", out.String())
	kills, _ := strconv.Atoi(m[1])
	assert.Positive(t, kills, errb.String())
	assert.Contains(t, errb.String(), "resumed from a checkpoint")
	assert.NotContains(t, errb.String(), " 0 of ", "a start after a kill resumed")
}

func TestCompareFindsTheFirstDifference(t *testing.T) {
	ref, got := t.TempDir(), t.TempDir()
	write := func(dir, name, text string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644))
	}
	for _, dir := range []string{ref, got} {
		write(dir, "hourly_revenue.jsonl", "h1\nh2\n")
		write(dir, "high_value.jsonl", "v1\nv2\n")
	}
	write(ref, "alerts.jsonl", "a\nb\nc\n")
	write(got, "alerts.jsonl", "c\na\nb\n")
	diff, err := compare(ref, got)
	require.NoError(t, err)
	assert.Empty(t, diff, "alerts are compared as a set")

	write(got, "alerts.jsonl", "c\na\n")
	diff, err = compare(ref, got)
	require.NoError(t, err)
	assert.Equal(t, "alerts.jsonl (sorted) line 2: reference \"b\", crash run \"c\"", diff)

	write(got, "high_value.jsonl", "v2\nv1\n")
	diff, err = compare(ref, got)
	require.NoError(t, err)
	assert.Equal(t, "high_value.jsonl line 1: reference \"v1\", crash run \"v2\"", diff, "high-value orders in order")

	write(got, "high_value.jsonl", "v1\nv2\nv3")
	diff, err = compare(ref, got)
	require.NoError(t, err)
	assert.Equal(t, "high_value.jsonl: reference 2 lines, crash run 3", diff)

	require.NoError(t, os.Remove(filepath.Join(got, "hourly_revenue.jsonl")))
	diff, err = compare(ref, got)
	require.NoError(t, err)
	assert.Contains(t, diff, "hourly_revenue.jsonl", "a missing output")

	write(ref, "hourly_revenue.jsonl", "")
	_, err = compare(ref, got)
	assert.Error(t, err, "an empty reference proves nothing")
}

func TestResultLine(t *testing.T) {
	assert.Equal(t, "crashtest: rounds=10 kills=9 exact=true", result{rounds: 10, kills: 9}.line())
	assert.Equal(t, "crashtest: rounds=3 kills=3 exact=false: x.jsonl line 1", result{rounds: 3, kills: 3, diff: "x.jsonl line 1"}.line())
}

func TestFlags(t *testing.T) {
	var out, errb bytes.Buffer
	assert.Equal(t, 2, run([]string{"-rounds", "-1"}, &out, &errb))
	assert.Equal(t, 2, run([]string{"-n", "0"}, &out, &errb))
	assert.Equal(t, 2, run([]string{"extra"}, &out, &errb))
	assert.Equal(t, 0, run([]string{"-h"}, &out, &errb))
	assert.Contains(t, errb.String(), "-rounds")
	c, err := parseFlags(nil, &errb)
	require.NoError(t, err)
	assert.NotZero(t, c.seed, "a seed from the clock")
	assert.Equal(t, 10, c.rounds)
	assert.Equal(t, 100*time.Millisecond, c.every)
}

// TestDemoThatFailsIsADifference: a demo that exits with an error in the
// crash run is reported, not a crash test error.
func TestDemoThatFailsIsADifference(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "demo")
	// The reference run generates nothing and fails: crashtest cannot test.
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho broken >&2\nexit 3\n"), 0o755))
	var out, errb bytes.Buffer
	assert.Equal(t, 2, run([]string{"-demo", script, "-rounds", "1", "-seed", "1"}, &out, &errb))
	assert.Contains(t, out.String(), "crashtest: error: the reference run failed: the demo failed: exit status 3: broken")
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/stage"
)

var (
	_ stage.Resumable = (*lineSource)(nil)
	_ stage.Resumable = (*fileSink[Outcome])(nil)
)

// readAll reads src to its end, returning its lines, and its position and
// the number of lines emitted so far after each call to Next.
func readAll(t *testing.T, src *lineSource) (lines []string, positions [][]byte, emitted []int) {
	t.Helper()
	ctx := context.Background()
	for {
		err := src.Next(ctx, func(l string) { lines = append(lines, l) })
		if errors.Is(err, io.EOF) {
			return lines, positions, emitted
		}
		require.NoError(t, err)
		pos, err := src.Position()
		require.NoError(t, err)
		positions = append(positions, pos)
		emitted = append(emitted, len(lines))
	}
}

// TestLineSourceResume: a source resumed at any position it reported reads
// exactly the lines after it, and goes on counting.
func TestLineSourceResume(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in.csv")
	var b strings.Builder
	b.WriteString("h\n")
	var want []string
	for i := range 1000 {
		l := fmt.Sprintf("%c,%d", "ab"[i%2], i)
		want = append(want, l)
		b.WriteString(l + "\n")
		if i%300 == 0 {
			b.WriteString("\n") // an empty line is skipped
		}
	}
	b.WriteString("a,last") // no newline at the end
	want = append(want, "a,last")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	ctx := context.Background()

	open := func() *lineSource {
		s := &lineSource{path: path, header: "h", countPrefix: "a,"}
		require.NoError(t, s.Open(ctx))
		t.Cleanup(func() { s.Close() })
		return s
	}
	src := open()
	lines, positions, emitted := readAll(t, src)
	require.Equal(t, want, lines)
	require.Greater(t, len(positions), 3, "several Next calls")
	assert.EqualValues(t, 501, src.counted.Load())

	for i, pos := range positions {
		r := open()
		require.NoError(t, r.Resume(ctx, pos))
		rest, _, _ := readAll(t, r)
		assert.Equal(t, len(want)-emitted[i], len(rest), "resumed after Next %d", i+1)
		assert.Equal(t, want[emitted[i]:], append([]string{}, rest...), "resumed after Next %d", i+1)
		assert.EqualValues(t, 501, r.counted.Load(), "the count goes on")
	}
}

func TestLineSourceResumeRefusesABadPosition(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in.csv")
	require.NoError(t, os.WriteFile(path, []byte("header\na\nb\n"), 0o644))
	for name, pos := range map[string][]byte{
		"garbage":        {0xff},
		"trailing bytes": {3, 0, 0},
		"in the header":  {3, 0},
		"past the end":   {100, 0},
		"empty":          nil,
	} {
		t.Run(name, func(t *testing.T) {
			s := &lineSource{path: path, header: "header"}
			require.NoError(t, s.Open(context.Background()))
			defer s.Close()
			assert.ErrorIs(t, s.Resume(context.Background(), pos), errPosition)
		})
	}
}

// TestFileSinkResume: what a crashed sink wrote after its position is
// replaced by what the resumed sink writes, and the file ends as if written
// once.
func TestFileSinkResume(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	ctx := context.Background()
	enc := func(b []byte, v int) []byte { return fmt.Appendf(b, `{"v":%d}`, v) }

	whole := &fileSink[int]{path: filepath.Join(t.TempDir(), "whole.jsonl"), encode: enc}
	require.NoError(t, whole.Open(ctx))
	for i := range 100 {
		require.NoError(t, whole.Consume(ctx, i))
	}
	require.NoError(t, whole.Close())

	crashed := &fileSink[int]{path: path, encode: enc}
	require.NoError(t, crashed.Open(ctx))
	for i := range 40 {
		require.NoError(t, crashed.Consume(ctx, i))
	}
	pos, err := crashed.Position()
	require.NoError(t, err)
	for i := 40; i < 70; i++ { // written after the checkpoint, before the crash
		require.NoError(t, crashed.Consume(ctx, i))
	}
	require.NoError(t, crashed.Close())

	resumed := &fileSink[int]{path: path, encode: enc}
	require.NoError(t, resumed.Open(ctx))
	require.NoError(t, resumed.Resume(ctx, pos))
	assert.EqualValues(t, 40, resumed.rows.Load(), "the count goes on")
	for i := 40; i < 100; i++ {
		require.NoError(t, resumed.Consume(ctx, i))
	}
	require.NoError(t, resumed.Close())
	assert.EqualValues(t, 100, resumed.rows.Load())

	got, err := os.ReadFile(path)
	require.NoError(t, err)
	want, err := os.ReadFile(whole.path)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got))
}

// TestFileSinkFreshStartTruncates: a sink that does not resume starts its
// file empty, even when it writes nothing.
func TestFileSinkFreshStartTruncates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	require.NoError(t, os.WriteFile(path, []byte("stale\n"), 0o644))
	s := &fileSink[int]{path: path, encode: func(b []byte, v int) []byte { return fmt.Appendf(b, "%d", v) }}
	require.NoError(t, s.Open(context.Background()))
	require.NoError(t, s.Close())
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Empty(t, got)
}

// TestFileSinkResumeRefusesAShortFile: a file shorter than the checkpoint's
// position lost output the checkpoint counts on; Resume says so rather than
// extend it.
func TestFileSinkResumeRefusesAShortFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	require.NoError(t, os.WriteFile(path, []byte("12\n"), 0o644))
	ctx := context.Background()
	s := &fileSink[int]{path: path, encode: func(b []byte, v int) []byte { return fmt.Appendf(b, "%d", v) }}
	require.NoError(t, s.Open(ctx))
	defer s.Close()
	assert.ErrorIs(t, s.Resume(ctx, []byte{10, 1}), errPosition)
	assert.ErrorIs(t, s.Resume(ctx, []byte{0x80}), errPosition)

	counting := &fileSink[int]{} // no file: only a count
	require.NoError(t, counting.Open(ctx))
	require.NoError(t, counting.Resume(ctx, []byte{0, 7}))
	assert.EqualValues(t, 7, counting.rows.Load())
	assert.ErrorIs(t, counting.Resume(ctx, []byte{5, 7}), errPosition)
	pos, err := counting.Position()
	require.NoError(t, err)
	assert.Equal(t, []byte{0, 7}, pos)
}

// TestDemoOutputsAreDeterministic: two runs on the same input write the
// same output files, byte for byte, when no timeout fires (a timeout is
// real time: which orders it abandons, and when, depends on the machine's
// speed). The dead letters are the same set, in an order that depends on
// how the failing stages interleave.
func TestDemoOutputsAreDeterministic(t *testing.T) {
	code, _, stderr, first := demoRun(t, "-n", "20000", "-abandon-after", "1m")
	require.Equal(t, 0, code, stderr)
	code, _, stderr, again := demoRun(t, "-in", first, "-abandon-after", "1m")
	require.Equal(t, 0, code, stderr)
	for _, name := range []string{"hourly_revenue.jsonl", "alerts.jsonl", "high_value.jsonl", "dead_letters.jsonl"} {
		a, err := os.ReadFile(filepath.Join(first, name))
		require.NoError(t, err)
		b, err := os.ReadFile(filepath.Join(again, name))
		require.NoError(t, err)
		require.NotEmpty(t, a, name)
		if name == "dead_letters.jsonl" {
			a, b = sortedLines(a), sortedLines(b)
		}
		assert.Equal(t, string(a), string(b), name)
	}
}

func sortedLines(b []byte) []byte {
	lines := strings.SplitAfter(string(b), "\n")
	slices.Sort(lines)
	return []byte(strings.Join(lines, ""))
}

// The test binary runs the demo as a child process when childArgsEnv is
// set (its arguments, one a line), and kills itself with SIGKILL after the
// childKillEnv-th checkpoint when that is set.
const (
	childArgsEnv = "PIPELINE_TEST_CHILD_ARGS"
	childKillEnv = "PIPELINE_TEST_CHILD_KILL_AT"
)

func childMain(args []string) int {
	if at, err := strconv.Atoi(os.Getenv(childKillEnv)); err == nil {
		saves := 0
		checkpointed = func(uint64) {
			if saves++; saves == at {
				self, _ := os.FindProcess(os.Getpid())
				self.Kill() // SIGKILL on Unix: a crash, right after a checkpoint
			}
		}
	}
	return run(args, io.Discard, os.Stderr)
}

// runChild runs the demo in a child process, killed after its killAt-th
// checkpoint when killAt is positive, and returns how it ended and its
// stderr.
func runChild(t *testing.T, killAt int, args ...string) (*os.ProcessState, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childArgsEnv+"="+strings.Join(args, "\n"), childKillEnv+"="+strconv.Itoa(killAt))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("the demo did not run: %v", err)
	}
	return cmd.ProcessState, stderr.String()
}

// TestDemoResumesAfterAKill: the demo killed twice right after a
// checkpoint, mid-stream, and run again with the same -state, writes the
// same output files as a run never killed (the alerts as a set: the end of
// input reaches the open orders in the keyed stage's slot order, which a
// restore changes).
func TestDemoResumesAfterAKill(t *testing.T) {
	in := t.TempDir()
	require.NoError(t, generate(filepath.Join(in, "orders.csv"), filepath.Join(in, "customers.csv"), 60000, 0.01, 3))
	code, _, stderr, ref := demoRun(t, "-in", in, "-abandon-after", "1m")
	require.Equal(t, 0, code, stderr)

	out, state := t.TempDir(), t.TempDir()
	args := []string{"-in", in, "-out", out, "-state", state, "-checkpoint-every", "5ms", "-abandon-after", "1m", "-progress", "0"}
	for kill := range 2 {
		st, stderr := runChild(t, 3, args...)
		ws, ok := st.Sys().(syscall.WaitStatus)
		require.True(t, ok && ws.Signaled(), "kill %d: the demo was killed, not %s: %s", kill+1, st, stderr)
		if kill > 0 {
			assert.Contains(t, stderr, "resuming from checkpoint")
		}
	}
	st, stderr := runChild(t, 0, args...)
	require.True(t, st.Success(), "%s: %s", st, stderr)
	assert.Contains(t, stderr, "-state "+state+": resuming from checkpoint")

	for _, name := range []string{"hourly_revenue.jsonl", "high_value.jsonl", "alerts.jsonl"} {
		want, err := os.ReadFile(filepath.Join(ref, name))
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(out, name))
		require.NoError(t, err)
		require.NotEmpty(t, want, name)
		if name == "alerts.jsonl" {
			want, got = sortedLines(want), sortedLines(got)
		}
		assert.Equal(t, string(want), string(got), name)
	}
}

func TestDemoStateFlags(t *testing.T) {
	var o, e bytes.Buffer
	state := t.TempDir()
	c, err := parseFlags([]string{"-state", state}, &e)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(state, "outputs"), c.out, "the outputs of a resumable run are not in a new temporary directory")
	assert.Equal(t, time.Second, c.cpEvery)
	assert.Equal(t, 2, run([]string{"-state", state, "-checkpoint-every", "0s"}, &o, &e))

	o.Reset()
	e.Reset()
	require.Equal(t, 0, run([]string{"-state", state, "-n", "2000", "-progress", "0"}, &o, &e), e.String())
	assert.Contains(t, e.String(), "no checkpoint yet")
	assert.Contains(t, o.String(), "checkpoints (-state): 1 stored, 0 failed", "the one at the end")
	assert.FileExists(t, filepath.Join(state, "outputs", "alerts.jsonl"))
	e.Reset()
	assert.Equal(t, 0, run([]string{"-h"}, &o, &e))
	assert.Contains(t, e.String(), "-state")
	assert.Contains(t, e.String(), "-checkpoint-every")
}

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
	diff, err := comparison{ref: ref, out: got}.compare()
	require.NoError(t, err)
	assert.Empty(t, diff, "alerts are compared as a set")

	write(got, "alerts.jsonl", "c\na\n")
	diff, err = comparison{ref: ref, out: got}.compare()
	require.NoError(t, err)
	assert.Equal(t, "alerts.jsonl (sorted) line 2: reference \"b\", crash run \"c\"", diff)

	write(got, "high_value.jsonl", "v2\nv1\n")
	diff, err = comparison{ref: ref, out: got}.compare()
	require.NoError(t, err)
	assert.Equal(t, "high_value.jsonl line 1: reference \"v1\", crash run \"v2\"", diff, "high-value orders in order")

	write(got, "high_value.jsonl", "v1\nv2\nv3")
	diff, err = comparison{ref: ref, out: got}.compare()
	require.NoError(t, err)
	assert.Equal(t, "high_value.jsonl: reference 2 lines, crash run 3", diff)

	require.NoError(t, os.Remove(filepath.Join(got, "hourly_revenue.jsonl")))
	diff, err = comparison{ref: ref, out: got}.compare()
	require.NoError(t, err)
	assert.Contains(t, diff, "hourly_revenue.jsonl", "a missing output")

	write(got, "hourly_revenue.jsonl", "h1\nh2\n")
	write(got, "high_value.jsonl", "v1\nv2\n")
	write(ref, "alerts.jsonl", `{"order":1,"status":"abandoned","abandoned_by":"timeout","placed_at":"x"}`+"\n")
	write(got, "alerts.jsonl", `{"order":1,"status":"abandoned","abandoned_by":"end of input","placed_at":"x"}`+"\n")
	diff, err = comparison{ref: ref, out: got}.compare()
	require.NoError(t, err)
	assert.Contains(t, diff, "alerts.jsonl (sorted) line 1", "abandoned_by differs")
	diff, err = comparison{ref: ref, out: got, loose: true}.compare()
	require.NoError(t, err)
	assert.Empty(t, diff, "loose: abandoned_by is not compared")

	write(ref, "hourly_revenue.jsonl", "")
	_, err = comparison{ref: ref, out: got}.compare()
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

// TestReferenceThatFailsIsAnError: without a reference there is nothing to
// compare: crashtest could not test.
func TestReferenceThatFailsIsAnError(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "demo")
	// The reference run generates nothing and fails: crashtest cannot test.
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho broken >&2\nexit 3\n"), 0o755))
	var out, errb bytes.Buffer
	assert.Equal(t, 2, run([]string{"-demo", script, "-rounds", "1", "-seed", "1"}, &out, &errb))
	assert.Contains(t, out.String(), "crashtest: error: the reference run failed: the demo failed: exit status 3: broken")
}

// fakeDemo is a shell script that plays the demo: the reference run writes
// the outputs; each of the first FAKE_KILLS crash starts says what it
// resumes from and that it stored a checkpoint, and waits to be killed;
// the next one writes the outputs. With FAKE_DUP set, a start
// after the end writes an hourly row twice, as an aggregate restored from
// the final checkpoint would.
const fakeDemo = `#!/bin/sh
out= state=
while [ $# -gt 0 ]; do
	case "$1" in -out) out=$2; shift ;; -state) state=$2; shift ;; esac
	shift
done
mkdir -p "$out"
if [ -z "$state" ]; then
	printf 'h1\nh2\n' >"$out/hourly_revenue.jsonl"
	printf 'v1\n' >"$out/high_value.jsonl"
	printf 'b\na\n' >"$out/alerts.jsonl"
	exit 0
fi
mkdir -p "$state"
if [ -n "$FAKE_FAIL" ]; then
	echo "broken state" >&2
	exit 3
fi
n=$(cat "$state/starts" 2>/dev/null || echo 0)
echo $((n + 1)) >"$state/starts"
if [ "$n" -lt "$FAKE_KILLS" ]; then
	if [ "$n" -gt 0 ]; then
		echo "-state $state: resuming from checkpoint $n" >&2
	else
		echo "-state $state: no checkpoint yet: starting from the beginning" >&2
	fi
	echo "-state $state: checkpoint $((n + 1)) stored" >&2
	exec sleep 60
fi
# The start that finishes says nothing, so that it ends before any kill.
if [ -f "$out/done" ]; then
	[ -n "$FAKE_DUP" ] && printf 'h1\n' >>"$out/hourly_revenue.jsonl"
	exit 0
fi
printf 'h1\nh2\n' >"$out/hourly_revenue.jsonl"
printf 'v1\n' >"$out/high_value.jsonl"
printf 'a\nb\n' >"$out/alerts.jsonl"
touch "$out/done"
`

// TestRoundsWithAFakeDemo: the kills are counted as kills, the starts
// after them as resumes, the alerts compared as a set; -restart-finished
// catches a finished run that writes again when started once more.
func TestRoundsWithAFakeDemo(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("needs /bin/sh")
	}
	demo := filepath.Join(t.TempDir(), "demo")
	require.NoError(t, os.WriteFile(demo, []byte(fakeDemo), 0o755))
	t.Setenv("FAKE_KILLS", "3")

	var out, errb bytes.Buffer
	code := run([]string{"-demo", demo, "-rounds", "3", "-seed", "1", "-restart-finished"}, &out, &errb)
	assert.Equal(t, 0, code, errb.String())
	assert.Equal(t, "crashtest: rounds=3 kills=3 exact=true\n", out.String())
	assert.Contains(t, errb.String(), "2 of 3 starts after a kill resumed", "the last start says nothing")

	t.Setenv("FAKE_DUP", "1")
	out.Reset()
	code = run([]string{"-demo", demo, "-rounds", "3", "-seed", "1", "-restart-finished"}, &out, &errb)
	assert.Equal(t, 1, code)
	assert.Equal(t, "crashtest: rounds=3 kills=3 exact=false: after a start of the finished run: hourly_revenue.jsonl: reference 2 lines, crash run 3\n", out.String())

	t.Setenv("FAKE_KILLS", "2")
	out.Reset()
	errb.Reset()
	code = run([]string{"-demo", demo, "-rounds", "3", "-seed", "1"}, &out, &errb)
	assert.Equal(t, 0, code, errb.String())
	assert.Equal(t, "crashtest: rounds=3 kills=2 exact=true\n", out.String())
	assert.Contains(t, errb.String(), "round 3: the demo finished before its kill", "no more rounds")

	t.Setenv("FAKE_KILLS", "1")
	out.Reset()
	errb.Reset()
	code = run([]string{"-demo", demo, "-rounds", "1", "-seed", "1"}, &out, &errb)
	assert.Equal(t, 1, code, "the outputs match, but no start resumed: the test proved nothing")
	assert.Equal(t, "crashtest: rounds=1 kills=1 exact=false: no start after a kill resumed from a checkpoint "+
		"(the demo did not checkpoint, or every kill came before its first checkpoint)\n", out.String())

	t.Setenv("FAKE_FAIL", "1")
	out.Reset()
	code = run([]string{"-demo", demo, "-rounds", "1", "-seed", "1"}, &out, &errb)
	assert.Equal(t, 1, code, "a start that fails is a difference")
	assert.Equal(t, "crashtest: rounds=1 kills=0 exact=false: round 1: the demo failed: exit status 3: broken state\n", out.String())
}

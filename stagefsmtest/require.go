package stagefsmtest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// RequireTimeline checks that rec's state timeline (see
// [Recorder.Timeline]) is exactly want, comparing states with ==. If not,
// it fails the test at once (t.Fatalf) with a line diff of the two
// timelines.
func RequireTimeline[S comparable, E any](t testing.TB, rec *Recorder[S, E], want ...S) {
	t.Helper()
	if rec == nil {
		t.Fatalf("stagefsmtest: RequireTimeline: nil Recorder")
		return
	}
	got := rec.Timeline()
	d := diff(len(want), len(got),
		func(i, j int) bool { return want[i] == got[j] },
		func(i int) string { return fmt.Sprint(want[i]) },
		func(j int) string { return fmt.Sprint(got[j]) })
	if d != "" {
		t.Fatalf("stagefsmtest: state timeline differs (-want +got):\n%s", d)
	}
}

// RequireActions checks that the actions executed for rec (see
// [Recorder.Actions]) have exactly the names want, in order; failed
// executions count. If not, it fails the test at once (t.Fatalf) with a
// line diff that also shows which executions failed.
func RequireActions[S comparable, E any](t testing.TB, rec *Recorder[S, E], want ...string) {
	t.Helper()
	if rec == nil {
		t.Fatalf("stagefsmtest: RequireActions: nil Recorder")
		return
	}
	got := rec.Actions()
	d := diff(len(want), len(got),
		func(i, j int) bool { return want[i] == got[j].Name },
		func(i int) string { return want[i] },
		func(j int) string {
			if got[j].Err != nil {
				return fmt.Sprintf("%s (failed: %v)", got[j].Name, got[j].Err)
			}
			return got[j].Name
		})
	if d != "" {
		t.Fatalf("stagefsmtest: executed actions differ (-want +got):\n%s", d)
	}
}

// RequireFailures checks that the failures routed through rec's machines
// (see [Recorder.Failures]) match want one for one, in order: the i-th
// routed error must satisfy errors.Is(err, want[i]). With no want it checks
// that no failure was routed. If not, it fails the test at once (t.Fatalf)
// with a line diff of the targets and the routed errors.
func RequireFailures[S comparable, E any](t testing.TB, rec *Recorder[S, E], want ...error) {
	t.Helper()
	if rec == nil {
		t.Fatalf("stagefsmtest: RequireFailures: nil Recorder")
		return
	}
	got := rec.Failures()
	d := diff(len(want), len(got),
		func(i, j int) bool { return errors.Is(got[j].Err, want[i]) },
		func(i int) string { return fmt.Sprintf("errors.Is %v", want[i]) },
		func(j int) string { return fmt.Sprintf("%v -> event %v", got[j].Err, got[j].Event) })
	if d != "" {
		t.Fatalf("stagefsmtest: routed failures differ (-want +got):\n%s", d)
	}
}

// RequireCompletions checks that WriteCompletionEvent was called exactly n
// times for rec (see [Recorder.Completions]). If not, it fails the test at
// once (t.Fatalf), listing each call's result.
func RequireCompletions[S comparable, E any](t testing.TB, rec *Recorder[S, E], n int) {
	t.Helper()
	if rec == nil {
		t.Fatalf("stagefsmtest: RequireCompletions: nil Recorder")
		return
	}
	got := rec.Completions()
	if len(got) == n {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "stagefsmtest: WriteCompletionEvent called %d times, want %d", len(got), n)
	for i, err := range got {
		fmt.Fprintf(&b, "\n\tcall %d: ", i+1)
		if err != nil {
			fmt.Fprintf(&b, "error: %v", err)
		} else {
			b.WriteString("ok")
		}
	}
	t.Fatalf("%s", b.String())
}

// diff returns a line diff of want (n items) and got (m items), or "" when
// they are equal item for item. Lines are indented by a tab and marked
// "- " (only in want), "+ " (only in got) or "  " (in both). It aligns the
// two lists on a longest common subsequence, so one missing or extra item
// shows as one line, not as a shifted tail.
func diff(n, m int, eq func(i, j int) bool, wantStr func(int) string, gotStr func(int) string) string {
	if n == m {
		same := true
		for i := range n {
			if !eq(i, i) {
				same = false
				break
			}
		}
		if same {
			return ""
		}
	}
	// lcs[i][j]: length of the longest common subsequence of want[i:], got[j:].
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if eq(i, j) {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var b strings.Builder
	line := func(mark, s string) { fmt.Fprintf(&b, "\t%s%s\n", mark, s) }
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && eq(i, j):
			line("  ", gotStr(j))
			i, j = i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			line("- ", wantStr(i))
			i++
		default:
			line("+ ", gotStr(j))
			j++
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}

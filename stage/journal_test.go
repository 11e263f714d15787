package stage_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/stage"
)

var journalTime = time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)

// journalEntries are n distinct entries, one per second.
func journalEntries(n int) []stage.Entry {
	es := make([]stage.Entry, n)
	for i := range es {
		es[i] = stage.Entry{Time: journalTime.Add(time.Duration(i) * time.Second), Pipeline: "orders",
			Stage: fmt.Sprintf("s%d", i), Kind: stage.EntryTransition, From: "Created", Event: "Initialize", To: "Initialized"}
	}
	return es
}

// writeJournal appends entries to a new FileJournal at path and returns
// the file's bytes.
func writeJournal(t *testing.T, path string, entries []stage.Entry) []byte {
	t.Helper()
	j, err := stage.OpenFileJournal(path)
	require.NoError(t, err)
	for _, e := range entries {
		require.NoError(t, j.Append(e))
	}
	require.NoError(t, j.Close())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// TestReadFileJournalTornTail cuts a journal at every byte offset of its
// last line: the complete lines are always read, the cut bytes reported and
// skipped; reopening cuts the tail off so that appending goes on cleanly.
func TestReadFileJournalTornTail(t *testing.T) {
	dir := t.TempDir()
	want := journalEntries(3)
	full := writeJournal(t, filepath.Join(dir, "full.jsonl"), want)
	require.Equal(t, byte('\n'), full[len(full)-1])
	lastStart := bytes.LastIndexByte(full[:len(full)-1], '\n') + 1
	require.Positive(t, lastStart)

	got, torn, err := stage.ReadFileJournal(filepath.Join(dir, "full.jsonl"))
	require.NoError(t, err)
	assert.Zero(t, torn)
	assert.Equal(t, want, got)

	for cut := lastStart; cut < len(full); cut++ {
		path := filepath.Join(dir, fmt.Sprintf("cut%d.jsonl", cut))
		require.NoError(t, os.WriteFile(path, full[:cut], 0o644))

		got, torn, err := stage.ReadFileJournal(path)
		require.NoError(t, err, "cut at %d", cut)
		assert.Equal(t, cut-lastStart, torn, "cut at %d", cut)
		assert.Equal(t, want[:2], got, "cut at %d", cut)

		// Reopened, the journal drops the torn bytes and appends whole lines.
		next := journalEntries(4)[3]
		j, err := stage.OpenFileJournal(path)
		require.NoError(t, err)
		require.NoError(t, j.Append(next))
		require.NoError(t, j.Close())
		got, torn, err = stage.ReadFileJournal(path)
		require.NoError(t, err, "cut at %d, reopened", cut)
		assert.Zero(t, torn)
		assert.Equal(t, append(want[:2:2], next), got, "cut at %d, reopened", cut)
	}
}

// TestReadFileJournalNoNewline checks a file of one line cut short (no
// newline at all), and an empty file.
func TestReadFileJournalNoNewline(t *testing.T) {
	dir := t.TempDir()
	full := writeJournal(t, filepath.Join(dir, "one.jsonl"), journalEntries(1))
	for cut := range len(full) {
		path := filepath.Join(dir, "cut.jsonl")
		require.NoError(t, os.WriteFile(path, full[:cut], 0o644))
		got, torn, err := stage.ReadFileJournal(path)
		require.NoError(t, err)
		assert.Empty(t, got)
		assert.Equal(t, cut, torn)
	}
}

// TestReadFileJournalCorrupt checks that a bad line that is not the last
// is an error naming it, with the entries before it.
func TestReadFileJournalCorrupt(t *testing.T) {
	dir := t.TempDir()
	want := journalEntries(3)
	full := writeJournal(t, filepath.Join(dir, "full.jsonl"), want)
	second := bytes.IndexByte(full, '\n') + 1
	third := bytes.IndexByte(full[second:], '\n') + second + 1

	for name, bad := range map[string][]byte{
		"flipped brace": append(append(append([]byte{}, full[:second]...), 'x'), full[second+1:]...),
		"cut line":      append(append([]byte{}, full[:second+10]...), full[third-1:]...),
		"empty line":    append(append(append([]byte{}, full[:second]...), '\n'), full[second:]...),
		"no kind":       append(append(append([]byte{}, full[:second]...), "{}\n"...), full[second:]...),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, "bad.jsonl")
			require.NoError(t, os.WriteFile(path, bad, 0o644))
			got, _, err := stage.ReadFileJournal(path)
			var le *stage.JournalLineError
			require.ErrorAs(t, err, &le)
			assert.Equal(t, 2, le.Line)
			assert.Equal(t, path, le.Path)
			assert.Equal(t, want[:1], got)
		})
	}
}

func TestReadFileJournalMissing(t *testing.T) {
	_, _, err := stage.ReadFileJournal(filepath.Join(t.TempDir(), "missing.jsonl"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// ReadFileJournal reads a journal whose last line a crash cut short: the
// complete entries come back, the torn bytes are counted and skipped.
func ExampleReadFileJournal() {
	dir, err := os.MkdirTemp("", "journal")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "journal.jsonl")

	j, err := stage.OpenFileJournal(path)
	if err != nil {
		panic(err)
	}
	t := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	_ = j.Append(stage.Entry{Time: t, Pipeline: "orders", Stage: "parse", Kind: stage.EntryTransition, From: "Created", Event: "Initialize", To: "Initialized"})
	_ = j.Append(stage.Entry{Time: t, Pipeline: "orders", Stage: "parse", Kind: stage.EntryCompleted, Outcome: stage.OutcomeDrained})
	_ = j.Close()

	// A crash in the middle of a write leaves part of a line.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	_, _ = f.WriteString(`{"time":"2026-12-07T06:00:00Z","pipel`)
	_ = f.Close()

	entries, torn, err := stage.ReadFileJournal(path)
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		switch e.Kind {
		case stage.EntryCompleted:
			fmt.Println(e.Stage, e.Kind, e.Outcome)
		default:
			fmt.Println(e.Stage, e.Kind, e.To)
		}
	}
	fmt.Println("torn bytes skipped:", torn)
	// Output:
	// parse transition Initialized
	// parse completed drained
	// torn bytes skipped: 37
}

// A line that is not an entry, with lines after it, is corruption, not a
// crash: ReadFileJournal names the line.
func ExampleJournalLineError() {
	dir, err := os.MkdirTemp("", "journal")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "journal.jsonl")
	_ = os.WriteFile(path, []byte(`{"kind":"transition","stage":"a"}`+"\n"+"garbage\n"+`{"kind":"transition","stage":"b"}`+"\n"), 0o644)

	entries, _, err := stage.ReadFileJournal(path)
	var le *stage.JournalLineError
	if errors.As(err, &le) {
		fmt.Println("line", le.Line, "is corrupt;", len(entries), "entry before it")
	}
	// Output:
	// line 2 is corrupt; 1 entry before it
}

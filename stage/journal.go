package stage

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"
)

// Journal receives the lifecycle of a pipeline: an [Entry] for every state
// change of every stage, one for every restart (see [WithRestart]), one
// completion entry per stage, and one for the pipeline itself.
//
// Append is called from the stages' goroutines, concurrently, so an
// implementation must be safe for concurrent use. It should be fast: it
// runs inside the stages' loops. An error from Append for a completion entry
// fails that stage's supervision loop; an error for any other entry is kept
// and returned, joined, by [Pipeline.Wait].
type Journal interface {
	Append(e Entry) error
}

// EntryKind says what an [Entry] records.
type EntryKind string

const (
	// EntryTransition records a state change of a stage: From, Event, To.
	EntryTransition EntryKind = "transition"
	// EntryCompleted records how a stage ended (Stage set) or how the
	// pipeline ended (Stage empty): Outcome, Reason and Counts.
	EntryCompleted EntryKind = "completed"
	// EntryRestart records that a failed stage will be restarted (see
	// [WithRestart]): Restart numbers the restart (1 for the stage's
	// first), Reason is the failure. The transitions of the new
	// incarnation follow, from Created.
	EntryRestart EntryKind = "restart"
)

// Outcome says how a stage or a pipeline ended.
type Outcome string

const (
	// OutcomeDrained: the stage processed all of its input and forwarded end
	// of input; for the pipeline, every stage drained.
	OutcomeDrained Outcome = "drained"
	// OutcomeFailed: the stage failed (Reason says why); for the pipeline,
	// at least one stage failed.
	OutcomeFailed Outcome = "failed"
	// OutcomeAborted: the stage was stopped by [Pipeline.Abort] or by its
	// context before it completed.
	OutcomeAborted Outcome = "aborted"
)

// Entry is one line of a [Journal].
type Entry struct {
	Time     time.Time `json:"time"`
	Pipeline string    `json:"pipeline"`
	// Stage is the stage's name; empty for the pipeline's own completion.
	Stage string    `json:"stage,omitempty"`
	Kind  EntryKind `json:"kind"`
	// From, Event and To describe a transition.
	From  string `json:"from,omitempty"`
	Event string `json:"event,omitempty"`
	To    string `json:"to,omitempty"`
	// Outcome, Reason and Counts describe a completion. Reason is empty when
	// the outcome is drained; it is also the failure of a restart.
	Outcome Outcome `json:"outcome,omitempty"`
	Reason  string  `json:"reason,omitempty"`
	Counts  *Counts `json:"counts,omitempty"`
	// Restart numbers a restart entry: 1 for the stage's first restart.
	Restart int `json:"restart,omitempty"`
}

// MemoryJournal is a [Journal] that keeps its entries in memory, in the
// order they were appended. The zero value is ready to use; it is safe for
// concurrent use.
type MemoryJournal struct {
	mu      sync.Mutex
	entries []Entry
}

// Append records e. It never fails.
func (j *MemoryJournal) Append(e Entry) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = append(j.entries, e)
	return nil
}

// Entries returns a copy of the entries appended so far.
func (j *MemoryJournal) Entries() []Entry {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.entries)
}

// FileJournal is a [Journal] that appends each entry to a file as one line
// of JSON (JSON Lines), so that a person can read it with any text tool and
// a program can parse it line by line ([ReadFileJournal] does). Each entry
// is written with one write call as it is appended, newline last; the file
// is synced to disk after every completion entry and on Close. It is safe
// for concurrent use.
//
// A crash can cut the last line short (a torn tail): the line has no
// newline. [ReadFileJournal] reports and skips it, and [OpenFileJournal]
// cuts it off before appending, so the next entry starts a line of its own.
type FileJournal struct {
	path string

	mu  sync.Mutex
	f   *os.File
	buf []byte
}

// OpenFileJournal opens the file at path for appending, creating it (mode
// 0644) if needed. Existing complete lines are kept: a journal only grows.
// A torn tail left by a crash (bytes after the last newline) is cut off and
// the cut is synced, so that the next entry does not extend it into a
// corrupt line; the lines before it are untouched.
func OpenFileJournal(path string) (*FileJournal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("stage: open journal: %w", err)
	}
	if err := cutTornTail(f); err != nil {
		_ = f.Close() // the cut's error is the one to report
		return nil, fmt.Errorf("stage: open journal %s: %w", path, err)
	}
	return &FileJournal{path: path, f: f}, nil
}

// cutTornTail truncates f after its last newline, if bytes follow it.
func cutTornTail(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	keep, err := lastLineEnd(f, size)
	if err != nil || keep == size {
		return err
	}
	if err := f.Truncate(keep); err != nil {
		return err
	}
	return f.Sync()
}

// lastLineEnd returns the offset just after the last newline among the
// first size bytes of r, or 0 when there is none. It reads backwards, in
// blocks, from the end.
func lastLineEnd(r io.ReaderAt, size int64) (int64, error) {
	buf := make([]byte, 4096)
	for end := size; end > 0; {
		start := max(end-int64(len(buf)), 0)
		b := buf[:end-start]
		if _, err := r.ReadAt(b, start); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	return 0, nil
}

// Path returns the path the journal was opened with.
func (j *FileJournal) Path() string { return j.path }

// Append writes e as one line of JSON, and syncs the file when e is a
// completion entry. After Close it returns an error wrapping
// [os.ErrClosed].
func (j *FileJournal) Append(e Entry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("stage: journal %s: encode entry: %w", j.path, err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return fmt.Errorf("stage: journal %s: %w", j.path, os.ErrClosed)
	}
	j.buf = append(append(j.buf[:0], line...), '\n')
	if _, err := j.f.Write(j.buf); err != nil {
		return fmt.Errorf("stage: journal %s: write: %w", j.path, err)
	}
	if e.Kind == EntryCompleted {
		if err := j.f.Sync(); err != nil {
			return fmt.Errorf("stage: journal %s: sync: %w", j.path, err)
		}
	}
	return nil
}

// Close syncs and closes the file. Later calls return nil.
func (j *FileJournal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	f := j.f
	j.f = nil
	serr := f.Sync()
	cerr := f.Close()
	if serr != nil {
		return fmt.Errorf("stage: journal %s: sync: %w", j.path, serr)
	}
	if cerr != nil {
		return fmt.Errorf("stage: journal %s: close: %w", j.path, cerr)
	}
	return nil
}

// JournalLineError is returned by [ReadFileJournal] for a line that is not
// a valid entry although the file goes on after it: a torn tail is always
// the last line, so such a line is corruption, not a crash. Line counts
// from 1; Err is the JSON decoding error.
type JournalLineError struct {
	Path string
	Line int
	Err  error
}

// Error returns "stage: journal <Path> line <Line>: " followed by Err's
// message.
func (e *JournalLineError) Error() string {
	return fmt.Sprintf("stage: journal %s line %d: %v", e.Path, e.Line, e.Err)
}

// Unwrap returns Err.
func (e *JournalLineError) Unwrap() error { return e.Err }

var errNoKind = errors.New("not an entry: no kind")

// ReadFileJournal reads the journal a [FileJournal] wrote at path and
// returns its entries in file order.
//
// Every entry a FileJournal writes ends with a newline, so bytes after the
// last newline are a line cut short by a crash (a torn tail): they are
// skipped, not parsed, and torn says how many bytes they were (0 when the
// file ends with a complete line). A complete line that is not a valid
// entry — empty, not JSON, or without a kind — is an error, a
// [*JournalLineError] naming the line, returned with the entries before
// it. An empty file has no entries. A file that cannot be read is an error
// wrapping the [os] error (for example [os.ErrNotExist]).
func ReadFileJournal(path string) (entries []Entry, torn int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("stage: read journal: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for line := 1; ; line++ {
		b, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return entries, len(b), nil
		}
		if err != nil {
			return entries, 0, fmt.Errorf("stage: read journal %s: %w", path, err)
		}
		var e Entry
		if err := json.Unmarshal(b, &e); err != nil {
			return entries, 0, &JournalLineError{Path: path, Line: line, Err: err}
		}
		if e.Kind == "" {
			return entries, 0, &JournalLineError{Path: path, Line: line, Err: errNoKind}
		}
		entries = append(entries, e)
	}
}

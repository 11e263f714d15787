package stage_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/stagefsm/stagefsm/checkpoint"
	"github.com/stagefsm/stagefsm/stage"
)

// logLines is a source over a growing log: its position is the number of
// lines it has read, so a checkpointing pipeline can resume after them.
type logLines struct {
	lines []string
	next  int
}

func (l *logLines) Next(_ context.Context, emit func(string)) error {
	if l.next == len(l.lines) {
		return io.EOF
	}
	emit(l.lines[l.next])
	l.next++
	return nil
}

func (l *logLines) Position() ([]byte, error) { return strconv.AppendInt(nil, int64(l.next), 10), nil }

func (l *logLines) Resume(_ context.Context, pos []byte) error {
	n, err := strconv.Atoi(string(pos))
	if err != nil || n > len(l.lines) {
		return fmt.Errorf("bad position %q", pos)
	}
	l.next = n
	return nil
}

// A pipeline that checkpoints into a directory resumes where the last run
// stopped, with its state: the second run reads only the two new lines,
// and its count goes on from the first run's.
func ExampleWithCheckpoint() {
	dir, err := os.MkdirTemp("", "checkpoints")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	run := func(log []string) error {
		store, err := checkpoint.OpenDir(dir)
		if err != nil {
			return err
		}
		defer store.Close()
		count := stage.ThenAggregate(stage.From("log", stage.Source[string](&logLines{lines: log})), "count",
			func(n *int, _ string) { *n++ },
			func(n int, emit func(int)) { emit(n) })
		p := stage.To(count, "print", stage.SinkFunc[int](func(_ context.Context, n int) error {
			fmt.Println("lines so far:", n)
			return nil
		}), stage.WithCheckpoint(store, time.Second))
		ctx := context.Background()
		if err := p.Start(ctx); err != nil {
			return err
		}
		return p.Wait(ctx)
	}
	if err := run([]string{"a", "b", "c"}); err != nil {
		fmt.Println(err)
	}
	if err := run([]string{"a", "b", "c", "d", "e"}); err != nil { // the log grew
		fmt.Println(err)
	}
	// Output:
	// lines so far: 3
	// lines so far: 5
}

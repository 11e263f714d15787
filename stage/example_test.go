package stage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stage"
)

// lines is a source of text lines.
func lines(text string) stage.Source[string] {
	rest := strings.Split(text, "\n")
	return stage.SourceFunc[string](func(_ context.Context, emit func(string)) error {
		if len(rest) == 0 {
			return io.EOF
		}
		emit(rest[0])
		rest = rest[1:]
		return nil
	})
}

// A pipeline parses numbers, squares them and prints them. The bad line is
// dead-lettered; the others are delivered.
func Example() {
	parse := stage.TransformFunc[string, int](func(_ context.Context, line string, emit func(int)) error {
		n, err := strconv.Atoi(line)
		if err != nil {
			return err // non-fatal: this item fails, the stage goes on
		}
		emit(n)
		return nil
	})
	square := stage.TransformFunc[int, int](func(_ context.Context, n int, emit func(int)) error {
		emit(n * n)
		return nil
	})
	print := stage.SinkFunc[int](func(_ context.Context, n int) error {
		fmt.Println(n)
		return nil
	})

	src := stage.From("read", lines("1\n2\nthree\n4"))
	p := stage.To(stage.Then(stage.Then(src, "parse", parse), "square", square), "print", print,
		stage.WithDeadLetter(func(it stage.Item[any]) {
			fmt.Printf("dead letter %s#%d %q: %v\n", it.Origin, it.Seq, it.Payload, it.Err)
		}))
	if err := p.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	err := p.Wait(context.Background())
	st := p.Stats()
	fmt.Printf("err=%v emitted=%d delivered=%d dead-lettered=%d\n", err, st.Emitted, st.Delivered, st.DeadLettered)
	// Output:
	// 1
	// 4
	// dead letter read#3 "three": stage parse: strconv.Atoi: parsing "three": invalid syntax
	// 16
	// err=<nil> emitted=10 delivered=9 dead-lettered=1
}

// Fatal turns a handler's error into the failure of its stage. The source
// is drained, the stages after the failed one drain what they have, and
// Wait reports the stage.
func ExampleFatal() {
	errDisk := errors.New("disk full")
	write := stage.SinkFunc[string](func(_ context.Context, line string) error {
		if line == "c" {
			return stage.Fatal(errDisk)
		}
		fmt.Println("wrote", line)
		return nil
	})
	p := stage.To(stage.From("read", lines("a\nb\nc\nd")), "write", write)
	_ = p.Start(context.Background())
	err := p.Wait(context.Background())

	var se *stage.Error
	fmt.Println(errors.As(err, &se), se.Stage, errors.Is(err, errDisk), errors.Is(err, stage.ErrFatal))
	st := p.Stats()
	for _, s := range st.Stages {
		fmt.Println(s.Name, s.State.Kind)
	}
	fmt.Println("balanced:", st.Emitted == st.Delivered+st.DeadLettered)
	// Output:
	// wrote a
	// wrote b
	// true write true true
	// read Drained
	// write Failed
	// balanced: true
}

// Items report their status, so stagefsm.RunIfNotError applies to them: an
// error item passes through untouched.
func ExampleItem_IsError() {
	double := func(it stage.Item[int]) []stage.Item[int] {
		it.Payload *= 2
		return []stage.Item[int]{it}
	}
	ok := stage.Item[int]{Payload: 21, Origin: "src", Seq: 1}
	bad := stage.Item[int]{Payload: 5, Origin: "src", Seq: 2, Err: errors.New("bad")}
	fmt.Println(stagefsm.RunIfNotError(ok, double)[0].Payload)
	fmt.Println(stagefsm.RunIfNotError(bad, double)[0].Payload)
	// Output:
	// 42
	// 5
}

// A MemoryJournal records every stage's state changes and completion.
func ExampleMemoryJournal() {
	j := &stage.MemoryJournal{}
	p := stage.To(stage.From("read", lines("x")), "drop",
		stage.SinkFunc[string](func(context.Context, string) error { return nil }),
		stage.WithJournal(j), stage.WithName("demo"))
	_ = p.Start(context.Background())
	_ = p.Wait(context.Background())
	for _, e := range j.Entries() {
		if e.Kind == stage.EntryCompleted {
			fmt.Printf("%s %q %s in=%d out=%d\n", e.Pipeline, e.Stage, e.Outcome, e.Counts.In, e.Counts.Out)
		}
	}
	// Unordered output:
	// demo "read" drained in=0 out=1
	// demo "drop" drained in=1 out=0
	// demo "" drained in=0 out=0
}

// WithRestart restarts a stage after a failure instead of failing the
// pipeline. The sink loses its connection on "b": that item is
// dead-lettered with its error, the rest of its batch ("c") waits for the
// restarted sink (Open runs again), which writes it and drains.
func ExampleWithRestart() {
	errReset := errors.New("connection reset")
	write := &flakyWriter{failOn: "b", err: stage.Fatal(errReset)}
	p := stage.To(stage.From("read", lines("a\nb\nc")), "write", stage.Sink[string](write),
		stage.WithRestart("write", stagefsm.RestartPolicy{MaxRestarts: 3, BackoffInitial: time.Millisecond}),
		stage.WithDeadLetter(func(it stage.Item[any]) {
			fmt.Printf("dead letter %q: reset=%v restarting=%v\n", it.Payload,
				errors.Is(it.Err, errReset), errors.Is(it.Err, stage.ErrRestarted))
		}))
	_ = p.Start(context.Background())
	err := p.Wait(context.Background())

	st := p.Stats()
	fmt.Println("err:", err)
	fmt.Println("opened:", write.opened, "restarts:", st.Stages[1].Restarts, "final state:", st.Stages[1].State.Kind)
	fmt.Println("balanced:", st.Emitted == st.Delivered+st.DeadLettered)
	// Output:
	// wrote a
	// dead letter "b": reset=true restarting=false
	// wrote c
	// err: <nil>
	// opened: 2 restarts: 1 final state: Drained
	// balanced: true
}

// flakyWriter is a sink that fails on one line.
type flakyWriter struct {
	failOn string
	err    error
	opened int
}

func (w *flakyWriter) Open(context.Context) error { w.opened++; return nil }

func (w *flakyWriter) Consume(_ context.Context, line string) error {
	if line == w.failOn {
		return w.err
	}
	fmt.Println("wrote", line)
	return nil
}

package stage_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stage"
)

// run starts p and waits for it.
func run(t *testing.T, p *stage.Pipeline) error {
	t.Helper()
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		return err
	}
	return p.Wait(ctx)
}

// assertBalanced checks the accounting invariant of an ended pipeline and
// that the dead-letter writer saw every dead letter.
func assertBalanced(t *testing.T, p *stage.Pipeline, dl *letters) stage.Stats {
	t.Helper()
	st := p.Stats()
	assert.Equal(t, st.Emitted, st.Delivered+st.DeadLettered, "emitted == delivered + dead-lettered")
	assert.Zero(t, st.InFlight)
	if dl != nil {
		assert.Len(t, dl.items(), int(st.DeadLettered))
	}
	return st
}

// summer passes its inputs on and, when drained, emits their sum.
type summer struct{ sum int }

func (s *summer) Process(_ context.Context, in int, emit func(int)) error {
	s.sum += in
	emit(in)
	return nil
}

func (s *summer) Drain(_ context.Context, emit func(int)) error {
	emit(-s.sum)
	return nil
}

func TestEOFPropagatesAndDrainsInOrder(t *testing.T) {
	src := &numbers{n: 1000}
	dbl := &mapper[int, int]{f: double}
	sink := &collector[int]{}
	j := &stage.MemoryJournal{}
	p := stage.To(stage.Then(stage.Then(stage.From("src", src), "double", stage.Transform[int, int](dbl)),
		"sum", &summer{}), "sink", sink, stage.WithJournal(j), stage.WithBatchSize(16))
	require.NoError(t, run(t, p))

	got := sink.items()
	require.Len(t, got, 1001)
	for i, v := range got[:1000] {
		assert.Equal(t, 2*(i+1), v, "order is kept")
	}
	assert.Equal(t, -1001000, got[1000], "the Drain hook's output arrives before end of input")
	assert.EqualValues(t, 1, sink.flushed.Load())
	for _, n := range []int32{src.closed.Load(), dbl.closed.Load(), sink.closed.Load()} {
		assert.EqualValues(t, 1, n, "Close is called once")
	}

	// Each stage sees end of input only after the stage before it drained.
	pos := map[string]int{}
	for i, e := range j.Entries() {
		if e.Kind == stage.EntryTransition {
			pos[e.Stage+":"+e.From+">"+e.To] = i
		}
	}
	order := []string{"src", "double", "sum", "sink"}
	for i := 1; i < len(order); i++ {
		up, down := order[i-1], order[i]
		assert.Less(t, pos[up+":Draining>Drained"], pos[down+":Running>Draining"], "%s drains before %s sees EOF", up, down)
	}
	st := assertBalanced(t, p, nil)
	assert.Equal(t, []stage.StateKind{stage.Created, stage.Initialized, stage.WaitingForGun, stage.Running, stage.Draining, stage.Drained},
		kinds(st.Stages[0].Timeline))
	for _, s := range st.Stages[1:] {
		assert.Equal(t, []stage.StateKind{stage.Created, stage.Initialized, stage.Running, stage.Draining, stage.Drained}, kinds(s.Timeline), s.Name)
	}
	assert.Equal(t, stage.Counts{In: 1000, Out: 1001, Emitted: 1001, Delivered: 1000}, st.Stages[2].Counts)
}

func TestDrainRequestMidStream(t *testing.T) {
	var p *stage.Pipeline
	sink := &collector[int]{onItem: func(n int) {
		if n == 500 {
			p.Drain()
		}
	}}
	j := &stage.MemoryJournal{}
	p = stage.To(stage.Then(stage.From("src", &numbers{n: -1}), "double", stage.Transform[int, int](&mapper[int, int]{f: double})),
		"sink", sink, stage.WithJournal(j))
	require.NoError(t, run(t, p))

	st := assertBalanced(t, p, nil)
	assert.Zero(t, st.DeadLettered, "a drain loses nothing")
	assert.EqualValues(t, len(sink.items()), st.Stages[0].Counts.Emitted, "every item emitted was delivered")
	assert.GreaterOrEqual(t, len(sink.items()), 500)
	var drained bool
	for _, e := range j.Entries() {
		drained = drained || (e.Stage == "src" && e.Event == "BeginDrain" && e.To == "Draining")
	}
	assert.True(t, drained, "the source drained on request")
	for _, s := range st.Stages {
		assert.Equal(t, stage.Drained, s.State.Kind, s.Name)
	}
}

func TestDrainBeforeStart(t *testing.T) {
	sink := &collector[int]{}
	p := stage.To(stage.From("src", &numbers{n: -1}), "sink", sink)
	p.Drain()
	require.NoError(t, run(t, p))
	st := assertBalanced(t, p, nil)
	assert.Equal(t, stage.Drained, st.Stages[0].State.Kind)
}

func TestNonFatalErrorsAreDeadLettered(t *testing.T) {
	dl := &letters{}
	m := &mapper[int, int]{f: double, fail: func(i int) error {
		if i%7 == 0 {
			return errBad
		}
		return nil
	}}
	sink := &collector[int]{}
	p := stage.To(stage.Then(stage.From("src", &numbers{n: 1000}), "t", stage.Transform[int, int](m)), "sink", sink,
		stage.WithDeadLetter(dl.add))
	require.NoError(t, run(t, p), "per-item errors do not fail the pipeline")

	assert.Len(t, sink.items(), 1000-142)
	require.Len(t, dl.items(), 142)
	for _, it := range dl.items() {
		var ie *stage.ItemError
		require.ErrorAs(t, it.Err, &ie)
		assert.Equal(t, "t", ie.Stage)
		assert.ErrorIs(t, it.Err, errBad)
		assert.Equal(t, "src", it.Origin)
		assert.Zero(t, it.Payload.(int)%7, "the dead letter carries the item")
	}
	st := assertBalanced(t, p, dl)
	assert.EqualValues(t, 142, st.Stages[1].Counts.DeadLettered, "dead letters are attributed to the failing stage")
}

func TestFatalErrorFailsTheStageAndDrainsTheOthers(t *testing.T) {
	dl := &letters{}
	src := &numbers{n: 100_000}
	m := &mapper[int, int]{f: double, fail: func(i int) error {
		if i == 300 {
			return stage.Fatal(errFatal)
		}
		return nil
	}}
	sink := &collector[int]{}
	j := &stage.MemoryJournal{}
	p := stage.To(stage.Then(stage.From("src", src), "t", stage.Transform[int, int](m)), "sink", sink,
		stage.WithDeadLetter(dl.add), stage.WithJournal(j))
	err := run(t, p)

	var se *stage.StageError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "t", se.Stage)
	assert.ErrorIs(t, err, errFatal)
	assert.ErrorIs(t, err, stage.ErrFatal)

	st := assertBalanced(t, p, dl)
	assert.Equal(t, stage.Failed, st.Stages[1].State.Kind)
	assert.ErrorIs(t, st.Stages[1].State.Reason, errFatal)
	assert.Equal(t, stage.Drained, st.Stages[0].State.Kind, "upstream is drained")
	assert.Equal(t, stage.Drained, st.Stages[2].State.Kind, "downstream drains what it has")
	assert.Less(t, st.Stages[0].Counts.Emitted, uint64(100_000), "the source stopped early")
	assert.Len(t, sink.items(), 299, "the items before the failure were delivered")
	assert.EqualValues(t, 1, m.closed.Load())

	var fatal, left int
	for _, it := range dl.items() {
		switch {
		case errors.Is(it.Err, errFatal):
			fatal++
		case errors.Is(it.Err, stage.ErrStageFailed):
			left++
		}
	}
	assert.Equal(t, 1, fatal, "the item that failed fatally is dead-lettered with its error")
	assert.Equal(t, len(dl.items())-1, left, "the rest are dead-lettered as left by the failed stage")

	c := completions(j.Entries())
	require.Len(t, c["t"], 1)
	assert.Equal(t, stage.OutcomeFailed, c["t"][0].Outcome)
	assert.NotEmpty(t, c["t"][0].Reason)
	assert.Equal(t, stage.OutcomeDrained, c["src"][0].Outcome)
	assert.Equal(t, stage.OutcomeFailed, c[""][0].Outcome)
}

func TestSourceFatal(t *testing.T) {
	sink := &collector[int]{}
	p := stage.To(stage.From("src", &numbers{n: 1000, fatalAt: 10}), "sink", sink)
	err := run(t, p)
	assert.ErrorIs(t, err, errFatal)
	st := assertBalanced(t, p, nil)
	assert.Equal(t, stage.Failed, st.Stages[0].State.Kind)
	assert.Equal(t, stage.Drained, st.Stages[1].State.Kind)
	assert.EqualValues(t, 9, st.Stages[0].Counts.Emitted)
	assert.Len(t, sink.items(), 9, "what the source emitted before failing is delivered")
}

func TestSinkErrors(t *testing.T) {
	dl := &letters{}
	sink := &collector[int]{fail: func(i int) error {
		switch {
		case i == 900:
			return stage.Fatal(errFatal)
		case i%10 == 0:
			return errBad
		}
		return nil
	}}
	p := stage.To(stage.From("src", &numbers{n: 100_000}), "sink", sink, stage.WithDeadLetter(dl.add))
	err := run(t, p)
	var se *stage.StageError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "sink", se.Stage)
	st := assertBalanced(t, p, dl)
	assert.Len(t, sink.items(), 899-89)
	assert.Equal(t, stage.Drained, st.Stages[0].State.Kind, "the source drained")
	assert.EqualValues(t, st.Stages[1].Counts.DeadLettered, st.DeadLettered)
}

func TestHandlerPanicIsAnItemError(t *testing.T) {
	dl := &letters{}
	m := &mapper[int, int]{f: func(i int) int {
		if i == 10 {
			panic("kaboom")
		}
		return i
	}}
	sink := &collector[int]{}
	p := stage.To(stage.Then(stage.From("src", &numbers{n: 100}), "t", stage.Transform[int, int](m)), "sink", sink,
		stage.WithDeadLetter(dl.add))
	require.NoError(t, run(t, p))
	assert.Len(t, sink.items(), 99)
	require.Len(t, dl.items(), 1)
	var pe *stagefsm.PanicError
	require.ErrorAs(t, dl.items()[0].Err, &pe)
	assert.Equal(t, "kaboom", pe.Value)
	assert.NotEmpty(t, pe.Stack)
	assertBalanced(t, p, dl)
}

func TestErrorItemsPassThroughTransforms(t *testing.T) {
	dl := &letters{}
	first := &mapper[int, int]{f: func(i int) int { return i }, fail: func(i int) error {
		if i%10 == 0 {
			return errBad
		}
		return nil
	}}
	toText := &mapper[int, string]{f: strconv.Itoa}
	upper := &mapper[string, string]{f: func(s string) string { return s + "!" }}
	sink := &collector[string]{}
	src := &numbers{n: 100, bad: func(i int) bool { return i%25 == 1 }}
	p := stage.To(
		stage.Then(stage.Then(stage.Then(stage.From("src", src), "first", stage.Transform[int, int](first)),
			"text", stage.Transform[int, string](toText)), "upper", stage.Transform[string, string](upper)),
		"sink", sink, stage.WithDeadLetter(dl.add))
	require.NoError(t, run(t, p))

	assert.EqualValues(t, 96, first.calls.Load(), "the source's 4 error items pass by the handler")
	assert.EqualValues(t, 86, toText.calls.Load(), "and so do the 10 that failed in first")
	assert.EqualValues(t, 86, upper.calls.Load())
	assert.Len(t, sink.items(), 86)
	byStage := map[string][]any{}
	for _, it := range dl.items() {
		var ie *stage.ItemError
		require.ErrorAs(t, it.Err, &ie)
		byStage[ie.Stage] = append(byStage[ie.Stage], it.Payload)
		assert.Equal(t, "src", it.Origin)
	}
	assert.Len(t, byStage["src"], 4)
	assert.Equal(t, []any{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}, byStage["first"],
		"the payload survives the change of item type")
	assertBalanced(t, p, dl)
}

func TestOpenFailureAbortsStartup(t *testing.T) {
	src := &numbers{n: 10}
	m := &mapper[int, int]{f: double}
	errOpen := errors.New("no database")
	sink := stage.SinkFunc[int](func(context.Context, int) error { return nil })
	j := &stage.MemoryJournal{}
	p := stage.To(stage.Then(stage.From("src", src), "t", stage.Transform[int, int](m)), "sink",
		openFailing[int]{Sink: sink, err: errOpen}, stage.WithJournal(j))
	err := p.Start(context.Background())
	var se *stage.StageError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "sink", se.Stage)
	assert.ErrorIs(t, err, errOpen)
	assert.Equal(t, err, p.Wait(context.Background()))

	st := assertBalanced(t, p, nil)
	assert.Zero(t, st.Emitted, "no item flows")
	assert.Zero(t, src.i, "Next is never called")
	assert.EqualValues(t, 1, src.closed.Load(), "an opened handler is closed")
	assert.EqualValues(t, 1, m.closed.Load())
	for _, s := range st.Stages[:2] {
		assert.Equal(t, stage.Failed, s.State.Kind)
		assert.ErrorIs(t, s.State.Reason, stage.ErrStartupAborted, s.Name)
	}
	for _, name := range []string{"src", "t", "sink", ""} {
		c := completions(j.Entries())[name]
		require.Len(t, c, 1, name)
		assert.Equal(t, stage.OutcomeFailed, c[0].Outcome, name)
	}
}

// openFailing is a sink whose Open hook fails, or panics when err is nil.
type openFailing[T any] struct {
	stage.Sink[T]
	err error
}

func (o openFailing[T]) Open(context.Context) error {
	if o.err == nil {
		panic("open exploded")
	}
	return o.err
}

func TestOpenPanicFailsStartup(t *testing.T) {
	sink := stage.SinkFunc[int](func(context.Context, int) error { return nil })
	p := stage.To(stage.From("src", &numbers{n: 10}), "sink", openFailing[int]{Sink: sink})
	err := p.Start(context.Background())
	var pe *stagefsm.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "open exploded", pe.Value)
}

// closeFailing is a sink whose Close hook fails.
type closeFailing struct{ *collector[int] }

func (closeFailing) Close() error { return errBad }

func TestCloseErrorFailsADrainedStage(t *testing.T) {
	p := stage.To(stage.From("src", &numbers{n: 10}), "sink", closeFailing{&collector[int]{}})
	err := run(t, p)
	assert.ErrorIs(t, err, errBad)
	st := assertBalanced(t, p, nil)
	assert.Equal(t, stage.Failed, st.Stages[1].State.Kind)
	assert.Equal(t, []stage.StateKind{stage.Created, stage.Initialized, stage.Running, stage.Draining, stage.Drained, stage.Failed},
		kinds(st.Stages[1].Timeline))
	assert.EqualValues(t, 10, st.Delivered, "the items were delivered before Close failed")
}

func TestAbort(t *testing.T) {
	dl := &letters{}
	first := make(chan struct{})
	sink := stage.SinkFunc[int](func(ctx context.Context, i int) error {
		if i == 2 {
			close(first)
		}
		<-ctx.Done() // a sink stuck on a slow backend
		return ctx.Err()
	})
	j := &stage.MemoryJournal{}
	p := stage.To(stage.Then(stage.From("src", &numbers{n: -1}), "t", stage.Transform[int, int](&mapper[int, int]{f: double})),
		"sink", sink, stage.WithDeadLetter(dl.add), stage.WithJournal(j))
	require.NoError(t, p.Start(context.Background()))
	<-first
	p.Abort()
	err := p.Wait(context.Background())
	assert.ErrorIs(t, err, stage.ErrAborted)
	st := assertBalanced(t, p, dl)
	assert.NotZero(t, st.DeadLettered)
	for _, it := range dl.items() {
		assert.ErrorIs(t, it.Err, stage.ErrAborted)
	}
	c := completions(j.Entries())
	for _, name := range []string{"src", "t", "sink", ""} {
		require.Len(t, c[name], 1, name)
		assert.Equal(t, stage.OutcomeAborted, c[name][0].Outcome, name)
	}
	p.Abort() // idempotent
	assert.Equal(t, err, p.Wait(context.Background()))
}

func TestStartContextBoundsThePipeline(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan struct{})
	sink := stage.SinkFunc[int](func(ctx context.Context, i int) error {
		if i == 1 {
			close(first)
		}
		<-ctx.Done()
		return ctx.Err()
	})
	p := stage.To(stage.From("src", &numbers{n: -1}), "sink", sink)
	require.NoError(t, p.Start(ctx))
	<-first
	cancel()
	err := p.Wait(context.Background())
	assert.ErrorIs(t, err, stage.ErrAborted)
	assert.ErrorIs(t, err, context.Canceled)
	assertBalanced(t, p, nil)
}

func TestConstructionErrors(t *testing.T) {
	sink := stage.SinkFunc[int](func(context.Context, int) error { return nil })
	for name, p := range map[string]*stage.Pipeline{
		"nil source":     stage.To(stage.From[int]("src", nil), "sink", sink),
		"nil transform":  stage.To(stage.Then[int, int](stage.From("src", &numbers{}), "t", nil), "sink", sink),
		"nil sink":       stage.To(stage.From("src", &numbers{}), "sink", stage.Sink[int](nil)),
		"nil chain":      stage.To[int](nil, "sink", sink),
		"duplicate name": stage.To(stage.From("x", &numbers{}), "x", sink),
		"empty name":     stage.To(stage.From("", &numbers{}), "sink", sink),
	} {
		t.Run(name, func(t *testing.T) {
			err := p.Start(context.Background())
			require.Error(t, err)
			assert.Equal(t, err, p.Wait(context.Background()))
			assert.ErrorIs(t, p.Start(context.Background()), stage.ErrAlreadyStarted)
		})
	}
}

func TestWaitBeforeStart(t *testing.T) {
	p := stage.To(stage.From("src", &numbers{}), "sink", stage.SinkFunc[int](func(context.Context, int) error { return nil }))
	assert.ErrorIs(t, p.Wait(context.Background()), stage.ErrNotStarted)
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, p.Start(context.Background()))
	cancel()
	_ = p.Wait(ctx) // either done or ctx.Err(): both are fine here
	assert.NoError(t, p.Wait(context.Background()))
}

package stage_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stage"
	"github.com/stagefsm/stagefsm/stagefsmtest"
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
func assertBalanced(t *testing.T, p *stage.Pipeline, dl *letters) stage.PipelineStats {
	t.Helper()
	st := p.Stats()
	assert.Equal(t, st.Emitted, st.Delivered+st.DeadLettered+st.Dropped, "emitted == delivered + dead-lettered + dropped")
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
	src := upTo(1000)
	dbl := stagefsmtest.NewTransform(double)
	sink := stagefsmtest.NewSink[int]()
	j := &stage.MemoryJournal{}
	p := stage.To(stage.Then(stage.Then(stage.From("src", stage.Source[int](src)), "double", stage.Transform[int, int](dbl)),
		"sum", &summer{}), "sink", sink, stage.WithJournal(j), stage.WithBatchSize(16))
	require.NoError(t, run(t, p))

	got := sink.Delivered()
	require.Len(t, got, 1001)
	for i, v := range got[:1000] {
		assert.Equal(t, 2*(i+1), v, "order is kept")
	}
	assert.Equal(t, -1001000, got[1000], "the Drain hook's output arrives before end of input")
	assert.Equal(t, []string{"Open", "Close"}, src.Lifecycle(), "each hook once, in order")
	assert.Equal(t, []string{"Open", "Drain", "Close"}, dbl.Lifecycle())
	assert.Equal(t, []string{"Open", "Flush", "Close"}, sink.Lifecycle())

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

// TestRepeatedDrainRequests asks for a drain many more times than a
// stage's control queue holds: the requests past the first are redundant,
// a full queue ignores them, and the pipeline drains once and loses
// nothing.
func TestRepeatedDrainRequests(t *testing.T) {
	var p *stage.Pipeline
	sink := &collector[int]{onItem: func(n int) {
		if n >= 100 && n < 128 { // 28 requests before the first batch ends
			p.Drain()
		}
	}}
	p = stage.To(stage.From("src", &numbers{n: -1}), "sink", sink)
	require.NoError(t, run(t, p))
	for range 100 {
		p.Drain() // after the end: a no-op
	}
	st := assertBalanced(t, p, nil)
	assert.Zero(t, st.DeadLettered)
	assert.EqualValues(t, len(sink.items()), st.Stages[0].Counts.Emitted, "every item emitted was delivered")
	for _, s := range st.Stages {
		assert.Equal(t, stage.Drained, s.State.Kind, s.Name)
	}
}

func TestDrainBeforeStart(t *testing.T) {
	p := stage.To(stage.From("src", &numbers{n: -1}), "sink", stagefsmtest.NewSink[int]())
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
	m := stagefsmtest.NewTransform(double).FailAt(300, stage.Fatal(errFatal))
	sink := stagefsmtest.NewSink[int]()
	j := &stage.MemoryJournal{}
	p := stage.To(stage.Then(stage.From("src", src), "t", stage.Transform[int, int](m)), "sink", sink,
		stage.WithDeadLetter(dl.add), stage.WithJournal(j))
	err := run(t, p)

	var se *stage.Error
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
	assert.Len(t, sink.Delivered(), 299, "the items before the failure were delivered")
	assert.Equal(t, []string{"Open", "Close"}, m.Lifecycle())

	var fatal, left int
	for _, it := range dl.items() {
		switch {
		case errors.Is(it.Err, errFatal):
			fatal++
		case errors.Is(it.Err, stage.ErrFailed):
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
	sink := stagefsmtest.NewSink[int]()
	p := stage.To(stage.From("src", stage.Source[int](upTo(9).Fail(stage.Fatal(errFatal)).Emit(10))), "sink", sink)
	err := run(t, p)
	assert.ErrorIs(t, err, errFatal)
	st := assertBalanced(t, p, nil)
	assert.Equal(t, stage.Failed, st.Stages[0].State.Kind)
	assert.Equal(t, stage.Drained, st.Stages[1].State.Kind)
	assert.EqualValues(t, 9, st.Stages[0].Counts.Emitted)
	assert.Len(t, sink.Delivered(), 9, "what the source emitted before failing is delivered")
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
	var se *stage.Error
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "sink", se.Stage)
	st := assertBalanced(t, p, dl)
	assert.Len(t, sink.items(), 899-89)
	assert.Equal(t, stage.Drained, st.Stages[0].State.Kind, "the source drained")
	assert.EqualValues(t, st.Stages[1].Counts.DeadLettered, st.DeadLettered)
}

func TestHandlerPanicIsAnItemError(t *testing.T) {
	dl := &letters{}
	m := stagefsmtest.NewTransform(double).PanicAt(10, "kaboom")
	sink := stagefsmtest.NewSink[int]()
	p := stage.To(stage.Then(stage.From("src", stage.Source[int](upTo(100))), "t", stage.Transform[int, int](m)), "sink", sink,
		stage.WithDeadLetter(dl.add))
	require.NoError(t, run(t, p))
	assert.Len(t, sink.Delivered(), 99)
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
	toText := stagefsmtest.NewTransform(strconv.Itoa)
	upper := stagefsmtest.NewTransform(func(s string) string { return s + "!" })
	sink := stagefsmtest.NewSink[string]()
	src := &numbers{n: 100, bad: func(i int) bool { return i%25 == 1 }}
	p := stage.To(
		stage.Then(stage.Then(stage.Then(stage.From("src", src), "first", stage.Transform[int, int](first)),
			"text", stage.Transform[int, string](toText)), "upper", stage.Transform[string, string](upper)),
		"sink", sink, stage.WithDeadLetter(dl.add))
	require.NoError(t, run(t, p))

	assert.EqualValues(t, 96, first.calls.Load(), "the source's 4 error items pass by the handler")
	assert.Equal(t, 86, toText.Calls(), "and so do the 10 that failed in first")
	assert.Equal(t, 86, upper.Calls())
	assert.Len(t, sink.Delivered(), 86)
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
	src := upTo(10)
	m := stagefsmtest.NewTransform(double)
	errOpen := errors.New("no database")
	sink := stagefsmtest.NewSink[int]().OpenFails(errOpen)
	j := &stage.MemoryJournal{}
	p := stage.To(stage.Then(stage.From("src", stage.Source[int](src)), "t", stage.Transform[int, int](m)), "sink", sink,
		stage.WithJournal(j))
	err := p.Start(context.Background())
	var se *stage.Error
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "sink", se.Stage)
	assert.ErrorIs(t, err, errOpen)
	assert.Equal(t, err, p.Wait(context.Background()))

	st := assertBalanced(t, p, nil)
	assert.Zero(t, st.Emitted, "no item flows")
	assert.Zero(t, src.Calls(), "Next is never called")
	assert.Equal(t, []string{"Open", "Close"}, src.Lifecycle(), "an opened handler is closed")
	assert.Equal(t, []string{"Open", "Close"}, m.Lifecycle())
	assert.Equal(t, []string{"Open"}, sink.Lifecycle(), "one that failed to open is not")
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

// openPanicking is a sink whose Open hook panics.
type openPanicking struct{ stage.Sink[int] }

func (openPanicking) Open(context.Context) error { panic("open exploded") }

func TestOpenPanicFailsStartup(t *testing.T) {
	p := stage.To(stage.From("src", &numbers{n: 10}), "sink", openPanicking{stagefsmtest.NewSink[int]()})
	err := p.Start(context.Background())
	var pe *stagefsm.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "open exploded", pe.Value)
}

// closeFailing is a sink whose Close hook fails.
type closeFailing struct{ stage.Sink[int] }

func (closeFailing) Close() error { return errBad }

func TestCloseErrorFailsADrainedStage(t *testing.T) {
	p := stage.To(stage.From("src", stage.Source[int](upTo(10))), "sink", closeFailing{stagefsmtest.NewSink[int]()})
	err := run(t, p)
	assert.ErrorIs(t, err, errBad)
	st := assertBalanced(t, p, nil)
	assert.Equal(t, stage.Failed, st.Stages[1].State.Kind)
	assert.Equal(t, []stage.StateKind{stage.Created, stage.Initialized, stage.Running, stage.Draining, stage.Drained, stage.Failed},
		kinds(st.Stages[1].Timeline))
	assert.EqualValues(t, 10, st.Delivered, "the items were delivered before Close failed")
}

func TestAbort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dl := &letters{}
		sink := stagefsmtest.NewSink[int]().SleepAt(2, time.Hour) // stuck on a slow backend
		j := &stage.MemoryJournal{}
		p := stage.To(stage.Then(stage.From("src", &numbers{n: -1}), "t", stage.Transform[int, int](stagefsmtest.NewTransform(double))),
			"sink", sink, stage.WithDeadLetter(dl.add), stage.WithJournal(j))
		require.NoError(t, p.Start(context.Background()))
		synctest.Wait() // the sink waits on its second item, the others on backpressure
		p.Abort()
		err := p.Wait(context.Background())
		assert.ErrorIs(t, err, stage.ErrAborted)
		st := assertBalanced(t, p, dl)
		assert.Equal(t, []int{2}, sink.Delivered())
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
	})
}

func TestStartContextBoundsThePipeline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		p := stage.To(stage.From("src", &numbers{n: -1}), "sink", stagefsmtest.NewSink[int]().SleepAt(1, time.Hour))
		require.NoError(t, p.Start(ctx))
		synctest.Wait()
		cancel()
		err := p.Wait(context.Background())
		assert.ErrorIs(t, err, stage.ErrAborted)
		assert.ErrorIs(t, err, context.Canceled)
		assertBalanced(t, p, nil)
	})
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

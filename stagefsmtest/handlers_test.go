package stagefsmtest_test

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stage"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

// The fakes implement stage's interfaces without this package importing
// stage.
var (
	_ stage.Source[int]            = (*stagefsmtest.Source[int])(nil)
	_ stage.Opener                 = (*stagefsmtest.Source[int])(nil)
	_ io.Closer                    = (*stagefsmtest.Source[int])(nil)
	_ stage.Transform[int, string] = (*stagefsmtest.Transform[int, string])(nil)
	_ stage.Opener                 = (*stagefsmtest.Transform[int, string])(nil)
	_ stage.Drainer[string]        = (*stagefsmtest.Transform[int, string])(nil)
	_ io.Closer                    = (*stagefsmtest.Transform[int, string])(nil)
	_ stage.Sink[int]              = (*stagefsmtest.Sink[int])(nil)
	_ stage.Opener                 = (*stagefsmtest.Sink[int])(nil)
	_ stage.Flusher                = (*stagefsmtest.Sink[int])(nil)
	_ io.Closer                    = (*stagefsmtest.Sink[int])(nil)
)

// deadLetters collects a pipeline's dead letters.
type deadLetters struct {
	mu    sync.Mutex
	items []stage.Item[any]
}

func (d *deadLetters) add(it stage.Item[any]) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.items = append(d.items, it)
}

func (d *deadLetters) list() []stage.Item[any] {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]stage.Item[any](nil), d.items...)
}

// run starts the pipeline source → transform → sink and waits for it.
func run[I, O any](t *testing.T, src stage.Source[I], tr stage.Transform[I, O], sink stage.Sink[O], opts ...stage.Option) (*stage.Pipeline, error) {
	t.Helper()
	p := stage.To(stage.Then(stage.From("src", src), "tr", tr), "sink", sink, opts...)
	if err := p.Start(t.Context()); err != nil {
		return p, err
	}
	return p, p.Wait(t.Context())
}

func TestFakesHappyPipeline(t *testing.T) {
	src := stagefsmtest.NewSource[int]().Emit(1, 2).Emit(3)
	tr := stagefsmtest.NewTransform(strconv.Itoa)
	sink := stagefsmtest.NewSink[string]()

	p, err := run(t, src, tr, sink)

	require.NoError(t, err)
	assert.Equal(t, []int{1, 2, 3}, src.Emitted())
	assert.Equal(t, 3, src.Calls(), "two scripted calls, then io.EOF")
	assert.Equal(t, []int{1, 2, 3}, tr.Delivered())
	assert.Equal(t, []string{"1", "2", "3"}, sink.Delivered())
	assert.Equal(t, []string{"Open", "Close"}, src.Lifecycle())
	assert.Equal(t, []string{"Open", "Drain", "Close"}, tr.Lifecycle())
	assert.Equal(t, []string{"Open", "Flush", "Close"}, sink.Lifecycle())
	st := p.Stats()
	assert.Equal(t, uint64(6), st.Emitted, "3 by the source, 3 by the transform")
	assert.Equal(t, st.Emitted, st.Delivered+st.DeadLettered)
}

// Errors and panics in each fake are per-item failures: the items end
// dead-lettered, the others delivered, and the counts add up.
func TestFakesFaultsAreDeadLettered(t *testing.T) {
	errRead, errMap, errWrite := errors.New("bad record"), errors.New("bad value"), errors.New("write refused")
	src := stagefsmtest.NewSource[int]().
		Emit(1).Fail(errRead).Emit(2).Panic("corrupt page").Emit(3, 4, 5).Fail(nil).Emit(6)
	tr := stagefsmtest.NewTransform(strconv.Itoa).FailAt(2, errMap).PanicAt(3, "nil map").FailAt(0, errMap)
	sink := stagefsmtest.NewSink[string]().FailAt(2, errWrite).PanicAt(1, "disk gone")
	var dl deadLetters

	p, err := run(t, src, tr, sink, stage.WithDeadLetter(dl.add))

	require.NoError(t, err)
	assert.Equal(t, []int{1, 2, 3, 4, 5, 6}, src.Emitted())
	assert.Equal(t, []int{1, 4, 5, 6}, tr.Delivered(), "calls 2 and 3 (items 2 and 3) failed")
	assert.Equal(t, []string{"5", "6"}, sink.Delivered(), "calls 1 and 2 (items 1 and 4) failed")
	letters := dl.list()
	require.Len(t, letters, 6)
	var causes []error
	for _, it := range letters {
		var ie *stage.ItemError
		require.ErrorAs(t, it.Err, &ie)
		causes = append(causes, ie.Err)
	}
	assert.ErrorIs(t, errors.Join(causes...), errRead)
	assert.ErrorIs(t, errors.Join(causes...), errMap)
	assert.ErrorIs(t, errors.Join(causes...), errWrite)
	var pe *stagefsm.PanicError
	assert.ErrorAs(t, errors.Join(causes...), &pe)
	st := p.Stats()
	assert.Equal(t, st.Emitted, st.Delivered+st.DeadLettered)
	assert.Equal(t, uint64(6), st.DeadLettered)
}

// A fatal error fails the stage and the pipeline says which.
func TestFakesFatal(t *testing.T) {
	errDisk := errors.New("disk full")
	src := stagefsmtest.NewSource[int]().Emit(1, 2, 3)
	sink := stagefsmtest.NewSink[string]().FailAt(2, stage.Fatal(errDisk))

	_, err := run(t, src, stagefsmtest.NewTransform(strconv.Itoa), sink)

	var se *stage.Error
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "sink", se.Stage)
	assert.ErrorIs(t, err, errDisk)
	assert.Equal(t, []string{"1"}, sink.Delivered())
}

func TestFakesOpenFails(t *testing.T) {
	errOpen := errors.New("no credentials")
	for name, tc := range map[string]struct {
		src  *stagefsmtest.Source[int]
		tr   *stagefsmtest.Transform[int, string]
		sink *stagefsmtest.Sink[string]
	}{
		"source":    {stagefsmtest.NewSource[int]().OpenFails(errOpen), stagefsmtest.NewTransform(strconv.Itoa), stagefsmtest.NewSink[string]()},
		"transform": {stagefsmtest.NewSource[int](), stagefsmtest.NewTransform(strconv.Itoa).OpenFails(errOpen), stagefsmtest.NewSink[string]()},
		"sink":      {stagefsmtest.NewSource[int](), stagefsmtest.NewTransform(strconv.Itoa), stagefsmtest.NewSink[string]().OpenFails(errOpen)},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := run(t, tc.src, tc.tr, tc.sink)
			assert.ErrorIs(t, err, errOpen)
			assert.Zero(t, tc.src.Calls(), "no item flows")
			assert.Contains(t, tc.src.Lifecycle(), "Open")
		})
	}
}

// Sleeps take fake time in a synctest bubble: a slow source, transform and
// sink add up exactly.
func TestFakesSleepInstantly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := stagefsmtest.NewSource[int]().Emit(1).Sleep(time.Minute).Emit(2)
		tr := stagefsmtest.NewTransform(strconv.Itoa).SleepAt(2, time.Second)
		sink := stagefsmtest.NewSink[string]().SleepAt(1, time.Hour).SleepAt(-1, time.Hour)
		start := time.Now()

		_, err := run(t, src, tr, sink)

		require.NoError(t, err)
		assert.Equal(t, []string{"1", "2"}, sink.Delivered())
		// Item 1 leaves the source with its batch after the sleeping call (a
		// minute), then the sink takes an hour over it; the transform's
		// second on item 2 overlaps that hour.
		assert.Equal(t, time.Hour+time.Minute, time.Since(start).Truncate(time.Second))
	})
}

// A sleeping handler returns when the pipeline is aborted.
func TestFakesSleepAborted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := stagefsmtest.NewSink[string]().SleepAt(1, time.Hour)
		p := stage.To(stage.Then(stage.From("src", stagefsmtest.NewSource[int]().Emit(1)), "tr",
			stagefsmtest.NewTransform(strconv.Itoa)), "sink", sink)
		require.NoError(t, p.Start(t.Context()))
		synctest.Wait()
		start := time.Now()

		p.Abort()
		err := p.Wait(t.Context())

		assert.ErrorIs(t, err, stage.ErrAborted)
		assert.Zero(t, time.Since(start))
		assert.Empty(t, sink.Delivered())
	})
}

func TestFakeTransformNilFunction(t *testing.T) {
	tr := stagefsmtest.NewTransform[int, string](nil)
	err := tr.Process(context.Background(), 1, func(string) {})
	assert.Error(t, err)
	assert.Empty(t, tr.Delivered())
	assert.Equal(t, 1, tr.Calls())
}

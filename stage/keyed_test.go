package stage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
	"github.com/stagefsm/stagefsm/stage"
	"github.com/stagefsm/stagefsm/stagefsmtest"
)

// order is an input of the keyed tests: an event for order ID.
type order struct{ ID, Ev string }

// act is an action of the order machine: emit its name for the key.
type act string

func (a act) String() string { return string(a) }

type orderScope = stage.Scope[string, string]

var errRejected = errors.New("rejected by act")

// orderDef is the order machine: open (times out after a minute) → paid →
// closed, or abandoned; "boom" panics in its action, "bad" fails its
// action; "fail" (the failure event) ends the order failed; "drain" closes it.
func orderDef(t testing.TB) *mealy.Definition[string, string, *orderScope, act] {
	t.Helper()
	id := func(s string) string { return s }
	b := mealy.New[string, string, *orderScope, act](id, id)
	b.Initial("open")
	b.FailureEvent("fail")
	b.State("open").Timeout(time.Minute, "timeout")
	b.State("paid")
	b.State("closed").Terminal()
	b.State("abandoned").Terminal()
	b.State("failed").Terminal()
	b.On("open", "add").Stay().Do("added")
	b.On("open", "boom").Stay().Do("panic")
	b.On("open", "bad").Stay().Do("added", "reject")
	b.On("open", "pay").To("paid").Do("paid")
	b.On("paid", "close").To("closed").Do("closed")
	b.On("open", "timeout").To("abandoned").Do("abandoned")
	b.OnAny("fail").To("failed").Do("failed")
	b.OnAny("drain").To("closed").Do("drained")
	def, err := b.Build()
	require.NoError(t, err)
	return def
}

func orderSpec(def *mealy.Definition[string, string, *orderScope, act]) stage.KeyedSpec[order, string, string, string, act, string] {
	return stage.KeyedSpec[order, string, string, string, act, string]{
		Key:   func(o order) string { return o.ID },
		Event: func(o order) string { return o.Ev },
		New: func(string) (stagefsm.Machine[string, string, *orderScope, act], error) {
			return def.New("open")
		},
		Act: func(_ context.Context, a act, _ string, s *orderScope) error {
			switch a {
			case "panic":
				panic("act exploded")
			case "reject":
				return errRejected
			}
			s.Emit(s.Key() + ":" + string(a))
			return nil
		},
		Terminal: def.Terminal,
		Failure:  func(error) (string, bool) { return "fail", true },
		Drain:    func(string) (string, bool) { return "drain", true },
	}
}

// keyedRun runs src through the keyed stage "keyed" into a collector; the
// one place the tests wire a keyed stage.
func keyedRun[I any, K comparable, S, E, A, O any](t *testing.T, src stage.Source[I], spec stage.KeyedSpec[I, K, S, E, A, O]) ([]O, stage.Stats, []stage.Item[any], *stage.Pipeline) {
	t.Helper()
	sink := &collector[O]{}
	dl := &letters{}
	p := stage.To(stage.ThenKeyed(stage.From("src", src), "keyed", spec), "sink", sink, stage.WithDeadLetter(dl.add))
	require.NoError(t, run(t, p))
	st := assertBalanced(t, p, dl)
	return sink.items(), st.Stages[1], dl.items(), p
}

func orders(os ...order) *stagefsmtest.Source[order] {
	src := stagefsmtest.NewSource[order]()
	for _, o := range os {
		src.Emit(o)
	}
	return src
}

func TestKeyedPerKeyOrderAndRemoval(t *testing.T) {
	def := orderDef(t)
	src := orders(
		order{"a", "add"}, order{"b", "add"}, order{"a", "pay"}, order{"b", "add"},
		order{"a", "close"}, order{"b", "pay"}, order{"b", "close"},
		order{"a", "add"}, // a new instance of a, after the first closed
	)
	got, st, dl, _ := keyedRun(t, src, orderSpec(def))
	assert.Empty(t, dl)
	var a, b []string
	for _, s := range got {
		if s[0] == 'a' {
			a = append(a, s)
		} else {
			b = append(b, s)
		}
	}
	assert.Equal(t, []string{"a:added", "a:paid", "a:closed", "a:added", "a:drained"}, a)
	assert.Equal(t, []string{"b:added", "b:added", "b:paid", "b:closed"}, b)
	assert.Equal(t, 0, st.Keys, "closed and drained instances are removed")
	assert.Equal(t, uint64(8), st.Counts.Delivered)
	assert.Equal(t, uint64(9), st.Counts.Emitted)
}

func TestKeyedFailureIsolated(t *testing.T) {
	def := orderDef(t)
	src := orders(order{"a", "add"}, order{"b", "add"}, order{"a", "boom"}, order{"b", "bad"},
		order{"c", "close"}, order{"d", "pay"})
	got, st, dl, _ := keyedRun(t, src, orderSpec(def))
	// a panicked, b's action failed, c's event is rejected by its machine:
	// each failed item is dead-lettered, its key gets the failure event.
	require.Len(t, dl, 3)
	for _, it := range dl {
		var ie *stage.ItemError
		require.ErrorAs(t, it.Err, &ie)
		assert.Equal(t, "keyed", ie.Stage)
	}
	var pe *stagefsm.PanicError
	assert.ErrorAs(t, dl[0].Err, &pe)
	assert.ErrorIs(t, dl[1].Err, errRejected)
	assert.ErrorIs(t, dl[2].Err, mealy.ErrUnhandledEvent)
	assert.ElementsMatch(t, []string{"a:added", "b:added", "a:failed", "b:failed", "c:failed", "d:paid", "d:drained"}, got,
		"the outputs of a failed call are discarded; the other keys go on")
	assert.Equal(t, 0, st.Keys)
}

func TestKeyedKeyPanic(t *testing.T) {
	def := orderDef(t)
	spec := orderSpec(def)
	spec.Key = func(o order) string {
		if o.ID == "" {
			panic("no id")
		}
		return o.ID
	}
	got, _, dl, _ := keyedRun(t, orders(order{"a", "add"}, order{"", "add"}, order{"a", "pay"}), spec)
	require.Len(t, dl, 1)
	var pe *stagefsm.PanicError
	require.ErrorAs(t, dl[0].Err, &pe)
	assert.Contains(t, dl[0].Err.Error(), "key function")
	assert.Equal(t, []string{"a:added", "a:paid", "a:drained"}, got)
}

func TestKeyedTimeoutsManyKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 500
		def := orderDef(t)
		src := stagefsmtest.NewSource[order]()
		for i := range n {
			src.Emit(order{fmt.Sprint("k", i), "add"})
		}
		// The batch goes out after the first sleep; the input stays open
		// while the keys time out; z, paid, has no timeout and stays.
		src.Sleep(time.Second).Sleep(2 * time.Minute).Emit(order{"z", "pay"})
		spec := orderSpec(def)
		spec.Drain = nil
		got, st, dl, _ := keyedRun(t, stage.Source[order](src), spec)
		assert.Empty(t, dl)
		abandoned := 0
		for _, s := range got {
			if len(s) > 10 && s[len(s)-10:] == ":abandoned" {
				abandoned++
			}
		}
		assert.Equal(t, n, abandoned, "every armed timeout fired once")
		assert.Equal(t, uint64(n), st.Timeouts)
		assert.Equal(t, 1, st.Keys)
	})
}

func TestKeyedDrainKeepsLiveKeys(t *testing.T) {
	def := orderDef(t)
	spec := orderSpec(def)
	spec.Drain = nil
	_, st, _, p := keyedRun(t, orders(order{"a", "add"}, order{"b", "pay"}), spec)
	assert.Equal(t, 2, st.Keys, "without a drain event the instances stay")
	assert.Equal(t, 2, p.Stats().Stages[1].Keys)
}

func TestKeyedIncompleteSpec(t *testing.T) {
	p := stage.To(stage.ThenKeyed(stage.From("src", orders()), "keyed", stage.KeyedSpec[order, string, string, string, act, string]{}),
		"sink", &collector[string]{})
	assert.ErrorIs(t, p.Start(context.Background()), stage.ErrKeyedSpec)
}

func TestAggregate(t *testing.T) {
	sink := &collector[string]{}
	p := stage.To(stage.ThenAggregate(stage.From("src", upTo(10)), "sum",
		func(s *int, v int) { *s += v },
		func(s int, emit func(string)) { emit(fmt.Sprint("sum=", s)) }), "sink", sink)
	require.NoError(t, run(t, p))
	assertBalanced(t, p, nil)
	assert.Equal(t, []string{"sum=55"}, sink.items())
}

// TestKeyedTimeoutsMoveAndDisarm checks the heap's lazy entries against
// the machines' deadlines: a deadline that moves later fires at the later
// time, one disarmed never fires, and one armed again fires from then.
func TestKeyedTimeoutsMoveAndDisarm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		id := func(s string) string { return s }
		b := mealy.New[string, string, *orderScope, act](id, id)
		b.Initial("open")
		b.State("open").Timeout(time.Minute, "timeout")
		b.State("paid")
		b.State("gone").Terminal()
		b.On("open", "touch").To("open")  // re-entered: the deadline moves later
		b.On("open", "pay").To("paid")    // disarmed
		b.On("paid", "reopen").To("open") // armed again
		b.State("urgent").Timeout(10*time.Second, "timeout")
		b.On("open", "rush").To("urgent") // armed earlier than its entry
		b.On("open", "timeout").To("gone").Do("expired")
		b.On("urgent", "timeout").To("gone").Do("expired")
		def, err := b.Build()
		require.NoError(t, err)
		start := time.Now()
		var fired []string
		spec := stage.KeyedSpec[order, string, string, string, act, string]{
			Key:   func(o order) string { return o.ID },
			Event: func(o order) string { return o.Ev },
			New: func(string) (stagefsm.Machine[string, string, *orderScope, act], error) {
				return def.New("open")
			},
			Act: func(_ context.Context, a act, _ string, s *orderScope) error {
				fired = append(fired, fmt.Sprint(s.Key(), "@", time.Since(start)))
				s.Emit(s.Key())
				return nil
			},
			Terminal: def.Terminal,
		}
		// A batch goes out when the call after its Emit returns.
		src := stagefsmtest.NewSource[order]().
			Emit(order{"moved", "touch"}, order{"paid", "touch"}, order{"back", "touch"}, order{"rushed", "touch"}).Sleep(10*time.Second).
			Emit(order{"moved", "touch"}, order{"paid", "pay"}, order{"back", "pay"}, order{"rushed", "rush"}).Sleep(20 * time.Second).
			Emit(order{"back", "reopen"}).Sleep(5 * time.Second).Sleep(5 * time.Minute)
		got, st, dl, _ := keyedRun(t, stage.Source[order](src), spec)
		assert.Empty(t, dl)
		assert.ElementsMatch(t, []string{"rushed", "moved", "back"}, got)
		assert.Equal(t, []string{"rushed@40s", "moved@1m30s", "back@1m35s"}, fired,
			"created at 10s; rushed and moved re-armed at 30s, back at 35s; paid never fires")
		assert.Equal(t, uint64(3), st.Timeouts)
		assert.Equal(t, 1, st.Keys)
	})
}

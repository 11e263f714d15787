package natsstage

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/stage"
)

// settleLog is a jetstream.Msg that records how it was settled.
type settleLog struct {
	jetstream.Msg // nil: any other method is not expected
	calls         []string
}

func (m *settleLog) Ack() error { m.calls = append(m.calls, "ack"); return nil }
func (m *settleLog) Nak() error { m.calls = append(m.calls, "nak"); return nil }
func (m *settleLog) NakWithDelay(d time.Duration) error {
	m.calls = append(m.calls, fmt.Sprintf("nak %v", d))
	return nil
}
func (m *settleLog) TermWithReason(string) error { m.calls = append(m.calls, "term"); return nil }

// fakeMsg returns a Msg as a Source with opts would emit it, delivered
// the given number of times, and the log of its settlement.
func fakeMsg(delivered uint64, opts ...SourceOption) (*Msg, *settleLog, *Source) {
	src := NewSource(nil, "S", "C", opts...)
	log := &settleLog{}
	t := &ticket{msg: log, src: src, delivered: delivered}
	t.refs.Store(1)
	return &Msg{ID: "S:1", Delivered: delivered, t: t}, log, src
}

func itemError(stageName string, err error) error {
	return &stage.ItemError{Stage: stageName, Err: err}
}

func TestDeadLetterSettlesPerCause(t *testing.T) {
	errBad := errors.New("bad record")
	retry := WithRetry(2, 50*time.Millisecond)
	for name, tc := range map[string]struct {
		delivered uint64
		err       error
		want      string
		toNext    bool
	}{
		"aborted":          {1, itemError("out", stage.ErrAborted), "nak", false},
		"stage failed":     {1, itemError("work", stage.ErrFailed), "nak", false},
		"fatal":            {1, itemError("out", stage.Fatal(errBad)), "nak", false},
		"canceled":         {1, itemError("out", context.Canceled), "nak", false},
		"unavailable":      {1, itemError("out", fmt.Errorf("%w: down", ErrUnavailable)), "nak", false},
		"rejected, first":  {1, itemError("work", errBad), "nak 50ms", false},
		"rejected, second": {2, itemError("work", errBad), "nak 50ms", false},
		"rejected, last":   {3, itemError("work", errBad), "term", true},
	} {
		t.Run(name, func(t *testing.T) {
			m, log, src := fakeMsg(tc.delivered, retry)
			var next []stage.Item[any]
			DeadLetter(func(it stage.Item[any]) { next = append(next, it) })(stage.Item[any]{Payload: m, Err: tc.err})
			assert.Equal(t, []string{tc.want}, log.calls)
			if tc.toNext {
				require.Len(t, next, 1)
				assert.Same(t, m, next[0].Payload)
			} else {
				assert.Empty(t, next)
			}
			st := src.Stats()
			assert.EqualValues(t, 1, st.Released+st.Retried+st.Terminated, "settled once")
		})
	}
}

func TestDeadLetterWithoutRetryTerminates(t *testing.T) {
	m, log, _ := fakeMsg(1)
	DeadLetter(nil)(stage.Item[any]{Payload: m, Err: itemError("work", errors.New("bad"))})
	assert.Equal(t, []string{"term"}, log.calls)
}

func TestDeadLetterPassesOtherItemsOn(t *testing.T) {
	var next []stage.Item[any]
	dl := DeadLetter(func(it stage.Item[any]) { next = append(next, it) })
	unread := &Msg{ID: "made"}
	dl(stage.Item[any]{Payload: unread, Err: itemError("out", stage.ErrAborted)})
	dl(stage.Item[any]{Payload: nil, Err: itemError("in", errors.New("bad record"))})
	dl(stage.Item[any]{Payload: (*Msg)(nil), Err: itemError("out", ErrInvalidMsg)})
	assert.Len(t, next, 3)
}

func TestTicketSettlesOnce(t *testing.T) {
	m, log, src := fakeMsg(1)
	m.t.refs.Add(1) // two outputs
	m.t.done()
	assert.Empty(t, log.calls, "one output still unpublished")
	DeadLetter(nil)(stage.Item[any]{Payload: m, Err: itemError("out", stage.ErrAborted)})
	m.t.done()
	assert.Equal(t, []string{"nak"}, log.calls, "released; the late publish does not ack")
	assert.EqualValues(t, 1, src.Stats().Released)
	assert.Zero(t, src.Stats().Acked)
}

func TestTransformAccounting(t *testing.T) {
	for name, tc := range map[string]struct {
		outs    int
		wantIDs []string
		acked   bool
	}{
		"filter":  {0, nil, true},
		"one":     {1, []string{"S:1/1"}, false},
		"fan-out": {3, []string{"S:1/1", "S:1/2", "S:1/3"}, false},
	} {
		t.Run(name, func(t *testing.T) {
			in, log, _ := fakeMsg(2)
			tr := Transform(func(_ context.Context, in *Msg, emit func(*Msg)) error {
				for range tc.outs {
					emit(&Msg{Header: nats.Header{}})
				}
				return nil
			})
			var got []*Msg
			require.NoError(t, tr.Process(context.Background(), in, func(m *Msg) { got = append(got, m) }))
			var ids []string
			for _, m := range got {
				ids = append(ids, m.ID)
				assert.Same(t, in.t, m.t)
				assert.True(t, m.Redelivered(), "outputs inherit the delivery count")
			}
			assert.Equal(t, tc.wantIDs, ids)
			if tc.acked {
				assert.Equal(t, []string{"ack"}, log.calls)
				return
			}
			for _, m := range got {
				assert.Empty(t, log.calls, "acked only after the last output")
				m.t.done()
			}
			assert.Equal(t, []string{"ack"}, log.calls)
		})
	}
}

func TestTransformRejectsBadUse(t *testing.T) {
	in, log, _ := fakeMsg(1)
	emit := func(*Msg) { t.Error("nothing may be emitted") }
	err := Transform(nil).Process(context.Background(), in, emit)
	assert.ErrorIs(t, err, stage.ErrFatal)
	err = Transform(func(_ context.Context, _ *Msg, emit func(*Msg)) error {
		emit(nil)
		return nil
	}).Process(context.Background(), in, emit)
	assert.ErrorIs(t, err, ErrInvalidMsg)
	err = Transform(func(context.Context, *Msg, func(*Msg)) error { return nil }).Process(context.Background(), nil, emit)
	assert.ErrorIs(t, err, ErrInvalidMsg)
	errBad := errors.New("bad")
	err = Transform(func(_ context.Context, in *Msg, emit func(*Msg)) error {
		emit(in)
		return errBad
	}).Process(context.Background(), in, emit)
	assert.ErrorIs(t, err, errBad, "the outputs of a failed call are dropped")
	assert.Empty(t, log.calls)
	assert.EqualValues(t, 1, in.t.refs.Load())
}

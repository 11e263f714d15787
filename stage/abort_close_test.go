package stage_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/stage"
)

// closingSource emits 1, 2, 3… and counts its Close calls; closeErr is what
// Close returns.
type closingSource struct {
	i        int
	closed   atomic.Int32
	closeErr error
}

func (s *closingSource) Next(_ context.Context, emit func(int)) error {
	s.i++
	emit(s.i)
	return nil
}

func (s *closingSource) Close() error { s.closed.Add(1); return s.closeErr }

// closingSink blocks on its context, like a sink stuck on a slow backend,
// and counts its Close calls.
type closingSink struct {
	first  chan struct{}
	once   atomic.Bool
	closed atomic.Int32
}

func (s *closingSink) Consume(ctx context.Context, _ int) error {
	if s.once.CompareAndSwap(false, true) {
		close(s.first)
	}
	<-ctx.Done()
	return ctx.Err()
}

func (s *closingSink) Close() error { s.closed.Add(1); return nil }

func TestAbortClosesOpenedHandlers(t *testing.T) {
	errClose := errors.New("close failed")
	src := &closingSource{closeErr: errClose}
	sink := &closingSink{first: make(chan struct{})}
	p := stage.To(stage.From("src", src), "sink", sink)
	require.NoError(t, p.Start(context.Background()))
	<-sink.first
	p.Abort()
	err := p.Wait(context.Background())
	assert.ErrorIs(t, err, stage.ErrAborted)
	assert.EqualValues(t, 1, src.closed.Load(), "an aborted stage's handler is closed once")
	assert.EqualValues(t, 1, sink.closed.Load())
	var se *stage.Error
	require.ErrorAs(t, err, &se)
	assert.ErrorIs(t, err, errClose, "a Close error after an abort is reported")
}

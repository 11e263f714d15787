package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/internal/scalereport"
	"github.com/stagefsm/stagefsm/mealy"
)

// The counter stage is a small complete stage on a mealy machine: it waits
// at a barrier (so that every Run is alive at once), then counts to ticks
// with one transition and one action per tick, and terminates:
//
//	Waiting  -Go->     Counting [Count]
//	Counting -Tick->   Counting [Count]   (stay)
//	Counting -Finish-> Done
//	Done: terminal; dispatch returns Terminate

type counterState uint8

const (
	waiting counterState = iota
	counting
	done
)

func (s counterState) String() string { return [...]string{"Waiting", "Counting", "Done"}[s] }

type counterEvent uint8

const (
	goEvent counterEvent = iota
	tickEvent
	finishEvent
)

func (e counterEvent) String() string { return [...]string{"Go", "Tick", "Finish"}[e] }

type counterCtx struct{ n int }

type countAction struct{}

func (countAction) Execute(_ context.Context, c *counterCtx) error { c.n++; return nil }
func (countAction) String() string                                 { return "Count" }

type counterMachine = stagefsm.Machine[counterState, counterEvent, *counterCtx, countAction]

// counterStage is the supervisor every Run shares.
type counterStage struct {
	def       *mealy.Definition[counterState, counterEvent, *counterCtx, countAction]
	ticks     int
	release   chan struct{}
	arrived   atomic.Int64
	completed atomic.Int64
}

func newCounterStage(ticks int) (*counterStage, error) {
	b := mealy.New[counterState, counterEvent, *counterCtx, countAction](
		func(s counterState) counterState { return s },
		func(e counterEvent) counterEvent { return e },
	)
	b.Initial(waiting)
	b.State(waiting)
	b.State(counting)
	b.State(done).Terminal()
	b.On(waiting, goEvent).To(counting).Do(countAction{})
	b.On(counting, tickEvent).Stay().Do(countAction{})
	b.On(counting, finishEvent).To(done)
	def, err := b.Build()
	if err != nil {
		return nil, err
	}
	return &counterStage{def: def, ticks: ticks, release: make(chan struct{})}, nil
}

func (s *counterStage) BuildStateMachine(initial counterState) (counterMachine, error) {
	return s.def.New(initial)
}

func (*counterStage) Name() string                           { return "counter" }
func (*counterStage) EventForActionError(error) counterEvent { return finishEvent }

func (s *counterStage) WriteCompletionEvent(context.Context) error {
	s.completed.Add(1)
	return nil
}

func (s *counterStage) DispatchState(ctx context.Context, st counterState, c *counterCtx) (stagefsm.Directive[counterEvent], error) {
	switch st {
	case waiting:
		s.arrived.Add(1)
		select {
		case <-s.release:
			return stagefsm.Transition(goEvent), nil
		case <-ctx.Done():
			return stagefsm.Directive[counterEvent]{}, ctx.Err()
		}
	case counting:
		if c.n <= s.ticks {
			return stagefsm.Transition(tickEvent), nil
		}
		return stagefsm.Transition(finishEvent), nil
	default:
		return stagefsm.Terminate[counterEvent](), nil
	}
}

// concurrentRuns runs n stagefsm.Run calls of the counter stage at once,
// each on its own goroutine, to completion.
func concurrentRuns(n, ticks int) (scalereport.Runs, error) {
	r := scalereport.Runs{Runs: n, Transitions: ticks + 2}
	sup, err := newCounterStage(ticks)
	if err != nil {
		return r, err
	}
	ctx := context.Background()
	errs := make(chan error, 1)
	var wg sync.WaitGroup

	before := settledMemory()
	base := heldMemory()
	peak := startPeakSampler(2 * time.Millisecond)
	start := time.Now()
	for range n {
		wg.Go(func() {
			c := &counterCtx{}
			err := stagefsm.Run(ctx, sup, waiting, c)
			if err == nil && c.n != ticks+1 {
				err = fmt.Errorf("counted %d, want %d", c.n, ticks+1)
			}
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		})
	}
	for sup.arrived.Load() < int64(n) {
		time.Sleep(time.Millisecond)
	}
	r.Spawn = time.Since(start)
	_, _, r.BytesPerRun = perUnit(before, settledMemory(), n)

	start = time.Now()
	close(sup.release)
	wg.Wait()
	r.Run = time.Since(start)
	if p := peak.finish(); p > base {
		r.Peak = p - base
	}

	select {
	case err := <-errs:
		return r, fmt.Errorf("counter stage: %w", err)
	default:
	}
	if got := sup.completed.Load(); got != int64(n) {
		return r, fmt.Errorf("%d completions, want %d", got, n)
	}
	return r, nil
}

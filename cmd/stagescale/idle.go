package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/internal/scalereport"
	"github.com/stagefsm/stagefsm/stage"
)

// settle is how long a scenario waits, once every stage has been started,
// for the last goroutines to reach their blocking point.
const settle = 100 * time.Millisecond

// idleGates starts n gate stages under stagefsm.Start, each with its own
// machine from build, lets them all block at their gate, measures them, and
// opens every gate.
func idleGates(name string, n int, build func(gateState) (gateMachine, error), cfg config, profile string) (scalereport.Idle, error) {
	r := scalereport.Idle{Name: name, Stages: n, Interval: cfg.idle, BaselineCPU: cfg.baselineCPU}
	ctx := context.Background()
	sup := &gateStage{build: build}
	stages := make([]*stagefsm.Stage[gateState, gateEvent], n)

	before := settledMemory()
	start := time.Now()
	for i := range stages {
		stages[i] = stagefsm.Start(ctx, sup, gated, struct{}{})
	}
	for sup.reached.Load() < int64(n) {
		time.Sleep(time.Millisecond)
	}
	r.Start = time.Since(start)
	time.Sleep(settle)

	measureIdle(&r, before, n, cfg, profile)

	start = time.Now()
	for _, st := range stages {
		if err := st.TrySend(openEvent); err != nil {
			return r, fmt.Errorf("open a gate: %w", err)
		}
	}
	for _, st := range stages {
		if err := st.Wait(ctx); err != nil {
			return r, fmt.Errorf("gate stage: %w", err)
		}
	}
	r.Drain = time.Since(start)
	return r, nil
}

// idlePipeline builds a stage.Pipeline of n stages — a source that waits
// for input, n-2 transforms, a sink —, starts it, lets every stage block on
// its input, measures them, and ends the input so that end of input drains
// the stages in order.
func idlePipeline(n int, cfg config, profile string) (scalereport.Idle, error) {
	r := scalereport.Idle{Name: "stage.Pipeline stage", Stages: n, Interval: cfg.idle, BaselineCPU: cfg.baselineCPU}
	ctx := context.Background()
	release := make(chan struct{})

	before := settledMemory()
	start := time.Now()
	// Built on a goroutine of its own: the chain is built recursively, and
	// the deep stack this takes is freed with the goroutine instead of
	// being counted as the stages' memory.
	built := make(chan *stage.Pipeline)
	go func() { built <- buildIdlePipeline(n, release) }()
	p := <-built
	if err := p.Start(ctx); err != nil {
		return r, fmt.Errorf("start the pipeline: %w", err)
	}
	r.Start = time.Since(start)
	time.Sleep(settle)

	measureIdle(&r, before, n, cfg, profile)

	start = time.Now()
	close(release)
	if err := p.Wait(ctx); err != nil {
		return r, fmt.Errorf("pipeline: %w", err)
	}
	r.Drain = time.Since(start)
	if st := p.Stats(); st.Emitted != 0 || st.InFlight != 0 {
		return r, fmt.Errorf("pipeline: %d items emitted, %d in flight; want none", st.Emitted, st.InFlight)
	}
	return r, nil
}

func buildIdlePipeline(n int, release <-chan struct{}) *stage.Pipeline {
	src := stage.SourceFunc[int](func(ctx context.Context, _ func(int)) error {
		select {
		case <-release:
			return io.EOF
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	pass := stage.TransformFunc[int, int](func(_ context.Context, v int, emit func(int)) error {
		emit(v)
		return nil
	})
	c := stage.From("source", stage.Source[int](src))
	for i := range n - 2 {
		c = stage.Then(c, "t"+strconv.Itoa(i), stage.Transform[int, int](pass))
	}
	return stage.To(c, "sink", stage.SinkFunc[int](func(context.Context, int) error { return nil }))
}

// measure records the memory the n idle stages hold, writes a heap
// profile if asked, and measures the CPU the process uses while they idle.
func measureIdle(r *scalereport.Idle, before memory, n int, cfg config, profile string) {
	after := settledMemory()
	r.HeapPerStage, r.StackPerStage, r.BytesPerStage = perUnit(before, after, n)
	if profile != "" {
		writeHeapProfile(profile)
	}
	r.IdleCPU, r.CPUKnown = idleCPU(cfg.idle)
}

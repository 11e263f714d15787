package main

import (
	"runtime"
	"runtime/metrics"
	"sync"
	"time"
)

// memory is the memory the Go runtime holds for live data: the heap
// objects and the goroutine stacks in use, after a collection.
type memory struct {
	heap  uint64 // bytes of live heap objects (MemStats.HeapAlloc)
	stack uint64 // bytes of goroutine stacks (MemStats.StackInuse)
}

// settledMemory collects garbage until the stacks stop shrinking (each
// collection halves a stack at most once, and only when a quarter of it is
// unused) and returns the memory in use.
func settledMemory() memory {
	var ms runtime.MemStats
	var last memory
	for i := range 8 {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		m := memory{heap: ms.HeapAlloc, stack: ms.StackInuse}
		if i > 1 && m.stack == last.stack {
			return m
		}
		last = m
	}
	return last
}

// perUnit is the growth from before to after, divided among n units: the
// heap, the stacks and their sum, in bytes.
func perUnit(before, after memory, n int) (heap, stack, total float64) {
	heap = (float64(after.heap) - float64(before.heap)) / float64(n)
	stack = (float64(after.stack) - float64(before.stack)) / float64(n)
	return heap, stack, heap + stack
}

// idleCPU returns the CPU time (user and system, every thread of the
// process) spent while the process sleeps for d. It first lets a
// collection finish and the runtime settle, so that the interval sees only
// what runs on its own.
func idleCPU(d time.Duration) (time.Duration, bool) {
	runtime.GC()
	time.Sleep(d / 4)
	before, ok := cpuTime()
	if !ok {
		return 0, false
	}
	time.Sleep(d)
	after, _ := cpuTime()
	return after - before, true
}

// peakSampler records the largest amount of memory the runtime holds from
// the OS (mapped and not returned: close to the process's resident size)
// while it runs, sampling every interval.
type peakSampler struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	peak uint64
}

var memoryMetrics = []string{"/memory/classes/total:bytes", "/memory/classes/heap/released:bytes"}

func startPeakSampler(interval time.Duration) *peakSampler {
	p := &peakSampler{stop: make(chan struct{}), done: make(chan struct{})}
	samples := make([]metrics.Sample, len(memoryMetrics))
	for i, name := range memoryMetrics {
		samples[i].Name = name
	}
	read := func() {
		metrics.Read(samples)
		held := samples[0].Value.Uint64() - samples[1].Value.Uint64()
		p.mu.Lock()
		p.peak = max(p.peak, held)
		p.mu.Unlock()
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			read()
			select {
			case <-t.C:
			case <-p.stop:
				read()
				return
			}
		}
	}()
	return p
}

// finish stops the sampler and returns the peak it saw.
func (p *peakSampler) finish() uint64 {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak
}

// heldMemory is what the runtime holds from the OS now (see peakSampler).
func heldMemory() uint64 {
	samples := make([]metrics.Sample, len(memoryMetrics))
	for i, name := range memoryMetrics {
		samples[i].Name = name
	}
	metrics.Read(samples)
	return samples[0].Value.Uint64() - samples[1].Value.Uint64()
}

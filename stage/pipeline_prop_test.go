package stage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/stage"
)

// This file checks Pipeline's accounting with random pipelines and random
// faults (pgregory.net/rapid), each case in a testing/synctest bubble so
// that slow handlers cost no time. chaos_test.go runs the same rig in real
// time, several pipelines at once.
//
// A pipeRig plays every handler of one pipeline and records, per item, how
// it ended: delivered (a transform or the sink took it and returned nil) or
// dead-lettered. Every item has a unique payload (its stage's position in
// the high bits, a counter in the low ones), so the rig can check that each
// item emitted ends exactly once, that nothing else ends, and that the
// counts of Pipeline.Stats agree. Every decision of a handler depends on
// its stage and on how many calls that stage made, so a plan does the same
// whatever the scheduling; only where drains and aborts land is up to the
// scheduler, and the invariants hold for any landing.
//
// Local soak (the package before rapid's flag):
//
//	go test ./stage -run TestPipelineProperties -rapid.checks=10000

// pipePlan is a random pipeline and what goes wrong in it.
type pipePlan struct {
	seed       uint64 // for the per-call decisions
	transforms int    // 0 to 3
	calls      int    // source calls before end of input
	perCall    int    // a source call emits 0 to perCall items
	faults     []pipeFaults
	batch      int
	capacity   int

	drainAt, abortAt pipeTrigger
	openFail         int  // the position whose Open fails, -1: none
	drainHook        int  // the position of the transform with a Drain hook, 0: none
	drainHookFails   bool // it emits, then fails
	flushFails       bool // the sink's Flush fails
	closeFails       int  // the position whose Close fails, -1: none
}

// pipeFaults is what one stage's handler does wrong: 1 call in errEvery
// returns a non-fatal error (0: none), 1 in panicEvery panics, call fatalAt
// returns a fatal error (0: none), 1 in slowEvery sleeps slow. A transform
// emits two outputs for 1 input in fanout, none for 1 in fanout, and emits
// before it fails when emitThenFail.
type pipeFaults struct {
	errEvery     int
	panicEvery   int
	fatalAt      int
	slowEvery    int
	slow         time.Duration
	fanout       int
	emitThenFail bool
}

// pipeTrigger asks for a drain or an abort from inside the handler call n
// of the stage at pos (n == 0: never).
type pipeTrigger struct {
	pos, n int
}

// pipeDraw is where a plan's random numbers come from: rapid for the
// properties, a seeded PRNG for the chaos test.
type pipeDraw interface {
	intn(label string, min, max int) int
}

type rapidDraw struct{ t *rapid.T }

func (d rapidDraw) intn(label string, min, max int) int {
	return rapid.IntRange(min, max).Draw(d.t, label)
}

// drawPipePlan draws a plan with up to maxCalls source calls; slow is the
// longest sleep of a slow handler.
func drawPipePlan(d pipeDraw, maxCalls int, slow time.Duration) *pipePlan {
	p := &pipePlan{
		seed:       uint64(d.intn("seed", 0, 1<<30)),
		transforms: d.intn("transforms", 0, 3),
		calls:      d.intn("calls", 0, maxCalls>>(2*d.intn("scale", 0, 2))), // small ones shrink better
		perCall:    d.intn("perCall", 1, 3),
		batch:      d.intn("batch", 1, 8),
		capacity:   d.intn("capacity", 1, 3),
		openFail:   -1,
		closeFails: -1,
	}
	n := p.transforms + 2
	for pos := range n {
		f := pipeFaults{
			slowEvery: d.intn("slowEvery", 0, 20),
			slow:      time.Duration(d.intn("slow", 1, 1000)) * slow / 1000,
		}
		if d.intn("errs", 0, 2) > 0 {
			f.errEvery = d.intn("errEvery", 2, 30)
		}
		if d.intn("panics", 0, 3) == 3 {
			f.panicEvery = d.intn("panicEvery", 3, 50)
		}
		if d.intn("fatal", 0, 5) == 5 {
			f.fatalAt = d.intn("fatalAt", 1, max(1, p.calls*p.perCall))
		}
		if pos > 0 && pos < n-1 {
			f.fanout = d.intn("fanout", 0, 10)
			f.emitThenFail = d.intn("emitThenFail", 0, 1) == 1
		}
		p.faults = append(p.faults, f)
	}
	trigger := func(label string) pipeTrigger {
		if d.intn(label, 0, 2) != 2 {
			return pipeTrigger{}
		}
		return pipeTrigger{pos: d.intn(label+".pos", 0, n-1), n: d.intn(label+".n", 1, max(1, p.calls))}
	}
	p.drainAt, p.abortAt = trigger("drain"), trigger("abort")
	if d.intn("openFails", 0, 30) == 30 {
		p.openFail = d.intn("openFail", 0, n-1)
	}
	if p.transforms > 0 && d.intn("drainHook", 0, 1) == 1 {
		p.drainHook = d.intn("drainHookPos", 1, p.transforms)
		p.drainHookFails = d.intn("drainHookFails", 0, 5) == 5
	}
	p.flushFails = d.intn("flushFails", 0, 10) == 10
	if d.intn("closeFails", 0, 10) == 10 {
		p.closeFails = d.intn("closeFail", 0, n-1)
	}
	return p
}

// Errors the rig's handlers return; each failure wraps one with the stage
// and call, so that the rig can tell which failure a stage reports.
var (
	errPipeItem  = errors.New("pipe: bad item")
	errPipeFatal = errors.New("pipe: fatal")
	errPipeHook  = errors.New("pipe: hook failed")
)

// pipeRig runs one plan: it plays the handlers and is the oracle.
type pipeRig struct {
	plan  *pipePlan
	names []string
	p     *stage.Pipeline

	calls []int // per position; each touched by that stage's goroutine only
	ids   []int

	mu        sync.Mutex
	emitted   map[int]bool   // payloads that count as emitted
	ended     map[int]int    // payload -> times it ended
	endedErr  map[string]int // error items a source made (no payload), by origin#seq
	delivered []uint64       // per position: handler calls that returned nil
	letters   int
	failures  map[string]error   // stage -> the first failure injected there
	later     map[string][]error // stage -> the failures injected after the first
	drained   bool
	aborted   bool // a handler asked for an abort (so before the end)
	outAbort  bool // an abort was asked for from outside (maybe after the end)
	failure   bool // the journal holds a stage's failure
	lateCalls int  // the source's calls begun after that
	log       []string
	bad       []string

	outside sync.WaitGroup // the goroutines of fromOutside
}

func newPipeRig(plan *pipePlan) *pipeRig {
	n := plan.transforms + 2
	r := &pipeRig{
		plan:      plan,
		calls:     make([]int, n),
		ids:       make([]int, n),
		emitted:   make(map[int]bool),
		ended:     make(map[int]int),
		endedErr:  make(map[string]int),
		delivered: make([]uint64, n),
		failures:  make(map[string]error),
		later:     make(map[string][]error),
	}
	r.names = append(r.names, "src")
	for i := range plan.transforms {
		r.names = append(r.names, fmt.Sprintf("t%d", i+1))
	}
	r.names = append(r.names, "sink")
	return r
}

func (r *pipeRig) violatef(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bad = append(r.bad, fmt.Sprintf(format, args...))
}

func (r *pipeRig) logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.log) < 200 {
		r.log = append(r.log, fmt.Sprintf(format, args...))
	}
}

// fromOutside drains or aborts the pipeline after d, from another
// goroutine, unless it has ended by then. An abort from outside may land
// after the end (then Wait does not report it); check tells by Wait's
// result.
func (r *pipeRig) fromOutside(d time.Duration, abort bool) {
	r.outside.Go(func() {
		select {
		case <-time.After(d):
		case <-r.p.Done():
			return
		}
		r.mu.Lock()
		if abort {
			r.outAbort = true
		} else {
			r.drained = true
		}
		r.mu.Unlock()
		if abort {
			r.logf("outside, after %v: Abort", d)
			r.p.Abort()
		} else {
			r.logf("outside, after %v: Drain", d)
			r.p.Drain()
		}
	})
}

// pick returns a number in [0, k) for decision salt of call n at pos: a
// hash of the plan's seed and those, so the same call decides the same
// whatever the scheduling.
func (r *pipeRig) pick(pos, n, salt, k int) int {
	x := r.plan.seed ^ uint64(pos)<<48 ^ uint64(n)<<8 ^ uint64(salt)
	// splitmix64
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	x ^= x >> 31
	return int(x % uint64(k))
}

// roll reports whether a 1-in-every decision fires for call n at pos.
func (r *pipeRig) roll(pos, n, salt, every int) bool {
	return every > 0 && r.pick(pos, n, salt, every) == 0
}

// call counts a handler call at pos, sleeps if the plan says so, and pulls
// the triggers set on it.
func (r *pipeRig) call(pos int) int {
	r.calls[pos]++
	n := r.calls[pos]
	f := r.plan.faults[pos]
	if r.roll(pos, n, 1, f.slowEvery) {
		time.Sleep(f.slow)
	}
	if t := r.plan.drainAt; t.n == n && t.pos == pos {
		r.mu.Lock()
		r.drained = true
		r.mu.Unlock()
		r.logf("%s call %d: Drain", r.names[pos], n)
		r.p.Drain()
	}
	if t := r.plan.abortAt; t.n == n && t.pos == pos {
		r.mu.Lock()
		r.aborted = true
		r.mu.Unlock()
		r.logf("%s call %d: Abort", r.names[pos], n)
		r.p.Abort()
	}
	return n
}

// fault returns what call n at pos does wrong: nil, an error, a fatal
// error; panic reports a panic instead.
func (r *pipeRig) fault(pos, n int) (err error, panics bool) {
	f := r.plan.faults[pos]
	switch {
	case f.fatalAt == n:
		err := stage.Fatal(fmt.Errorf("%s call %d: %w", r.names[pos], n, errPipeFatal))
		r.failed(pos, err)
		return err, false
	case r.roll(pos, n, 2, f.panicEvery):
		return nil, true
	case r.roll(pos, n, 3, f.errEvery):
		return fmt.Errorf("%s call %d: %w", r.names[pos], n, errPipeItem), false
	}
	return nil, false
}

// failed records a failure injected in the stage at pos. The first one
// counts: it is the stage's reason. The later ones matter under an abort,
// where the first may have been returned while the context was done — a
// cancellation, not a failure (SEMANTICS.md) — so a later one, such as a
// failing Close, is what the stage reports.
func (r *pipeRig) failed(pos int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	name := r.names[pos]
	if _, ok := r.failures[name]; !ok {
		r.failures[name] = err
		return
	}
	r.later[name] = append(r.later[name], err)
}

// laterFailure reports whether err is one of the failures injected in the
// stage name after its first.
func (r *pipeRig) laterFailure(name string, err error) bool {
	for _, e := range r.later[name] {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// newItem makes the payload of a new item of the stage at pos.
func (r *pipeRig) newItem(pos int) int {
	r.ids[pos]++
	return (pos+1)<<32 | r.ids[pos]
}

func (r *pipeRig) emit(emit func(int), v int, counts bool) {
	if counts {
		r.mu.Lock()
		r.emitted[v] = true
		r.mu.Unlock()
	}
	emit(v)
}

func (r *pipeRig) deliver(pos, v int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended[v]++
	r.delivered[pos]++
}

// Next is the source's handler.
func (r *pipeRig) Next(_ context.Context, emit func(int)) error {
	r.mu.Lock()
	if r.failure {
		r.lateCalls++
	}
	r.mu.Unlock()
	n := r.call(0)
	if n > r.plan.calls {
		return io.EOF
	}
	// A source's items count whatever the call returns.
	for range r.pick(0, n, 6, r.plan.perCall+1) {
		r.emit(emit, r.newItem(0), true)
	}
	err, panics := r.fault(0, n)
	if panics {
		panic(fmt.Sprintf("src call %d panics", n))
	}
	return err
}

// process is the handler of the transform at pos.
func (r *pipeRig) process(pos int) stage.Transform[int, int] {
	return stage.TransformFunc[int, int](func(_ context.Context, in int, emit func(int)) error {
		n := r.call(pos)
		f := r.plan.faults[pos]
		outs := 1
		switch {
		case r.roll(pos, n, 4, f.fanout):
			outs = 2
		case r.roll(pos, n, 5, f.fanout):
			outs = 0
		}
		err, panics := r.fault(pos, n)
		if err != nil || panics {
			if f.emitThenFail {
				r.emit(emit, r.newItem(pos), false) // discarded with the call
			}
			if panics {
				panic(fmt.Sprintf("%s call %d panics", r.names[pos], n))
			}
			return err
		}
		for range outs {
			r.emit(emit, r.newItem(pos), true)
		}
		r.deliver(pos, in)
		return nil
	})
}

// Consume is the sink's handler.
func (r *pipeRig) Consume(_ context.Context, in int) error {
	pos := len(r.names) - 1
	n := r.call(pos)
	err, panics := r.fault(pos, n)
	switch {
	case panics:
		panic(fmt.Sprintf("sink call %d panics", n))
	case err != nil:
		return err
	}
	r.deliver(pos, in)
	return nil
}

// deadLetter is the pipeline's dead-letter writer.
func (r *pipeRig) deadLetter(it stage.Item[any]) {
	r.mu.Lock()
	r.letters++
	if v, _ := it.Payload.(int); v != 0 {
		r.ended[v]++
	} else { // an error item a source made for a failed call
		r.endedErr[fmt.Sprintf("%s#%d", it.Origin, it.Seq)]++
	}
	r.mu.Unlock()
	var ie *stage.ItemError
	var pe *stagefsm.PanicError
	switch {
	case !errors.As(it.Err, &ie):
		r.violatef("dead letter %v: Err %T is not an *ItemError", it, it.Err)
	case !r.known(ie.Stage):
		r.violatef("dead letter %v names the unknown stage %q", it, ie.Stage)
	case !errors.Is(it.Err, errPipeItem) && !errors.Is(it.Err, errPipeFatal) && !errors.As(it.Err, &pe) &&
		!errors.Is(it.Err, stage.ErrFailed) && !errors.Is(it.Err, stage.ErrAborted):
		r.violatef("dead letter %v: %v is no failure the rig caused", it, it.Err)
	}
}

func (r *pipeRig) known(name string) bool {
	for _, n := range r.names {
		if n == name {
			return true
		}
	}
	return false
}

// hooked wraps a handler with the hooks the plan gives the stage at pos:
// Open, Close, a transform's Drain, a sink's Flush.
type hooked struct {
	r   *pipeRig
	pos int
}

func (h hooked) Open(context.Context) error {
	if h.r.plan.openFail == h.pos {
		err := fmt.Errorf("%s Open: %w", h.r.names[h.pos], errPipeHook)
		h.r.failed(h.pos, err)
		return err
	}
	return nil
}

func (h hooked) Close() error {
	if h.r.plan.closeFails == h.pos {
		err := fmt.Errorf("%s Close: %w", h.r.names[h.pos], errPipeHook)
		h.r.failed(h.pos, err)
		return err
	}
	return nil
}

type hookedSource struct {
	hooked
	*pipeRig
}

func (s hookedSource) Next(ctx context.Context, emit func(int)) error {
	return s.pipeRig.Next(ctx, emit)
}

type hookedTransform struct {
	hooked
	stage.Transform[int, int]
}

type drainingTransform struct{ hookedTransform }

func (t drainingTransform) Drain(_ context.Context, emit func(int)) error {
	r, pos := t.r, t.pos
	r.emit(emit, r.newItem(pos), true) // what a drain emits counts, even if it then fails
	if r.plan.drainHookFails {
		err := fmt.Errorf("%s Drain: %w", r.names[pos], errPipeHook)
		r.failed(pos, err)
		return err
	}
	return nil
}

type hookedSink struct {
	hooked
	*pipeRig
}

func (s hookedSink) Consume(ctx context.Context, in int) error { return s.pipeRig.Consume(ctx, in) }

func (s hookedSink) Flush(context.Context) error {
	if s.plan.flushFails {
		err := fmt.Errorf("sink Flush: %w", errPipeHook)
		s.failed(s.pos, err)
		return err
	}
	return nil
}

// build builds the plan's pipeline.
func (r *pipeRig) build(j stage.Journal) *stage.Pipeline {
	c := stage.From[int]("src", hookedSource{hooked{r, 0}, r})
	for pos := 1; pos <= r.plan.transforms; pos++ {
		t := hookedTransform{hooked{r, pos}, r.process(pos)}
		if pos == r.plan.drainHook {
			c = stage.Then[int, int](c, r.names[pos], drainingTransform{t})
		} else {
			c = stage.Then[int, int](c, r.names[pos], t)
		}
	}
	sink := len(r.names) - 1
	r.p = stage.To(c, "sink", hookedSink{hooked{r, sink}, r},
		stage.WithBatchSize(r.plan.batch), stage.WithCapacity(r.plan.capacity),
		stage.WithDeadLetter(r.deadLetter), stage.WithJournal(failureWatch{j, r}))
	return r.p
}

// failureWatch is the rig's journal: it tells the rig when a stage's
// failure is journaled (the pipeline asks the source to drain right after).
type failureWatch struct {
	stage.Journal
	r *pipeRig
}

func (w failureWatch) Append(e stage.Entry) error {
	if strings.HasPrefix(e.To, "Failed") {
		w.r.mu.Lock()
		w.r.failure = true
		w.r.mu.Unlock()
	}
	return w.Journal.Append(e)
}

// check checks an ended pipeline against what the rig saw. err is what
// Wait returned.
func (r *pipeRig) check(t assert.TestingT, err error, j *stage.MemoryJournal) {
	st := r.p.Stats()
	r.mu.Lock()
	defer r.mu.Unlock()

	// emitted == delivered + dead-lettered, item by item.
	assert.Equal(t, st.Emitted, st.Delivered+st.DeadLettered, "emitted == delivered + dead_lettered")
	assert.Zero(t, st.InFlight, "nothing in flight after Wait")
	assert.EqualValues(t, r.letters, st.DeadLettered, "the dead-letter writer saw every dead letter")
	assert.EqualValues(t, len(r.ended)+len(r.endedErr), st.Emitted, "items that ended, against Stats.Emitted")
	for v, n := range r.ended {
		if n != 1 {
			r.bad = append(r.bad, fmt.Sprintf("item %#x ended %d times", v, n))
		}
		if !r.emitted[v] {
			r.bad = append(r.bad, fmt.Sprintf("item %#x ended but was never emitted (or was discarded)", v))
		}
	}
	for k, n := range r.endedErr {
		if n != 1 {
			r.bad = append(r.bad, fmt.Sprintf("error item %s ended %d times", k, n))
		}
	}
	for v := range r.emitted {
		if r.ended[v] == 0 {
			r.bad = append(r.bad, fmt.Sprintf("item %#x was emitted and never ended", v))
		}
	}
	for pos, name := range r.names {
		s := st.Stages[pos]
		assert.Equal(t, name, s.Name)
		if pos > 0 {
			assert.Equal(t, r.delivered[pos], s.Counts.Delivered, "%s: delivered", name)
		}
	}

	// Wait's result: an abort says so; otherwise exactly the stages where a
	// failure was injected failed, each with that failure.
	failed := pipeStageErrors(err)
	if r.aborted {
		assert.ErrorIs(t, err, stage.ErrAborted)
	}
	if errors.Is(err, stage.ErrAborted) && !r.aborted && !r.outAbort {
		r.bad = append(r.bad, fmt.Sprintf("Wait reports an abort nobody asked for: %v", err))
	}
	r.aborted = r.aborted || errors.Is(err, stage.ErrAborted)
	for name, se := range failed {
		want, ok := r.failures[name]
		switch {
		case !ok:
			r.bad = append(r.bad, fmt.Sprintf("stage %s failed though nothing failed there: %v", name, se))
		case !errors.Is(se, want) && !(r.aborted && r.laterFailure(name, se)):
			r.bad = append(r.bad, fmt.Sprintf("stage %s failed with %v, want %v", name, se, want))
		}
	}
	if !r.aborted {
		for name, want := range r.failures {
			if _, ok := failed[name]; !ok && !r.startupAborted(name) {
				r.bad = append(r.bad, fmt.Sprintf("stage %s had %v but Wait does not report it: %v", name, want, err))
			}
		}
		if len(r.failures) == 0 {
			assert.NoError(t, err)
		}
		for pos, s := range st.Stages {
			assert.True(t, s.State.Terminal(), "%s ends in a terminal state: %v", r.names[pos], s.State)
		}
	}

	// The journal: one completion per stage and one for the pipeline; and
	// the failure policy: a stage that fails asks the source to drain, so
	// a source still running when a stage downstream failed must get a
	// BeginDrain (unless it failed, or the pipeline was aborted or never
	// got past its start).
	done := map[string]int{}
	srcState, srcRunningAtFailure, srcDrainAsked, failureSeen := "", false, false, false
	for _, e := range j.Entries() {
		switch {
		case e.Kind == stage.EntryCompleted:
			done[e.Stage]++
		case e.Stage == "src":
			srcState = e.To
			srcDrainAsked = srcDrainAsked || (failureSeen && e.Event == "BeginDrain")
			// The source may reach its end of input while the drain
			// request is on its way: the call that returns it may begin
			// after the failure was journaled and before the request is
			// queued, and so may one more (the two happen on different
			// goroutines). A source that went on longer was not asked.
			srcDrainAsked = srcDrainAsked || (failureSeen && e.Event == "Completed" && e.From == "Running" && r.lateCalls <= 2)
		case strings.HasPrefix(e.To, "Failed") && !failureSeen:
			failureSeen, srcRunningAtFailure = true, srcState == "Running"
		}
	}
	for _, name := range append([]string{""}, r.names...) {
		assert.Equal(t, 1, done[name], "one completion entry for %q", name)
	}
	if srcRunningAtFailure && !srcDrainAsked && !r.aborted && r.plan.openFail < 0 && !strings.HasPrefix(srcState, "Failed") {
		r.bad = append(r.bad, "a stage failed while the source ran, and the source was not asked to drain")
	}

	sort.Strings(r.bad)
	if len(r.bad) > 10 {
		r.bad = append(r.bad[:10], fmt.Sprintf("... and %d more", len(r.bad)-10))
	}
	if !assert.Empty(t, r.bad, "plan %+v", *r.plan) {
		assert.Fail(t, "drains and aborts the handlers asked for", strings.Join(r.log, "\n"))
	}
}

// startupAborted reports whether the stage name failed while another's Open
// had failed: then only the Open failure is reported. A Close failure of
// a stage that never ran is in that case.
func (r *pipeRig) startupAborted(name string) bool {
	return r.plan.openFail >= 0 && r.names[r.plan.openFail] != name
}

// pipeStageErrors returns the *StageErrors in err's tree, by stage.
func pipeStageErrors(err error) map[string]*stage.Error {
	found := map[string]*stage.Error{}
	var walk func(error)
	walk = func(err error) {
		if se, ok := err.(*stage.Error); ok {
			found[se.Stage] = se
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			if e := u.Unwrap(); e != nil {
				walk(e)
			}
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	return found
}

// runPipePlan runs a plan to its end and checks it. during, if not nil, is
// called once the pipeline has started (the chaos test drains and aborts
// from outside with it). patience bounds each wait (fake time under
// synctest, real time in the chaos test): past it the run aborts the
// pipeline and fails, and if even that does not end it, gives up with the
// goroutines' stacks.
func runPipePlan(t assert.TestingT, plan *pipePlan, patience time.Duration, during func(*pipeRig)) *pipeRig {
	r := newPipeRig(plan)
	j := &stage.MemoryJournal{}
	p := r.build(j)
	ctx := context.Background()
	startErr := p.Start(ctx)
	if during != nil {
		during(r)
	}
	ended, err := pipeWait(p, patience)
	defer r.outside.Wait()
	if !ended {
		assert.Fail(t, "pipeline did not end", "within %v; aborting it. Plan %+v", patience, *plan)
		p.Abort()
		if ended, err = pipeWait(p, patience); !ended {
			buf := make([]byte, 1<<20)
			assert.Fail(t, "aborted pipeline did not end", "%s", buf[:runtime.Stack(buf, true)])
			return r
		}
		r.aborted = true
	}
	if startErr != nil {
		assert.Equal(t, startErr, err, "Start's error is Wait's")
	}
	r.outside.Wait()
	r.check(t, err, j)
	return r
}

// pipeWait waits for p at most patience; ended is false if it had not
// ended by then.
func pipeWait(p *stage.Pipeline, patience time.Duration) (ended bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	err = p.Wait(ctx)
	select {
	case <-p.Done():
		return true, err
	default:
		return false, nil
	}
}

// TestPipelineProperties runs random pipelines (0 to 3 transforms, batches
// of 1 to 8, channels of 1 to 3 batches) whose handlers fail at random:
// non-fatal errors, panics, fatal errors, emitting and then failing,
// failing Open, Drain, Flush and Close hooks, slow calls, and a drain or an
// abort asked for from inside a random handler call. After Wait every item
// emitted ended exactly once — delivered or dead-lettered — and nothing
// else did, emitted == delivered + dead_lettered with nothing in flight,
// Wait reports exactly the stages that failed (and the abort), and the
// journal has one completion per stage and for the pipeline.
func TestPipelineProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		plan := drawPipePlan(rapidDraw{rt}, 800, 10*time.Millisecond)
		rapid.SyncTest(rt, func(st *rapid.T) { runPipePlan(st, plan, time.Hour, nil) })
	})
}

// Regression tests for the bugs the properties found, each minimised to a
// plain case.

// closeFails is a transform whose Process returns process's error and whose
// Close hook returns closeErr.
type closeFails struct {
	process  func(v int) error
	closeErr error
}

func (c closeFails) Process(_ context.Context, v int, emit func(int)) error {
	if err := c.process(v); err != nil {
		return err
	}
	emit(v)
	return nil
}

func (c closeFails) Close() error { return c.closeErr }

// TestFailedStageCloseErrorDoesNotAbortPipeline: a stage that had failed
// ran its Close hook as a failure action; a Close error there was a double
// fault that ended the stage's loop, and the pipeline aborted every other
// stage (their items dead-lettered with ErrAborted, Wait reporting an
// abort nobody asked for). The failure of one stage drains the others; the
// Close error is reported with the stage's reason.
func TestFailedStageCloseErrorDoesNotAbortPipeline(t *testing.T) {
	errClose := errors.New("close failed")
	for _, tt := range []struct {
		name     string
		closeErr error
	}{
		{"Close error", errClose},
		{"Close panic", nil}, // see closePanics
	} {
		t.Run(tt.name, func(t *testing.T) {
			var mid stage.Transform[int, int] = closeFails{
				process: func(v int) error {
					if v == 3 {
						return stage.Fatal(errPipeFatal)
					}
					return nil
				},
				closeErr: tt.closeErr,
			}
			if tt.closeErr == nil {
				mid = closePanics{mid.(closeFails)}
			}
			n := 0
			src := stage.SourceFunc[int](func(_ context.Context, emit func(int)) error {
				if n == 10 {
					return io.EOF
				}
				n++
				emit(n)
				return nil
			})
			var got []int
			sink := stage.SinkFunc[int](func(_ context.Context, v int) error { got = append(got, v); return nil })
			letters := 0
			p := stage.To(stage.Then(stage.From("src", src), "mid", mid), "sink", sink,
				stage.WithBatchSize(1), stage.WithDeadLetter(func(stage.Item[any]) { letters++ }))
			ctx := context.Background()

			require.NoError(t, p.Start(ctx))
			err := p.Wait(ctx)

			assert.NotErrorIs(t, err, stage.ErrAborted, "nobody aborted")
			se := pipeStageErrors(err)
			require.Contains(t, se, "mid")
			assert.ErrorIs(t, se["mid"], errPipeFatal, "the stage's reason")
			if tt.closeErr != nil {
				assert.ErrorIs(t, se["mid"], errClose, "and its Close error")
			} else {
				var pe *stagefsm.PanicError
				assert.ErrorAs(t, se["mid"], &pe, "and its Close panic")
			}
			assert.Len(t, se, 1)
			st := p.Stats()
			assert.Equal(t, []stage.StateKind{stage.Drained, stage.Failed, stage.Drained},
				[]stage.StateKind{st.Stages[0].State.Kind, st.Stages[1].State.Kind, st.Stages[2].State.Kind})
			assert.Equal(t, []int{1, 2}, got, "the sink drained what mid sent before failing")
			assert.Equal(t, st.Emitted, st.Delivered+st.DeadLettered)
			assert.EqualValues(t, letters, st.DeadLettered)
		})
	}
}

// closePanics is closeFails with a Close hook that panics.
type closePanics struct{ closeFails }

func (c closePanics) Close() error { panic("close panicked") }

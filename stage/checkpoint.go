package stage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/stagefsm/stagefsm/checkpoint"
)

// ErrCheckpoint is the error, matched with errors.Is, of a pipeline that
// cannot checkpoint as [WithCheckpoint] asks: at build, a source that is
// not [Resumable] or a [Keyed] stage without Restore; at start, a store
// that fails to load or holds a checkpoint that does not restore; at the
// end, a final checkpoint that fails to save. A periodic checkpoint that
// fails is not an error of the pipeline: it is logged and counted (see
// [PipelineStats]), and the sources are not acknowledged past the last
// checkpoint stored.
var ErrCheckpoint = errors.New("stage: checkpoint")

// WithCheckpoint makes the pipeline keep its state in store: it takes a
// checkpoint every interval (none while running if every is 0) and one
// when it has drained, and when it starts it resumes from the latest
// checkpoint the store holds.
//
// A checkpoint is one consistent cut of the whole graph, taken without
// stopping it for longer than the graph takes to pass what is in flight:
// every source stops at a batch boundary and records its position (see
// [Resumable]); a barrier then flows through the graph behind the items
// sent before it; each stage, once it has the barrier from every input
// still open, captures its state — each key's instance of a [Keyed]
// stage with the time left on its timeout, each key of a
// [KeyedAccumulate], the table of a [Join], the state of an [Aggregate],
// and the numbering of every stage's outputs — and passes the barrier on;
// sinks flush and record their positions. When every stage has its part,
// the sources go on and the cut is saved. What a stage captures is what
// changed since its last capture, so that a large keyed state with few
// changes saves little. Once the store holds the checkpoint, each source
// that is a [Committer] may acknowledge its input up to its position;
// never earlier, so that a crash loses nothing a source cannot replay.
//
// On resume every stage gets back its state as of the cut, the sources go
// on from their positions and the sinks from theirs (a sink that is
// [Resumable] drops what it wrote after its position), so that the
// outputs are those of a run without the crash, provided the handlers
// are deterministic: the same input gives the same outputs. A sink that
// is not Resumable takes again the outputs it took after the last
// checkpoint (at least once): to drop them, give outputs an identity of
// their own, such as the input's ID or the aggregate's key (natsstage's
// Sink drops repeats by Msg.ID). Timeouts resume with the time they had
// left: the time the pipeline was down does not count. State in a user's
// [Transform] is not saved: keep it in a stateful stage. Dead letters are
// not saved either: those of input taken after the last checkpoint are
// written again after a resume.
//
// A pipeline that resumes from the last checkpoint of a run that drained
// (killed after that save, or simply run again) does not drain its stages
// again unless they get new input, since what they emitted at drain is
// written already; with new input (a file that grew) they drain again,
// with the state of both runs.
//
// Every source must be [Resumable] and every [Keyed] stage needs Restore,
// or [Graph.Build] fails with [ErrCheckpoint]; a checkpoint from another
// graph (stages renamed, added or removed) fails the start with the
// store's [*checkpoint.GraphError]; a state that no longer decodes fails
// it with a [*checkpoint.DecodeError] naming the stage and the key. A cut
// waits for every source's call to Next to return, and is given up (the
// sources go on, nothing is saved) when a stage fails meanwhile or when it
// takes longer than the interval or 5 s, whichever is longer. No
// checkpoint is taken while a Finite [Join] hydrates or a stage restarts.
// A nil store takes no checkpoints.
//
// Default: no checkpoints.
func WithCheckpoint(store checkpoint.Store, every time.Duration) Option {
	return optionFunc(func(o *options) {
		o.store, o.every = store, max(every, 0)
	})
}

// barrier is the marker of a cut, sent downstream as a batch of one item
// whose Err is the barrier: it never reaches a handler, a dead letter or
// a Stats count.
type barrier struct{ id uint64 }

func (b *barrier) Error() string { return fmt.Sprintf("stage: checkpoint barrier %d", b.id) }

func barrierBatch[T any](id uint64) []Item[T] { return []Item[T]{{Err: &barrier{id: id}}} }

// barrierOf reports whether b is a barrier batch, and its cut.
func barrierOf[T any](b []Item[T]) (uint64, bool) {
	if len(b) == 1 && b[0].Err != nil {
		if br, ok := b[0].Err.(*barrier); ok {
			return br.id, true
		}
	}
	return 0, false
}

// cutter is what every core does in a checkpointing pipeline. capture and
// forward run on the stage's goroutine at its cut, restore on the goroutine
// that starts the pipeline, before any stage runs.
type cutter interface {
	// writers is the number of upstream stages whose barrier the stage
	// waits for: the writers of its inputs that have not closed.
	writers() int
	// capture returns what changed in the stage since its last capture
	// (since it was restored, at first).
	capture(ctx context.Context) (checkpoint.StageUpdate, error)
	// forward sends barrier id on every output.
	forward(ctx context.Context, id uint64) error
	// restore sets the stage's state from a checkpoint.
	restore(st checkpoint.Stage) error
}

// seqKey is the state key of a stage's output numbering. The keys of a
// keyed stage or a join start with 'k', so no key of theirs is seqKey.
const seqKey = "seq"

// drainedKey marks the state of a stage captured after it drained.
const drainedKey = "drained"

func seqUpdate(seq uint64) map[string][]byte {
	return map[string][]byte{seqKey: fmt.Appendf(nil, "%d", seq)}
}

func restoreSeq(st checkpoint.Stage, seq *uint64) error {
	b, ok := st.State[seqKey]
	if !ok {
		return nil
	}
	if _, err := fmt.Sscanf(string(b), "%d", seq); err != nil {
		return fmt.Errorf("output numbering %q: %w", b, err)
	}
	return nil
}

// pending is the captures not stored yet of one stage, merged in the order
// they were taken.
type pending struct {
	pos []byte
	set map[string][]byte
	del map[string]struct{}
}

func (p *pending) merge(u checkpoint.StageUpdate) {
	if u.Position != nil {
		p.pos = u.Position
	}
	for _, k := range u.Delete {
		if p.del == nil {
			p.del = make(map[string]struct{})
		}
		p.del[k] = struct{}{}
		delete(p.set, k)
	}
	for k, v := range u.Set {
		if p.set == nil {
			p.set = make(map[string][]byte)
		}
		p.set[k] = v
		delete(p.del, k)
	}
}

func (p *pending) update() checkpoint.StageUpdate {
	u := checkpoint.StageUpdate{Position: p.pos, Set: p.set}
	for k := range p.del {
		u.Delete = append(u.Delete, k)
	}
	return u
}

// cut is a checkpoint being taken.
type cut struct {
	id      uint64
	barrier chan struct{} // closed: the paused sources send the barrier
	resume  chan struct{} // closed: the sources go on
	paused  map[*unit]bool
	got     map[*unit]bool // stages that captured their part
	live    map[*unit]bool // stages open when the barrier went out: each must capture
	err     error          // a capture failed: the cut is not saved
}

// checkpointer takes a pipeline's checkpoints (see [WithCheckpoint]).
type checkpointer struct {
	p     *Pipeline
	store checkpoint.Store
	every time.Duration
	graph []string
	log   *zap.Logger

	base    uint64 // the Seq of the latest checkpoint stored, 0 for none
	changed chan struct{}
	stop    chan struct{}
	done    chan struct{}

	mu      sync.Mutex
	cur     *cut
	next    uint64 // the id of the next cut
	pend    map[*unit]*pending
	final   map[*unit]bool // stages that ended and captured their last part
	saved   atomic.Uint64  // checkpoints stored
	failed  atomic.Uint64  // checkpoints that failed
	lastErr atomic.Pointer[error]
	pauseID atomic.Uint64 // the cut the sources are asked to pause for
}

func newCheckpointer(p *Pipeline) *checkpointer {
	c := &checkpointer{
		p: p, store: p.opts.store, every: p.opts.every, log: p.opts.logger,
		changed: make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		pend:    make(map[*unit]*pending),
		final:   make(map[*unit]bool),
	}
	for _, u := range p.units {
		c.graph = append(c.graph, u.name)
	}
	return c
}

// check is the build check of a checkpointing pipeline.
func (c *checkpointer) check() []error {
	var errs []error
	for _, u := range c.p.units {
		if ch, ok := u.core.(interface{ prepare() error }); ok {
			if err := ch.prepare(); err != nil {
				errs = append(errs, fmt.Errorf("%w: stage %q: %w", ErrCheckpoint, u.name, err))
			}
		}
	}
	return errs
}

// restore loads the latest checkpoint into the stages, before they run.
func (c *checkpointer) restore(ctx context.Context) error {
	snap, err := c.store.Load(ctx)
	switch {
	case errors.Is(err, checkpoint.ErrNoCheckpoint):
		return nil
	case err != nil:
		return fmt.Errorf("%w: loading: %w", ErrCheckpoint, err)
	}
	if err := snap.Match(c.graph); err != nil {
		return fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	for _, u := range c.p.units {
		st, ok := snap.Stages[u.name]
		if !ok {
			continue
		}
		if err := u.core.(cutter).restore(st); err != nil {
			var de *checkpoint.DecodeError
			if !errors.As(err, &de) {
				err = &checkpoint.DecodeError{Stage: u.name, Err: err}
			}
			return fmt.Errorf("%w: restoring: %w", ErrCheckpoint, err)
		}
		u.resumePos = st.Position
		_, u.drainedCut = st.State[drainedKey]
	}
	c.base = snap.Seq
	c.log.Info("stage: resumed from checkpoint", zap.String("pipeline", c.p.opts.name), zap.Uint64("seq", snap.Seq))
	return nil
}

func (c *checkpointer) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// run takes a checkpoint every interval until stopped.
func (c *checkpointer) run(ctx context.Context) {
	defer close(c.done)
	if c.every <= 0 {
		<-c.stop
		return
	}
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.stop:
			return
		case <-t.C:
		}
		c.take(ctx)
	}
}

func (c *checkpointer) stopped() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// halt stops run and waits for it.
func (c *checkpointer) halt() {
	if !c.stopped() {
		close(c.stop)
	}
	<-c.done
}

// quiet reports whether every stage is in a state a cut can pass: no join
// hydrating, no stage failed or restarting, no drain asked for.
func (c *checkpointer) quiet() bool {
	if c.p.drainRequested() {
		return false
	}
	for _, u := range c.p.units {
		switch u.stateKind() {
		case Running, Draining, Drained:
		default:
			return false
		}
	}
	return true
}

// take takes one checkpoint; a cut that cannot complete is given up.
func (c *checkpointer) take(ctx context.Context) {
	if !c.quiet() {
		return
	}
	c.mu.Lock()
	c.next++
	k := &cut{id: c.next, barrier: make(chan struct{}), resume: make(chan struct{}),
		paused: make(map[*unit]bool), got: make(map[*unit]bool), live: make(map[*unit]bool)}
	c.cur = k
	c.mu.Unlock()
	c.pauseID.Store(k.id)

	limit := time.NewTimer(max(c.every, 5*time.Second))
	defer limit.Stop()
	var snap map[*unit]checkpoint.StageUpdate
	ok := c.await(ctx, limit.C, c.sourcesPaused) && c.await(ctx, limit.C, c.settled)
	if ok {
		c.mu.Lock()
		for _, u := range c.p.units {
			if !u.ended.Load() {
				k.live[u] = true
			}
		}
		c.mu.Unlock()
		close(k.barrier)
		ok = c.await(ctx, limit.C, func() bool { return c.captured(k) })
	}
	c.mu.Lock()
	if ok && k.err == nil && c.quietLocked() {
		snap = c.takePending()
	}
	if !ok && k.err == nil {
		k.err = errors.New("the cut did not complete in time, or a stage failed during it")
	}
	err := k.err
	c.cur = nil
	c.mu.Unlock()
	close(k.resume)
	if snap == nil {
		if ctx.Err() != nil || c.stopped() {
			return // the pipeline is ending: not a failure
		}
		c.count(err)
		c.logFailure(err, k.id)
		return
	}
	if err := c.save(ctx, snap); err != nil {
		c.logFailure(err, k.id)
	}
}

func (c *checkpointer) quietLocked() bool {
	for _, u := range c.p.units {
		if u.stateKind() == Failed {
			return false
		}
	}
	return true
}

// await waits until cond holds (true) or the cut must be given up (false).
func (c *checkpointer) await(ctx context.Context, limit <-chan time.Time, cond func() bool) bool {
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	for {
		if cond() {
			return true
		}
		for _, u := range c.p.units {
			if u.stateKind() == Failed {
				return false
			}
		}
		select {
		case <-c.changed:
		case <-poll.C:
		case <-limit:
			return false
		case <-ctx.Done():
			return false
		case <-c.stop:
			return false
		}
	}
}

// sourcesPaused: every source paused for the cut, or ended with its last
// part captured.
func (c *checkpointer) sourcesPaused() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, u := range c.p.units {
		if u.kind == kindSource && !c.cur.paused[u] && !c.final[u] {
			return false
		}
	}
	return true
}

// settled: the end of input of the sources that ended before the cut has
// gone through the graph. Every stage is either ended, with its last part
// captured, or reads an input that is still open, so that the barrier will
// reach it and no stage closes its output during the cut.
func (c *checkpointer) settled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, u := range c.p.units {
		switch {
		case u.ended.Load():
			if !c.final[u] {
				return false
			}
		case u.kind == kindSource:
		case u.core.(cutter).writers() == 0:
			return false
		}
	}
	return true
}

func (c *checkpointer) captured(k *cut) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for u := range k.live {
		if !k.got[u] {
			return false
		}
	}
	return true
}

// paused records that source u paused for cut id with its part; it
// returns the cut's channels, or nil if the cut is no longer taken.
func (c *checkpointer) paused(u *unit, id uint64, part checkpoint.StageUpdate, err error) *cut {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.cur
	if k == nil || k.id != id {
		return nil
	}
	k.paused[u] = true
	c.deliverLocked(u, k, part, err)
	c.signal()
	return k
}

// delivered records stage u's part of cut id.
func (c *checkpointer) delivered(u *unit, id uint64, part checkpoint.StageUpdate, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k := c.cur; k != nil && k.id == id {
		c.deliverLocked(u, k, part, err)
	} else {
		c.mergeLocked(u, part) // a late part of a cut given up: it is still a change
	}
	c.signal()
}

func (c *checkpointer) deliverLocked(u *unit, k *cut, part checkpoint.StageUpdate, err error) {
	k.got[u] = true
	if err != nil && k.err == nil {
		k.err = fmt.Errorf("stage %q: %w", u.name, err)
	}
	c.mergeLocked(u, part)
}

func (c *checkpointer) mergeLocked(u *unit, part checkpoint.StageUpdate) {
	p := c.pend[u]
	if p == nil {
		p = new(pending)
		c.pend[u] = p
	}
	p.merge(part)
}

// ended records the last part of stage u, which drained.
func (c *checkpointer) ended(u *unit, part checkpoint.StageUpdate, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.log.Warn("stage: capturing a drained stage's state failed", zap.String("stage", u.name), zap.Error(err))
		c.signal()
		return // never final: no checkpoint after this one
	}
	c.mergeLocked(u, part)
	c.final[u] = true
	c.signal()
}

// takePending returns the pending parts and starts afresh.
func (c *checkpointer) takePending() map[*unit]checkpoint.StageUpdate {
	out := make(map[*unit]checkpoint.StageUpdate, len(c.pend))
	for u, p := range c.pend {
		out[u] = p.update()
	}
	c.pend = make(map[*unit]*pending)
	return out
}

// putBack returns parts that failed to save to the pending ones, before
// the parts taken since.
func (c *checkpointer) putBack(parts map[*unit]checkpoint.StageUpdate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	later := c.pend
	c.pend = make(map[*unit]*pending)
	for u, part := range parts {
		c.mergeLocked(u, part)
	}
	for u, p := range later {
		c.mergeLocked(u, p.update())
	}
}

// save stores the parts as one checkpoint and, once stored, asks the
// sources to acknowledge up to their positions.
func (c *checkpointer) save(ctx context.Context, parts map[*unit]checkpoint.StageUpdate) error {
	upd := &checkpoint.Update{Base: c.base, Graph: c.graph, Stages: make(map[string]checkpoint.StageUpdate, len(parts))}
	for u, part := range parts {
		upd.Stages[u.name] = part
	}
	seq, err := c.store.Save(ctx, upd)
	if err != nil {
		c.putBack(parts)
		c.count(err)
		return err
	}
	c.base = seq
	c.saved.Add(1)
	for u, part := range parts {
		if u.kind == kindSource && part.Position != nil {
			pos := part.Position
			u.commitPos.Store(&pos)
		}
	}
	return nil
}

// count counts a checkpoint that failed, for Stats.
func (c *checkpointer) count(err error) {
	c.failed.Add(1)
	c.lastErr.Store(&err)
}

// logFailure logs a periodic checkpoint that failed: it is not an error of
// the pipeline, which goes on.
func (c *checkpointer) logFailure(err error, id uint64) {
	c.log.Warn("stage: checkpoint failed; sources are not acknowledged past the last one stored",
		zap.String("pipeline", c.p.opts.name), zap.Uint64("cut", id), zap.Error(err))
}

// finish takes the last checkpoint of a pipeline that drained: every
// stage captured its last part as it ended. The sources, whose Close the
// pipeline held back, then acknowledge up to their end.
func (c *checkpointer) finish(ctx context.Context) error {
	c.halt()
	c.mu.Lock()
	for _, u := range c.p.units {
		if !c.final[u] {
			c.mu.Unlock()
			c.log.Warn("stage: no final checkpoint: a stage did not drain", zap.String("stage", u.name))
			return nil // a stage failed: the last good checkpoint stands
		}
	}
	parts := c.takePending()
	c.mu.Unlock()
	if err := c.save(ctx, parts); err != nil {
		return fmt.Errorf("%w: the final checkpoint: %w", ErrCheckpoint, err)
	}
	for _, u := range c.p.units {
		if s, ok := u.core.(interface{ commitNow(context.Context) }); ok {
			s.commitNow(ctx)
		}
	}
	return nil
}

// stats fills the checkpoint part of st.
func (c *checkpointer) stats(st *PipelineStats) {
	st.Checkpoints = c.saved.Load()
	st.CheckpointFailures = c.failed.Load()
	if e := c.lastErr.Load(); e != nil {
		st.CheckpointErr = *e
	}
}

// encodeKey encodes a key of a keyed stage or a join as a state key: 'k'
// and the key, JSON-encoded unless it is a string.
func encodeKey[K comparable](k K) (string, error) {
	switch v := any(k).(type) {
	case string:
		return "k" + v, nil
	case int:
		return "k" + strconv.FormatInt(int64(v), 10), nil
	case int64:
		return "k" + strconv.FormatInt(v, 10), nil
	case uint64:
		return "k" + strconv.FormatUint(v, 10), nil
	}
	b, err := json.Marshal(k)
	if err != nil {
		return "", fmt.Errorf("encoding the key %v: %w", k, err)
	}
	return "k" + string(b), nil
}

// isKeyState reports whether a state key is a key's (see encodeKey), not
// the stage's own bookkeeping (seqKey, nowKey, drainedKey).
func isKeyState(s string) bool { return len(s) > 0 && s[0] == 'k' }

func decodeKey[K comparable](s string) (K, error) {
	var k K
	if len(s) == 0 || s[0] != 'k' {
		return k, fmt.Errorf("%q is not a key", s)
	}
	s = s[1:]
	if p, ok := any(&k).(*string); ok {
		*p = s
		return k, nil
	}
	err := json.Unmarshal([]byte(s), &k)
	return k, err
}

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stagefsm/stagefsm"
	"github.com/stagefsm/stagefsm/mealy"
	"github.com/stagefsm/stagefsm/stage"
)

// showProgress writes a progress line to stderr every interval until the
// pipeline ends, and returns the most live keys of a keyed stage it saw.
// On a terminal the line is rewritten in place.
func showProgress(p *stage.Pipeline, start time.Time, interval time.Duration, stderr io.Writer) (peakKeys int) {
	if interval <= 0 {
		return 0
	}
	inPlace := isTerminal(stderr)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-p.Done():
			if inPlace {
				fmt.Fprintln(stderr)
			}
			return peakKeys
		case <-tick.C:
			st := p.Stats()
			for _, s := range st.Stages {
				peakKeys = max(peakKeys, s.Keys)
			}
			line := progressLine(st, time.Since(start))
			if inPlace {
				fmt.Fprintf(stderr, "\r%s\x1b[K", line)
			} else {
				fmt.Fprintln(stderr, line)
			}
		}
	}
}

// progressLine shows what the sources read, the join's and the keyed
// stage's state, and what each sink took.
func progressLine(st stage.PipelineStats, elapsed time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%6.1fs", elapsed.Seconds())
	for _, s := range st.Stages {
		switch s.Kind {
		case "source":
			fmt.Fprintf(&b, "  %s %s", s.Name, group(s.Counts.Out))
		case "sink":
			fmt.Fprintf(&b, "  %s %s", s.Name, group(s.Counts.In))
		case "join":
			fmt.Fprintf(&b, "  %s %s", s.Name, group(s.Counts.Out))
		case "keyed":
			fmt.Fprintf(&b, "  %s %s (keys %s, timeouts %s)", s.Name, group(s.Counts.In), group(uint64(s.Keys)), group(s.Timeouts))
		default:
			continue
		}
		if s.State.Kind != stage.Running {
			fmt.Fprintf(&b, " (%s)", s.State.Kind)
		}
		if s.Restarts > 0 {
			fmt.Fprintf(&b, " ↻%d", s.Restarts)
		}
	}
	fmt.Fprintf(&b, "  | in flight %s  dead-lettered %s", group(st.InFlight), group(st.DeadLettered))
	return b.String()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// causeCounts counts dead letters by cause.
type causeCounts struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (c *causeCounts) add(err error) {
	var pe *stagefsm.PanicError
	cause := "other: " + err.Error()
	switch {
	case errors.Is(err, stage.ErrRestarted): // wraps the failure: before it
		cause = "arrived while the stage restarted, beyond the room to park"
	case errors.Is(err, errConnReset):
		cause = "connection reset (-flaky-sink)"
	case errors.Is(err, errMalformed):
		cause = "malformed row"
	case errors.Is(err, errInvalid):
		cause = "invalid order"
	case errors.Is(err, mealy.ErrUnhandledEvent):
		cause = "event of an order that is not open (its placed event failed, or it had ended)"
	case errors.Is(err, stage.ErrNoRoute):
		cause = "no route"
	case errors.As(err, &pe):
		cause = "handler panic (recovered)"
	case errors.Is(err, stage.ErrFatal):
		cause = "fatal handler error"
	case errors.Is(err, stage.ErrFailed):
		cause = "left behind by a failed stage"
	case errors.Is(err, stage.ErrAborted):
		cause = "in flight at abort"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]uint64{}
	}
	c.m[failedAt(err)+": "+cause]++
}

type summary struct {
	d        *demoGraph
	stats    stage.PipelineStats
	start    time.Time
	elapsed  time.Duration
	err      error
	causes   *causeCounts
	peakKeys int
	files    files
}

func summarize(w io.Writer, s summary) {
	st, d := s.stats, s.d
	byName := map[string]stage.Stats{}
	for _, x := range st.Stages {
		byName[x.Name] = x
	}
	events := byName["orders"].Counts.Out
	outcome := "drained"
	if s.err != nil {
		outcome = "FAILED"
	}
	fmt.Fprintf(w, "\nstagefsm pipeline demo: %s orders (%s events) in %s (%s events/s), %s\n",
		group(uint64(d.orders.counted.Load())), group(events), s.elapsed.Round(time.Millisecond),
		group(uint64(float64(events)/s.elapsed.Seconds())), outcome)
	oc := d.outcomes
	fmt.Fprintf(w, "  lifecycle: %s shipped, %s abandoned (%s by the %s timeout, %s at end of input), %s paid but never shipped\n",
		group(oc.byStatus[statusShipped].Load()), group(oc.byStatus[statusAbandoned].Load()), group(oc.timedOut.Load()), d.abandonAfter,
		group(oc.byStatus[statusAbandoned].Load()-oc.timedOut.Load()), group(oc.byStatus[statusUnshipped].Load()))
	fmt.Fprintf(w, "  outputs: %s hourly revenue rows, %s alerts, %s high-value orders (≥ €%s), %s standard orders\n",
		group(uint64(d.rows.rows.Load())), group(uint64(d.alerts.rows.Load())), group(uint64(d.high.rows.Load())),
		group(uint64(d.highValueCents/100)), group(uint64(d.standard.rows.Load())))
	if st.Checkpoints > 0 || st.CheckpointFailures > 0 {
		fmt.Fprintf(w, "  checkpoints (-state): %s stored, %s failed", group(st.Checkpoints), group(st.CheckpointFailures))
		if st.CheckpointErr != nil {
			fmt.Fprintf(w, " (the last: %v)", st.CheckpointErr)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)

	const row = "  %-15s %-9s %10s %10s %10s %8s %8s %7s %8s %9s %3s  %s\n"
	fmt.Fprintf(w, row, "stage", "kind", "in", "out", "delivered", "dead-let", "dropped", "keys", "timeouts", "unmatched", "↻", "final state")
	for _, x := range st.Stages {
		in, out := group(x.Counts.In), group(x.Counts.Out)
		keys, timeouts, unmatched := "-", "-", "-"
		switch x.Kind {
		case "source":
			in = "-"
		case "sink":
			out = "-"
		case "keyed":
			keys, timeouts = group(uint64(x.Keys)), group(x.Timeouts)
		case "join":
			unmatched = group(x.Unmatched)
		}
		fmt.Fprintf(w, row, x.Name, x.Kind, in, out, group(x.Counts.Delivered), group(x.Counts.DeadLettered), group(x.Counts.Dropped),
			keys, timeouts, unmatched, strconv.Itoa(x.Restarts), x.State.Kind)
	}
	fmt.Fprintln(w, "  (out includes the error items a stage passes on; dead letters count at the stage where the item failed;")
	fmt.Fprintln(w, "   a join delivers the reference rows into its table; a broadcast delivers each item and emits one per branch;")
	if s.peakKeys > 0 {
		fmt.Fprintf(w, "   keys: live orders at the end (at most %s seen by the progress line))\n", group(uint64(s.peakKeys)))
	} else {
		fmt.Fprintln(w, "   keys: live orders at the end)")
	}
	if p := d.policy; p != nil {
		limit := fmt.Sprintf("at most %d restarts per %s", p.MaxRestarts, p.Period)
		if p.MaxRestarts < 0 {
			limit = "no restart limit"
		}
		fmt.Fprintf(w, "  restart policy of high-value: %s, backoff %s doubling to %s (%.0f%% jitter), reset after %s without failure\n",
			limit, p.BackoffInitial, p.BackoffMax, 100*p.Jitter, p.HealthyAfter)
	}
	fmt.Fprintln(w, "\nstate timelines (time since start):")
	for _, x := range st.Stages {
		lives := incarnations(x.Timeline)
		for i, life := range lives {
			switch {
			case i == 0:
				fmt.Fprintf(w, "  %-15s %s\n", x.Name, s.steps(life))
			case len(lives) > 5 && i == 2:
				fmt.Fprintf(w, "  %-15s ↻ … %d more restarts …\n", "", len(lives)-4)
			case len(lives) > 5 && i > 2 && i < len(lives)-2:
			default:
				fmt.Fprintf(w, "  %-15s ↻ %d: %s\n", "", i, s.steps(life))
			}
		}
		if x.State.Kind == stage.Failed {
			fmt.Fprintf(w, "  %-15s failed: %v\n", "", x.State.Reason)
		}
	}

	check := "✓"
	if st.Emitted != st.Delivered+st.DeadLettered+st.Dropped || st.InFlight != 0 {
		check = "✗ MISMATCH"
	}
	fmt.Fprintf(w, "\naccounting: emitted %s = delivered %s + dead-lettered %s + dropped %s  %s  (in flight: %s)\n",
		group(st.Emitted), group(st.Delivered), group(st.DeadLettered), group(st.Dropped), check, group(st.InFlight))
	fmt.Fprintln(w, edgeLine(d.edges, byName))
	if len(s.causes.m) > 0 {
		fmt.Fprintln(w, "dead letters by stage and cause:")
		keys := make([]string, 0, len(s.causes.m))
		for k := range s.causes.m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %10s  %s\n", group(s.causes.m[k]), k)
		}
	}
	if n := byName["join"].Counts.Dropped; n > 0 {
		fmt.Fprintf(w, "dropped:\n  %10s  join: events of customers missing from the customer table (inner join)\n", group(n))
	}
	f := s.files
	fmt.Fprintf(w, "\ninput:        %s, %s\nhourly:       %s\nalerts:       %s\nhigh value:   %s\ndead letters: %s\njournal:      %s\n",
		f.orders, f.customers, f.hourly, f.alerts, f.highValue, f.deadLines, f.journal)
	if s.err != nil {
		fmt.Fprintf(w, "\npipeline error: %v\n", s.err)
	}
}

// edgeLine checks every edge group: what its stages sent (Out) is what the
// stages after them received (In).
func edgeLine(edges []edgeGroup, byName map[string]stage.Stats) string {
	var bad []string
	for _, e := range edges {
		var sent, received uint64
		for _, n := range e.from {
			sent += byName[n].Counts.Out
		}
		for _, n := range e.to {
			received += byName[n].Counts.In
		}
		if sent != received {
			bad = append(bad, fmt.Sprintf("%s → %s: sent %s, received %s", strings.Join(e.from, "+"), strings.Join(e.to, "+"), group(sent), group(received)))
		}
	}
	if len(bad) > 0 {
		return "edges: ✗ MISMATCH " + strings.Join(bad, "; ")
	}
	return fmt.Sprintf("edges: every item sent on each of the %d edge groups was received  ✓", len(edges))
}

// incarnations splits a timeline at each restart (each Created after the
// first).
func incarnations(timeline []stage.Step) [][]stage.Step {
	var lives [][]stage.Step
	for i, step := range timeline {
		if i == 0 || step.State.Kind == stage.Created {
			lives = append(lives, nil)
		}
		lives[len(lives)-1] = append(lives[len(lives)-1], step)
	}
	return lives
}

// steps formats the states of one incarnation with their times; the
// pipeline's first Created has none (it was built before the start).
func (s summary) steps(life []stage.Step) string {
	parts := make([]string, len(life))
	for i, step := range life {
		if step.At.Before(s.start) {
			parts[i] = step.State.Kind.String()
			continue
		}
		parts[i] = fmt.Sprintf("%s %s", step.State.Kind, since(step.At.Sub(s.start)))
	}
	return strings.Join(parts, " → ")
}

// since formats a duration since the start compactly.
func since(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// group formats n with thousands separators.
func group(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

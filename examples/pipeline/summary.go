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
	"github.com/stagefsm/stagefsm/stage"
)

// showProgress writes a progress line to stderr every interval until the
// pipeline ends. On a terminal the line is rewritten in place.
func showProgress(p *stage.Pipeline, start time.Time, interval time.Duration, stderr io.Writer) {
	if interval <= 0 {
		return
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
			return
		case <-tick.C:
			line := progressLine(p.Stats(), time.Since(start))
			if inPlace {
				fmt.Fprintf(stderr, "\r%s\x1b[K", line)
			} else {
				fmt.Fprintln(stderr, line)
			}
		}
	}
}

func progressLine(st stage.PipelineStats, elapsed time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%6.1fs", elapsed.Seconds())
	for _, s := range st.Stages {
		n := s.Counts.Out
		if s.Kind == "sink" {
			n = s.Counts.In
		}
		fmt.Fprintf(&b, "  %s %s", s.Name, group(n))
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
	case errors.Is(err, errLate):
		cause = "late order"
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
	stats                               stage.PipelineStats
	start                               time.Time
	elapsed                             time.Duration
	err                                 error
	causes                              *causeCounts
	policy                              *stagefsm.RestartPolicy // nil: none
	input, output, deadLetters, journal string
}

func summarize(w io.Writer, s summary) {
	st := s.stats
	read, rows := st.Stages[0].Counts.Out, st.Stages[len(st.Stages)-1].Counts.Delivered
	outcome := "drained"
	if s.err != nil {
		outcome = "FAILED"
	}
	fmt.Fprintf(w, "\nstagefsm pipeline demo: %s orders → %s hourly revenue rows in %s (%s orders/s), %s\n\n",
		group(read), group(rows), s.elapsed.Round(time.Millisecond),
		group(uint64(float64(read)/s.elapsed.Seconds())), outcome)

	fmt.Fprintf(w, "  %-7s %-9s %10s %10s %10s %14s %9s  %s\n", "stage", "kind", "in", "out", "delivered", "dead-lettered", "restarts", "final state")
	for _, x := range st.Stages {
		in, out := group(x.Counts.In), group(x.Counts.Out)
		switch x.Kind {
		case "source":
			in = "-"
		case "sink":
			out = "-"
		}
		fmt.Fprintf(w, "  %-7s %-9s %10s %10s %10s %14s %9d  %s\n", x.Name, x.Kind, in, out,
			group(x.Counts.Delivered), group(x.Counts.DeadLettered), x.Restarts, x.State.Kind)
	}
	fmt.Fprintln(w, "  (out includes the error items a transform passes on; dead letters count at the stage where the item failed)")
	if p := s.policy; p != nil {
		limit := fmt.Sprintf("at most %d restarts per %s", p.MaxRestarts, p.Period)
		if p.MaxRestarts < 0 {
			limit = "no restart limit"
		}
		fmt.Fprintf(w, "  restart policy of write: %s, backoff %s doubling to %s (%.0f%% jitter), reset after %s without failure\n",
			limit, p.BackoffInitial, p.BackoffMax, 100*p.Jitter, p.HealthyAfter)
	}
	fmt.Fprintln(w, "\nstate timelines (time since start):")
	for _, x := range st.Stages {
		lives := incarnations(x.Timeline)
		for i, life := range lives {
			switch {
			case i == 0:
				fmt.Fprintf(w, "  %-7s %s\n", x.Name, s.steps(life))
			case len(lives) > 5 && i == 2:
				fmt.Fprintf(w, "  %-7s ↻ … %d more restarts …\n", "", len(lives)-4)
			case len(lives) > 5 && i > 2 && i < len(lives)-2:
			default:
				fmt.Fprintf(w, "  %-7s ↻ %d: %s\n", "", i, s.steps(life))
			}
		}
		if x.State.Kind == stage.Failed {
			fmt.Fprintf(w, "  %-7s failed: %v\n", "", x.State.Reason)
		}
	}

	check := "✓"
	if st.Emitted != st.Delivered+st.DeadLettered || st.InFlight != 0 {
		check = "✗ MISMATCH"
	}
	fmt.Fprintf(w, "\naccounting: emitted %s = delivered %s + dead-lettered %s  %s  (in flight: %s)\n",
		group(st.Emitted), group(st.Delivered), group(st.DeadLettered), check, group(st.InFlight))
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
	fmt.Fprintf(w, "\ninput:        %s\noutput:       %s\ndead letters: %s\njournal:      %s\n",
		s.input, s.output, s.deadLetters, s.journal)
	if s.err != nil {
		fmt.Fprintf(w, "\npipeline error: %v\n", s.err)
	}
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

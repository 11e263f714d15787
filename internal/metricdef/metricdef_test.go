package metricdef

import (
	"errors"
	"strings"
	"testing"

	"github.com/stagefsm/stagefsm/stage"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNames(t *testing.T) {
	seen := map[string]bool{}
	for _, d := range append(Stage, &InFlight) {
		if !strings.HasPrefix(d.Name, "stagefsm_") || !strings.HasPrefix(d.OTel, "stagefsm.") {
			t.Errorf("%s / %s: want the stagefsm prefix", d.Name, d.OTel)
		}
		if (d.Kind == Counter) != strings.HasSuffix(d.Name, "_total") {
			t.Errorf("%s: _total if and only if a counter", d.Name)
		}
		if d != &InFlight && (d.Kind == Histogram) != (d.Values == nil) {
			t.Errorf("%s: Values must be nil exactly for a histogram", d.Name)
		}
		if seen[d.Name] || seen[d.OTel] || d.Help == "" || d.Unit == "" {
			t.Errorf("%s: duplicate name or missing help or unit", d.Name)
		}
		seen[d.Name], seen[d.OTel] = true, true
	}
}

func TestValues(t *testing.T) {
	s := stage.Stats{
		State:            stage.State{Kind: stage.Failed, Reason: errors.New("x")},
		Counts:           stage.Counts{In: 5},
		Timeline:         make([]stage.Step, 4),
		DeadLetterCauses: map[string]uint64{"panic": 2, "novel": 1},
	}
	got := map[string]float64{}
	for _, d := range []*Def{&Received, &Transitions, &Failures, &State} {
		d.Values(&s, func(label string, v float64) { got[d.Name+"/"+label] = v })
	}
	want := map[string]float64{
		"stagefsm_stage_items_received_total/": 5,
		"stagefsm_stage_transitions_total/":    3,
		"stagefsm_stage_failures_total/panic":  2,
		"stagefsm_stage_failures_total/error":  0,
		"stagefsm_stage_failures_total/novel":  1,
		"stagefsm_stage_state/Failed":          1,
		"stagefsm_stage_state/Running":         0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if n := len(States); n != 8 || States[0] != "Created" || States[7] != "Hydrating" {
		t.Errorf("States = %v, want the 8 kinds from Created to Hydrating", States)
	}
}

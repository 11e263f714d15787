package promstage_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stagefsm/stagefsm/contrib/promstage"
	"github.com/stagefsm/stagefsm/stage"
)

// queries returns every PromQL string of a Grafana dashboard: the panels'
// target exprs and the template variables' queries, wherever they nest.
func queries(v any, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (k == "expr" || k == "definition" || (k == "query" && strings.Contains(s, "("))) {
				*out = append(*out, s)
				continue
			}
			queries(x, out)
		}
	case []any:
		for _, x := range v {
			queries(x, out)
		}
	}
}

var metricName = regexp.MustCompile(`\bstagefsm_[a-zA-Z0-9_]+`)

// Every query of the dashboard names only metrics the Collector exports
// (a histogram's _bucket, _sum and _count series included), and every
// exported family is on the dashboard.
func TestDashboardNamesExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile("dashboards/stagefsm.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	var qs []string
	queries(dash, &qs)
	if len(qs) < 10 {
		t.Fatalf("found %d queries in the dashboard, want at least 10", len(qs))
	}

	p := numbers("1\nx", stage.WithLatency(true))
	run(t, p)
	c, err := promstage.New("numbers", p)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]string{} // series name → family
	for _, f := range fams {
		exported[f.GetName()] = f.GetName()
		if f.GetType().String() == "HISTOGRAM" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				exported[f.GetName()+suffix] = f.GetName()
			}
		}
	}

	used := map[string]bool{}
	for _, q := range qs {
		names := metricName.FindAllString(q, -1)
		if len(names) == 0 {
			t.Errorf("query %q names no stagefsm metric", q)
		}
		for _, n := range names {
			fam, ok := exported[n]
			if !ok {
				t.Errorf("query %q names %s, which the Collector does not export", q, n)
			}
			used[fam] = true
		}
	}
	for _, f := range fams {
		if !used[f.GetName()] {
			t.Errorf("exported family %s is on no panel of the dashboard", f.GetName())
		}
	}
}

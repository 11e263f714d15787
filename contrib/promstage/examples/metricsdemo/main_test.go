package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stagefsm/stagefsm/internal/metricdef"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is an io.Writer safe for the demo and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func scrape(t *testing.T, url string) map[string]*familyView {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	views := make(map[string]*familyView, len(fams))
	for name, f := range fams {
		v := &familyView{series: len(f.GetMetric())}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if name == metricdef.State.Name && labels["stage"] == "ledger" && labels["state"] == "Running" {
				v.ledgerRunning = m.GetGauge().GetValue() == 1
			}
			if name == metricdef.Delivered.Name && labels["stage"] == "ledger" {
				v.ledgerDelivered = m.GetCounter().GetValue()
			}
		}
		views[name] = v
	}
	return views
}

type familyView struct {
	series          int
	ledgerRunning   bool
	ledgerDelivered float64
}

// While the (unbounded) pipeline runs, /metrics serves every family; once
// the ledger is running and has delivered, the test cancels and the demo
// drains and stops its server.
func TestServesMetricsWhileRunning(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addrs := make(chan string, 1)
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-metrics", "127.0.0.1:0", "-orders", "0", "-pace", "100us"}, out,
			func(addr string) { addrs <- addr })
	}()
	var url string
	select {
	case a := <-addrs:
		url = "http://" + a + "/metrics"
	case err := <-done:
		t.Fatalf("run returned before listening: %v", err)
	}
	for {
		views := scrape(t, url)
		v := views[metricdef.Delivered.Name]
		if v == nil || views[metricdef.State.Name] == nil || !views[metricdef.State.Name].ledgerRunning || v.ledgerDelivered == 0 {
			continue // not yet running and delivering; the test's deadline bounds this
		}
		for _, d := range append(metricdef.Stage, &metricdef.InFlight) {
			if views[d.Name] == nil {
				t.Errorf("/metrics lacks %s while the pipeline runs", d.Name)
			}
		}
		if n := views[metricdef.Received.Name].series; n != 4 {
			t.Errorf("%s has %d series, want one per stage (4)", metricdef.Received.Name, n)
		}
		break
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.Contains(out.String(), "dead-lettered=") {
		t.Errorf("output %q lacks the summary", out.String())
	}
}

// A bounded run without a server ends by itself and accounts for every
// order: 70 orders, 10 of them without an amount.
func TestBoundedRun(t *testing.T) {
	out := &syncBuffer{}
	if err := run(t.Context(), []string{"-orders", "70", "-pace", "0"}, out, nil); err != nil {
		t.Fatal(err)
	}
	// emitted: 70 orders + 60 validated + 60 priced; dead-lettered: 10.
	want := "emitted=190 delivered=180 dead-lettered=10 total="
	if !strings.HasPrefix(out.String(), want) {
		t.Errorf("output %q, want prefix %q", out.String(), want)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-orders", "-1"}, {"-nosuch"}} {
		if err := run(t.Context(), args, io.Discard, nil); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
	}
	if err := run(t.Context(), []string{"-metrics", "256.0.0.1:1"}, io.Discard, nil); err == nil {
		t.Error("run with an unusable address = nil, want an error")
	}
}

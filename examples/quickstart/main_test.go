package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/stagefsm/stagefsm"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestQuickstart(t *testing.T) {
	tests := []struct {
		name     string
		failAt   int
		retries  int
		timeline []State
		took     time.Duration
	}{
		{"fails once and recovers", 3, 1, []State{Created, Counting, Recovering, Counting, Done}, recoveryPause},
		{"never fails", -1, 0, []State{Created, Counting, Done}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				def, err := definition()
				require.NoError(t, err)
				c := &Counter{Target: 5, FailAt: tt.failAt, timeline: []State{Created}}
				start := time.Now()
				require.NoError(t, stagefsm.Run(context.Background(), stage{def: def}, Created, c))
				assert.Equal(t, 5, c.N)
				assert.Equal(t, tt.retries, c.retries)
				assert.Equal(t, tt.timeline, c.timeline)
				assert.Equal(t, tt.took, time.Since(start), "Recovering lasts exactly its timeout")
			})
		})
	}
}

// TestMermaid keeps testdata/quickstart.mmd, the diagram the README shows,
// in sync with the FSM.
func TestMermaid(t *testing.T) {
	def, err := definition()
	require.NoError(t, err)
	path := filepath.Join("testdata", "quickstart.mmd")
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(def.Mermaid()), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create it")
	assert.Equal(t, string(want), def.Mermaid())
}

package main

import (
	"bytes"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/stagefsm/stagefsm/internal/scalereport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestScenarios runs every scenario in this process at a small scale, in a
// synctest bubble (the settling and idle intervals pass at once), and checks
// that each ran to its end and reported its figures. The figures themselves
// are what the command is for; they are not asserted.
func TestScenarios(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := config{stages: 50, runs: 200, ticks: 10, idle: 10 * time.Millisecond}
		rep := &scalereport.Report{}
		for _, name := range scenarios {
			res, err := runScenario(name, cfg, "")
			require.NoError(t, err, name)
			if name == "runs" {
				require.NotNil(t, res.Runs)
				rep.Runs = *res.Runs
				continue
			}
			require.NotNil(t, res.Idle, name)
			assert.Equal(t, scenarioNames[name], res.Idle.Name)
			assert.Equal(t, cfg.stages, res.Idle.Stages, name)
			assert.Positive(t, res.Idle.BytesPerStage, name)
			rep.Idle = append(rep.Idle, *res.Idle)
		}
		assert.Equal(t, 200, rep.Runs.Runs)
		assert.Equal(t, 12, rep.Runs.Transitions)
		assert.Positive(t, rep.Runs.BytesPerRun)

		var out bytes.Buffer
		require.NoError(t, printReport(rep, &out))
		for _, want := range []string{"stagefsm.Start, hand-written FSM", "stagefsm.Start, mealy FSM", "stage.Pipeline stage", "≤ 4 KiB per idle stage", "~0 CPU while idle"} {
			assert.Contains(t, out.String(), want)
		}
	})
}

func TestUnknownScenario(t *testing.T) {
	_, err := runScenario("nope", config{stages: 3, idle: time.Millisecond}, "")
	assert.ErrorContains(t, err, `unknown scenario "nope"`)
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 123456789: "123,456,789", -4096: "-4,096", math.MinInt64: "-9,223,372,036,854,775,808"} {
		assert.Equal(t, want, scalereport.Thousands(n))
	}
}

func TestRate(t *testing.T) {
	assert.Equal(t, "-", rate(10, 0))
	assert.Equal(t, "2,000", rate(1000, 500*time.Millisecond))
}

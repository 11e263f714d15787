package stage_test

import (
	"flag"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	chaosSeed     = flag.Uint64("chaos.seed", 0, "seed of TestPipelineChaos (0: from the clock; the test logs the one it used)")
	chaosDuration = flag.Duration("chaos.duration", 3*time.Second, "how long TestPipelineChaos starts new pipelines")
	chaosWorkers  = flag.Int("chaos.workers", 4, "how many pipelines TestPipelineChaos runs at once")
)

// randDraw draws a plan from a seeded PRNG.
type randDraw struct{ r *rand.Rand }

func (d randDraw) intn(_ string, min, max int) int { return min + d.r.IntN(max-min+1) }

// TestPipelineChaos runs random pipelines, several at once, in real time
// and under the race detector in CI, for -chaos.duration (3s by default;
// the whole test is bounded by that plus the end of the pipelines in
// flight): the rig of pipeline_prop_test.go with random handler errors,
// panics, fatal errors and failing hooks, slow consumers (real sleeps up to
// 2ms), and drains and aborts at random moments — from inside handlers and
// from outside, on timers. Each pipeline must end within 30s and then
// satisfy every invariant of TestPipelineProperties.
//
// The seed is logged; -chaos.seed replays the same plans and moments
// (the scheduling, and so what is in flight when, varies from run to run).
func TestPipelineChaos(t *testing.T) {
	seed := *chaosSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d: go test ./stage -run TestPipelineChaos -chaos.seed=%d", seed, seed)
	deadline := time.Now().Add(*chaosDuration)

	var runs, aborted, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range max(*chaosWorkers, 1) {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := 0; time.Now().Before(deadline); i++ {
				plan := drawPipePlan(randDraw{r}, 3000, 2*time.Millisecond)
				drainAfter, abortAfter := chaosMoment(r), chaosMoment(r)
				rig := runPipePlan(t, plan, 30*time.Second, func(rig *pipeRig) {
					if drainAfter > 0 {
						rig.fromOutside(drainAfter, false)
					}
					if abortAfter > 0 {
						rig.fromOutside(abortAfter, true)
					}
				})
				if t.Failed() {
					t.Logf("worker %d, pipeline %d failed (seed %d)", w, i, seed)
					return
				}
				runs.Add(1)
				if rig.aborted {
					aborted.Add(1)
				}
				if len(rig.failures) > 0 {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d pipelines: %d aborted, %d with failed stages", runs.Load(), aborted.Load(), failed.Load())
}

// chaosMoment draws when something happens from outside: never (two
// times in three), or within 20ms of the start.
func chaosMoment(r *rand.Rand) time.Duration {
	if r.IntN(3) > 0 {
		return 0
	}
	return time.Duration(1+r.IntN(20_000)) * time.Microsecond
}

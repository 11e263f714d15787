package scalereport

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestExcessCPU(t *testing.T) {
	for _, tt := range []struct {
		name string
		idle Idle
		want time.Duration
	}{
		{"above the baseline, per second", Idle{IdleCPU: 5 * time.Millisecond, BaselineCPU: time.Millisecond, Interval: 2 * time.Second}, 2 * time.Millisecond},
		{"below the baseline is zero", Idle{IdleCPU: time.Millisecond, BaselineCPU: 3 * time.Millisecond, Interval: time.Second}, 0},
		{"no interval is zero", Idle{IdleCPU: time.Millisecond}, 0},
	} {
		assert.Equal(t, tt.want, tt.idle.ExcessCPU(), tt.name)
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", -1234567: "-1,234,567"} {
		assert.Equal(t, want, Thousands(n))
	}
}

package stage

import "testing"

func BenchmarkZZSmallKeys(b *testing.B) {
	benchKeys = 100
	defer func() { benchKeys = 100_000 }()
	BenchmarkKeyedVsHand(b)
}

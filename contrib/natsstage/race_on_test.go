//go:build race

package natsstage_test

// raceEnabled: the race detector makes the largest tests smaller.
const raceEnabled = true

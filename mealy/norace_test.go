//go:build !race

package mealy_test

const raceEnabled = false

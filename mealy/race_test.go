//go:build race

package mealy_test

// raceEnabled is true when tests run with -race, which makes allocation
// counts meaningless.
const raceEnabled = true

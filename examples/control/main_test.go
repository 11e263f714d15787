package main

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The example runs the command as a user would and pins its output, so CI
// proves the handle drives the stage from its gate to Drained.
func Example() {
	main()
	// Output:
	// started in Created
	//   #1 Created -Initialize-> Initialized
	//   #2 Initialized -Ready-> Running
	//   #3 Running -BeginDrain-> Draining
	//   #4 Draining -DrainComplete-> Drained
	// stopped in Drained: 5 items produced, flushed: true, resources released: true
}

package main

import (
	"context"
	"os"
)

func Example() {
	if err := run(context.Background(), os.Stdout, []string{"1", "2", "3", "4"}); err != nil {
		panic(err)
	}
	// Output:
	// stateDiagram-v2
	//     [*] --> created
	//     created --> failed: error
	//     created --> running: start
	//     failed --> failed: error
	//     running --> drained: eof
	//     running --> failed: error
	// timeline: created -> running -> drained
	// actions: PublishSum, Cleanup
	// outcome: drained, sum 10
}

func Example_failure() {
	if err := run(context.Background(), os.Stdout, []string{"1", "two", "3"}); err != nil {
		panic(err)
	}
	// Output:
	// stateDiagram-v2
	//     [*] --> created
	//     created --> failed: error
	//     created --> running: start
	//     failed --> failed: error
	//     running --> drained: eof
	//     running --> failed: error
	// timeline: created -> running -> failed
	// actions: ReportFailure, Cleanup
	// outcome: failed: dispatch in state running: item 2: not a number
}

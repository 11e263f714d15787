//go:build !unix

package main

import "time"

// cpuTime is not available on this platform: the idle CPU figures are
// reported as unknown.
func cpuTime() (time.Duration, bool) { return 0, false }

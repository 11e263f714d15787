package checkpoint_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks, for the internal and the external tests of the package
// (one test binary), that no goroutine outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

package kafkastage_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(killedMemberEnv) != "" {
		runKilledMember() // the child process of TestExactlyOnceKilledMember: never returns
	}
	goleak.VerifyTestMain(m)
}

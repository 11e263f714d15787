package stage

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stagefsm/stagefsm"
)

func TestCauseOf(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{errors.New("bad"), "error"},
		{&stagefsm.PanicError{Value: "boom"}, "panic"},
		{Fatal(errors.New("disk")), "fatal"},
		{fmt.Errorf("x: %w", ErrAborted), "aborted"},
		{&ItemError{Stage: "s", Err: ErrFailed}, "stage_failed"},
		{ErrRestarted, "restarted"},
	}
	for _, c := range cases {
		if got := causeNames[causeOf(c.err)]; got != c.want {
			t.Errorf("causeOf(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

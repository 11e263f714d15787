package stage

import (
	"errors"

	"github.com/stagefsm/stagefsm"
)

// causeNames are the classes of a dead letter's error, as reported in
// [Stats.DeadLetterCauses]; causeOf returns an index into it.
var causeNames = [...]string{"error", "panic", "fatal", "aborted", "stage_failed", "restarted"}

// causeOf classifies a dead letter's error. The pipeline's own causes come
// first: an item swept because of an abort, a restart or a failed stage is
// classed by that, whatever wraps it.
func causeOf(err error) int {
	var pe *stagefsm.PanicError
	switch {
	case errors.Is(err, ErrAborted):
		return 3
	case errors.Is(err, ErrRestarted):
		return 5
	case errors.Is(err, ErrFailed):
		return 4
	case errors.As(err, &pe):
		return 1
	case errors.Is(err, ErrFatal):
		return 2
	}
	return 0
}

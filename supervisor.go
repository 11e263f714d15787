package stagefsm

// StageID identifies a stage within a pipeline. It appears in every log line
// [Run] writes for the stage.
type StageID string

// WriterID identifies the writer that a stage's events are attributed to,
// for example in a journal. It appears in every log line [Run] writes.
type WriterID string

// Supervisor builds the machine of a stage and names it.
//
// [Run] calls BuildStateMachine exactly once, first, from its own goroutine.
// An error (or a nil machine) ends Run before anything else happens; a panic
// ends Run with an error wrapping a [*PanicError]. Name is called once when
// Run starts, before BuildStateMachine, for logs and error messages; a panic
// in it also ends Run with an error. Under [WithRestart], each incarnation is
// a Run.
//
// BuildStateMachine is declared to return the [Machine] interface rather than
// a concrete type so that [Run] can infer every type argument from its
// arguments.
type Supervisor[S, E, C, A any] interface {
	BuildStateMachine(initial S) (Machine[S, E, C, A], error)
	Name() string
}

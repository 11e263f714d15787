// Package looplab runs a github.com/looplab/fsm state machine as the
// [stagefsm.Machine] of a stage, so that a team with an existing *fsm.FSM
// can put it under [stagefsm.Run]'s supervision without rewriting it. It
// maps the stage's typed states, events and actions to looplab's strings
// and smooths over looplab v1.0.3's sharp edges (see [FromFSM]).
//
//	f := fsm.NewFSM("closed", fsm.Events{{Name: "open", Src: []string{"closed"}, Dst: "opened"}}, nil)
//	m, err := looplab.FromFSM(f, looplab.Config[string, string, *Door, Step]{
//		Actions: func(from, event, to string, d *Door) []Step { return []Step{{to}} },
//	})
//	// return m from the supervisor's BuildStateMachine
//
// It is a package of its own so that the root package, and a program that
// does not use looplab, need not know about it.
package looplab

package mealy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Mermaid returns the definition as a Mermaid stateDiagram-v2. The output is
// deterministic: states, descriptions and transitions are sorted by name.
//
// Each transition is an edge labelled with its event and, after " / ", the
// names of its own actions (their String method). Labels are marked
// "(failure)" for the failure event (see [Builder.FailureEvent]),
// "(choice)" for the declared targets of a Choose handler and "(re-enter)"
// for a transition that re-enters its state; a Stay is a plain self-loop.
// Entry and exit actions and timeouts are state descriptions ("entry / a",
// "exit / b", "after 5s / Tick"). The initial state (see [Builder.Initial])
// starts from [*]; terminal states lead to [*]. Any-state transitions are
// drawn from every state they apply to.
//
// States in highlight (typically the machine's current state) are drawn
// highlighted; states unknown to the definition are ignored.
func (d *Definition[S, E, C, A]) Mermaid(highlight ...S) string {
	if d == nil || d.stateIndex == nil {
		return ""
	}
	ids := make([]string, len(d.states))
	var b strings.Builder
	b.WriteString("stateDiagram-v2\n")
	order := d.sortedStates()
	used := make(map[string]bool, len(order))
	for _, i := range order {
		if name := d.states[i].name; isMermaidID(name) {
			ids[i], used[name] = name, true
		}
	}
	n := 0
	for _, i := range order {
		if ids[i] != "" {
			continue
		}
		for ids[i] == "" || used[ids[i]] { // a generated id must not be a state's name
			ids[i] = fmt.Sprintf("state%d", n)
			n++
		}
		fmt.Fprintf(&b, "    state \"%s\" as %s\n", mermaidText(d.states[i].name), ids[i])
	}
	if d.initial >= 0 {
		fmt.Fprintf(&b, "    [*] --> %s\n", ids[d.initial])
	}
	for _, i := range order {
		for _, line := range d.describe(i) {
			fmt.Fprintf(&b, "    %s : %s\n", ids[i], mermaidText(line))
		}
	}
	for _, e := range d.diagramEdges() {
		fmt.Fprintf(&b, "    %s --> %s : %s\n", ids[e.from], ids[e.to], mermaidText(e.label()))
	}
	for _, i := range order {
		if d.states[i].terminal {
			fmt.Fprintf(&b, "    %s --> [*]\n", ids[i])
		}
	}
	if hl := d.highlighted(highlight); len(hl) > 0 {
		b.WriteString("    classDef current fill:#fde68a,stroke:#b45309,stroke-width:2px\n")
		for _, i := range hl {
			fmt.Fprintf(&b, "    class %s current\n", ids[i])
		}
	}
	return b.String()
}

// DOT returns the definition as a Graphviz digraph, with the same content
// and order as [Definition.Mermaid]: failure edges are red, the edges of a
// Choose handler dashed, terminal states have a double border, the initial
// state is pointed to by a dot, and states in highlight are filled.
func (d *Definition[S, E, C, A]) DOT(highlight ...S) string {
	if d == nil || d.stateIndex == nil {
		return ""
	}
	hl := d.highlighted(highlight)
	var b strings.Builder
	b.WriteString("digraph mealy {\n")
	b.WriteString("    rankdir=LR;\n")
	b.WriteString("    node [shape=box, style=rounded];\n")
	if d.initial >= 0 {
		b.WriteString("    \"[*]\" [shape=point, label=\"\"];\n")
		fmt.Fprintf(&b, "    \"[*]\" -> %s;\n", dotString(d.states[d.initial].name))
	}
	for _, i := range d.sortedStates() {
		st := &d.states[i]
		attrs := []string{"label=" + dotString(strings.Join(append([]string{st.name}, d.describe(i)...), "\n"))}
		if st.terminal {
			attrs = append(attrs, "peripheries=2")
		}
		if slices.Contains(hl, i) {
			attrs = append(attrs, `style="rounded,filled"`, `fillcolor="#fde68a"`)
		}
		fmt.Fprintf(&b, "    %s [%s];\n", dotString(st.name), strings.Join(attrs, ", "))
	}
	for _, e := range d.diagramEdges() {
		attrs := []string{"label=" + dotString(e.label())}
		if e.failure {
			attrs = append(attrs, `color="#dc2626"`, `fontcolor="#dc2626"`)
		}
		if e.choice {
			attrs = append(attrs, "style=dashed")
		}
		fmt.Fprintf(&b, "    %s -> %s [%s];\n", dotString(d.states[e.from].name), dotString(d.states[e.to].name), strings.Join(attrs, ", "))
	}
	b.WriteString("}\n")
	return b.String()
}

// diagramEdge is one drawn transition.
type diagramEdge struct {
	from, to      int
	fromName      string
	toName        string
	event         string
	actions       []string
	failure       bool
	choice        bool
	reenter, stay bool
}

func (e diagramEdge) label() string {
	var marks []string
	if e.failure {
		marks = append(marks, "failure")
	}
	if e.choice {
		marks = append(marks, "choice")
	}
	if e.reenter {
		marks = append(marks, "re-enter")
	}
	s := e.event
	if len(marks) > 0 {
		s += " (" + strings.Join(marks, ", ") + ")"
	}
	if len(e.actions) > 0 {
		s += " / " + strings.Join(e.actions, ", ")
	}
	return s
}

// diagramEdges lists every transition, sorted by source, event and target
// names.
func (d *Definition[S, E, C, A]) diagramEdges() []diagramEdge {
	var edges []diagramEdge
	for i := range d.states {
		for j := range d.nEvents {
			e := d.table[i*d.nEvents+j]
			if e == nil {
				continue
			}
			base := diagramEdge{
				from: i, fromName: d.states[i].name, event: d.events[j],
				actions: names(e.own), failure: j == d.failure,
			}
			add := func(to int, choice bool) {
				de := base
				de.to, de.toName, de.choice = to, d.states[to].name, choice
				de.stay = e.kind == targetStay
				de.reenter = to == i && !de.stay
				edges = append(edges, de)
			}
			if e.kind == targetChoose {
				for _, c := range e.choices {
					add(c.to, true)
				}
			} else {
				add(e.to, false)
			}
		}
	}
	slices.SortFunc(edges, func(a, b diagramEdge) int {
		return cmp.Or(cmp.Compare(a.fromName, b.fromName), cmp.Compare(a.event, b.event), cmp.Compare(a.toName, b.toName))
	})
	return edges
}

// describe returns the description lines of state i: entry and exit
// actions, timeout.
func (d *Definition[S, E, C, A]) describe(i int) []string {
	st := &d.states[i]
	var lines []string
	if len(st.entry) > 0 {
		lines = append(lines, "entry / "+strings.Join(names(st.entry), ", "))
	}
	if len(st.exit) > 0 {
		lines = append(lines, "exit / "+strings.Join(names(st.exit), ", "))
	}
	if st.timed {
		lines = append(lines, fmt.Sprintf("after %v / %s", st.timeout, st.timeoutName))
	}
	return lines
}

// sortedStates returns the state indexes sorted by name.
func (d *Definition[S, E, C, A]) sortedStates() []int {
	order := make([]int, len(d.states))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(d.states[a].name, d.states[b].name) })
	return order
}

// highlighted returns the sorted, distinct indexes of the known states in hl.
func (d *Definition[S, E, C, A]) highlighted(hl []S) []int {
	var out []int
	for _, s := range hl {
		if i, ok := d.stateIndex(s); ok && !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	slices.SortFunc(out, func(a, b int) int { return cmp.Compare(d.states[a].name, d.states[b].name) })
	return out
}

// names returns the String of each action.
func names[A any](actions []A) []string {
	out := make([]string, len(actions))
	for i, a := range actions {
		out[i] = keyName(a)
	}
	return out
}

// isMermaidID reports whether name can be used as a Mermaid state id as is.
func isMermaidID(name string) bool {
	if name == "" || name == "state" || name == "note" || name == "end" || name == "class" || name == "classDef" || name == "direction" {
		return false
	}
	for i, r := range name {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// mermaidText makes s safe inside a Mermaid label or quoted state name.
var mermaidReplacer = strings.NewReplacer("\n", " ", "\r", " ", ";", "#59;", "\"", "#quot;")

func mermaidText(s string) string { return mermaidReplacer.Replace(s) }

// dotString quotes s as a DOT string; newlines become \n line breaks.
var dotReplacer = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", "")

func dotString(s string) string { return `"` + dotReplacer.Replace(s) + `"` }

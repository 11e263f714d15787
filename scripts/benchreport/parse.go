package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// bench is the samples of one benchmark: for each unit ("ns/op",
// "allocs/op", "ratio"…), one value per run (-count).
type bench struct {
	pkg     string // import path relative to the module: "" for its root
	name    string // without the "Benchmark" prefix and the -GOMAXPROCS suffix
	samples map[string][]float64
	order   int // position of its first line in the output
}

// has reports whether b has samples of unit.
func (b *bench) has(unit string) bool { return b != nil && len(b.samples[unit]) > 0 }

// median is the median of b's samples of unit.
func (b *bench) median(unit string) float64 { return median(b.samples[unit]) }

// spread is the smallest and largest sample of unit; 0, 0 when there is
// none.
func (b *bench) spread(unit string) (lo, hi float64) {
	s := b.samples[unit]
	if len(s) == 0 {
		return 0, 0
	}
	return slices.Min(s), slices.Max(s)
}

// results is every benchmark of a `go test -bench` output, by key
// "pkg.Name".
type results struct {
	byKey map[string]*bench
	cpu   string // the "cpu:" line of the output
}

// get returns the benchmark name of package pkg ("." for the module's
// root package), or nil.
func (r *results) get(pkg, name string) *bench {
	if pkg == "." {
		pkg = ""
	}
	return r.byKey[pkg+"."+name]
}

// sorted returns the benchmarks in the order they ran.
func (r *results) sorted() []*bench {
	out := make([]*bench, 0, len(r.byKey))
	for _, b := range r.byKey {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b *bench) int { return a.order - b.order })
	return out
}

var procSuffix = regexp.MustCompile(`-\d+$`)

// parse reads the output of go test -bench (any number of packages and
// runs). module is the module path, cut from package paths.
func parse(r io.Reader, module string) (*results, error) {
	res := &results{byKey: map[string]*bench{}}
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		switch {
		case strings.HasPrefix(text, "pkg: "):
			pkg = strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(text, "pkg: "), module), "/")
		case strings.HasPrefix(text, "cpu: "):
			res.cpu = strings.TrimPrefix(text, "cpu: ")
		case strings.HasPrefix(text, "Benchmark"):
			fields := strings.Fields(text)
			if len(fields) < 4 || len(fields)%2 != 0 {
				continue // a benchmark's own log line, or one cut short
			}
			if _, err := strconv.Atoi(fields[1]); err != nil {
				continue
			}
			name := procSuffix.ReplaceAllString(strings.TrimPrefix(fields[0], "Benchmark"), "")
			key := pkg + "." + name
			b := res.byKey[key]
			if b == nil {
				b = &bench{pkg: pkg, name: name, samples: map[string][]float64{}, order: line}
				res.byKey[key] = b
			}
			for i := 2; i+1 < len(fields); i += 2 {
				v, err := strconv.ParseFloat(fields[i], 64)
				if err != nil {
					return nil, fmt.Errorf("line %d: value %q: %w", line, fields[i], err)
				}
				b.samples[fields[i+1]] = append(b.samples[fields[i+1]], v)
			}
		}
	}
	return res, sc.Err()
}

func median(s []float64) float64 {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	if n := len(c); n%2 == 1 {
		return c[n/2]
	} else {
		return (c[n/2-1] + c[n/2]) / 2
	}
}

// Package apiguard renders the exported API of a Go package as text, one
// declaration per entry, without documentation, sorted: the form of the
// golden files under api/ that pin the API of every package of the
// repository (see TestAPI in the root package). A change of the API shows
// as a change of a golden file in the same commit, so that review sees it.
//
//	text, err := apiguard.Render("stage") // "" for a command or a directory without Go files
package apiguard

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Render returns the exported API of the package in dir: its exported
// constants, variables, functions, types (with their exported fields and
// methods) and the exported methods of its types. Test files are ignored.
// It returns "" for a main package or a directory without Go files, and an
// error for a file that does not parse or a directory of several packages.
func Render(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	fset := token.NewFileSet()
	var files []*ast.File
	name := ""
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.SkipObjectResolution)
		if err != nil {
			return "", err
		}
		switch {
		case name == "":
			name = f.Name.Name
		case name != f.Name.Name:
			return "", fmt.Errorf("apiguard: %s holds packages %s and %s", dir, name, f.Name.Name)
		}
		files = append(files, f)
	}
	if name == "" || name == "main" {
		return "", nil
	}
	var decls []string
	for _, f := range files {
		for _, d := range f.Decls {
			decls = append(decls, render(fset, d)...)
		}
	}
	sort.Strings(decls)
	return "package " + name + "\n\n" + strings.Join(decls, "\n") + "\n", nil
}

// Names returns the exported top-level names of the package in dir —
// constants, variables, functions and types, not methods or fields — for
// checks such as "no name repeats its package's name".
func Names(dir string) (pkg string, names []string, err error) {
	text, err := Render(dir)
	if err != nil || text == "" {
		return "", nil, err
	}
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 1 && f[0] == "package":
			pkg = f[1]
		case len(f) > 1 && (f[0] == "const" || f[0] == "var" || f[0] == "type"):
			names = append(names, strings.TrimRight(strings.SplitN(f[1], "[", 2)[0], ","))
		case len(f) > 1 && f[0] == "func" && !strings.HasPrefix(f[1], "("):
			names = append(names, strings.SplitN(strings.SplitN(f[1], "(", 2)[0], "[", 2)[0])
		}
	}
	return pkg, names, nil
}

func render(fset *token.FileSet, d ast.Decl) []string {
	switch d := d.(type) {
	case *ast.FuncDecl:
		if !d.Name.IsExported() || (d.Recv != nil && !exportedRecv(d.Recv)) {
			return nil
		}
		fd := *d
		fd.Doc, fd.Body = nil, nil
		if fd.Recv != nil { // the receiver's name is not API
			recv := *fd.Recv.List[0]
			recv.Names = nil
			fd.Recv = &ast.FieldList{List: []*ast.Field{&recv}}
		}
		return []string{format(fset, &fd)}
	case *ast.GenDecl:
		var out []string
		var lastType ast.Expr // a const group's type carries to the specs after it
		for _, s := range d.Specs {
			switch s := s.(type) {
			case *ast.TypeSpec:
				if !s.Name.IsExported() {
					continue
				}
				ts := *s
				ts.Doc, ts.Comment = nil, nil
				ts.Type = exportedOnly(ts.Type)
				out = append(out, "type "+format(fset, &ts))
			case *ast.ValueSpec:
				if s.Type != nil || len(s.Values) > 0 {
					lastType = s.Type
				}
				for _, n := range s.Names {
					if !n.IsExported() {
						continue
					}
					line := d.Tok.String() + " " + n.Name
					if lastType != nil {
						line += " " + format(fset, lastType)
					}
					out = append(out, line)
				}
			}
		}
		return out
	}
	return nil
}

// exportedRecv reports whether a method's receiver type is exported.
func exportedRecv(recv *ast.FieldList) bool {
	t := recv.List[0].Type
	for {
		switch x := t.(type) {
		case *ast.StarExpr:
			t = x.X
		case *ast.IndexExpr:
			t = x.X
		case *ast.IndexListExpr:
			t = x.X
		case *ast.Ident:
			return x.IsExported()
		default:
			return false
		}
	}
}

// exportedOnly returns a struct or interface type with its unexported
// fields and methods removed (and no comments), or t unchanged.
func exportedOnly(t ast.Expr) ast.Expr {
	switch x := t.(type) {
	case *ast.StructType:
		st := *x
		st.Fields = filterFields(x.Fields, true)
		return &st
	case *ast.InterfaceType:
		it := *x
		it.Methods = filterFields(x.Methods, false)
		return &it
	}
	return t
}

func filterFields(fl *ast.FieldList, isStruct bool) *ast.FieldList {
	if fl == nil {
		return nil
	}
	out := &ast.FieldList{Opening: fl.Opening, Closing: fl.Closing}
	hidden := false
	for _, f := range fl.List {
		g := *f
		g.Doc, g.Comment, g.Tag = nil, nil, nil
		if len(f.Names) == 0 { // embedded: a type name, or a constraint in an interface
			out.List = append(out.List, &g)
			continue
		}
		g.Names = nil
		for _, n := range f.Names {
			if n.IsExported() {
				g.Names = append(g.Names, n)
			}
		}
		if len(g.Names) == 0 {
			hidden = true
			continue
		}
		out.List = append(out.List, &g)
	}
	if hidden && isStruct {
		out.List = append(out.List, &ast.Field{Names: []*ast.Ident{ast.NewIdent("_")}, Type: ast.NewIdent("unexported")})
	}
	return out
}

func format(fset *token.FileSet, n any) string {
	var b bytes.Buffer
	cfg := printer.Config{Mode: printer.UseSpaces, Tabwidth: 4}
	if err := cfg.Fprint(&b, fset, n); err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	// Without the blank lines and the column alignment the printer derives
	// from where the removed comments were, so that editing a comment does
	// not change the API text.
	var lines []string
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		body := strings.TrimLeft(line, " ")
		indent := line[:len(line)-len(body)]
		lines = append(lines, indent+strings.Join(strings.Fields(body), " "))
	}
	return strings.Join(lines, "\n")
}

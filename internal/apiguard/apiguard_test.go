package apiguard_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/stagefsm/stagefsm/internal/apiguard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRender(t *testing.T) {
	text, err := apiguard.Render("testdata/sample")
	require.NoError(t, err)
	assert.Equal(t, `package sample

const A Mode
const B Mode
func (*Box[T]) Get(ctx context.Context) T
func New[T any](v T) *Box[T]
type Box[T any] struct {
    Value T
    Name string
    _ unexported
}
type Doer interface {
    Do() error
}
type Mode uint8
var ErrX
`, text)

	pkg, names, err := apiguard.Names("testdata/sample")
	require.NoError(t, err)
	assert.Equal(t, "sample", pkg)
	assert.ElementsMatch(t, []string{"A", "B", "New", "Box", "Doer", "Mode", "ErrX"}, names)
}

func TestRenderSkipsCommandsAndEmptyDirs(t *testing.T) {
	dir := t.TempDir()
	text, err := apiguard.Render(dir)
	require.NoError(t, err)
	assert.Empty(t, text)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc Main() {}\n"), 0o644))
	text, err = apiguard.Render(dir)
	require.NoError(t, err)
	assert.Empty(t, text, "a command has no API")
}

func TestRenderErrors(t *testing.T) {
	_, err := apiguard.Render(filepath.Join(t.TempDir(), "missing"))
	assert.Error(t, err)

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.go"), []byte("package a\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "b.go"), []byte("package b\n"), 0o644))
	_, err = apiguard.Render(dir)
	assert.ErrorContains(t, err, "holds packages a and b")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "b.go"), []byte("package a\nfunc {"), 0o644))
	_, err = apiguard.Render(dir)
	assert.Error(t, err)
}

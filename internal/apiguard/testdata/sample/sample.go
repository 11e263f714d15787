// Package sample is the input of apiguard's test.
package sample

import "context"

// Mode is a mode.
type Mode uint8

const (
	// A is a.
	A Mode = iota
	B
	hidden
)

// ErrX is an error.
var ErrX, errY = error(nil), error(nil)

// Box holds things.
type Box[T any] struct {
	// Value is the value.
	Value T
	n     int // hidden
	// Name, and a hidden one.
	Name, secret string `json:"name"`
}

// Get returns the value.
func (b *Box[T]) Get(ctx context.Context) T { return b.Value }

func (b *Box[T]) peek() T { return b.Value }

// Doer does.
type Doer interface {
	// Do does.
	Do() error
	undo()
}

type inner struct{}

// Exported is a method of an unexported type: not API.
func (inner) Exported() {}

// New makes a Box.
func New[T any](v T) *Box[T] { return &Box[T]{Value: v} }

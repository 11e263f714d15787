package main

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The codecs of the demo's checkpointed state (-state): the lifecycle's
// per-order state and the join's customer table. Both hold a *Customer and
// unexported fields, which gob does not encode; these write compact binary
// records of their own and copy the customer by value.

// errState is the error of a state that does not decode: the bytes are not
// a record of this codec (another version of the demo, or damage the
// checkpoint's checksum did not catch).
var errState = errors.New("not a state of this demo")

// orderCodec encodes an order's lifecycle state.
type orderCodec struct{}

func (orderCodec) Encode(s orderState) ([]byte, error) {
	b := make([]byte, 0, 48)
	b = binary.AppendVarint(b, s.total)
	b = binary.AppendUvarint(b, uint64(s.at))
	b = binary.AppendUvarint(b, uint64(s.qty))
	flags := byte(0)
	if s.timedOut {
		flags = 1
	}
	b = append(b, s.country, byte(s.status), flags)
	return appendCustomer(b, s.cust), nil
}

func (orderCodec) Decode(data []byte) (orderState, error) {
	r := reader{b: data}
	s := orderState{total: r.varint(), at: uint32(r.uvarint(1<<32 - 1)), qty: uint16(r.uvarint(1<<16 - 1))}
	s.country, s.status = r.byte(), Status(r.byte())
	flags := r.byte()
	s.timedOut = flags == 1
	s.cust = r.customer()
	switch {
	case r.err != nil:
		return orderState{}, r.err
	case int(s.country) >= len(countries) || int(s.status) >= len(statusNames) || flags > 1:
		return orderState{}, fmt.Errorf("%w: order state out of range", errState)
	}
	return s, r.end()
}

// customerCodec encodes a reference item of the join.
type customerCodec struct{}

func (customerCodec) Encode(c customerRef) ([]byte, error) {
	return appendCustomer([]byte{c.country}, c.c), nil
}

func (customerCodec) Decode(data []byte) (customerRef, error) {
	r := reader{b: data}
	c := customerRef{country: r.byte(), c: r.customer()}
	switch {
	case r.err != nil:
		return customerRef{}, r.err
	case c.c == nil || int(c.country) >= len(countries):
		return customerRef{}, fmt.Errorf("%w: customer reference out of range", errState)
	}
	return c, r.end()
}

// appendCustomer appends c, or a mark of none.
func appendCustomer(b []byte, c *Customer) []byte {
	if c == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(c.ID))
	for _, s := range [...]string{c.Name, c.Country, c.Region} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// reader reads a record; the first error sticks, and the reads after it
// return zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated or malformed", errState)
	}
	r.b = nil
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

// uvarint reads an unsigned value of at most limit.
func (r *reader) uvarint(limit uint64) uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > limit {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if len(r.b) == 0 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) string() string {
	n := r.uvarint(uint64(len(r.b)))
	if n > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) customer() *Customer {
	switch r.byte() {
	case 0:
		return nil
	case 1:
	default:
		r.fail()
		return nil
	}
	c := &Customer{ID: uint32(r.uvarint(1<<32 - 1))}
	c.Name, c.Country, c.Region = r.string(), r.string(), r.string()
	if r.err != nil {
		return nil
	}
	return c
}

// end checks that the record was read to its end.
func (r *reader) end() error {
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d bytes after the record", errState, len(r.b))
	}
	return nil
}

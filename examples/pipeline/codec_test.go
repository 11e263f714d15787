package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/checkpoint"
)

var (
	_ checkpoint.Codec[orderState]  = orderCodec{}
	_ checkpoint.Codec[customerRef] = customerCodec{}
)

func TestOrderCodecRoundTrip(t *testing.T) {
	cust := &Customer{ID: 4711, Name: "Ada Lovelace", Country: "GB", Region: "EMEA"}
	for _, s := range []orderState{
		{status: statusPlaced, total: 123456, cust: cust, at: 2_591_999, qty: 5, country: 5},
		{status: statusPaid, total: -1, cust: cust, at: 0, qty: 1000, country: 19, timedOut: true},
		{status: statusNew},
	} {
		b, err := orderCodec{}.Encode(s)
		require.NoError(t, err)
		got, err := orderCodec{}.Decode(b)
		require.NoError(t, err)
		assert.Equal(t, s, got)
		if s.cust != nil {
			assert.NotSame(t, s.cust, got.cust, "the customer is copied")
		}
		for i := range len(b) {
			_, err := orderCodec{}.Decode(b[:i])
			assert.ErrorIs(t, err, errState, "truncated to %d bytes", i)
		}
		_, err = orderCodec{}.Decode(append(b, 0))
		assert.ErrorIs(t, err, errState, "a byte too many")
	}
	bad, err := orderCodec{}.Encode(orderState{status: Status(len(statusNames))})
	require.NoError(t, err)
	_, err = orderCodec{}.Decode(bad)
	assert.ErrorIs(t, err, errState, "a status out of range")
}

func TestCustomerCodecRoundTrip(t *testing.T) {
	c := customerRef{c: &Customer{ID: 1, Name: "Grace Hopper", Country: "US", Region: "AMER"}, country: 9}
	b, err := customerCodec{}.Encode(c)
	require.NoError(t, err)
	got, err := customerCodec{}.Decode(b)
	require.NoError(t, err)
	assert.Equal(t, c, got)
	for i := range len(b) {
		_, err := customerCodec{}.Decode(b[:i])
		assert.ErrorIs(t, err, errState, "truncated to %d bytes", i)
	}
	for _, bad := range []customerRef{{country: 1}, {c: c.c, country: uint8(len(countries))}} {
		b, err := customerCodec{}.Encode(bad)
		require.NoError(t, err)
		_, err = customerCodec{}.Decode(b)
		assert.ErrorIs(t, err, errState)
	}
}

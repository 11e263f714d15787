package natsstage

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPositionRoundTrips(t *testing.T) {
	s := &Source{stream: "IN", consumer: "p0", o: sourceOptions{ackOnCommit: true}}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		floor := r.Uint64N(1000)
		var seqs []uint64
		prev := floor
		for range r.IntN(50) {
			switch r.IntN(3) {
			case 0:
				prev++ // contiguous
			case 1:
				prev += 2 // another partition's message between
			default:
				prev += 1 + r.Uint64N(100)
			}
			seqs = append(seqs, prev)
		}
		pos := s.encodePosition(floor, seqs)
		gotFloor, got, err := s.decodePosition(pos)
		require.NoError(t, err, "%s", pos)
		assert.Equal(t, floor, gotFloor)
		assert.Equal(t, seqs, got, "%s", pos)
	}
	pos := s.encodePosition(7, []uint64{8, 9, 10, 11, 13, 15, 17, 100})
	assert.Equal(t, "IN/p0:7,1*4,2*3,83", string(pos))
}

func TestPositionRefusesWhatItDidNotEncode(t *testing.T) {
	s := &Source{stream: "IN", consumer: "p0", o: sourceOptions{ackOnCommit: true}}
	for _, bad := range []string{"", "IN/p0", "IN/p0:", "IN/p1:3", "OUT/p0:3", "IN/p0:x", "IN/p0:3,", "IN/p0:3,0",
		"IN/p0:3,1*0", "IN/p0:3,1*x", "IN/p0:3,2*99999999999", "IN/p0:18446744073709551615,1",
		"IN/p0:3,9223372036854775807*3", "IN/p0:3,-1"} {
		_, _, err := s.decodePosition([]byte(bad))
		assert.ErrorIs(t, err, ErrPosition, "%q", bad)
	}
	_, seqs, err := s.decodePosition([]byte("IN/p0:3,1*3"))
	require.NoError(t, err)
	assert.True(t, slices.Equal([]uint64{4, 5, 6}, seqs))
}

package stage

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSlabGrowsByPagesWithoutMoving(t *testing.T) {
	var s slab[int]
	var first *int
	for i := range 3*slabPage + 5 {
		r := s.add()
		require.Equal(t, int32(i), r)
		*s.at(r) = i * 10
		if i == slabPage {
			first = s.at(r)
		}
	}
	assert.Equal(t, int32(3*slabPage+5), s.len())
	for r := range s.len() {
		assert.Equal(t, int(r)*10, *s.at(r))
	}
	assert.Same(t, first, s.at(slabPage), "a full page is never copied")
}

// TestTimerHeapOrderAndStaleEntries pushes random deadlines, marks some
// stale, and checks that head yields the valid ones in order, also across
// a compaction.
func TestTimerHeapOrderAndStaleEntries(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	stale := map[int32]bool{}
	var h timerHeap
	h.valid = func(e timerEnt) bool { return !stale[e.slot] }
	var want []int64
	for i := range int32(5000) {
		at := r.Int64N(1_000_000)
		if r.IntN(4) != 0 { // enough stale entries for pushes to compact
			stale[i] = true
		} else {
			want = append(want, at)
			h.armed++
		}
		h.push(timerEnt{at: at, slot: i})
	}
	assert.Less(t, len(h.ents), 5000, "compacted")
	slices.Sort(want)
	var got []int64
	for {
		e, ok := h.head()
		if !ok {
			break
		}
		got = append(got, e.at)
		h.pop()
	}
	assert.Equal(t, want, got)
}

package checkpoint

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func encodeFile(h header, graph []string, stages map[string]StageUpdate) []byte {
	data, _ := encode(h, graph, stages)
	return data
}

func TestFormatRoundTrip(t *testing.T) {
	stages := map[string]StageUpdate{
		"src":   {Position: []byte{}},
		"count": {Set: map[string][]byte{"a": []byte("1"), "": nil}, Delete: []string{"b", ""}},
	}
	data := encodeFile(header{kind: kindDelta, seq: 9, prevSeq: 4, prevCRC: 77}, []string{"src", "count"}, stages)
	d, err := decode(data)
	require.NoError(t, err)
	assert.Equal(t, header{kind: kindDelta, seq: 9, prevSeq: 4, prevCRC: 77}, d.header)
	assert.Equal(t, []string{"src", "count"}, d.graph)
	assert.NotNil(t, d.stages["src"].Position, "an empty position is a position")
	assert.Nil(t, d.stages["count"].Position)
	assert.Equal(t, []string{"b", ""}, d.stages["count"].Delete)
	assert.Equal(t, []byte("1"), d.stages["count"].Set["a"])
	assert.Empty(t, d.stages["count"].Set[""])
	assert.Equal(t, int64(len(data)), d.size)
}

// FuzzDecode feeds decode arbitrary bytes, and valid files with their
// checksum recomputed after a change: it must return an error or a
// result, never panic or allocate without bound.
func FuzzDecode(f *testing.F) {
	f.Add(encodeFile(header{kind: kindFull, seq: 1}, []string{"a"}, map[string]StageUpdate{
		"a": {Position: []byte("7"), Set: map[string][]byte{"k": []byte("v")}}}))
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = decode(data)
		if len(data) >= headerSize+trailSize {
			// Re-seal: make the checksum match, so the parser is reached.
			sealed := bytes.Clone(data)
			end := len(sealed) - 4
			putCRC(sealed[end:], sealed[:end])
			_, _ = decode(sealed)
		}
	})
}

// putCRC writes the CRC-32C of data into b (4 bytes), to seal a crafted
// file.
func putCRC(b, data []byte) {
	binary.LittleEndian.PutUint32(b, crc32.Checksum(data, castagnoli))
}

package checkpoint_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stagefsm/stagefsm/checkpoint"
)

type counterV1 struct {
	Count int
	Last  string
}

// counterV2 changed Count's type: old state no longer decodes.
type counterV2 struct {
	Count string
	Last  string
}

func codecs[S any]() map[string]checkpoint.Codec[S] {
	return map[string]checkpoint.Codec[S]{"gob": checkpoint.Gob[S]{}, "json": checkpoint.JSON[S]{}}
}

func TestCodecRoundTrip(t *testing.T) {
	for name, c := range codecs[counterV1]() {
		for _, v := range []counterV1{{}, {Count: 3, Last: "x"}, {Count: -1 << 40, Last: "ü\x00"}} {
			b, err := c.Encode(v)
			require.NoError(t, err, name)
			got, err := c.Decode(b)
			require.NoError(t, err, name)
			assert.Equal(t, v, got, name)
		}
	}
	for name, c := range codecs[map[string][]int]() {
		v := map[string][]int{"a": {1, 2}, "b": {3}}
		b, err := c.Encode(v)
		require.NoError(t, err, name)
		got, err := c.Decode(b)
		require.NoError(t, err, name)
		assert.Equal(t, v, got, name)
	}
}

func TestCodecEncodeError(t *testing.T) {
	_, err := checkpoint.Gob[func()]{}.Encode(func() {})
	assert.Error(t, err)
	_, err = checkpoint.JSON[chan int]{}.Encode(make(chan int))
	assert.Error(t, err)
}

// stateOf builds a checkpoint holding stage "count" with the given blobs.
func stateOf(blobs map[string][]byte) *checkpoint.Snapshot {
	return &checkpoint.Snapshot{Seq: 1, Graph: []string{"count"},
		Stages: map[string]checkpoint.Stage{"count": {State: blobs}}}
}

// TestDecodeStateChangedType decodes state saved by an older type: the
// error names the stage and the key, the smallest of those that fail.
func TestDecodeStateChangedType(t *testing.T) {
	for name := range codecs[counterV1]() {
		t.Run(name, func(t *testing.T) {
			old := codecs[counterV1]()[name]
			blobs := map[string][]byte{}
			for _, k := range []string{"carol", "alice", "bob"} {
				b, err := old.Encode(counterV1{Count: 7, Last: k})
				require.NoError(t, err)
				blobs[k] = b
			}
			cp := stateOf(blobs)

			got, err := checkpoint.DecodeState(old, cp, "count")
			require.NoError(t, err)
			assert.Equal(t, counterV1{Count: 7, Last: "bob"}, got["bob"])

			_, err = checkpoint.DecodeState(codecs[counterV2]()[name], cp, "count")
			var de *checkpoint.DecodeError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, "count", de.Stage)
			assert.Equal(t, "alice", de.Key)
			assert.Error(t, errors.Unwrap(de))
			assert.Contains(t, de.Error(), `"alice"`)
		})
	}
}

func TestDecodeStateGarbage(t *testing.T) {
	cp := stateOf(map[string][]byte{"k": []byte("\xff\x00garbage"), "": {}})
	for name, c := range codecs[counterV1]() {
		_, err := checkpoint.DecodeState(c, cp, "count")
		var de *checkpoint.DecodeError
		require.ErrorAs(t, err, &de, name)
		assert.Equal(t, "", de.Key, name)
	}
	got, err := checkpoint.DecodeState[counterV1](checkpoint.Gob[counterV1]{}, cp, "absent")
	require.NoError(t, err)
	assert.Empty(t, got)
}

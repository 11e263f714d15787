package checkpoint

import (
	"bytes"
	"encoding/gob"
	"encoding/json"
)

// Codec encodes a stage's state S to the bytes a checkpoint holds, and
// back. How state is encoded is the user's choice; [Gob] is the default,
// [JSON] the readable alternative. Encode and Decode may be called from
// several goroutines at once, so a Codec must be safe for concurrent use
// (the two here keep no state). A value that Encode accepted must Decode
// to an equal value; data that does not decode to an S (the type changed
// since the checkpoint, or the bytes are not an S) is an error, never a
// panic.
type Codec[S any] interface {
	Encode(s S) ([]byte, error)
	Decode(data []byte) (S, error)
}

// Gob is the default [Codec]: [encoding/gob], one self-contained stream
// per value (so each key's blob decodes alone). Its rules apply: exported
// fields only, added or removed fields are tolerated, a field whose type
// changed is an error.
type Gob[S any] struct{}

// Encode returns s encoded with gob.
func (Gob[S]) Encode(s S) ([]byte, error) {
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(&s); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Decode decodes a value that Encode encoded.
func (Gob[S]) Decode(data []byte) (S, error) {
	var s S
	err := gob.NewDecoder(bytes.NewReader(data)).Decode(&s)
	return s, err
}

// JSON is a [Codec] on [encoding/json]: readable, larger and slower than
// [Gob]. Unknown fields are ignored and missing ones left zero, as
// json.Unmarshal does; a field whose type changed is an error.
type JSON[S any] struct{}

// Encode returns s encoded as JSON.
func (JSON[S]) Encode(s S) ([]byte, error) { return json.Marshal(s) }

// Decode decodes a value that Encode encoded.
func (JSON[S]) Decode(data []byte) (S, error) {
	var s S
	err := json.Unmarshal(data, &s)
	return s, err
}

// DecodeState decodes every key's state of the named stage of cp with c.
// A stage the checkpoint does not hold has no state: an empty map. When a
// blob does not decode, DecodeState returns a [*DecodeError] naming the
// stage and the key (the smallest failing key, when several fail), so
// that a start after a code change fails with a clear reason.
func DecodeState[S any](c Codec[S], cp *Snapshot, stage string) (map[string]S, error) {
	st := cp.Stages[stage]
	out := make(map[string]S, len(st.State))
	var bad *DecodeError
	for k, data := range st.State {
		s, err := c.Decode(data)
		if err != nil {
			if bad == nil || k < bad.Key {
				bad = &DecodeError{Stage: stage, Key: k, Err: err}
			}
			continue
		}
		out[k] = s
	}
	if bad != nil {
		return nil, bad
	}
	return out, nil
}

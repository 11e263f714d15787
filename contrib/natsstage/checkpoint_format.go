package natsstage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"

	"github.com/stagefsm/stagefsm/checkpoint"
)

// The encoding of one checkpoint object of a [Store] (little endian):
//
//	header  (28 bytes): magic "SFJS", version, kind (1 full, 2 delta),
//	                    2 reserved, seq u64, prev seq u64, prev crc u32
//	payload:            graph: count, names; stages: count, then per
//	                    stage: name, has-position, position, set count,
//	                    (key, blob)..., delete count, keys... (counts
//	                    uvarint; strings and blobs uvarint length, bytes)
//	trailer (12 bytes): payload length u64, CRC-32C of all bytes before
//
// A delta names the checkpoint it extends by sequence and identity (its
// CRC), so it never applies to anything but that exact checkpoint. A full
// checkpoint written by a compaction carries, as prev, its own sequence
// and the CRC of the delta it equals: the deltas saved on that delta
// extend it too.
//
// The head of a Store (its KV entry) is: magic "SFJH", version, 3
// reserved, seq u64, identity u32, CRC-32C u32 of the bytes before.

const (
	objMagic      = "SFJS"
	headMagic     = "SFJH"
	formatVersion = 1
	objHeaderSize = 28
	objTrailSize  = 12
	headSize      = 24
)

type objKind uint8

const (
	kindFull  objKind = 1
	kindDelta objKind = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errShort    = errors.New("too short")
	errChecksum = errors.New("checksum mismatch")
	errFormat   = errors.New("bad format")
)

// objHeader is the header of a checkpoint object.
type objHeader struct {
	kind    objKind
	seq     uint64
	prevSeq uint64 // 0 for a full checkpoint a Save wrote
	prevCRC uint32
}

// encodeObject encodes one checkpoint and returns it with its CRC.
func encodeObject(h objHeader, graph []string, stages map[string]checkpoint.StageUpdate) ([]byte, uint32) {
	size := objHeaderSize + objTrailSize + 2*binary.MaxVarintLen64
	for _, name := range graph {
		size += binary.MaxVarintLen64 + len(name)
	}
	for name, st := range stages {
		size += 4*binary.MaxVarintLen64 + len(name) + len(st.Position)
		for k, v := range st.Set {
			size += 2*binary.MaxVarintLen64 + len(k) + len(v)
		}
		for _, k := range st.Delete {
			size += binary.MaxVarintLen64 + len(k)
		}
	}
	b := make([]byte, objHeaderSize, size)
	copy(b, objMagic)
	b[4] = formatVersion
	b[5] = byte(h.kind)
	binary.LittleEndian.PutUint64(b[8:], h.seq)
	binary.LittleEndian.PutUint64(b[16:], h.prevSeq)
	binary.LittleEndian.PutUint32(b[24:], h.prevCRC)
	b = binary.AppendUvarint(b, uint64(len(graph)))
	for _, name := range graph {
		b = appendString(b, name)
	}
	b = binary.AppendUvarint(b, uint64(len(stages)))
	for _, name := range slices.Sorted(maps.Keys(stages)) {
		st := stages[name]
		b = appendString(b, name)
		if st.Position != nil {
			b = append(b, 1)
			b = appendString(b, string(st.Position))
		} else {
			b = append(b, 0)
		}
		b = binary.AppendUvarint(b, uint64(len(st.Set)))
		for k, v := range st.Set {
			b = appendString(b, k)
			b = appendString(b, string(v))
		}
		b = binary.AppendUvarint(b, uint64(len(st.Delete)))
		for _, k := range st.Delete {
			b = appendString(b, k)
		}
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(len(b)-objHeaderSize))
	crc := crc32.Checksum(b, castagnoli)
	return binary.LittleEndian.AppendUint32(b, crc), crc
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodedObj is a checkpoint object read back and checked.
type decodedObj struct {
	objHeader
	crc    uint32
	size   int64
	graph  []string
	stages map[string]checkpoint.StageUpdate
}

// identity is the CRC a delta on d links to: its own, or, for a full
// checkpoint a compaction made, the CRC of the delta it equals.
func (d *decodedObj) identity() uint32 {
	if d.kind == kindFull && d.prevSeq == d.seq {
		return d.prevCRC
	}
	return d.crc
}

// decodeObject checks and decodes one checkpoint object. It never panics:
// whatever data holds, it returns the checkpoint or an error.
func decodeObject(data []byte) (*decodedObj, error) {
	if len(data) < objHeaderSize+objTrailSize {
		return nil, fmt.Errorf("%w: %d bytes", errShort, len(data))
	}
	end := len(data) - 4
	if crc32.Checksum(data[:end], castagnoli) != binary.LittleEndian.Uint32(data[end:]) {
		return nil, errChecksum
	}
	if string(data[:4]) != objMagic || data[4] != formatVersion {
		return nil, fmt.Errorf("%w: not a checkpoint of this version", errFormat)
	}
	payload := data[objHeaderSize : end-8]
	if binary.LittleEndian.Uint64(data[end-8:end]) != uint64(len(payload)) {
		return nil, fmt.Errorf("%w: payload length", errFormat)
	}
	d := &decodedObj{
		objHeader: objHeader{
			kind:    objKind(data[5]),
			seq:     binary.LittleEndian.Uint64(data[8:]),
			prevSeq: binary.LittleEndian.Uint64(data[16:]),
			prevCRC: binary.LittleEndian.Uint32(data[24:]),
		},
		crc:  binary.LittleEndian.Uint32(data[end:]),
		size: int64(len(data)),
	}
	if d.kind != kindFull && d.kind != kindDelta {
		return nil, fmt.Errorf("%w: kind %d", errFormat, d.kind)
	}
	r := reader{b: payload}
	n := r.count()
	d.graph = make([]string, 0, min(n, uint64(len(payload))))
	for range n {
		if r.err != nil {
			break
		}
		d.graph = append(d.graph, r.string())
	}
	n = r.count()
	d.stages = make(map[string]checkpoint.StageUpdate, min(n, uint64(len(payload))))
	for range n {
		if r.err != nil {
			break
		}
		name := r.string()
		var st checkpoint.StageUpdate
		if r.byte() == 1 {
			st.Position = []byte(r.string())
		}
		if sets := r.count(); sets > 0 {
			st.Set = make(map[string][]byte, min(sets, uint64(len(payload))))
			for range sets {
				if r.err != nil {
					break
				}
				k := r.string()
				st.Set[k] = []byte(r.string())
			}
		}
		dels := r.count()
		for range dels {
			if r.err != nil {
				break
			}
			st.Delete = append(st.Delete, r.string())
		}
		d.stages[name] = st
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d bytes after the payload", errFormat, len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	return d, nil
}

// reader decodes a payload, keeping the first error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: bad varint", errFormat)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a count, which cannot exceed the bytes left.
func (r *reader) count() uint64 {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: count %d past the end", errFormat, n)
		return 0
	}
	return n
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = fmt.Errorf("%w: truncated", errFormat)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) string() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: truncated", errFormat)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// head is a Store's commit point: the latest complete checkpoint.
type head struct {
	seq uint64
	id  uint32
}

func encodeHead(h head) []byte {
	b := make([]byte, 8, headSize)
	copy(b, headMagic)
	b[4] = formatVersion
	b = binary.LittleEndian.AppendUint64(b, h.seq)
	b = binary.LittleEndian.AppendUint32(b, h.id)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeHead(b []byte) (head, error) {
	if len(b) != headSize {
		return head{}, fmt.Errorf("%w: %d bytes", errShort, len(b))
	}
	if crc32.Checksum(b[:headSize-4], castagnoli) != binary.LittleEndian.Uint32(b[headSize-4:]) {
		return head{}, errChecksum
	}
	if string(b[:4]) != headMagic || b[4] != formatVersion {
		return head{}, fmt.Errorf("%w: not a checkpoint head of this version", errFormat)
	}
	return head{seq: binary.LittleEndian.Uint64(b[8:]), id: binary.LittleEndian.Uint32(b[16:])}, nil
}

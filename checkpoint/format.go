package checkpoint

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
)

// The encoding of one checkpoint blob of a [BlobStore] (a file of a [Dir])
// (little endian):
//
//	header  (28 bytes): magic "SFCP", version, kind (1 full, 2 delta),
//	                    2 reserved, seq u64, prev seq u64, prev crc u32
//	payload:            graph: count, names; stages: count, then per
//	                    stage: name, has-position byte, position, set
//	                    count, (key, blob)..., delete count, keys...
//	                    (counts uvarint, strings and blobs uvarint length
//	                    then bytes)
//	trailer (12 bytes): payload length u64, CRC-32C of all bytes before
//
// A delta names the checkpoint it extends by sequence and identity (its
// CRC), so it never applies to anything but that exact checkpoint. A full
// checkpoint written by a compaction carries, as prev, its own sequence
// and the CRC of the delta it equals: the deltas saved on that delta
// extend it too.
//
// The head of a store with a [Head] is: magic "SFCH", version, 3
// reserved, seq u64, identity u32, CRC-32C u32 of the bytes before.

const (
	magic      = "SFCP"
	headMagic  = "SFCH"
	version    = 1
	headerSize = 28
	trailSize  = 12
	headSize   = 24
)

type fileKind uint8

const (
	kindFull  fileKind = 1
	kindDelta fileKind = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is a checkpoint's header.
type header struct {
	kind    fileKind
	seq     uint64
	prevSeq uint64 // 0 for a full checkpoint a Save wrote
	prevCRC uint32
}

var (
	errShort    = errors.New("too short")
	errChecksum = errors.New("checksum mismatch")
	errFormat   = errors.New("bad format")
)

// encode encodes one checkpoint and returns it with its CRC. Stages are
// written in name order, so that equal checkpoints encode alike.
func encode(h header, graph []string, stages map[string]StageUpdate) ([]byte, uint32) {
	size := headerSize + trailSize + 2*binary.MaxVarintLen64
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
	b := make([]byte, headerSize, size)
	copy(b, magic)
	b[4] = version
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
	b = binary.LittleEndian.AppendUint64(b, uint64(len(b)-headerSize))
	crc := crc32.Checksum(b, castagnoli)
	return binary.LittleEndian.AppendUint32(b, crc), crc
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decoded is a checkpoint blob, checked and parsed.
type decoded struct {
	header
	name   string // its blob, once read from a store
	crc    uint32
	graph  []string
	stages map[string]StageUpdate
	size   int64
}

// decode checks data's length and checksum, then parses it. The blobs it
// returns are sub-slices of data.
func decode(data []byte) (*decoded, error) {
	if len(data) < headerSize+trailSize {
		return nil, errShort
	}
	end := len(data) - 4
	sum := binary.LittleEndian.Uint32(data[end:])
	if crc32.Checksum(data[:end], castagnoli) != sum {
		return nil, errChecksum
	}
	if string(data[:4]) != magic || data[4] != version {
		return nil, fmt.Errorf("%w: not a version %d checkpoint file", errFormat, version)
	}
	d := &decoded{crc: sum, size: int64(len(data))}
	d.kind = fileKind(data[5])
	d.seq = binary.LittleEndian.Uint64(data[8:])
	d.prevSeq = binary.LittleEndian.Uint64(data[16:])
	d.prevCRC = binary.LittleEndian.Uint32(data[24:])
	if d.kind != kindFull && d.kind != kindDelta {
		return nil, fmt.Errorf("%w: kind %d", errFormat, d.kind)
	}
	payload := data[headerSize : end-8]
	if n := binary.LittleEndian.Uint64(data[end-8:]); n != uint64(len(payload)) {
		return nil, fmt.Errorf("%w: payload of %d bytes, trailer says %d", errFormat, len(payload), n)
	}
	r := reader{b: payload}
	d.graph = make([]string, r.count())
	for i := range d.graph {
		d.graph[i] = r.string()
	}
	nStages := r.count()
	d.stages = make(map[string]StageUpdate, nStages)
	for n := nStages; n > 0 && r.err == nil; n-- {
		name := r.string()
		var st StageUpdate
		if r.uvarint() == 1 {
			st.Position = r.bytes()
		}
		if n := r.count(); n > 0 {
			st.Set = make(map[string][]byte, n)
			for ; n > 0 && r.err == nil; n-- {
				k := r.string()
				st.Set[k] = r.bytes()
			}
		}
		if n := r.count(); n > 0 {
			st.Delete = make([]string, n)
			for i := range st.Delete {
				st.Delete[i] = r.string()
			}
		}
		d.stages[name] = st
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%w: %d bytes after the payload", errFormat, len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	return d, nil
}

// reader parses a payload; after the first error every read returns zero
// values and err keeps that error.
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

// count reads a count, bounded by the bytes left (each counted thing takes
// at least one byte), so a bad count cannot make a huge allocation.
func (r *reader) count() int {
	v := r.uvarint()
	if v > uint64(len(r.b)) {
		if r.err == nil {
			r.err = fmt.Errorf("%w: count %d beyond the payload", errFormat, v)
		}
		return 0
	}
	return int(v)
}

func (r *reader) bytes() []byte {
	n := r.count()
	if r.err != nil {
		return nil
	}
	b := r.b[:n:n]
	r.b = r.b[n:]
	return b
}

func (r *reader) string() string { return string(r.bytes()) }

// head is the commit point of a store with a [Head]: the latest complete
// checkpoint.
type head struct {
	seq uint64
	id  uint32
}

func encodeHead(h head) []byte {
	b := make([]byte, 8, headSize)
	copy(b, headMagic)
	b[4] = version
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
	if string(b[:4]) != headMagic || b[4] != version {
		return head{}, fmt.Errorf("%w: not a checkpoint head of version %d", errFormat, version)
	}
	return head{seq: binary.LittleEndian.Uint64(b[8:]), id: binary.LittleEndian.Uint32(b[16:])}, nil
}

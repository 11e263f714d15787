package checkpoint

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// The file format of a [Dir] checkpoint file (little endian):
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
// A delta names the file it extends (prev seq) and that file's CRC, so a
// delta never applies to anything but the exact file it was written on.

const (
	magic      = "SFCP"
	version    = 1
	headerSize = 28
	trailSize  = 12
)

type fileKind uint8

const (
	kindFull  fileKind = 1
	kindDelta fileKind = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is a checkpoint file's header.
type header struct {
	kind    fileKind
	seq     uint64
	prevSeq uint64 // 0 for a full checkpoint
	prevCRC uint32
}

var (
	errShort    = errors.New("file too short")
	errChecksum = errors.New("checksum mismatch")
	errFormat   = errors.New("bad format")
)

// writer encodes a checkpoint file, summing what it writes.
type writer struct {
	w   *bufio.Writer
	crc hash.Hash32
	n   uint64 // payload bytes written
	tmp [binary.MaxVarintLen64]byte
}

func newWriter(w io.Writer) *writer {
	crc := crc32.New(castagnoli)
	return &writer{w: bufio.NewWriterSize(io.MultiWriter(w, crc), 1<<20), crc: crc}
}

func (w *writer) header(h header) {
	var b [headerSize]byte
	copy(b[:], magic)
	b[4] = version
	b[5] = byte(h.kind)
	binary.LittleEndian.PutUint64(b[8:], h.seq)
	binary.LittleEndian.PutUint64(b[16:], h.prevSeq)
	binary.LittleEndian.PutUint32(b[24:], h.prevCRC)
	_, _ = w.w.Write(b[:]) // bufio keeps the first error for Flush
}

func (w *writer) uvarint(v uint64) {
	n := binary.PutUvarint(w.tmp[:], v)
	_, _ = w.w.Write(w.tmp[:n])
	w.n += uint64(n)
}

func (w *writer) bytes(b []byte) {
	w.uvarint(uint64(len(b)))
	_, _ = w.w.Write(b)
	w.n += uint64(len(b))
}

func (w *writer) string(s string) {
	w.uvarint(uint64(len(s)))
	_, _ = w.w.WriteString(s)
	w.n += uint64(len(s))
}

// body writes the graph and the stages (each with the keys it deletes).
func (w *writer) body(graph []string, stages map[string]StageUpdate) {
	w.uvarint(uint64(len(graph)))
	for _, name := range graph {
		w.string(name)
	}
	w.uvarint(uint64(len(stages)))
	for name, st := range stages {
		w.string(name)
		if st.Position != nil {
			w.uvarint(1)
			w.bytes(st.Position)
		} else {
			w.uvarint(0)
		}
		w.uvarint(uint64(len(st.Set)))
		for k, v := range st.Set {
			w.string(k)
			w.bytes(v)
		}
		w.uvarint(uint64(len(st.Delete)))
		for _, k := range st.Delete {
			w.string(k)
		}
	}
}

// finish writes the trailer and flushes; it returns the file's CRC.
func (w *writer) finish() (uint32, error) {
	var b [trailSize]byte
	binary.LittleEndian.PutUint64(b[:], w.n)
	_, _ = w.w.Write(b[:8])
	if err := w.w.Flush(); err != nil {
		return 0, err
	}
	sum := w.crc.Sum32()
	binary.LittleEndian.PutUint32(b[8:], sum)
	if _, err := w.w.Write(b[8:]); err != nil {
		return 0, err
	}
	return sum, w.w.Flush()
}

// decoded is a checkpoint file, checked and parsed.
type decoded struct {
	header
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

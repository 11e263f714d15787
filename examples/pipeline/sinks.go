package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/stagefsm/stagefsm/stage"
)

// fileSink writes items as JSON lines to path, or only counts them when path
// is empty. With slow set it waits that long per item; with flaky set it
// loses its connection on every flaky-th item, and its stage is restarted:
// Open then reopens the file for appending.
//
// It is a [stage.Resumable]: its position is the length of what it wrote,
// flushed and synced, and the count of items; Resume truncates the file to
// that length and appends from there, so that what a crash left after the
// checkpoint is written once. The first Open leaves the file as it is until
// the sink knows whether it resumes: the first Consume, Flush, Position or
// Close without a Resume truncates it.
type fileSink[T any] struct {
	path    string
	slow    time.Duration
	flaky   int64
	encode  func([]byte, T) []byte
	f       *os.File
	w       *bufio.Writer
	buf     []byte
	opens   int
	fresh   bool  // opened, neither resumed nor truncated yet
	written int64 // bytes written to w since the file was empty
	writes  int64
	rows    atomic.Int64
}

// errConnReset is the failure -flaky-sink injects.
var errConnReset = errors.New("connection reset (injected by -flaky-sink)")

func (s *fileSink[T]) Open(context.Context) error {
	if s.path == "" {
		return nil
	}
	flags := os.O_WRONLY | os.O_CREATE
	if s.opens > 0 {
		flags = os.O_WRONLY | os.O_APPEND // a restart: keep what was written
	}
	f, err := os.OpenFile(s.path, flags, 0o644)
	if err != nil {
		return err
	}
	s.fresh = s.opens == 0
	s.opens++
	s.f, s.w = f, bufio.NewWriterSize(f, 1<<16)
	return nil
}

// start truncates a fresh file: the sink does not resume.
func (s *fileSink[T]) start() error {
	if !s.fresh {
		return nil
	}
	s.fresh = false
	return s.f.Truncate(0)
}

func (s *fileSink[T]) Consume(ctx context.Context, v T) error {
	if s.slow > 0 {
		t := time.NewTimer(s.slow)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if s.writes++; s.flaky > 0 && s.writes%s.flaky == 0 {
		return fatal(fmt.Errorf("item %d: %w", s.writes, errConnReset))
	}
	if s.w != nil {
		if err := s.start(); err != nil {
			return fatal(err)
		}
		s.buf = append(s.encode(s.buf[:0], v), '\n')
		if _, err := s.w.Write(s.buf); err != nil {
			return fatal(err) // the file is broken: no point going on
		}
		s.written += int64(len(s.buf))
	}
	s.rows.Add(1)
	return nil
}

func (s *fileSink[T]) Flush(context.Context) error {
	if s.w == nil {
		return nil
	}
	if err := s.start(); err != nil {
		return err
	}
	return s.w.Flush()
}

// Position flushes and syncs the file, and returns its length and the
// count of items as two uvarints.
func (s *fileSink[T]) Position() ([]byte, error) {
	if s.w != nil {
		if err := s.start(); err != nil {
			return nil, err
		}
		if err := s.w.Flush(); err != nil {
			return nil, err
		}
		if err := s.f.Sync(); err != nil {
			return nil, err
		}
	}
	pos := binary.AppendUvarint(nil, uint64(s.written))
	return binary.AppendUvarint(pos, uint64(s.rows.Load())), nil
}

// Resume truncates the file to the length pos holds, which the file must
// have reached (else output the checkpoint counts on is lost), and appends
// from there.
func (s *fileSink[T]) Resume(_ context.Context, pos []byte) error {
	off, rows, err := decodePosition(pos)
	if err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	if s.f != nil {
		fi, err := s.f.Stat()
		if err != nil {
			return err
		}
		if fi.Size() < off {
			return fmt.Errorf("%s: %w: %d bytes, the checkpoint has %d", s.path, errPosition, fi.Size(), off)
		}
		if err := s.f.Truncate(off); err != nil {
			return err
		}
		if _, err := s.f.Seek(off, io.SeekStart); err != nil {
			return err
		}
		s.fresh = false
	} else if off != 0 {
		return fmt.Errorf("sink without a file: %w: offset %d", errPosition, off)
	}
	s.written = off
	s.rows.Store(rows)
	return nil
}

func (s *fileSink[T]) Close() error {
	if s.f == nil {
		return nil
	}
	serr := s.start()
	ferr := s.w.Flush()
	err := s.f.Close()
	s.f, s.w = nil, nil
	return errors.Join(serr, ferr, err)
}

func appendRow(b []byte, r Row) []byte {
	j, err := json.Marshal(r)
	if err != nil { // a Row always encodes
		panic(err)
	}
	return append(b, j...)
}

// appendOutcome encodes an outcome as one line of JSON.
func appendOutcome(b []byte, o Outcome) []byte {
	b = append(b, `{"order":`...)
	b = strconv.AppendInt(b, o.Order, 10)
	b = append(b, `,"status":"`...)
	b = append(b, o.Status.String()...)
	if o.Status == statusAbandoned {
		b = append(b, `","abandoned_by":"`...)
		if o.TimedOut {
			b = append(b, "timeout"...)
		} else {
			b = append(b, "end of input"...)
		}
	}
	b = append(b, `","placed_at":"`...)
	b = epoch.Add(time.Duration(o.At)*time.Second).AppendFormat(b, time.RFC3339)
	b = append(b, `","customer":"C`...)
	b = appendPadded(b, int64(o.Cust.ID), 6)
	b = append(b, `","name":`...)
	b = strconv.AppendQuote(b, o.Cust.Name)
	b = append(b, `,"country":"`...)
	b = append(b, o.Cust.Country...)
	b = append(b, `","quantity":`...)
	b = strconv.AppendInt(b, int64(o.Quantity), 10)
	b = append(b, `,"total_eur":`...)
	b = strconv.AppendInt(b, o.TotalEUR/100, 10)
	b = append(b, '.')
	b = appendPadded(b, o.TotalEUR%100, 2)
	return append(b, '}')
}

// fatal marks err as fatal for its stage.
func fatal(err error) error { return stage.Fatal(err) }

// deadLetter is one line of dead_letters.jsonl.
type deadLetter struct {
	Stage   string `json:"failed_at"`
	Origin  string `json:"origin"`
	Seq     uint64 `json:"seq"`
	Error   string `json:"error"`
	Payload any    `json:"payload"`
}

func failedAt(err error) string {
	var ie *stage.ItemError
	if errors.As(err, &ie) {
		return ie.Stage
	}
	return ""
}

// jsonLines appends JSON values to a file, one per line. The dead-letter
// writer is called serially, so it needs no lock.
type jsonLines struct {
	path string
	f    *os.File
	w    *bufio.Writer
	enc  *json.Encoder
	err  error
}

// errNotOpen is the error of a value written before the file was opened:
// it is not lost silently.
var errNotOpen = errors.New("written before the file was opened")

// open creates the file, or opens it for appending when keep is set.
func (j *jsonLines) open(keep bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if keep {
		flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	}
	f, err := os.OpenFile(j.path, flags, 0o644)
	if err != nil {
		return err
	}
	j.f, j.w = f, bufio.NewWriter(f)
	j.enc = json.NewEncoder(j.w)
	return nil
}

func (j *jsonLines) write(v any) {
	if j.enc == nil {
		if j.err == nil {
			j.err = fmt.Errorf("%s: %w", j.path, errNotOpen)
		}
		return
	}
	if err := j.enc.Encode(v); err != nil && j.err == nil {
		j.err = err
	}
}

func (j *jsonLines) Close() error {
	if j.f == nil {
		return j.err
	}
	ferr := j.w.Flush()
	cerr := j.f.Close()
	j.f = nil
	return errors.Join(j.err, ferr, cerr)
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
type fileSink[T any] struct {
	path   string
	slow   time.Duration
	flaky  int64
	encode func([]byte, T) []byte
	f      *os.File
	w      *bufio.Writer
	buf    []byte
	opens  int
	writes int64
	rows   atomic.Int64
}

// errConnReset is the failure -flaky-sink injects.
var errConnReset = errors.New("connection reset (injected by -flaky-sink)")

func (s *fileSink[T]) Open(context.Context) error {
	if s.path == "" {
		return nil
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if s.opens > 0 {
		flags = os.O_WRONLY | os.O_APPEND // a restart: keep what was written
	}
	s.opens++
	f, err := os.OpenFile(s.path, flags, 0o644)
	if err != nil {
		return err
	}
	s.f, s.w = f, bufio.NewWriterSize(f, 1<<16)
	return nil
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
		s.buf = append(s.encode(s.buf[:0], v), '\n')
		if _, err := s.w.Write(s.buf); err != nil {
			return fatal(err) // the file is broken: no point going on
		}
	}
	s.rows.Add(1)
	return nil
}

func (s *fileSink[T]) Flush(context.Context) error {
	if s.w == nil {
		return nil
	}
	return s.w.Flush()
}

func (s *fileSink[T]) Close() error {
	if s.f == nil {
		return nil
	}
	ferr := s.w.Flush()
	err := s.f.Close()
	s.f, s.w = nil, nil
	return errors.Join(ferr, err)
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

func newJSONLines(path string) (*jsonLines, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriter(f)
	return &jsonLines{path: path, f: f, w: w, enc: json.NewEncoder(w)}, nil
}

func (j *jsonLines) write(v any) {
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

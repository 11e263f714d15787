package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The data set: the order events of an online shop over 30 days, as CSV
// sorted by time, and its customer table. A placed row carries the order;
// the paid and shipped rows of an order name it and its customer.
const (
	ordersHeader    = "event,order_id,at,customer_id,sku,quantity,unit_price,currency"
	customersHeader = "customer_id,name,country"
)

// The shape of the generated data. Each order is placed; all but
// abandonRate of them are paid payDelay later, and all but unshippedRate of
// the paid ones are shipped shipDelay after that. A fraction deletedRate of
// the customers is missing from the customer table (deleted accounts): the
// join finds no reference for their events.
const (
	abandonRate   = 0.03
	unshippedRate = 0.005
	deletedRate   = 0.002
	minPayDelay   = time.Minute
	maxPayDelay   = 30 * time.Minute
	minShipDelay  = time.Hour
	maxShipDelay  = 6 * time.Hour
	span          = 30 * 24 * time.Hour
)

var (
	epoch     = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	countries = []struct{ code, currency, region string }{
		{"DE", "EUR", "EMEA"}, {"FR", "EUR", "EMEA"}, {"IT", "EUR", "EMEA"}, {"ES", "EUR", "EMEA"},
		{"NL", "EUR", "EMEA"}, {"GB", "GBP", "EMEA"}, {"SE", "SEK", "EMEA"}, {"PL", "PLN", "EMEA"},
		{"CH", "CHF", "EMEA"}, {"US", "USD", "AMER"}, {"CA", "CAD", "AMER"}, {"MX", "MXN", "AMER"},
		{"BR", "BRL", "AMER"}, {"JP", "JPY", "APAC"}, {"AU", "AUD", "APAC"}, {"IN", "INR", "APAC"},
		{"SG", "SGD", "APAC"}, {"KR", "KRW", "APAC"}, {"ZA", "ZAR", "EMEA"}, {"AE", "AED", "EMEA"},
	}
	// eurPer is how many EUR one unit of a currency is worth (fixed rates).
	// Prices are drawn in EUR and shown in the customer's currency.
	eurPer = map[string]float64{
		"EUR": 1, "GBP": 1.17, "SEK": 0.087, "PLN": 0.23, "CHF": 1.05, "USD": 0.92, "CAD": 0.68,
		"MXN": 0.054, "BRL": 0.18, "JPY": 0.0062, "AUD": 0.61, "INR": 0.011, "SGD": 0.69,
		"KRW": 0.00069, "ZAR": 0.05, "AED": 0.25,
	}
	firstNames = []string{"Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger", "Radia", "Tim"}
	lastNames  = []string{"Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie", "Allen", "Dijkstra", "Perlman", "Berners-Lee"}
)

// customerCount is the size of the customer base for n orders.
func customerCount(n int) int { return max(100, n/20) }

// EventKind says what happened to an order. evTimeout and evDrain are the
// lifecycle's own events (a state timeout, end of input), never in the
// data.
type EventKind uint8

// The event kinds.
const (
	evPlaced EventKind = iota + 1
	evPaid
	evShipped
	evTimeout
	evDrain
)

var eventNames = [...]string{evPlaced: "placed", evPaid: "paid", evShipped: "shipped", evTimeout: "timeout", evDrain: "drain"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) && eventNames[k] != "" {
		return eventNames[k]
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// generate writes the customer table and the order events of n orders, as
// CSV, to customersPath and ordersPath. A fraction failRate of the placed
// rows is broken: half malformed (the parse stage rejects them), half
// well-formed but invalid (the enrich stage rejects them).
func generate(ordersPath, customersPath string, n int, failRate float64, seed uint64) error {
	countryOf, err := generateCustomers(customersPath, customerCount(n), seed)
	if err != nil {
		return err
	}
	f, err := os.Create(ordersPath)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	g := eventWriter{w: w, buf: make([]byte, 0, 128)}
	g.buf = append(g.buf, ordersHeader...)
	g.flush()
	r := rand.New(rand.NewPCG(seed, 2026))
	spanSec := int64(span / time.Second)
	// Orders are evenly spaced; the paid and shipped events of earlier
	// orders wait in pending, a ring of slots, until the time of the order
	// slot they fall in, and are written before that order, sorted.
	slotOf := func(at int64) int { return int((at*int64(n) + spanSec - 1) / spanSec) } // first slot at or after at
	ring := make([][]pending, slotOf(int64((maxPayDelay+maxShipDelay)/time.Second))+2)
	for i := 1; i <= n; i++ {
		at := spanSec * int64(i) / int64(n)
		slot := &ring[i%len(ring)]
		g.pending(*slot)
		*slot = (*slot)[:0]

		cust := uint32(1 + r.IntN(len(countryOf)))
		c := countries[countryOf[cust-1]]
		qty := 1 + r.IntN(5)
		priceEUR := 100 + r.IntN(50_000) // cents
		price := int64(float64(priceEUR)/eurPer[c.currency] + 0.5)
		g.placed(int64(i), at, cust, 1+r.IntN(500), qty, price, c.currency)
		if failRate > 0 && r.Float64() < failRate {
			g.buf = breakRow(g.buf, r)
		}
		g.flush()
		if r.Float64() < abandonRate {
			continue
		}
		paid := at + randSeconds(r, minPayDelay, maxPayDelay)
		s := &ring[slotOf(paid)%len(ring)]
		*s = append(*s, pending{at: paid, kind: evPaid, order: int64(i), cust: cust})
		if r.Float64() < unshippedRate {
			continue
		}
		shipped := paid + randSeconds(r, minShipDelay, maxShipDelay)
		s = &ring[slotOf(shipped)%len(ring)]
		*s = append(*s, pending{at: shipped, kind: evShipped, order: int64(i), cust: cust})
	}
	var rest []pending
	for i := range ring {
		rest = append(rest, ring[i]...)
	}
	g.pending(rest)
	if err := g.err; err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func randSeconds(r *rand.Rand, lo, hi time.Duration) int64 {
	return int64(lo/time.Second) + r.Int64N(int64((hi-lo)/time.Second)+1)
}

// pending is a paid or shipped event waiting for its time.
type pending struct {
	at    int64 // seconds since epoch
	kind  EventKind
	order int64
	cust  uint32
}

// eventWriter formats the rows of the orders CSV.
type eventWriter struct {
	w    *bufio.Writer
	buf  []byte
	err  error
	day  int64  // of date
	date []byte // "2006-01-02T" of day
}

// appendTime appends epoch+at seconds as 2006-01-02T15:04:05Z, formatting
// the date only when the day changes.
func (g *eventWriter) appendTime(at int64) {
	if day := at / 86400; g.date == nil || day != g.day {
		g.day = day
		g.date = epoch.AddDate(0, 0, int(day)).AppendFormat(g.date[:0], "2006-01-02T")
	}
	g.buf = append(g.buf, g.date...)
	sec := at % 86400
	g.buf = appendPadded(g.buf, sec/3600, 2)
	g.buf = append(g.buf, ':')
	g.buf = appendPadded(g.buf, sec/60%60, 2)
	g.buf = append(g.buf, ':')
	g.buf = appendPadded(g.buf, sec%60, 2)
	g.buf = append(g.buf, 'Z')
}

func (g *eventWriter) flush() {
	g.buf = append(g.buf, '\n')
	if _, err := g.w.Write(g.buf); err != nil && g.err == nil {
		g.err = err
	}
	g.buf = g.buf[:0]
}

func (g *eventWriter) head(kind EventKind, order, at int64, cust uint32) {
	g.buf = append(g.buf, kind.String()...)
	g.buf = append(g.buf, ',')
	g.buf = strconv.AppendInt(g.buf, order, 10)
	g.buf = append(g.buf, ',')
	g.appendTime(at)
	g.buf = append(g.buf, ",C"...)
	g.buf = appendPadded(g.buf, int64(cust), 6)
}

func (g *eventWriter) placed(order, at int64, cust uint32, sku, qty int, price int64, currency string) {
	g.head(evPlaced, order, at, cust)
	g.buf = append(g.buf, ",SKU-"...)
	g.buf = appendPadded(g.buf, int64(sku), 4)
	g.buf = append(g.buf, ',')
	g.buf = strconv.AppendInt(g.buf, int64(qty), 10)
	g.buf = append(g.buf, ',')
	g.buf = strconv.AppendInt(g.buf, price/100, 10)
	g.buf = append(g.buf, '.')
	g.buf = appendPadded(g.buf, price%100, 2)
	g.buf = append(g.buf, ',')
	g.buf = append(g.buf, currency...)
}

// pending writes ps sorted by time (then order).
func (g *eventWriter) pending(ps []pending) {
	slices.SortFunc(ps, func(a, b pending) int {
		if a.at != b.at {
			return int(a.at - b.at)
		}
		return int(a.order - b.order)
	})
	for _, p := range ps {
		g.head(p.kind, p.order, p.at, p.cust)
		g.buf = append(g.buf, ",,,,"...)
		g.flush()
	}
}

func appendPadded(b []byte, v int64, width int) []byte {
	if width == 2 && v >= 0 && v < 100 {
		return append(b, byte('0'+v/10), byte('0'+v%10))
	}
	var d [20]byte
	s := strconv.AppendInt(d[:0], v, 10)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

// breakRow damages a placed row the way real exports do.
func breakRow(line []byte, r *rand.Rand) []byte {
	fields := strings.Split(string(line), ",")
	switch r.IntN(6) {
	case 0: // truncated
		fields = fields[:5]
	case 1:
		fields[5] = "two"
	case 2:
		fields[2] = "2026-13-45T25:61:00Z"
	case 3:
		fields[5] = "0"
	case 4:
		fields[7] = "XXX"
	case 5:
		fields[5] = "-" + fields[5]
	}
	return append(line[:0], strings.Join(fields, ",")...)
}

// generateCustomers writes the customer table of n customers, leaving out
// the deleted ones, and returns each customer's country (an index of
// countries), deleted ones included.
func generateCustomers(path string, n int, seed uint64) ([]uint8, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	r := rand.New(rand.NewPCG(seed, 2027))
	countryOf := make([]uint8, n)
	line := append(make([]byte, 0, 64), customersHeader+"\n"...)
	for i := range n {
		c := uint8(r.IntN(len(countries)))
		countryOf[i] = c
		first, last := firstNames[r.IntN(len(firstNames))], lastNames[r.IntN(len(lastNames))]
		if r.Float64() < deletedRate {
			continue
		}
		line = append(line, 'C')
		line = appendPadded(line, int64(i+1), 6)
		line = append(line, ',')
		line = append(line, first...)
		line = append(line, ' ')
		line = append(line, last...)
		line = append(line, ',')
		line = append(line, countries[c].code...)
		line = append(line, '\n')
		if _, err := w.Write(line); err != nil {
			f.Close()
			return nil, err
		}
		line = line[:0]
	}
	if _, err := w.Write(line); err != nil {
		f.Close()
		return nil, err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return nil, err
	}
	return countryOf, f.Close()
}

// lineSource reads the lines of a CSV file after its header. It reads the
// file in chunks and makes one string of each, so that a line costs no
// allocation of its own. It counts the lines that start with countPrefix.
//
// It is a [stage.Resumable]: its position is the byte offset just after the
// last line it emitted and the count so far, and Resume seeks there.
type lineSource struct {
	path, header string
	countPrefix  string
	counted      atomic.Int64
	f            *os.File
	r            *bufio.Reader
	chunk        string // lines read and not emitted yet
	read         int64  // the file's bytes read so far: chunk ends there
	bodyAt       int64  // the offset of the first line after the header
	eof          bool
}

// linesPerNext bounds the lines one Next call emits.
const linesPerNext = 256

func (s *lineSource) Open(context.Context) error {
	f, err := os.Open(s.path)
	if err != nil {
		return err
	}
	s.f, s.r = f, bufio.NewReaderSize(f, 1<<20)
	header, err := s.r.ReadString('\n')
	if strings.TrimRight(header, "\r\n") != s.header {
		return fmt.Errorf("%s: want the header %q (%v)", s.path, s.header, err)
	}
	s.bodyAt = int64(len(header))
	s.read = s.bodyAt
	return nil
}

func (s *lineSource) Next(_ context.Context, emit func(string)) error {
	if s.chunk == "" {
		if s.eof {
			return io.EOF
		}
		if err := s.fill(); err != nil {
			return err
		}
	}
	for range linesPerNext {
		if s.chunk == "" {
			return nil
		}
		line, rest, _ := strings.Cut(s.chunk, "\n")
		s.chunk = rest
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		if s.countPrefix != "" && strings.HasPrefix(line, s.countPrefix) {
			s.counted.Add(1)
		}
		emit(line)
	}
	return nil
}

// fill reads the next chunk of whole lines (the last line of the file may
// lack its newline).
func (s *lineSource) fill() error {
	buf := make([]byte, 1<<18)
	n, err := io.ReadFull(s.r, buf)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		s.eof = true
	case err != nil:
		return err
	}
	buf = buf[:n]
	if !s.eof && buf[n-1] != '\n' {
		rest, err := s.r.ReadBytes('\n')
		buf = append(buf, rest...)
		if errors.Is(err, io.EOF) {
			s.eof = true
		} else if err != nil {
			return err
		}
	}
	s.chunk = string(buf)
	s.read += int64(len(buf))
	return nil
}

// Position returns the offset just after the last line emitted and the
// count of lines with countPrefix, as two uvarints.
func (s *lineSource) Position() ([]byte, error) {
	pos := binary.AppendUvarint(nil, uint64(s.read-int64(len(s.chunk))))
	return binary.AppendUvarint(pos, uint64(s.counted.Load())), nil
}

// errPosition is the error of a Resume whose position does not fit its
// file or its sink: the checkpoint is not of these files.
var errPosition = errors.New("position does not fit the file")

// Resume goes on with the line at the offset pos holds, which must be
// within the file's lines.
func (s *lineSource) Resume(_ context.Context, pos []byte) error {
	off, count, err := decodePosition(pos)
	if err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	fi, err := s.f.Stat()
	if err != nil {
		return err
	}
	if off < s.bodyAt || off > fi.Size() {
		return fmt.Errorf("%s: %w: offset %d, lines from %d to %d", s.path, errPosition, off, s.bodyAt, fi.Size())
	}
	if _, err := s.f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	s.r.Reset(s.f)
	s.chunk, s.read, s.eof = "", off, false
	s.counted.Store(count)
	return nil
}

// decodePosition decodes the two uvarints of a position: an offset and a
// count.
func decodePosition(pos []byte) (off, count int64, err error) {
	o, n := binary.Uvarint(pos)
	if n <= 0 {
		return 0, 0, fmt.Errorf("%w: %x is not a position", errPosition, pos)
	}
	c, m := binary.Uvarint(pos[n:])
	if m <= 0 || n+m != len(pos) || o > math.MaxInt64 || c > math.MaxInt64 {
		return 0, 0, fmt.Errorf("%w: %x is not a position", errPosition, pos)
	}
	return int64(o), int64(c), nil
}

func (s *lineSource) Close() error { return s.f.Close() }

// Customer is one row of the customer table.
type Customer struct {
	ID      uint32
	Name    string
	Country string
	Region  string
}

// Event is one parsed row of the orders CSV. The order's fields are set
// for a placed event only; amounts are in cents.
type Event struct {
	Kind      EventKind
	Quantity  int32
	Order     int64
	At        int64 // seconds since epoch
	Customer  uint32
	UnitPrice int64
	Currency  string
}

// OrderEvent is a checked event, its amount in EUR: what enrich emits, and
// the join completes with the customer. It is small (40 bytes) because
// every event is copied from stage to stage.
type OrderEvent struct {
	Order    int64
	TotalEUR int64     // cents; placed events only
	Cust     *Customer // set by the join
	At       uint32    // seconds since epoch
	Customer uint32
	Quantity uint16 // placed events only
	Kind     EventKind
	Country  uint8 // index in countries, set by the join
}

// String formats the event for error messages (and so dead letters)
// without the customer's address, so that they read the same in every run.
func (e OrderEvent) String() string {
	return fmt.Sprintf("%s of order %d at %d (customer C%06d)", e.Kind, e.Order, e.At, e.Customer)
}

var (
	errMalformed = errors.New("malformed row")
	errInvalid   = errors.New("invalid order")
)

// parseEvent parses one row of the orders CSV.
func parseEvent(_ context.Context, line string, emit func(Event)) error {
	var f [8]string
	rest := line
	for i := range f {
		var ok bool
		f[i], rest, ok = strings.Cut(rest, ",")
		if !ok && i < len(f)-1 {
			return fmt.Errorf("%w: %d fields, want 8", errMalformed, i+1)
		}
	}
	var e Event
	switch f[0] {
	case "placed":
		e.Kind = evPlaced
	case "paid":
		e.Kind = evPaid
	case "shipped":
		e.Kind = evShipped
	default:
		return fmt.Errorf("%w: event %q", errMalformed, f[0])
	}
	var err error
	if e.Order, err = strconv.ParseInt(f[1], 10, 64); err != nil {
		return fmt.Errorf("%w: order_id %q", errMalformed, f[1])
	}
	at, ok := parseTime(f[2])
	if !ok {
		return fmt.Errorf("%w: order %d: at %q", errMalformed, e.Order, f[2])
	}
	if e.At = int64(at.Sub(epoch) / time.Second); e.At < 0 || e.At > math.MaxUint32 {
		return fmt.Errorf("%w: order %d: at %q out of range", errMalformed, e.Order, f[2])
	}
	if e.Customer, err = parseCustomerID(f[3]); err != nil {
		return fmt.Errorf("%w: order %d: customer_id %q", errMalformed, e.Order, f[3])
	}
	if e.Kind == evPlaced {
		qty, err := strconv.ParseInt(f[5], 10, 32)
		if err != nil {
			return fmt.Errorf("%w: order %d: quantity %q", errMalformed, e.Order, f[5])
		}
		e.Quantity = int32(qty)
		if e.UnitPrice, err = parseCents(f[6]); err != nil {
			return fmt.Errorf("%w: order %d: unit_price %q", errMalformed, e.Order, f[6])
		}
		e.Currency = f[7]
	}
	emit(e)
	return nil
}

// parseTime parses a UTC time in the form 2006-01-02T15:04:05Z, the form
// the generator writes, without time.Parse's generality; other forms go to
// time.Parse.
func parseTime(s string) (time.Time, bool) {
	if len(s) == 20 && s[4] == '-' && s[7] == '-' && s[10] == 'T' && s[13] == ':' && s[16] == ':' && s[19] == 'Z' {
		num := func(i, n int) int {
			v := 0
			for _, c := range []byte(s[i : i+n]) {
				if c < '0' || c > '9' {
					return -1
				}
				v = v*10 + int(c-'0')
			}
			return v
		}
		y, mo, d, h, mi, sec := num(0, 4), num(5, 2), num(8, 2), num(11, 2), num(14, 2), num(17, 2)
		if y >= 0 && mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h >= 0 && h < 24 && mi >= 0 && mi < 60 && sec >= 0 && sec < 60 {
			t := time.Date(y, time.Month(mo), d, h, mi, sec, 0, time.UTC)
			return t, t.Day() == d // no 31 February
		}
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, s)
	return t, err == nil
}

func parseCustomerID(s string) (uint32, error) {
	if len(s) < 2 || s[0] != 'C' {
		return 0, errMalformed
	}
	id, err := strconv.ParseUint(s[1:], 10, 32)
	return uint32(id), err
}

func parseCents(s string) (int64, error) {
	units, cents, _ := strings.Cut(s, ".")
	u, err := strconv.ParseInt(units, 10, 64)
	if err != nil || len(cents) > 2 {
		return 0, errMalformed
	}
	var c int64
	if cents != "" {
		if c, err = strconv.ParseInt(cents, 10, 64); err != nil {
			return 0, errMalformed
		}
		if len(cents) == 1 {
			c *= 10
		}
	}
	return u*100 + c, nil
}

// customerRef is a reference item of the join: a customer and, next to the
// pointer, its country, so that enriching an event reads only the join's
// table.
type customerRef struct {
	c       *Customer
	country uint8
}

// parseCustomer parses one row of the customer table.
func parseCustomer(_ context.Context, line string, emit func(customerRef)) error {
	id, rest, _ := strings.Cut(line, ",")
	name, country, ok := strings.Cut(rest, ",")
	cid, err := parseCustomerID(id)
	if err != nil || !ok {
		return fmt.Errorf("%w: customer %q", errMalformed, line)
	}
	for i, c := range countries {
		if c.code == country {
			emit(customerRef{c: &Customer{ID: cid, Name: name, Country: c.code, Region: c.region}, country: uint8(i)})
			return nil
		}
	}
	return fmt.Errorf("%w: customer %s: country %q", errMalformed, id, country)
}

// enricher validates a placed order and converts its total to EUR; other
// events pass. Its fault knobs inject panics and a fatal error on placed
// orders.
type enricher struct {
	panicEvery int64
	fatalAt    int64
}

func (x enricher) Process(_ context.Context, e Event, emit func(OrderEvent)) error {
	out := OrderEvent{Order: e.Order, At: uint32(e.At), Customer: e.Customer, Kind: e.Kind}
	if e.Kind != evPlaced {
		emit(out)
		return nil
	}
	if x.fatalAt > 0 && e.Order == x.fatalAt {
		return fatal(fmt.Errorf("currency service unreachable at order %d", e.Order))
	}
	if x.panicEvery > 0 && e.Order%x.panicEvery == 0 {
		panic(fmt.Sprintf("injected panic (-panic-every) at order %d", e.Order))
	}
	rate, ok := eurPer[e.Currency]
	switch {
	case e.Quantity <= 0 || e.Quantity > 1000:
		return fmt.Errorf("%w: order %d: quantity %d", errInvalid, e.Order, e.Quantity)
	case !ok:
		return fmt.Errorf("%w: order %d: unknown currency %q", errInvalid, e.Order, e.Currency)
	case e.UnitPrice <= 0:
		return fmt.Errorf("%w: order %d: unit price %d", errInvalid, e.Order, e.UnitPrice)
	}
	out.Quantity, out.TotalEUR = uint16(e.Quantity), totalEUR(e.UnitPrice, int64(e.Quantity), rate)
	emit(out)
	return nil
}

// totalEUR is an order's total in EUR cents.
func totalEUR(unitPrice, qty int64, rate float64) int64 {
	return int64(float64(unitPrice*qty) * rate)
}

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The data set: orders of an online shop over 30 days, as CSV.
const csvHeader = "order_id,created_at,customer_id,country,sku,quantity,unit_price,currency"

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
	eurPer = map[string]float64{
		"EUR": 1, "GBP": 1.17, "SEK": 0.087, "PLN": 0.23, "CHF": 1.05, "USD": 0.92, "CAD": 0.68,
		"MXN": 0.054, "BRL": 0.18, "JPY": 0.0062, "AUD": 0.61, "INR": 0.011, "SGD": 0.69,
		"KRW": 0.00069, "ZAR": 0.05, "AED": 0.25,
	}
	regionOf = func() map[string]string {
		m := map[string]string{}
		for _, c := range countries {
			m[c.code] = c.region
		}
		return m
	}()
)

// generate writes a header and n orders as CSV to path, sorted by time. A fraction
// failRate of the rows is broken: half malformed (the parse stage rejects
// them), half well-formed but invalid (the enrich stage rejects them).
func generate(path string, n int, failRate float64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := w.WriteString(csvHeader + "\n"); err != nil {
		f.Close()
		return err
	}
	r := rand.New(rand.NewPCG(seed, 2026))
	span := 30 * 24 * time.Hour
	var line []byte
	for i := 1; i <= n; i++ {
		c := countries[r.IntN(len(countries))]
		at := epoch.Add(time.Duration(int64(span) / int64(n) * int64(i)))
		qty := 1 + r.IntN(5)
		price := 100 + r.IntN(50_000) // cents
		line = strconv.AppendInt(line[:0], int64(i), 10)
		line = append(line, ',')
		line = at.AppendFormat(line, time.RFC3339)
		line = fmt.Appendf(line, ",C%06d,%s,SKU-%04d,%d,%d.%02d,%s", 1+r.IntN(200_000), c.code,
			1+r.IntN(500), qty, price/100, price%100, c.currency)
		if failRate > 0 && r.Float64() < failRate {
			line = breakRow(line, r)
		}
		line = append(line, '\n')
		if _, err := w.Write(line); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// breakRow damages a row the way real exports do.
func breakRow(line []byte, r *rand.Rand) []byte {
	fields := strings.Split(string(line), ",")
	switch r.IntN(6) {
	case 0: // truncated
		fields = fields[:5]
	case 1:
		fields[5] = "two"
	case 2:
		fields[1] = "2026-13-45T25:61:00Z"
	case 3:
		fields[5] = "0"
	case 4:
		fields[7] = "XXX"
	case 5:
		fields[5] = "-" + fields[5]
	}
	return []byte(strings.Join(fields, ","))
}

// csvSource reads the lines of a CSV file, skipping the header.
type csvSource struct {
	path string
	f    *os.File
	sc   *bufio.Scanner
}

func (s *csvSource) Open(context.Context) error {
	f, err := os.Open(s.path)
	if err != nil {
		return err
	}
	s.f = f
	s.sc = bufio.NewScanner(f)
	s.sc.Buffer(make([]byte, 0, 1<<16), 1<<20)
	if !s.sc.Scan() || s.sc.Text() != csvHeader {
		return fmt.Errorf("%s: not an orders CSV (want header %q)", s.path, csvHeader)
	}
	return nil
}

func (s *csvSource) Next(_ context.Context, emit func(string)) error {
	if !s.sc.Scan() {
		if err := s.sc.Err(); err != nil {
			return err
		}
		return io.EOF
	}
	emit(s.sc.Text())
	return nil
}

func (s *csvSource) Close() error { return s.f.Close() }

// Order is one parsed order. Amounts are in cents.
type Order struct {
	ID        int64
	At        time.Time
	Customer  string
	Country   string
	SKU       string
	Quantity  int
	UnitPrice int64
	Currency  string
	// Set by enrich:
	Region   string
	TotalEUR int64
}

var (
	errMalformed = errors.New("malformed row")
	errInvalid   = errors.New("invalid order")
	errLate      = errors.New("order arrived after its window closed")
)

// parseOrder parses one CSV row.
func parseOrder(_ context.Context, line string, emit func(Order)) error {
	var f [8]string
	rest := line
	for i := range f {
		var ok bool
		f[i], rest, ok = strings.Cut(rest, ",")
		if !ok && i < len(f)-1 {
			return fmt.Errorf("%w: %d fields, want 8", errMalformed, i+1)
		}
	}
	id, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return fmt.Errorf("%w: order_id %q", errMalformed, f[0])
	}
	at, err := time.Parse(time.RFC3339, f[1])
	if err != nil {
		return fmt.Errorf("%w: order %d: created_at %q", errMalformed, id, f[1])
	}
	qty, err := strconv.Atoi(f[5])
	if err != nil {
		return fmt.Errorf("%w: order %d: quantity %q", errMalformed, id, f[5])
	}
	price, err := parseCents(f[6])
	if err != nil {
		return fmt.Errorf("%w: order %d: unit_price %q", errMalformed, id, f[6])
	}
	emit(Order{ID: id, At: at, Customer: f[2], Country: f[3], SKU: f[4], Quantity: qty, UnitPrice: price, Currency: f[7]})
	return nil
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

// enricher validates an order and converts its total to EUR. Its fault
// knobs inject panics and a fatal error.
type enricher struct {
	panicEvery int64
	fatalAt    int64
}

func (e enricher) Process(_ context.Context, o Order, emit func(Order)) error {
	if e.fatalAt > 0 && o.ID == e.fatalAt {
		return fatal(fmt.Errorf("currency service unreachable at order %d", o.ID))
	}
	if e.panicEvery > 0 && o.ID%e.panicEvery == 0 {
		panic(fmt.Sprintf("injected panic (-panic-every) at order %d", o.ID))
	}
	rate, ok := eurPer[o.Currency]
	switch {
	case o.Quantity <= 0:
		return fmt.Errorf("%w: order %d: quantity %d", errInvalid, o.ID, o.Quantity)
	case !ok:
		return fmt.Errorf("%w: order %d: unknown currency %q", errInvalid, o.ID, o.Currency)
	case o.UnitPrice <= 0:
		return fmt.Errorf("%w: order %d: unit price %d", errInvalid, o.ID, o.UnitPrice)
	}
	o.Region = regionOf[o.Country]
	o.TotalEUR = int64(float64(o.UnitPrice*int64(o.Quantity)) * rate)
	emit(o)
	return nil
}

// Row is one line of the output: a country's revenue in one hour.
type Row struct {
	Hour       time.Time `json:"hour"`
	Country    string    `json:"country"`
	Region     string    `json:"region"`
	Orders     int       `json:"orders"`
	Units      int       `json:"units"`
	RevenueEUR float64   `json:"revenue_eur"`
	AvgEUR     float64   `json:"avg_order_eur"`
}

// hourly aggregates orders into hourly rows per country (tumbling windows).
// Orders come sorted by time: when one opens a new hour, the rows of the
// previous hour are complete and go out at once; Drain emits the last hour.
type hourly struct {
	hour time.Time
	rows map[string]*aggRow
}

type aggRow struct {
	region         string
	orders, units  int
	revenueEURCent int64
}

func (h *hourly) Process(_ context.Context, o Order, emit func(Row)) error {
	hour := o.At.Truncate(time.Hour)
	switch {
	case h.rows == nil:
		h.hour, h.rows = hour, map[string]*aggRow{}
	case hour.Before(h.hour):
		return fmt.Errorf("%w: order %d at %s, window %s", errLate, o.ID, o.At.Format(time.RFC3339), h.hour.Format(time.RFC3339))
	case hour.After(h.hour):
		h.emitHour(emit)
		h.hour = hour
	}
	r := h.rows[o.Country]
	if r == nil {
		r = &aggRow{region: o.Region}
		h.rows[o.Country] = r
	}
	r.orders++
	r.units += o.Quantity
	r.revenueEURCent += o.TotalEUR
	return nil
}

func (h *hourly) Drain(_ context.Context, emit func(Row)) error {
	h.emitHour(emit)
	return nil
}

func (h *hourly) emitHour(emit func(Row)) {
	keys := make([]string, 0, len(h.rows))
	for k := range h.rows {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		r := h.rows[k]
		rev := float64(r.revenueEURCent) / 100
		emit(Row{Hour: h.hour, Country: k, Region: r.region, Orders: r.orders, Units: r.units,
			RevenueEUR: rev, AvgEUR: float64(int64(rev/float64(r.orders)*100)) / 100})
	}
	clear(h.rows)
}

// Command metricsdemo runs a small order pipeline — orders → validate →
// price → ledger — and serves its metrics for Prometheus while it runs.
//
//	go run ./examples/metricsdemo -metrics 127.0.0.1:9464 -orders 5000 -linger 1m
//
// Flags:
//
//	-metrics ADDR  serve /metrics on ADDR (host:port; port 0 picks one); empty: no server
//	-linger D      keep serving for D after the pipeline has ended (default 0)
//	-orders N      orders to process; 0 runs until interrupted (default 1000)
//	-pace D        time between two orders (default 1ms)
//
// Every seventh order has no amount and is dead-lettered by validate, so
// the failure metrics move too. The batch duration histogram is on
// (stage.WithLatency). An interrupt drains the pipeline and stops.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stagefsm/stagefsm/contrib/promstage"
	"github.com/stagefsm/stagefsm/stage"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "metricsdemo:", err)
		os.Exit(1)
	}
}

// order is one order of the demo.
type order struct {
	ID     int
	Amount int // cents; 0 is invalid
}

// errNoAmount is validate's error for an order without an amount.
var errNoAmount = errors.New("order has no amount")

// pipeline builds orders → validate → price → ledger over n orders (0:
// unbounded), one per pace, adding the priced amounts to *total.
func pipeline(n int, pace time.Duration, total *int) *stage.Pipeline {
	next := 0
	orders := stage.SourceFunc[order](func(ctx context.Context, emit func(order)) error {
		if n > 0 && next == n {
			return io.EOF
		}
		if pace > 0 {
			t := time.NewTimer(pace)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		next++
		o := order{ID: next, Amount: 100 * (next%13 + 1)}
		if next%7 == 0 {
			o.Amount = 0
		}
		emit(o)
		return nil
	})
	validate := stage.TransformFunc[order, order](func(_ context.Context, o order, emit func(order)) error {
		if o.Amount <= 0 {
			return fmt.Errorf("order %d: %w", o.ID, errNoAmount)
		}
		emit(o)
		return nil
	})
	price := stage.TransformFunc[order, int](func(_ context.Context, o order, emit func(int)) error {
		emit(o.Amount + o.Amount/5) // 20% tax
		return nil
	})
	ledger := stage.SinkFunc[int](func(_ context.Context, cents int) error {
		*total += cents
		return nil
	})
	c := stage.Then(stage.Then(stage.From("orders", orders), "validate", validate), "price", price)
	return stage.To(c, "ledger", ledger, stage.WithName("orders"), stage.WithLatency(true),
		stage.WithBatchSize(16), stage.WithDeadLetter(func(stage.Item[any]) {}))
}

// run parses args, runs the pipeline and serves its metrics; listening
// (if not nil) is called with the address once the server listens. It
// returns when the pipeline has ended and the linger time is over, or
// when ctx is done (the pipeline is then drained).
func run(ctx context.Context, args []string, out io.Writer, listening func(addr string)) error {
	fs := flag.NewFlagSet("metricsdemo", flag.ContinueOnError)
	fs.SetOutput(out)
	addr := fs.String("metrics", "", "serve /metrics on `ADDR`; empty: no server")
	linger := fs.Duration("linger", 0, "keep serving for `D` after the pipeline has ended")
	n := fs.Int("orders", 1000, "orders to process; 0 runs until interrupted")
	pace := fs.Duration("pace", time.Millisecond, "time between two orders")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 0 || *linger < 0 || *pace < 0 {
		return errors.New("-orders, -linger and -pace must not be negative")
	}
	total := 0
	p := pipeline(*n, *pace, &total)

	if *addr != "" {
		c, err := promstage.New("orders", p)
		if err != nil {
			return err
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(c)
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		defer func() {
			_ = srv.Close()
			<-served
		}()
		fmt.Fprintf(out, "serving http://%s/metrics\n", ln.Addr())
		if listening != nil {
			listening(ln.Addr().String())
		}
	}

	// The pipeline outlives ctx: when ctx is done it is drained, not
	// aborted, so that what was emitted is still accounted for.
	if err := p.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
		p.Drain()
	}
	err := p.Wait(context.Background())
	st := p.Stats()
	fmt.Fprintf(out, "emitted=%d delivered=%d dead-lettered=%d total=%d cents\n",
		st.Emitted, st.Delivered, st.DeadLettered, total)
	if err != nil || *addr == "" || *linger == 0 {
		return err
	}
	t := time.NewTimer(*linger)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}

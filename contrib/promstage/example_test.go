package promstage_test

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stagefsm/stagefsm/contrib/promstage"
)

// A Collector registered with a registry exports the pipeline's stats at
// every gather (here after the run; a /metrics handler would gather while
// it runs).
func ExampleNew() {
	p := numbers("1\n2\nthree\n4")
	reg := prometheus.NewRegistry()
	c, err := promstage.New("numbers", p)
	if err != nil {
		fmt.Println(err)
		return
	}
	reg.MustRegister(c)
	if err := p.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Wait(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	families, err := reg.Gather()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range families {
		if f.GetName() != "stagefsm_stage_items_delivered_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			fmt.Println(m.GetLabel()[2].GetValue(), m.GetCounter().GetValue())
		}
	}
	// Output:
	// print 3
	// read 0
	// parse 3
	// square 3
}

// WithStages makes a Collector for single stages.
func ExampleWithStages() {
	p := numbers("1\nx")
	c, err := promstage.New("numbers", p, promstage.WithStages("parse"))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Wait(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	families, _ := reg.Gather()
	for _, f := range families {
		if f.GetName() == "stagefsm_stage_items_dead_lettered_total" {
			m := f.GetMetric()[0]
			fmt.Println(len(f.GetMetric()), m.GetCounter().GetValue())
		}
	}
	// Output:
	// 1 1
}

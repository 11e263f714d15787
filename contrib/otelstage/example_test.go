package otelstage_test

import (
	"context"
	"fmt"

	"github.com/stagefsm/stagefsm/contrib/otelstage"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Register observes a pipeline's stats whenever the SDK collects; here a
// manual reader collects once after the run.
func ExampleRegister() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()

	p := numbers("1\n2\nthree")
	if _, err := otelstage.Register(mp.Meter("example"), "numbers", p); err != nil {
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
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name == "stagefsm.stage.items.dead_lettered" {
			for _, dp := range m.Data.(metricdata.Sum[float64]).DataPoints {
				if dp.Value > 0 {
					stage, _ := dp.Attributes.Value("stage")
					fmt.Println(stage.AsString(), dp.Value)
				}
			}
		}
	}
	// Output:
	// parse 1
}

// WithStages observes single stages only.
func ExampleWithStages() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	p := numbers("1\n2")
	if _, err := otelstage.Register(mp.Meter("example"), "numbers", p, otelstage.WithStages("print")); err != nil {
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
	var rm metricdata.ResourceMetrics
	_ = reader.Collect(context.Background(), &rm)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name == "stagefsm.stage.items.delivered" {
			dps := m.Data.(metricdata.Sum[float64]).DataPoints
			fmt.Println(len(dps), dps[0].Value)
		}
	}
	// Output:
	// 1 2
}

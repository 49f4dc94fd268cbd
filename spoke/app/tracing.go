package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// TracingOptions configure OpenTelemetry tracing of the EPP's routing decisions (pkg/epp's
// tracing.go): off unless an OTLP collector is named.
type TracingOptions struct {
	// Endpoint is the OTLP/gRPC collector's host:port; empty: no tracing.
	Endpoint string
	// Insecure sends spans in plaintext instead of TLS (the system's roots verify the collector).
	Insecure bool
	// SampleRatio is the share of requests without a sampled parent that are traced; a request
	// whose traceparent says sampled is always traced.
	SampleRatio float64
}

// AddFlags binds the tracing options to flags.
func (t *TracingOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&t.Endpoint, "tracing-endpoint", t.Endpoint, "host:port of an OTLP/gRPC collector: trace each EPP routing decision (spans epp.decide, epp.admit, epp.spill, epp.shed, epp.pick; a spilled request carries its traceparent on); empty: no tracing")
	fs.BoolVar(&t.Insecure, "tracing-insecure", t.Insecure, "send spans to --tracing-endpoint in plaintext instead of TLS")
	fs.Float64Var(&t.SampleRatio, "tracing-sample-ratio", t.SampleRatio, "share of requests traced when the request's traceparent does not decide (0..1)")
}

func (t TracingOptions) errors() []error {
	var errs []error
	if !(t.SampleRatio >= 0 && t.SampleRatio <= 1) {
		errs = append(errs, fmt.Errorf("--tracing-sample-ratio %v: want 0..1", t.SampleRatio))
	}
	if t.Insecure && t.Endpoint == "" {
		errs = append(errs, errors.New("--tracing-insecure without --tracing-endpoint"))
	}
	return errs
}

// newTracerProvider exports the spoke's spans to the collector, batched; the caller shuts it
// down, which sends what is left.
func newTracerProvider(t TracingOptions, cluster string) (*sdktrace.TracerProvider, error) {
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(t.Endpoint), otlptracegrpc.WithTimeout(5 * time.Second)}
	if t.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	// The exporter connects lazily: a collector that is down loses spans, never blocks a request.
	exp, err := otlptracegrpc.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("--tracing-endpoint %s: %w", t.Endpoint, err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", "spillway-spoke"), attribute.String("spillway.cluster", cluster),
		attribute.String("service.version", Version))
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(t.SampleRatio)))), nil
}

package app

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// collector is an OTLP/gRPC trace collector that keeps what it receives.
type collector struct {
	collectorpb.UnimplementedTraceServiceServer
	mu   sync.Mutex
	reqs []*collectorpb.ExportTraceServiceRequest
}

func (c *collector) Export(_ context.Context, r *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, r)
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// TestTracerProviderExportsToTheCollector: the spoke's spans reach the collector over OTLP/gRPC,
// named for the spoke and its cluster, by the time the provider is shut down.
func TestTracerProviderExportsToTheCollector(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	srv := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(srv, c)
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()

	tp, err := newTracerProvider(TracingOptions{Endpoint: l.Addr().String(), Insecure: true, SampleRatio: 1}, "us-east-1")
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("test").Start(context.Background(), "epp.decide")
	span.End()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var names, resource []string
	for _, r := range c.reqs {
		for _, rs := range r.GetResourceSpans() {
			for _, kv := range rs.GetResource().GetAttributes() {
				resource = append(resource, kv.GetKey()+"="+kv.GetValue().GetStringValue())
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					names = append(names, s.GetName())
				}
			}
		}
	}
	if strings.Join(names, ",") != "epp.decide" || !strings.Contains(strings.Join(resource, ","), "service.name=spillway-spoke") ||
		!strings.Contains(strings.Join(resource, ","), "spillway.cluster=us-east-1") {
		t.Fatalf("collector received spans %v with resource %v", names, resource)
	}
}

func TestTracingOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		o    TracingOptions
		want string
	}{
		{TracingOptions{Endpoint: "c:4317", SampleRatio: 1.5}, "--tracing-sample-ratio 1.5"},
		{TracingOptions{Insecure: true, SampleRatio: 1}, "--tracing-insecure without --tracing-endpoint"},
	} {
		if errs := tc.o.errors(); len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) {
			t.Errorf("%+v: %v, want an error saying %q", tc.o, errs, tc.want)
		}
	}
	if errs := (TracingOptions{Endpoint: "c:4317", SampleRatio: 0.1}).errors(); len(errs) != 0 {
		t.Errorf("good options refused: %v", errs)
	}
}

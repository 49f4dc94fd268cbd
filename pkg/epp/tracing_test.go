package epp_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/spillway-io/spillway/e2e/extproctest"
	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/pkg/spill"
)

// TestTracingOfTheDecision: a request's decision is a span under the trace its traceparent
// names, with a span per stage; a spilled request carries the spill span's traceparent on, so
// the remote cluster's EPP continues the same trace.
func TestTracingOfTheDecision(t *testing.T) {
	settings, err := epp.ParseConfig([]byte("objectives:\n- {name: critical, priority: Critical}\n"))
	if err != nil {
		t.Fatal(err)
	}
	remote := spill.Remote{ClusterID: "us-west-1", Region: "us-west", Gateway: "127.0.2.254:8080", Alive: true, ReadyEndpoints: 3}
	dec, err := spill.New(spill.DefaultPolicy(), func() []spill.Remote { return []spill.Remote{remote} })
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	st := &store{eps: []epp.Endpoint{ep("10.0.0.1:8000", modelmetrics.Metrics{WaitingQueue: 1}), ep("10.0.0.2:8000", modelmetrics.Metrics{})}}
	srv, err := epp.New(epp.Options{Pool: pool, Settings: settings, Datastore: st, Registerer: prometheus.NewRegistry(), Spill: dec,
		ClusterID: "us-east-1", HopKeys: testHopKeys, Tracer: tp.Tracer("spillway/epp")})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: srv, store: st, client: &gateway.Client{EPP: extproctest.Serve(t, srv)}}
	const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	spans := func() map[string]sdktrace.ReadOnlySpan {
		out := map[string]sdktrace.ReadOnlySpan{}
		for _, s := range rec.Ended() {
			out[s.Name()] = s
		}
		rec.Reset()
		return out
	}
	attr := func(s sdktrace.ReadOnlySpan, key string) attribute.Value {
		for _, kv := range s.Attributes() {
			if string(kv.Key) == key {
				return kv.Value
			}
		}
		return attribute.Value{}
	}

	// Local: decide under the caller's span, with admit, spill, shed and pick beneath it.
	d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, "critical", "traceparent", incoming), completion, nil)
	got := spans()
	root := got["epp.decide"]
	if root == nil || root.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || root.Parent().SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("no epp.decide span under the incoming trace: %v", got)
	}
	for _, name := range []string{"epp.admit", "epp.spill", "epp.shed", "epp.pick"} {
		if s := got[name]; s == nil || s.Parent().SpanID() != root.SpanContext().SpanID() {
			t.Errorf("no %s span under epp.decide", name)
		}
	}
	if r := attr(root, "spillway.result").AsString(); r != "routed" || strings.Join(attr(root, "spillway.destination").AsStringSlice(), ",") != strings.Join(d.Destinations, ",") {
		t.Errorf("epp.decide result %q destination %v; routed to %v", r, attr(root, "spillway.destination").AsStringSlice(), d.Destinations)
	}

	// Saturated: the request spills, and the remote gets the spill span's traceparent.
	dec.ObserveLocal(spill.Local{ReadyEndpoints: 2, QueueDepth: 18, Saturation: 1, Saturated: true})
	d = h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, "critical", "traceparent", incoming), completion, nil)
	got = spans()
	sp := got["epp.spill"]
	if d.Destinations[0] != remote.Gateway || sp == nil || !attr(sp, "spillway.spill").AsBool() || attr(sp, "spillway.spill_target").AsString() != "us-west-1" {
		t.Fatalf("spilled to %v; spill span %v", d.Destinations, sp)
	}
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + sp.SpanContext().SpanID().String() + "-01"
	if d.SetHeaders["traceparent"] != want {
		t.Fatalf("the spilled request carries traceparent %q, want %q (the spill span's)", d.SetHeaders["traceparent"], want)
	}
	if got["epp.pick"] != nil {
		t.Error("a spilled request has a pick span")
	}
}

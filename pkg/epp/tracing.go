package epp

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing of the routing decision (OpenTelemetry; off unless Options.Tracer is set): a span
// epp.decide per request, a child of the trace the request's W3C traceparent header names, with
// a child span per stage: epp.admit (parse and objective), epp.spill (the spill decision),
// epp.shed (the saturation detector) and epp.pick (the scheduler). A request spilled in Parent
// Mode carries the spill span's traceparent to the remote gateway, whose EPP continues the trace.
//
// Span names and attributes are in docs/observability.md.

// propagator reads and writes W3C trace context.
var propagator = propagation.TraceContext{}

// decideTrace is one request's decision as it is traced; nil when tracing is off, and every
// method of a nil one does nothing.
type decideTrace struct {
	tracer trace.Tracer
	ctx    context.Context
	root   trace.Span
	stage  trace.Span
}

// startTrace starts the request's epp.decide span, or returns nil when tracing is off or the
// decision is an explanation.
func (s *Server) startTrace(x *exchange) *decideTrace {
	if s.tracer == nil || x.explain != nil {
		return nil
	}
	ctx := propagator.Extract(context.Background(), propagation.MapCarrier(x.headers))
	ctx, root := s.tracer.Start(ctx, "epp.decide", trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String("spillway.pool", s.pool.String()),
		attribute.String("spillway.objective", x.objective),
		attribute.Int("spillway.priority", x.priority)))
	return &decideTrace{tracer: s.tracer, ctx: ctx, root: root}
}

// begin ends the current stage's span, if any, and starts name's.
func (t *decideTrace) begin(name string) {
	if t == nil {
		return
	}
	t.endStage()
	_, t.stage = t.tracer.Start(t.ctx, name)
}

// set adds attributes to the current stage's span.
func (t *decideTrace) set(attrs ...attribute.KeyValue) {
	if t == nil || t.stage == nil {
		return
	}
	t.stage.SetAttributes(attrs...)
}

func (t *decideTrace) endStage() {
	if t.stage != nil {
		t.stage.End()
		t.stage = nil
	}
}

// traceparent is the W3C traceparent of the current stage's span, for the request sent on.
func (t *decideTrace) traceparent() string {
	if t == nil || t.stage == nil {
		return ""
	}
	carrier := propagation.MapCarrier{}
	propagator.Inject(trace.ContextWithSpan(t.ctx, t.stage), carrier)
	return carrier["traceparent"]
}

// end ends the stage and the request's span, with the decision's outcome.
func (t *decideTrace) end(x *exchange) {
	if t == nil {
		return
	}
	t.endStage()
	t.root.SetAttributes(attribute.String("spillway.result", x.result), attribute.String("spillway.model", x.req.Model),
		attribute.String("spillway.target_model", x.target))
	if x.dest != "" {
		t.root.SetAttributes(attribute.StringSlice("spillway.destination", strings.Split(x.dest, ",")))
	}
	if x.result != resultRouted && x.result != resultSpilled {
		t.root.SetStatus(codes.Error, x.result)
	}
	t.root.End()
}

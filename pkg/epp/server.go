// Package epp is Spillway's Endpoint Picker: an Envoy ext_proc service that speaks GIE's
// endpoint-picker protocol, so any GIE-conformant gateway (Envoy Gateway, kgateway, Istio, GKE)
// can ask it where each inference request goes.
//
// Per request (one ext_proc stream): the request headers are recorded and the request's
// InferenceObjective (header x-gateway-inference-objective) resolved to a known name and its
// priority; the body arrives in chunks (FULL_DUPLEX_STREAMED, or whole when the gateway buffers
// it); at its end the EPP decides in stages (decide.go): it parses the OpenAI body, applies model
// routing, keeps the candidate endpoints, asks the spill policy whether the request leaves the
// cluster (never when it carries a hop marker that verifies: another cluster spilled it here,
// hop.go), asks the saturation detector whether the pool has headroom (sheddable requests,
// priority < 0, get 429 with Retry-After when it has none), picks the endpoint and fallbacks with
// the scheduler, and answers with the x-gateway-destination-endpoint header, the same value in
// dynamic metadata envoy.lb, and the (possibly rewritten) body. On the response side it measures
// time to first token and duration and reads token usage, including from the final SSE event of a
// streamed response.
package epp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/pkg/budget"
	"github.com/spillway-io/spillway/pkg/epp/prefix"
	"github.com/spillway-io/spillway/pkg/epp/request"
	"github.com/spillway-io/spillway/pkg/epp/scheduler"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/spill"
)

// Protocol names of GIE's endpoint-picker protocol.
const (
	DestinationHeader   = "x-gateway-destination-endpoint"
	DestinationMetadata = "envoy.lb"
	SubsetNamespace     = "envoy.lb.subset_hint"
	SubsetKey           = "x-gateway-destination-endpoint-subset"
	ServedKey           = "x-gateway-destination-endpoint-served"
	ObjectiveHeader     = "x-gateway-inference-objective"
	// HopHeader carries the signed hop marker of a request another cluster's EPP sent here
	// (hop.go): such a request is never spilled again.
	HopHeader = "x-spillway-hop"
	// ProbeHeader marks another spoke's round-trip probe: answered at once with 204, never
	// routed to a model server nor counted as a request.
	ProbeHeader = "x-spillway-rtt-probe"
	// BodyChunkBytes is the largest body piece sent back in a streamed body response, as GIE's.
	BodyChunkBytes = 62000
)

// Endpoint is a pool endpoint as the EPP sees it.
//
// An endpoint takes requests when it is Ready, or while nothing is known of it yet (pending, as
// capacity.Thresholds.Pending defines it: never scraped, with no failed scrape, a scrape target
// for at most the metrics' staleness). A pending endpoint is a candidate with unknown load, never
// saturated: a spoke that just started neither sheds nor spills requests because its endpoints
// have not been scraped yet. Past the staleness bound an endpoint never scraped is not ready.
type Endpoint struct {
	scheduler.Endpoint
	// Ready is true while the endpoint's last metrics scrape succeeded.
	Ready bool
	// Failed is true when the endpoint's last scrape failed: it was observed, and not reachable.
	Failed bool
	// TargetSince is when the endpoint became a scrape target; zero when unknown, and then an
	// endpoint never scraped is not ready at once (it is never pending).
	TargetSince time.Time
	// Models the endpoint serves; empty means every model.
	Models []string
}

// Datastore gives the EPP a pool's endpoints.
type Datastore interface {
	// Endpoints appends the pool's endpoints to dst; ok is false for an unknown pool.
	Endpoints(pool fleet.PoolRef, dst []Endpoint) (eps []Endpoint, ok bool)
}

// Objectives resolves an InferenceObjective name to its priority.
type Objectives interface {
	Priority(name string) (priority int, ok bool)
}

// settingsObjectives are the objectives of the EPP's configuration file.
type settingsObjectives map[string]int

func (o settingsObjectives) Priority(name string) (int, bool) {
	p, ok := o[name]
	return p, ok
}

// Options configure a Server.
type Options struct {
	Pool      fleet.PoolRef
	Settings  Settings
	Datastore Datastore
	// Objectives, when set, resolve objective names (for example from the cluster's
	// InferenceObjectives); Settings.Objectives otherwise.
	Objectives Objectives
	// Spill, when set, may send a request to another cluster (federated routing); ClusterID is
	// this cluster's: the origin of the hop markers it signs, and the destination the markers
	// it accepts must name.
	Spill     *spill.Decider
	ClusterID string
	// HopKeys, when set, are the fleet's hop-marker keys (from the hub's sync stream): the first
	// signs the marker of a request spilled in Parent Mode, any verifies a marker received.
	// Without a key no marker verifies (every request is fresh) and nothing spills in Parent
	// Mode (hop.go, spill.Request.NoHopKey).
	HopKeys HopKeys
	// Tracer, when set, traces each routing decision (tracing.go); nil: no tracing.
	Tracer trace.Tracer
	// Local, when set, are the other pools this process's EPPs serve: a request for a model
	// this pool does not serve and another local pool does is routed there (local.go).
	Local LocalPools
	// Now is the clock that dates and checks hop markers; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// Budgets, when set, are the fleet's token budgets as this spoke enforces them (budgets.go).
	Budgets Budgets
	// Metrics, when set, are the process's EPP metrics, shared with its other Servers; else New
	// makes them and registers them with Registerer (nil: unregistered).
	Metrics    *Metrics
	Registerer prometheus.Registerer
}

// Server is the ext_proc service.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer

	pool      fleet.PoolRef
	cfg       Settings
	ds        Datastore
	objs      Objectives
	spill     *spill.Decider
	clusterID string
	hopKeys   HopKeys
	now       func() time.Time
	tracer    trace.Tracer
	sched     *scheduler.Scheduler
	log       *slog.Logger
	metrics   *metrics
	pools     *giePoolCollector
	local     LocalPools
	known     map[string]bool
	retryText string
	budgets   Budgets
	poolName  string // namespace/name, as budgets select it
	// flow holds lower priorities while the pool is saturated (flow.go); nil when off.
	flow *holdQueue
	// inflight counts the requests in flight of each objective that has a cap (objectives.go).
	inflight map[string]*atomic.Int64

	admitted atomic.Uint64
	shed     atomic.Uint64
	spilled  atomic.Uint64
	// noKeyWarned is set once the missing hop key was logged, cleared when a key arrives.
	noKeyWarned atomic.Bool
	// buffers recycles the per-request endpoint slices: a pool of 1,000 endpoints would otherwise
	// allocate hundreds of kilobytes per request.
	buffers sync.Pool
}

type buffers struct {
	eps   []Endpoint
	cands []scheduler.Endpoint
}

// New returns a server.
func New(o Options) (*Server, error) {
	if o.Datastore == nil {
		return nil, errors.New("epp: a datastore is required")
	}
	sched, err := scheduler.New(scheduler.Options{Weights: o.Settings.Weights, Fallbacks: o.Settings.Fallbacks,
		Prefix: prefix.Options{CapacityPerEndpoint: o.Settings.PrefixBlocksPerEndpoint}})
	if err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	known := map[string]bool{}
	for name, r := range o.Settings.Models {
		known[name] = true
		for _, t := range r.Targets {
			known[t.Model] = true
		}
		if r.Fallback != "" {
			known[r.Fallback] = true
		}
	}
	for a := range o.Settings.Adapters {
		known[a] = true
	}
	if o.Objectives == nil {
		o.Objectives = settingsObjectives(o.Settings.Objectives)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(o.Registerer)
	}
	o.Metrics.pools.add(o.Pool, o.Datastore)
	var flow *holdQueue
	if o.Settings.FlowControl.Enabled {
		flow = newHoldQueue(o.Settings.FlowControl.MaxQueue)
	}
	return &Server{
		flow:      flow,
		inflight:  objectiveCounters(o.Settings),
		pools:     o.Metrics.pools,
		budgets:   o.Budgets,
		poolName:  o.Pool.String(),
		local:     o.Local,
		hopKeys:   o.HopKeys,
		now:       o.Now,
		tracer:    o.Tracer,
		objs:      o.Objectives,
		spill:     o.Spill,
		clusterID: o.ClusterID,
		buffers:   sync.Pool{New: func() any { return new(buffers) }},
		pool:      o.Pool,
		cfg:       o.Settings,
		ds:        o.Datastore,
		sched:     sched,
		log:       o.Logger.With("component", "epp", "pool", o.Pool.String()),
		metrics:   o.Metrics.m,
		known:     known,
		retryText: strconv.Itoa(int(max(o.Settings.RetryAfter.Round(time.Second)/time.Second, 1))),
	}, nil
}

// Close stops reporting the pool in the shared metrics: the process no longer serves it.
func (s *Server) Close() { s.pools.remove(s.pool) }

// Pool returns the pool the server serves.
func (s *Server) Pool() fleet.PoolRef { return s.pool }

// Counts returns the requests admitted and shed since start, for the pool's capacity report.
func (s *Server) Counts() (admitted, shed uint64) { return s.admitted.Load(), s.shed.Load() }

// Spilled returns the requests sent to other clusters since start.
func (s *Server) Spilled() uint64 { return s.spilled.Load() }

// Scheduler returns the scheduler (for forgetting endpoints that left the pool).
func (s *Server) Scheduler() *scheduler.Scheduler { return s.sched }

// exchange is the state of one request's ext_proc stream.
type exchange struct {
	start      time.Time
	headers    map[string]string
	subset     []string
	hasSubset  bool
	body       []byte
	bodyDone   bool
	duplexReq  bool // request body FULL_DUPLEX_STREAMED: answer headers after the body
	duplexResp bool
	objective  string // resolved when the headers arrive: a known name or "", the metrics' label
	priority   int
	model      string // model label for metrics
	routed     bool
	spilled    bool
	// serviceFrom, when set, is when the request went to a local endpoint with no request
	// waiting (pick): its time from then to its end is a sample of the pool's service time.
	serviceFrom time.Time
	firstByte   time.Time
	respBytes   int
	usage       usageReader
	responseEnd bool

	// The decision's state, from the end of the request body to the answer (decide).
	began  time.Time
	req    request.Request
	target string // the model the request is sent as
	// fallback is true when a declared fallback changed the model: the response says so
	// (FallbackModelHeader).
	fallback bool
	// hopped is true when the request carries a hop marker that verifies: another cluster
	// spilled it here; hopChecked once that was checked.
	hopped, hopChecked bool
	// ticket holds the request's charges to the token budgets until it ends; status is the
	// response's status.
	ticket budget.Ticket
	status int
	// ctx is the stream's; local is, while the request routed to a local pool's endpoints has
	// not ended, that pool's flow control (nil when off).
	ctx   context.Context
	local *holdQueue
	// spilledTo is the cluster the request spilled to, until it ends: spilledBy, the decider
	// of the pool that spilled it (another local pool's when the model handed it over), counts
	// it in flight there.
	spilledTo string
	spilledBy *spill.Decider
	// slot is the request's place under its objective's cap while it runs (objectives.go).
	slot *atomic.Int64
	// overCap is true when the request's objective was at its cap in the pool.
	overCap bool
	bufs    *buffers
	cands   []scheduler.Endpoint // in bufs, or the spill policy's fallback's own
	dest    string
	// explain, when set, makes the decision an explanation (Server.Explain): the stages record
	// their findings in it and count nothing.
	explain *Explanation
	// result is the decision's result as counted; trace its tracing (nil when off).
	result string
	trace  *decideTrace
}

// DefaultStreamWorkers is how many goroutines the EPP's gRPC server keeps to serve streams.
const DefaultStreamWorkers = 64

// GRPCServerOptions are the transport settings of the EPP's gRPC server.
//
// Fixed flow-control windows turn off gRPC's bandwidth estimation, which otherwise sends a PING
// with nearly every request body and wakes both ends to answer it; the EPP's messages are small
// and its gateways near, so the window it would grow is never used. Gateways may ping idle
// streams every 5 s.
//
// streamWorkers goroutines (0: none) serve the streams: gRPC otherwise starts a goroutine per
// stream, that is per request, whose stack is grown and copied at least twice while it reads
// and decodes the first message. A stream that finds every worker busy gets a goroutine
// of its own, as without workers.
func GRPCServerOptions(streamWorkers int) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.InitialWindowSize(1 << 20), grpc.InitialConnWindowSize(4 << 20),
	}
	if streamWorkers > 0 {
		opts = append(opts, grpc.NumStreamWorkers(uint32(streamWorkers)))
	}
	return opts
}

// Process serves one request's stream. It runs on the gRPC handler goroutine and starts none.
//
// A panic while serving the stream (a bug) fails that one request with codes.Internal, is logged
// with its stack and counted in spillway_epp_panics_total; the spoke goes on serving every other
// request. Unrecovered, it would end the spoke's process and with it every request in flight,
// which gateways fail closed, the hub session and the scrape state.
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.metrics.panics.Inc()
			s.log.Error("panic while serving a request recovered; the request ends with Internal",
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error in the endpoint picker (a bug, logged there with its stack)")
		}
	}()
	// The objective is resolved when the headers arrive; a stream without them has the default.
	x := &exchange{start: time.Now(), duplexReq: true, duplexResp: true, priority: s.cfg.DefaultPriority, ctx: stream.Context()}
	defer s.abandoned(x)
	for {
		req, err := stream.Recv()
		if err == io.EOF || status.Code(err) == codes.Canceled {
			return nil
		}
		if err != nil {
			return err
		}
		if pc := req.GetProtocolConfig(); pc != nil {
			x.duplexReq = pc.GetRequestBodyMode() == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
			x.duplexResp = pc.GetResponseBodyMode() == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
		}
		var out []*extprocv3.ProcessingResponse
		switch r := req.GetRequest().(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			x.headers = headerMap(r.RequestHeaders.GetHeaders())
			if n, err := strconv.Atoi(x.headers["content-length"]); err == nil && n > 0 && n <= s.cfg.MaxBodyBytes {
				x.body = make([]byte, 0, n)
			}
			x.subset, x.hasSubset = subsetHint(req.GetMetadataContext())
			x.objective, x.priority = s.resolveObjective(x.headers[ObjectiveHeader])
			switch {
			case r.RequestHeaders.GetEndOfStream():
				x.bodyDone = true
				out = s.decide(x)
			case !x.duplexReq:
				// The gateway buffers the body and waits for this answer before sending it.
				out = []*extprocv3.ProcessingResponse{headersContinue()}
			}
		case *extprocv3.ProcessingRequest_RequestBody:
			if x.bodyDone {
				return status.Error(codes.FailedPrecondition, "request body after the end of the request")
			}
			b := r.RequestBody.GetBody()
			if len(x.body)+len(b) > s.cfg.MaxBodyBytes {
				s.count(x, "", resultTooLarge)
				return sendAll(stream, immediate(413, "request_too_large",
					fmt.Sprintf("request body larger than %d bytes", s.cfg.MaxBodyBytes), nil))
			}
			x.body = append(x.body, b...)
			if r.RequestBody.GetEndOfStream() {
				x.bodyDone = true
				out = s.decide(x)
			}
		case *extprocv3.ProcessingRequest_RequestTrailers:
			if !x.bodyDone {
				x.bodyDone = true
				out = s.decide(x)
			}
			out = append(out, &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}})
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			hs := headerMap(r.ResponseHeaders.GetHeaders())
			x.status, _ = strconv.Atoi(hs[":status"])
			x.usage.sse = strings.Contains(hs["content-type"], "text/event-stream")
			out = []*extprocv3.ProcessingResponse{{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: s.responseHeaders(x)}}}
			if r.ResponseHeaders.GetEndOfStream() {
				s.finish(x)
			}
		case *extprocv3.ProcessingRequest_ResponseBody:
			b := r.ResponseBody.GetBody()
			eos := r.ResponseBody.GetEndOfStream()
			if x.firstByte.IsZero() && len(b) > 0 {
				x.firstByte = time.Now()
			}
			x.usage.write(b)
			x.respBytes += len(b)
			if x.duplexResp {
				out = streamedBody(b, eos, false)
			} else {
				out = []*extprocv3.ProcessingResponse{{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}}
			}
			if eos {
				s.finish(x)
			}
		case *extprocv3.ProcessingRequest_ResponseTrailers:
			s.finish(x)
			out = []*extprocv3.ProcessingResponse{{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}}
		default:
			return status.Errorf(codes.InvalidArgument, "unsupported ext_proc message %T", r)
		}
		if err := sendAll(stream, out...); err != nil {
			return err
		}
		if len(out) > 0 && out[0].GetImmediateResponse() != nil {
			return nil
		}
	}
}

func sendAll(stream extprocv3.ExternalProcessor_ProcessServer, rs ...*extprocv3.ProcessingResponse) error {
	for _, r := range rs {
		if err := stream.Send(r); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) finish(x *exchange) {
	if x.responseEnd || !x.routed {
		return
	}
	x.responseEnd = true
	end := time.Now()
	if s.spill != nil && !x.serviceFrom.IsZero() {
		// The cost model's service time: a request that waited (at its endpoint, or held by
		// flow control) would count the wait too, which the model adds per queued request.
		s.spill.ObserveDuration(end.Sub(x.serviceFrom))
	}
	s.metrics.duration.WithLabelValues(x.objective, x.model, priorityClass(x.priority)).Observe(end.Sub(x.start).Seconds())
	if !x.firstByte.IsZero() {
		s.metrics.ttft.WithLabelValues(x.objective, x.model, priorityClass(x.priority)).Observe(x.firstByte.Sub(x.start).Seconds())
	}
	var ttft time.Duration
	if !x.firstByte.IsZero() {
		ttft = x.firstByte.Sub(x.start)
	}
	var usage *Usage
	if u, ok := x.usage.done(); ok {
		s.metrics.inputTokens.WithLabelValues(x.objective, x.model).Add(float64(u.PromptTokens))
		s.metrics.outputTokens.WithLabelValues(x.objective, x.model).Add(float64(u.CompletionTokens))
		usage = &u
	}
	s.metrics.gie.finished(s.modelLabel(x.req.Model), x.model, end.Sub(x.start), ttft, x.respBytes, usage)
	s.settleBudgets(x)
	s.ended(x)
}

// ended lets flow control release a held request: one of the pool's own ended (the pool that
// routed it, another local pool's when the model handed it over).
func (s *Server) ended(x *exchange) {
	releaseSlot(x)
	if x.spilledBy != nil {
		x.spilledBy.Ended(x.spilledTo)
		x.spilledTo, x.spilledBy = "", nil
	}
	if x.local != nil {
		x.local.release()
		x.local = nil
	}
}

// abandoned settles a routed request whose stream ended before its response did (the client or
// the gateway went away): it no longer runs. Its budget charges settle too: a request refused
// after it was charged (shed, no endpoint) releases them.
func (s *Server) abandoned(x *exchange) {
	if x.routed && !x.responseEnd {
		s.metrics.gie.running.WithLabelValues(s.modelLabel(x.req.Model)).Dec()
	}
	s.settleBudgets(x)
	s.ended(x)
}

func headersContinue() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}
}

// streamedBody splits a body into StreamedBodyResponse pieces of at most BodyChunkBytes.
func streamedBody(body []byte, eos, request bool) []*extprocv3.ProcessingResponse {
	var out []*extprocv3.ProcessingResponse
	for {
		n := min(len(body), BodyChunkBytes)
		last := n == len(body)
		br := &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
			Mutation: &extprocv3.BodyMutation_StreamedResponse{StreamedResponse: &extprocv3.StreamedBodyResponse{Body: body[:n], EndOfStream: eos && last}},
		}}}
		if request {
			out = append(out, &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: br}})
		} else {
			out = append(out, &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: br}})
		}
		body = body[n:]
		if last {
			return out
		}
	}
}

// immediate answers the client directly with an OpenAI-style JSON error.
func immediate(code int, errType, msg string, headers []*corev3.HeaderValueOption) *extprocv3.ProcessingResponse {
	body, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": errType, "code": code}})
	headers = append(headers, setHeader("content-type", "application/json"))
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(code)},
		Headers: &extprocv3.HeaderMutation{SetHeaders: headers},
		Body:    body,
		Details: errType,
	}}}
}

func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)}}
}

// overwriteHeader sets k to v, replacing every value the request had.
func overwriteHeader(k, v string) *corev3.HeaderValueOption {
	h := setHeader(k, v)
	h.AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	return h
}

// headerMap reads Envoy's header map; Envoy sends raw_value, older versions value.
func headerMap(hm *corev3.HeaderMap) map[string]string {
	out := make(map[string]string, len(hm.GetHeaders()))
	for _, h := range hm.GetHeaders() {
		v := h.GetValue()
		if len(h.GetRawValue()) > 0 {
			v = string(h.GetRawValue())
		}
		out[strings.ToLower(h.GetKey())] = v
	}
	return out
}

// subsetHint reads the gateway's endpoint subset from filter metadata.
func subsetHint(md *corev3.Metadata) ([]string, bool) {
	ns, ok := md.GetFilterMetadata()[SubsetNamespace]
	if !ok {
		return nil, false
	}
	v, ok := ns.GetFields()[SubsetKey]
	if !ok {
		return nil, false
	}
	var out []string
	for _, e := range v.GetListValue().GetValues() {
		out = append(out, e.GetStringValue())
	}
	return out, true
}

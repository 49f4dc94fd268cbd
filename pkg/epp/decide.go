package epp

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/spillway-io/spillway/pkg/capacity"
	"github.com/spillway-io/spillway/pkg/epp/request"
	"github.com/spillway-io/spillway/pkg/epp/scheduler"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/spill"
)

// decide routes a request once its body is complete. Each stage leaves its result on the
// exchange or returns the answer that ends the request there.
func (s *Server) decide(x *exchange) []*extprocv3.ProcessingResponse {
	x.trace = s.startTrace(x)
	defer x.trace.end(x)
	x.trace.begin("epp.admit")
	if out := s.admit(x); out != nil {
		return out
	}
	if out := s.chargeBudgets(x); out != nil {
		return out
	}
	if o := s.handOff(x); o != nil {
		return o.route(x)
	}
	return s.route(x)
}

// route routes a parsed request in this EPP's pool: model routing, candidates, spill, shedding,
// the pick.
func (s *Server) route(x *exchange) []*extprocv3.ProcessingResponse {
	s.targetModel(x)
	if x.explain != nil && x.target != x.req.Model {
		x.explain.step("model routing sends model %q as %q", x.req.Model, x.target)
	}
	x.bufs = s.buffers.Get().(*buffers)
	defer s.release(x)
	s.localCandidates(x)
	x.overCap = s.atCap(x)
	x.trace.begin("epp.spill")
	if out := s.spillOrFallback(x); out != nil {
		return out
	}
	if x.overCap {
		return s.capped(x)
	}
	x.trace.begin("epp.shed")
	if out := s.shedLoad(x); out != nil {
		return out
	}
	if held, out := s.hold(x); out != nil {
		return out
	} else if held {
		// Released: the endpoints as they are now (the shed stage marks the saturated ones
		// for the picker again, and may shed the request now).
		s.localCandidates(x)
		if out := s.shedLoad(x); out != nil {
			return out
		}
	}
	if !s.takeSlot(x) {
		return s.capped(x)
	}
	x.trace.begin("epp.pick")
	s.pick(x)
	return s.answer(x)
}

// count counts the request's result; explaining a request, it records it as the outcome instead.
func (s *Server) count(x *exchange, model, result string) {
	x.result = result
	if x.explain != nil {
		x.explain.Outcome = result
		return
	}
	s.metrics.result(x.objective, model, result)
	s.metrics.gie.decided(s.modelLabel(x.req.Model), model, x.priority, result, len(x.body))
}

// resolveObjective maps the request's objective header, once, when the headers arrive: a known
// objective keeps its name and priority; any other value becomes "" (a client must not create
// metric series) with the default priority.
func (s *Server) resolveObjective(header string) (objective string, priority int) {
	if p, ok := s.objs.Priority(header); ok {
		return header, p
	}
	return "", s.cfg.DefaultPriority
}

// admit answers another spoke's round-trip probe at once (204) and parses the body, if there is
// one: 400 when it is not a valid completions or chat completions request.
func (s *Server) admit(x *exchange) []*extprocv3.ProcessingResponse {
	if x.headers[ProbeHeader] != "" {
		return []*extprocv3.ProcessingResponse{{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_NoContent},
		}}}}
	}
	x.began = time.Now()
	x.req = request.Request{}
	if len(x.body) > 0 {
		req, err := request.Parse(x.headers[":path"], x.body)
		if err != nil {
			s.count(x, "", resultInvalid)
			return []*extprocv3.ProcessingResponse{immediate(400, "invalid_request_error", err.Error(), nil)}
		}
		x.req = req
		// A request that names no objective takes its model route's; set as the header, it is
		// what a local pool that takes the request over and the budgets see too.
		if r, ok := s.cfg.Models[req.Model]; ok && r.Objective != "" && x.headers != nil && x.headers[ObjectiveHeader] == "" {
			x.headers[ObjectiveHeader] = r.Objective
			x.objective, x.priority = s.resolveObjective(r.Objective)
		}
	}
	return nil
}

// targetModel applies model routing: the model the request is sent as is a weighted choice
// among its route's targets, or the model it asked for.
func (s *Server) targetModel(x *exchange) {
	x.target = x.req.Model
	r, ok := s.cfg.Models[x.req.Model]
	if !ok || len(r.Targets) == 0 {
		return
	}
	total := 0
	for _, t := range r.Targets {
		total += t.Weight
	}
	n := rand.IntN(total)
	for _, t := range r.Targets {
		if n < t.Weight {
			x.target = t.Model
			return
		}
		n -= t.Weight
	}
	x.target = r.Targets[len(r.Targets)-1].Model
}

// localCandidates keeps the pool's endpoints that can take the request: ready, in the gateway's
// subset, serving the target model. When none serves it, the model route's fallback model takes
// over. The endpoints and candidates live in the exchange's pooled buffers.
func (s *Server) localCandidates(x *exchange) {
	b := x.bufs
	b.eps, _ = s.ds.Endpoints(s.pool, b.eps[:0])
	x.cands = s.candidates(b.cands[:0], b.eps, x, x.target)
	if len(x.cands) == 0 && x.req.Model != "" {
		if r, ok := s.cfg.Models[x.req.Model]; ok && r.Fallback != "" && r.Fallback != x.target {
			x.target, x.fallback = r.Fallback, true
			x.cands = s.candidates(x.cands[:0], b.eps, x, x.target)
			if x.explain != nil {
				x.explain.step("no endpoint can take model %q: the model route's fallback %q", x.req.Model, r.Fallback)
			}
		}
	}
	b.cands = x.cands
	x.model = s.modelLabel(x.target)
	if x.explain != nil {
		x.explain.step("%d of the pool's %d endpoints can take the request (ready or pending, in the gateway's subset, serving the model)", len(x.cands), len(b.eps))
		x.explain.candidates(len(b.eps), x.cands, nil, nil)
	}
}

// spillOrFallback asks the spill policy, when there is one, whether the request leaves the
// cluster; it answers with the remote destination if so. A request that should leave but that
// no cluster can take stays, on the policy's fallback pool and/or model when they have
// candidates.
//
// Only a verified hop marker makes a request one that already spilled (hopped); a client's
// marker, or any other that does not verify, is counted and otherwise ignored. A request spilled
// in Parent Mode carries a marker signed for its target cluster, replacing whatever marker the
// client sent. Without a hop key (none has come from the hub yet) nothing spills in Parent Mode:
// an unsigned marker would not verify at the target, which could spill the request again; the
// request stays here, on the policy's fallback when it has one (spill.ReasonNoHopKey).
func (s *Server) spillOrFallback(x *exchange) []*extprocv3.ProcessingResponse {
	if s.spill == nil {
		return nil
	}
	keys := s.hopKeysNow()
	signer, canSign := s.signingKey(keys)
	// A model the pool does not serve leaves for a cluster that serves it, as when no endpoint
	// is left (the model's own pool is down, or there is none here).
	ix := s.sched.Prefix()
	if !x.hopChecked {
		x.hopped, x.hopChecked = s.hopped(x, keys), true
	}
	sreq := spill.Request{Priority: x.priority, PromptTokens: len(x.req.Prompt) / 4, Model: x.target,
		Hop: x.hopped, NoLocal: len(x.cands) == 0 || !s.servesIn(x.target, x.bufs.eps), NoHopKey: !canSign,
		// The targets' prefix sketches price what their caches hold of the prompt.
		Chain: func() []uint64 { return ix.Hashes(nil, x.target, x.req.Prompt) }, ChainBlockBytes: ix.BlockSize(),
		TTFT: s.cfg.Limits[x.objective].TTFT, OverCap: x.overCap}
	var dec spill.Decision
	if x.explain != nil {
		var t spill.Trace
		dec, t = s.spill.Explain(sreq)
		x.explain.spill(dec, t)
		x.explain.step("spill policy: %s", dec.Reason)
	} else {
		dec = s.spill.Decide(sreq)
	}
	if x.trace != nil { // guarded: the attributes would cost allocations on every request
		x.trace.set(attribute.String("spillway.spill_reason", string(dec.Reason)), attribute.Bool("spillway.spill", dec.Spill),
			attribute.String("spillway.spill_target", dec.Target.ClusterID), attribute.String("spillway.spill_region", dec.Target.Region))
	}
	if dec.Spill {
		var marker []*corev3.HeaderValueOption
		if dec.Mode == spill.ParentMode {
			// The remote gateway's EPP routes the original body; the marker makes it serve the
			// request there, never send it on.
			m, err := SignHopMarker(signer, s.clusterID, dec.Target.ClusterID, s.now())
			if err != nil { // a target whose cluster ID is no DNS subdomain: the hub refuses those
				s.log.Error("hop marker not signed; the request stays here", "target", dec.Target.ClusterID, "err", err)
				if x.explain == nil {
					s.spill.Ended(dec.Target.ClusterID) // Decide counted it in flight there
				}
				return nil
			}
			marker = append(marker, overwriteHeader(HopHeader, m.String()))
		}
		// The remote cluster's EPP continues the trace under this decision's span.
		if tp := x.trace.traceparent(); tp != "" {
			marker = append(marker, overwriteHeader("traceparent", tp))
		}
		s.count(x, x.model, resultSpilled)
		if x.explain != nil {
			x.explain.Destination = dec.Destination
			x.explain.step("spilled in %s to cluster %s (region %s)", dec.Mode, dec.Target.ClusterID, dec.Target.Region)
		} else {
			s.metrics.spilled.WithLabelValues(string(dec.Reason), priorityClass(x.priority), dec.Target.Region).Inc()
			s.spilled.Add(1)
		}
		x.spilled, x.routed = true, true
		if x.explain == nil {
			x.spilledTo, x.spilledBy = dec.Target.ClusterID, s.spill
		}
		x.dest = strings.Join(dec.Destination, ",")
		return s.forward(x, x.dest, x.body, false, marker...)
	}
	if out := s.latencyUnmet(x, dec); out != nil {
		return out
	}
	if dec.Reason != spill.ReasonFallback {
		return nil
	}
	eps, model := x.bufs.eps, x.target
	if dec.FallbackPool != "" {
		eps, _ = s.ds.Endpoints(fleet.PoolRef{Namespace: s.pool.Namespace, Name: dec.FallbackPool}, nil)
	}
	if dec.FallbackModel != "" {
		model = dec.FallbackModel
	}
	if fc := s.candidates(nil, eps, x, model); len(fc) > 0 {
		x.cands, x.fallback = fc, x.fallback || model != x.target
		x.target = model
		x.model = s.modelLabel(model)
		if x.explain != nil {
			x.explain.TargetModel = model
			x.explain.step("no spill target: served here on the spill policy's fallback (pool %q, model %q)", dec.FallbackPool, dec.FallbackModel)
			x.explain.candidates(len(eps), x.cands, nil, nil)
		} else {
			s.metrics.fallbacks.Inc()
		}
	}
	return nil
}

// hopKeysNow returns the fleet's hop keys, none without a source.
func (s *Server) hopKeysNow() []fleet.HopKey {
	if s.hopKeys == nil {
		return nil
	}
	return s.hopKeys.HopKeys()
}

// hopped reports whether the request carries a hop marker that verifies; it counts a marker that
// does not by its reason.
func (s *Server) hopped(x *exchange, keys []fleet.HopKey) bool {
	v, ok := x.headers[HopHeader]
	if !ok {
		return false
	}
	_, err := VerifyHopMarker(v, keys, s.clusterID, s.now())
	if err == nil {
		return true
	}
	reason := hopMalformed
	var he *HopError
	if errors.As(err, &he) {
		reason = he.Reason
	}
	s.metrics.hopRejected.WithLabelValues(reason).Inc()
	s.log.Debug("hop marker ignored; the request is routed as a fresh one", "reason", reason, "err", err)
	return false
}

// signingKey returns the key that signs hop markers, the first of keys, and whether there is
// one this cluster can sign with. The first time there is none it logs a warning (again after a
// key came and went).
func (s *Server) signingKey(keys []fleet.HopKey) (fleet.HopKey, bool) {
	if len(keys) > 0 && validHopField(keys[0].ID) && len(keys[0].Secret) >= minHopSecret && validHopField(s.clusterID) {
		s.noKeyWarned.Store(false)
		return keys[0], true
	}
	if s.noKeyWarned.CompareAndSwap(false, true) {
		s.log.Warn("no hop key to sign markers with (none from the hub yet, or this cluster ID is not a DNS subdomain): nothing spills in Parent Mode and no hop marker is honoured",
			"keys", len(keys), "cluster", s.clusterID)
	}
	return fleet.HopKey{}, false
}

// shedLoad refuses what the pool cannot take: 503 when no candidate is left, 429 with Retry-After
// for a sheddable request (priority < 0) when no candidate has headroom.
func (s *Server) shedLoad(x *exchange) []*extprocv3.ProcessingResponse {
	if len(x.cands) == 0 {
		if x.explain != nil {
			x.explain.candidates(len(x.bufs.eps), nil, nil, nil)
		}
		s.count(x, x.model, resultNoEndpoints)
		msg := fmt.Sprintf("pool %s has no ready endpoint", s.pool)
		if x.hasSubset {
			msg = fmt.Sprintf("pool %s has no ready endpoint in the gateway's subset", s.pool)
		}
		return []*extprocv3.ProcessingResponse{immediate(503, "service_unavailable", msg, nil)}
	}
	// saturated marks every candidate for the picker, so it runs for every priority.
	saturated := s.saturated(x.cands)
	if x.trace != nil {
		x.trace.set(attribute.Bool("spillway.saturated", saturated), attribute.Int("spillway.candidates", len(x.cands)))
	}
	if x.explain != nil {
		x.explain.Saturated = saturated
		x.explain.candidates(x.explain.Endpoints, x.cands, nil, nil)
		if saturated {
			x.explain.step("no candidate has headroom (saturation detector)")
		}
	}
	if saturated && x.priority < 0 {
		if x.explain == nil {
			s.shed.Add(1)
		}
		s.count(x, x.model, resultShed)
		return []*extprocv3.ProcessingResponse{immediate(429, "rate_limit_exceeded",
			fmt.Sprintf("pool %s is saturated and the request is sheddable (priority %d)", s.pool, x.priority),
			[]*corev3.HeaderValueOption{setHeader("retry-after", s.retryText)})}
	}
	return nil
}

// hold holds the request while its pool is full, when flow control is on and the request is
// below its holdBelow priority (flow.go): it reports whether it held it, and answers 429 for a
// sheddable request whose hold timed out. Explaining a request holds nothing.
func (s *Server) hold(x *exchange) (held bool, out []*extprocv3.ProcessingResponse) {
	if s.flow == nil || x.priority >= s.cfg.FlowControl.HoldBelow || x.explain != nil || !s.full(x.cands) {
		return false, nil
	}
	x.trace.begin("epp.hold")
	start := time.Now()
	res := s.flow.hold(x.ctx, x.priority, s.cfg.FlowControl.Timeout, func() bool {
		eps, _ := s.ds.Endpoints(s.pool, nil)
		return s.full(s.candidates(nil, eps, x, x.target))
	})
	s.metrics.holds.WithLabelValues(res.String()).Inc()
	if res == holdFull {
		return false, nil
	}
	s.metrics.holdTime.Observe(time.Since(start).Seconds())
	if res == holdTimedOut && x.priority < 0 {
		s.shed.Add(1)
		s.count(x, x.model, resultShed)
		return true, []*extprocv3.ProcessingResponse{immediate(429, "rate_limit_exceeded",
			fmt.Sprintf("pool %s stayed full for the request's hold of %s and the request is sheddable (priority %d)", s.pool, s.cfg.FlowControl.Timeout, x.priority),
			[]*corev3.HeaderValueOption{setHeader("retry-after", s.retryText)})}
	}
	return true, nil
}

// full reports whether flow control holds at the pool's load: no candidate has headroom by
// the saturation detector's thresholds, with flow control's own queue depth when it sets one.
func (s *Server) full(cands []scheduler.Endpoint) bool {
	th := s.cfg.Thresholds
	if d := s.cfg.FlowControl.QueueDepth; d > 0 {
		th.QueueDepth = d
	}
	now := time.Now()
	for i := range cands {
		e := &cands[i]
		if e.Unobserved || th.Load(capacity.Endpoint{Metrics: e.Metrics, ScrapedAt: e.ScrapedAt}, now) < 1 {
			return false
		}
	}
	return len(cands) > 0
}

// hoppedPrefixBoost multiplies the prefix-cache scorer's weight for a request another cluster
// spilled here: that cluster priced it by the prefill this cluster's cache saves (cache-aware
// spill, docs/federation.md), which only the endpoint holding the prefix saves. With GIE's
// weights (prefix 3, queue 2, KV-cache 2) the holder wins while it has headroom.
const hoppedPrefixBoost = 4

// pick scores the candidates and sets the destination: the chosen endpoint, then the fallbacks.
func (s *Server) pick(x *exchange) {
	sreq := &scheduler.Request{Model: x.target, LoRA: s.isAdapter(x.target, x.cands), Prompt: x.req.Prompt}
	if x.hopped {
		sreq.PrefixBoost = hoppedPrefixBoost
	}
	if x.explain != nil {
		dest, scores := s.sched.Explain(sreq, x.cands)
		x.dest = strings.Join(dest, ",")
		x.explain.Destination = dest
		x.explain.candidates(x.explain.Endpoints, x.cands, dest, scores)
		return
	}
	x.dest = strings.Join(s.sched.Pick(sreq, x.cands), ",")
	// A request sent to an endpoint with no request waiting (by its last scrape) starts at
	// once: its time from now to its end is the pool's service time, no wait in it.
	if i := sreq.Chosen(); s.spill != nil && i >= 0 && !x.cands[i].Unobserved && x.cands[i].Metrics.WaitingQueue == 0 {
		x.serviceFrom = time.Now()
	}
}

// answer sends the request to its destination, its body rewritten when model routing changed
// the model, and counts it routed.
func (s *Server) answer(x *exchange) []*extprocv3.ProcessingResponse {
	body := x.body
	if x.req.Model != "" && x.target != x.req.Model {
		nb, err := request.WithModel(x.body, x.target)
		if err != nil {
			s.count(x, x.model, resultInvalid)
			return []*extprocv3.ProcessingResponse{immediate(400, "invalid_request_error", err.Error(), nil)}
		}
		body = nb
	}
	x.routed, x.local = true, s.flow
	s.count(x, x.model, resultRouted)
	if x.explain == nil {
		s.admitted.Add(1)
		took := time.Since(x.began).Seconds()
		s.metrics.scheduling.Observe(took)
		s.metrics.gie.scheduling.Observe(took)
	}
	return s.forward(x, x.dest, body, len(body) != len(x.body) || x.target != x.req.Model)
}

// release gives the exchange's buffers back to the pool once the decision is made.
func (s *Server) release(x *exchange) {
	s.buffers.Put(x.bufs)
	x.bufs, x.cands = nil, nil
}

// forward sends the request to dest: the destination header, metadata and route re-selection on
// the headers (or, with a buffered body, on the body response), then the body back.
func (s *Server) forward(x *exchange, dest string, body []byte, bodyChanged bool, extra ...*corev3.HeaderValueOption) []*extprocv3.ProcessingResponse {
	set := append([]*corev3.HeaderValueOption{setHeader(DestinationHeader, dest)}, extra...)
	if len(body) > 0 {
		set = append(set, setHeader("content-length", strconv.Itoa(len(body))))
	}
	md := &structpb.Struct{Fields: map[string]*structpb.Value{
		DestinationMetadata: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			DestinationHeader: structpb.NewStringValue(dest),
		}}),
	}}
	mutation := &extprocv3.HeaderMutation{SetHeaders: set}
	if !x.duplexReq && len(x.body) > 0 {
		// Buffered body: the headers were answered already; the destination rides on the body
		// response, which the gateway applies before forwarding the headers.
		br := &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{HeaderMutation: mutation, ClearRouteCache: true}}
		if bodyChanged {
			br.Response.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: body}}
		}
		return []*extprocv3.ProcessingResponse{{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: br}, DynamicMetadata: md}}
	}
	out := []*extprocv3.ProcessingResponse{{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{HeaderMutation: mutation, ClearRouteCache: true},
		}},
		DynamicMetadata: md,
	}}
	if len(x.body) > 0 {
		out = append(out, streamedBody(body, true, true)...)
	}
	return out
}

// candidates appends the endpoints in the gateway's subset that serve the model and can take
// requests to out: the ready ones, and the pending ones (nothing known of them yet), marked
// Unobserved.
func (s *Server) candidates(out []scheduler.Endpoint, eps []Endpoint, x *exchange, model string) []scheduler.Endpoint {
	var now time.Time
	for _, e := range eps {
		if x.hasSubset && !slices.Contains(x.subset, e.Address) {
			continue
		}
		if model != "" && len(e.Models) > 0 && !slices.Contains(e.Models, model) {
			continue
		}
		c := e.Endpoint
		if !e.Ready {
			if now.IsZero() {
				now = time.Now()
			}
			if !s.cfg.Thresholds.Pending(capacity.Endpoint{ScrapedAt: e.ScrapedAt, Failed: e.Failed, TargetSince: e.TargetSince}, now) {
				continue
			}
			c.Unobserved = true
		}
		out = append(out, c)
	}
	return out
}

// saturated is the saturation detector: it marks each candidate that has no headroom (stale
// metrics have none; an unobserved endpoint's load is unknown, not full), and reports whether
// none has.
func (s *Server) saturated(cands []scheduler.Endpoint) bool {
	now := time.Now()
	all := true
	for i := range cands {
		e := &cands[i]
		e.Saturated = !e.Unobserved && s.cfg.Thresholds.Load(capacity.Endpoint{Metrics: e.Metrics, ScrapedAt: e.ScrapedAt}, now) >= 1
		all = all && e.Saturated
	}
	return all
}

func (s *Server) isAdapter(model string, cands []scheduler.Endpoint) bool {
	if s.cfg.Adapters[model] {
		return true
	}
	for _, e := range cands {
		if slices.Contains(e.Metrics.ActiveLoRAs, model) || slices.Contains(e.Metrics.WaitingLoRAs, model) {
			return true
		}
	}
	return false
}

// modelLabel bounds the model label to configured names.
func (s *Server) modelLabel(model string) string {
	if model == "" || s.known[model] {
		return model
	}
	return "other"
}

package epp

import (
	"fmt"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/spillway-io/spillway/pkg/spill"
)

// Objective caps and latency objectives (docs/epp.md, "Objective caps and latency objectives").
//
// A cap bounds an objective's requests in flight in the pool, as this EPP routed them: at most
// maxConcurrency, and at most maxShare of the slots of the endpoints that can take the request
// (slotsPerEndpoint each). It holds whatever the load, so that under saturation a capped
// objective (BestEffort batch work, say) cannot take the slots another needs, before shedding
// starts. A request whose objective is at its cap spills when the spill policy lets its
// priority spill (the target applies its own cap, so that across the fleet the objective uses
// at most its share of the fleet's slots for the pool), and is refused with 429 otherwise.
//
// A latency objective (ttft) is weighed by the spill decision (spill.Request.TTFT); when no
// cluster is expected to meet it the request is served here, or shed when it is sheddable.

// resultCapped counts a request refused because its objective is at its cap in the pool.
const resultCapped = "objective_capped"

// objectiveCounters returns the in-flight counters of the objectives that have a cap.
func objectiveCounters(s Settings) map[string]*atomic.Int64 {
	out := map[string]*atomic.Int64{}
	for name, l := range s.Limits {
		if l.MaxConcurrency > 0 || l.MaxShare > 0 {
			out[name] = new(atomic.Int64)
		}
	}
	return out
}

// objectiveCap is the request's objective's cap with the current candidates (an objective
// with a counter has a cap).
func (s *Server) objectiveCap(x *exchange) int64 {
	l := s.cfg.Limits[x.objective]
	limit := int64(l.MaxConcurrency)
	if l.MaxShare > 0 {
		// At least one: a share of a small pool still lets the objective run.
		share := max(int64(l.MaxShare*float64(len(x.cands)*s.cfg.SlotsPerEndpoint)), 1)
		if limit == 0 || share < limit {
			limit = share
		}
	}
	return limit
}

// atCap reports whether the request's objective is at its cap in the pool now.
func (s *Server) atCap(x *exchange) bool {
	n := s.inflight[x.objective]
	return n != nil && n.Load() >= s.objectiveCap(x)
}

// takeSlot takes a place under the request's objective's cap; it reports false when the
// objective is at its cap. Explaining a request takes nothing. The place is the request's until
// it ends (Server.ended).
func (s *Server) takeSlot(x *exchange) bool {
	n := s.inflight[x.objective]
	if n == nil {
		return true
	}
	if x.explain != nil {
		return !s.atCap(x)
	}
	limit := s.objectiveCap(x)
	for {
		v := n.Load()
		if v >= limit {
			return false
		}
		if n.CompareAndSwap(v, v+1) {
			x.slot = n
			return true
		}
	}
}

// releaseSlot gives the request's place under its objective's cap back.
func releaseSlot(x *exchange) {
	if x.slot != nil {
		x.slot.Add(-1)
		x.slot = nil
	}
}

// capped refuses a request whose objective is at its cap and that did not spill.
func (s *Server) capped(x *exchange) []*extprocv3.ProcessingResponse {
	limit := s.objectiveCap(x)
	if x.explain != nil {
		x.explain.step("objective %q is at its cap of %d requests in flight in the pool", x.objective, limit)
	}
	s.count(x, x.model, resultCapped)
	return []*extprocv3.ProcessingResponse{immediate(429, "rate_limit_exceeded",
		fmt.Sprintf("objective %s is at its cap of %d requests in flight in pool %s", x.objective, limit, s.pool),
		[]*corev3.HeaderValueOption{setHeader("retry-after", s.retryText)})}
}

// latencyUnmet sheds a sheddable request that no cluster is expected to serve within its
// objective's time to first token; any other is served here.
func (s *Server) latencyUnmet(x *exchange, dec spill.Decision) []*extprocv3.ProcessingResponse {
	if dec.Reason != spill.ReasonLatencyUnmet || x.priority >= 0 {
		return nil
	}
	if x.explain == nil {
		s.shed.Add(1)
	}
	s.count(x, x.model, resultShed)
	return []*extprocv3.ProcessingResponse{immediate(429, "rate_limit_exceeded",
		fmt.Sprintf("no cluster is expected to meet objective %s's time to first token of %s and the request is sheddable (priority %d)",
			x.objective, s.cfg.Limits[x.objective].TTFT, x.priority),
		[]*corev3.HeaderValueOption{setHeader("retry-after", s.retryText)})}
}

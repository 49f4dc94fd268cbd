package epp

import (
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/spillway-io/spillway/pkg/fleet"
)

// FallbackModelHeader is set on the response of a request served by another model than the one
// it asked for, because a fallback declared in the configuration (a model route's fallback, or
// the spill policy's fallbackModel) took over: its value is the model that served it. Failover
// never changes the model otherwise.
const FallbackModelHeader = "x-spillway-fallback-model"

// LocalPools are the pools a process's EPPs serve (a spoke serving several InferencePools):
// the OpenAI model field selects among them, as GIE's body-based routing does, so one gateway
// route can carry several models.
type LocalPools interface {
	// ForModel returns the EPP of a local pool, other than except, that serves model; nil when
	// none does.
	ForModel(model string, except fleet.PoolRef) *Server
}

// Serves reports whether the pool serves model: the EPP's configuration names it (a model route,
// a route's target or fallback, an adapter), or one of the pool's endpoints does (the models its
// source declares, the model names its server labels its metrics with, an adapter running or
// waiting on it). A pool none of whose endpoints says which models it serves serves every
// model, as GIE's EPP assumes of its one pool.
func (s *Server) Serves(model string) bool {
	listed, said := s.Lists(model)
	return model == "" || listed || !said
}

// Lists reports whether the pool names model (as Serves does), and whether it says which models
// it serves at all. It runs on the request path (a request handed between local pools): the
// endpoints are read into the server's pooled buffers.
func (s *Server) Lists(model string) (listed, said bool) {
	if s.known[model] {
		return true, true
	}
	b := s.buffers.Get().(*buffers)
	b.eps, _ = s.ds.Endpoints(s.pool, b.eps[:0])
	listed, said = s.lists(model, b.eps)
	s.buffers.Put(b)
	return listed, said
}

// servesIn is Serves on the pool's endpoints eps.
func (s *Server) servesIn(model string, eps []Endpoint) bool {
	if model == "" || s.known[model] {
		return true
	}
	listed, said := s.lists(model, eps)
	return listed || !said
}

func (s *Server) lists(model string, eps []Endpoint) (listed, said bool) {
	for _, e := range eps {
		served := e.Models
		if len(served) == 0 {
			served = e.Metrics.Models
		}
		if len(served) == 0 {
			continue
		}
		said = true
		if slices.Contains(served, model) || slices.Contains(e.Metrics.ActiveLoRAs, model) || slices.Contains(e.Metrics.WaitingLoRAs, model) {
			return true, true
		}
	}
	return false, said
}

// handOff returns the local pool's EPP that should route the request instead of this one: the
// request's model is one this pool does not serve and another local pool does. Nil: route here.
func (s *Server) handOff(x *exchange) *Server {
	if s.local == nil || x.req.Model == "" || s.Serves(x.req.Model) {
		return nil
	}
	o := s.local.ForModel(x.req.Model, s.pool)
	if o == nil {
		return nil
	}
	// The objective is the other pool's (InferenceObjectives name their pool).
	x.objective, x.priority = o.resolveObjective(x.headers[ObjectiveHeader])
	if x.explain != nil {
		x.explain.step("pool %s does not serve model %q: local pool %s does, and routes it", s.pool, x.req.Model, o.pool)
		x.explain.Pool = o.pool.String()
	}
	return o
}

// responseHeaders answers the response headers: a request a declared fallback served under
// another model says so.
func (s *Server) responseHeaders(x *exchange) *extprocv3.HeadersResponse {
	if !x.fallback || x.spilled {
		return &extprocv3.HeadersResponse{}
	}
	return &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
		HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{overwriteHeader(FallbackModelHeader, x.target)}},
	}}
}

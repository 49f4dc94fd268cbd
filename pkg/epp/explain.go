package epp

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spillway-io/spillway/pkg/epp/scheduler"
	"github.com/spillway-io/spillway/pkg/spill"
)

// ExplainRequest is a request to explain: what the EPP reads of a real one.
type ExplainRequest struct {
	// Objective is the x-gateway-inference-objective header's value.
	Objective string
	// Priority, when set, replaces the objective's priority.
	Priority *int
	// Model is the body's "model"; Prompt its prompt, whose prefix decides cache affinity and
	// whose length the spill cost model reads.
	Model, Prompt string
}

// Explanation is where a request would go now and why. Explain builds it by running the stages
// of decide, the code every request goes through, on the live state, with nothing recorded (no
// metric, no prefix, no spill target); only a model route's weighted choice and ties between
// equal scores are drawn at random, as for a request.
//
// Its JSON form is what `hubctl explain -o json` prints (docs/operations.md); fields are added,
// never renamed.
type Explanation struct {
	Pool          string `json:"pool"`
	Objective     string `json:"objective,omitempty"`
	Priority      int    `json:"priority"`
	PriorityClass string `json:"priorityClass"`
	// Model is the model asked for; TargetModel the one the request is sent as (model routing,
	// a route's fallback, the spill policy's fallback).
	Model       string `json:"model,omitempty"`
	TargetModel string `json:"targetModel,omitempty"`
	// Outcome is the request's result as spillway_epp_requests_total counts it: routed, spilled,
	// shed, no_endpoints or invalid.
	Outcome string `json:"outcome"`
	// Status and Message are the answer of a refused request (400, 429, 503).
	Status  int    `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	// Destination is the endpoints (or, spilled, remote gateways or endpoints) the gateway tries,
	// in order.
	Destination []string `json:"destination,omitempty"`
	// Endpoints counts the pool's endpoints; Candidates are those that can take the request.
	Endpoints  int         `json:"endpoints"`
	Candidates []Candidate `json:"candidates"`
	// Saturated is true when no candidate has headroom (the saturation detector).
	Saturated bool `json:"saturated"`
	// Steps are the stages' findings, in order, in words.
	Steps []string `json:"steps"`
	// Spill is the spill decision, when the EPP has a spill policy.
	Spill *SpillExplanation `json:"spill,omitempty"`
}

// Candidate is one local endpoint that can take the request, with its load and scores.
type Candidate struct {
	Address      string             `json:"address"`
	Unobserved   bool               `json:"unobserved,omitempty"`
	Saturated    bool               `json:"saturated"`
	WaitingQueue int                `json:"waitingQueue"`
	Running      int                `json:"running"`
	KVCacheUsage float64            `json:"kvCacheUsage"`
	Scores       map[string]float64 `json:"scores,omitempty"`
	Score        float64            `json:"score"`
	// Rank is the endpoint's place in the destination, from 1; 0 when it is not in it.
	Rank int `json:"rank,omitempty"`
}

// SpillExplanation is the spill decision and what it read.
type SpillExplanation struct {
	Spill  bool   `json:"spill"`
	Reason string `json:"reason"`
	Mode   string `json:"mode"`
	// Spilling is the pool's hysteresis state, since Since.
	Spilling         bool      `json:"spilling"`
	Since            time.Time `json:"since,omitzero"`
	TripMark         float64   `json:"tripMark"`
	ClearMark        float64   `json:"clearMark"`
	MinPriority      int       `json:"minPriority"`
	FailoverStandard bool      `json:"failoverStandard,omitempty"`
	// The local pool's load as the spill policy last observed it.
	LocalReadyEndpoints uint32  `json:"localReadyEndpoints"`
	LocalQueueDepth     uint32  `json:"localQueueDepth"`
	LocalSaturation     float64 `json:"localSaturation"`
	LocalSaturated      bool    `json:"localSaturated"`
	ImportOnly          bool    `json:"importOnly,omitempty"`
	Unobserved          bool    `json:"unobserved,omitempty"`
	// The cost model: the request spills only when LocalWaitSeconds exceeds the best target's
	// RTT plus PrefillSeconds (Weighed: the decision compared them).
	ServiceTimeSeconds float64 `json:"serviceTimeSeconds"`
	Weighed            bool    `json:"weighed,omitempty"`
	LocalWaitSeconds   float64 `json:"localWaitSeconds,omitempty"`
	PrefillSeconds     float64 `json:"prefillSeconds,omitempty"`
	// Targets are every remote cluster of the pool: the usable ones best first, then the others
	// with the reason each is no target.
	Targets []SpillTarget `json:"targets"`
}

// SpillTarget is one remote cluster as the spill decision judged it.
type SpillTarget struct {
	Cluster        string  `json:"cluster"`
	Region         string  `json:"region"`
	RTTSeconds     float64 `json:"rttSeconds"`
	AgeSeconds     float64 `json:"ageSeconds"`
	ReadyEndpoints uint32  `json:"readyEndpoints"`
	QueueDepth     uint32  `json:"queueDepth"`
	Saturation     float64 `json:"saturation"`
	// CostSeconds is RTT plus the remote's expected wait plus the prefill of what its cache does
	// not hold of the prompt; Rank its place among the usable, from 1.
	CostSeconds float64 `json:"costSeconds,omitempty"`
	Rank        int     `json:"rank,omitempty"`
	Rejected    string  `json:"rejected,omitempty"`
	// CachedBlocks is how many leading blocks of the prompt the remote's prefix sketch holds.
	CachedBlocks int `json:"cachedBlocks,omitempty"`
}

// maxExplainedCandidates bounds the candidates an explanation lists: the destination's, then the
// best-scored others.
const maxExplainedCandidates = 32

// Explain says where r would go now and why, by the code that routes every request (decide).
func (s *Server) Explain(r ExplainRequest) (Explanation, error) {
	x := &exchange{start: time.Now(), duplexReq: true, duplexResp: true, explain: &Explanation{Pool: s.pool.String()}}
	x.headers = map[string]string{":path": "/v1/completions"}
	if r.Objective != "" {
		x.headers[ObjectiveHeader] = r.Objective
	}
	x.objective, x.priority = s.resolveObjective(r.Objective)
	if r.Objective != "" && x.objective == "" {
		x.explain.step("objective %q is not known: default priority %d", r.Objective, x.priority)
	}
	if r.Priority != nil {
		x.priority = *r.Priority
	}
	if r.Model != "" || r.Prompt != "" {
		body, err := json.Marshal(struct {
			Model  string `json:"model,omitempty"`
			Prompt string `json:"prompt"`
		}{r.Model, r.Prompt})
		if err != nil {
			return Explanation{}, err
		}
		x.body = body
	}
	x.bodyDone = true
	out := s.decide(x)
	e := x.explain
	e.Objective, e.Priority, e.PriorityClass = x.objective, x.priority, priorityClass(x.priority)
	e.Model = x.req.Model
	if e.TargetModel == "" {
		e.TargetModel = x.target
	}
	if len(out) > 0 {
		if ir := out[0].GetImmediateResponse(); ir != nil {
			e.Status = int(ir.GetStatus().GetCode())
			e.Message = errorMessage(ir.GetBody())
		}
	}
	return *e, nil
}

// errorMessage is the message of an OpenAI error body, or the body.
func errorMessage(body []byte) string {
	var b struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &b) == nil && b.Error.Message != "" {
		return b.Error.Message
	}
	return string(body)
}

func (e *Explanation) step(format string, args ...any) {
	e.Steps = append(e.Steps, fmt.Sprintf(format, args...))
}

// candidates records the pool's size and its candidates, with their scores when the pick ran.
func (e *Explanation) candidates(pool int, cands []scheduler.Endpoint, dest []string, scores []scheduler.Scores) {
	e.Endpoints = pool
	e.Candidates = e.Candidates[:0]
	for i, c := range cands {
		ce := Candidate{Address: c.Address, Unobserved: c.Unobserved, Saturated: c.Saturated,
			WaitingQueue: c.Metrics.WaitingQueue, Running: c.Metrics.Running, KVCacheUsage: c.Metrics.KVCacheUsage}
		if scores != nil {
			ce.Scores, ce.Score = scores[i].ByScorer, scores[i].Total
		}
		ce.Rank = slices.Index(dest, c.Address) + 1
		e.Candidates = append(e.Candidates, ce)
	}
	// The destination first, in its order, then the best scores: the ones an operator asks about.
	slices.SortStableFunc(e.Candidates, func(a, b Candidate) int {
		switch {
		case (a.Rank == 0) != (b.Rank == 0):
			if a.Rank != 0 {
				return -1
			}
			return 1
		case a.Rank != b.Rank:
			return a.Rank - b.Rank
		case a.Score != b.Score:
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Address, b.Address)
	})
	if len(e.Candidates) > maxExplainedCandidates {
		e.step("%d candidates; the %d listed are the destination and the best scored", len(e.Candidates), maxExplainedCandidates)
		e.Candidates = e.Candidates[:maxExplainedCandidates]
	}
}

// spill records a spill decision and its trace.
func (e *Explanation) spill(dec spill.Decision, t spill.Trace) {
	se := &SpillExplanation{
		Spill: dec.Spill, Reason: string(dec.Reason), Mode: string(t.Policy.Mode),
		Spilling: t.State.Spilling, Since: t.State.Since,
		TripMark: t.Policy.TripMark, ClearMark: t.Policy.ClearMark, MinPriority: t.Policy.MinPriority, FailoverStandard: t.Policy.FailoverStandard,
		LocalReadyEndpoints: t.Local.ReadyEndpoints, LocalQueueDepth: t.Local.QueueDepth, LocalSaturation: t.Local.Saturation,
		LocalSaturated: t.Local.Saturated, ImportOnly: t.Local.ImportOnly, Unobserved: t.Local.Unobserved,
		ServiceTimeSeconds: t.ServiceTime.Seconds(), Weighed: t.Weighed, LocalWaitSeconds: t.LocalWait.Seconds(), PrefillSeconds: t.Prefill.Seconds(),
		Targets: make([]SpillTarget, 0, len(t.Remotes)),
	}
	for _, v := range t.Remotes {
		se.Targets = append(se.Targets, SpillTarget{Cluster: v.ClusterID, Region: v.Region, RTTSeconds: v.RTT.Seconds(), AgeSeconds: v.Age.Seconds(),
			ReadyEndpoints: v.ReadyEndpoints, QueueDepth: v.QueueDepth, Saturation: v.Saturation,
			CostSeconds: v.Cost.Seconds(), Rank: v.Rank, Rejected: v.Rejected, CachedBlocks: v.CachedBlocks})
	}
	e.Spill = se
}

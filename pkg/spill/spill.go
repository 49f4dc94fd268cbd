// Package spill decides when a request leaves its cluster: local first; when the local pool is
// saturated (past a trip mark, until it falls below a clear mark for a minimum time) or has no
// ready endpoint, a request of eligible priority goes to the best remote cluster that is alive,
// fresh and not saturated, if the expected local wait outweighs the trip. It is pure decision
// logic: the spoke feeds it the local pool's load and the remote candidates, and the EPP asks it
// per request.
//
// The cost model: a request that stays waits about
//
//	localWait = (queued requests per ready endpoint) × serviceTime
//
// where serviceTime is the EWMA of the pool's request durations without a wait
// (ObserveDuration). Spilling costs the round trip to the target plus the prefill of the prompt
// that the target's prefix cache does not hold:
//
//	spillCost = RTT(target) + (promptTokens − cachedTokens(target)) / PrefillTokensPerSecond
//
// cachedTokens comes from the prefix sketch the target's spoke reports (the leading blocks of the
// request's prompt its pool holds); a target without a sketch holds none, conservatively. A
// request spills only when localWait > spillCost of the best target (or the local pool has no
// ready endpoint). Targets are ranked by RTT + their own expected wait + their spillCost's
// prefill: a region likely to hold the prompt's prefix saves its prefill, and may win over a
// closer one.
package spill

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Mode is how a spilled request reaches the remote cluster.
type Mode string

const (
	// ParentMode sends it to the remote cluster's inference gateway, whose EPP picks the endpoint.
	ParentMode Mode = "ParentMode"
	// EndpointMode sends it to a remote endpoint directly (flat networks).
	EndpointMode Mode = "EndpointMode"
)

// Policy is a pool's spill policy (Spillway's SpillPolicy CRD). The zero value is not valid;
// DefaultPolicy is what a pool without a policy gets.
type Policy struct {
	// MinPriority is the lowest InferenceObjective priority that may spill (Critical = 100).
	MinPriority int
	// TripMark (0,1]: local saturation at which spilling starts; ClearMark [0,TripMark): below it
	// for MinDwell, spilling stops.
	TripMark, ClearMark float64
	MinDwell            time.Duration
	// TargetRegions, when set, limits targets to these regions, in order of preference.
	TargetRegions []string
	Mode          Mode
	// FailoverStandard lets priority ≥ 0 fail over too when the local pool has no ready endpoint.
	FailoverStandard bool
	// PrefillTokensPerSecond prices the prompt a target must prefill without a cached prefix.
	PrefillTokensPerSecond float64
	// Freshness bounds how old a remote cluster's capacity may be to be used.
	Freshness time.Duration
	// FallbackPool (a pool of the same namespace) and FallbackModel serve an eligible request
	// here when it should leave but no remote cluster can take it.
	FallbackPool, FallbackModel string
}

// DefaultPolicy spills Critical traffic only, trips at 0.9, clears below 0.7 for 10 s.
func DefaultPolicy() Policy {
	return Policy{MinPriority: 100, TripMark: 0.9, ClearMark: 0.7, MinDwell: 10 * time.Second, Mode: ParentMode,
		PrefillTokensPerSecond: 8000, Freshness: 5 * time.Second}
}

// Validate names every problem of the policy.
func (p Policy) Validate() error {
	var errs []error
	if !(p.TripMark > 0 && p.TripMark <= 1) {
		errs = append(errs, fmt.Errorf("tripMark %v: want (0, 1]", p.TripMark))
	}
	if !(p.ClearMark >= 0 && p.ClearMark < p.TripMark) {
		errs = append(errs, fmt.Errorf("clearMark %v: want [0, tripMark)", p.ClearMark))
	}
	if p.MinDwell < 0 || p.Freshness <= 0 || p.PrefillTokensPerSecond <= 0 {
		errs = append(errs, errors.New("minDwell must be ≥ 0; freshness and prefillTokensPerSecond > 0"))
	}
	if p.Mode != ParentMode && p.Mode != EndpointMode {
		errs = append(errs, fmt.Errorf("mode %q: want ParentMode or EndpointMode", p.Mode))
	}
	return errors.Join(errs...)
}

// Remote is one other cluster serving the pool, as the spoke knows it.
type Remote struct {
	ClusterID string
	Region    string
	// Gateway is the cluster's inference gateway (Parent Mode); Endpoints its endpoints, least
	// loaded first (Endpoint Mode).
	Gateway   string
	Endpoints []string
	// Alive is false when gossip or the hub says the cluster is gone.
	Alive bool
	// Unreachable is true when this cluster's gossip pings to it went unanswered for a while: not
	// a target, though not gone either.
	Unreachable bool
	// Cordoned is true while an admin cordons the cluster or its region (hubctl cordon): not a
	// target.
	Cordoned bool
	// Age of its capacity report.
	Age       time.Duration
	Saturated bool
	// Spilling is the pool's spill state in the cluster's own capacity report: it sends requests
	// away itself. Such a cluster is never a target (see ranked).
	Spilling       bool
	Saturation     float64
	ReadyEndpoints uint32
	QueueDepth     uint32
	// RTT measured from this cluster; 0 when unknown.
	RTT time.Duration
	// Models are the models (and LoRA adapters) the cluster's pool serves, from its capacity
	// report; empty when it does not say, and then it is taken to serve every model.
	Models []string
	// Prefix, when the cluster's spoke reports one, tells how many leading blocks of a prompt's
	// chain (of PrefixBlockBytes-byte blocks) its pool holds.
	Prefix           PrefixSketch `json:"-"`
	PrefixBlockBytes int          `json:"-"`
}

// PrefixSketch tells how many leading blocks of a prompt's chain of block hashes a pool holds
// (a *prefix.Sketch).
type PrefixSketch interface {
	Matched(chain []uint64) int
}

// Serves reports whether the remote's pool serves model ("" is any model; a pool that does not
// say which models it serves serves every one).
func (r Remote) Serves(model string) bool {
	return model == "" || len(r.Models) == 0 || slices.Contains(r.Models, model)
}

// Local is the local pool's load, refreshed by the spoke.
type Local struct {
	ReadyEndpoints uint32
	QueueDepth     uint32
	Saturation     float64
	Saturated      bool
	// ImportOnly is true when the cluster has no local pool of that name, only an import: every
	// request goes to an exporting cluster.
	ImportOnly bool
	// Unobserved is true while some endpoint of the pool has not been observed yet (a spoke that
	// just started, an endpoint just added; see capacity.Unobserved): the load says nothing. The
	// hysteresis holds its state (a pool not spilling does not start), and ReadyEndpoints == 0
	// is no reason to fail over; a request that no local endpoint can take (Request.NoLocal)
	// still fails over. A Decider's local pool is unobserved until its first ObserveLocal.
	Unobserved bool
}

// Reason says why a request spilled or stayed.
type Reason string

// Reasons.
const (
	ReasonSaturated   Reason = "saturated"    // spilled: the local pool is past its trip mark
	ReasonNoEndpoints Reason = "no_endpoints" // failed over: no ready local endpoint
	ReasonImportOnly  Reason = "import_only"  // the cluster only imports the pool
	ReasonLocal       Reason = "local"        // stayed: local capacity
	ReasonHop         Reason = "hop"          // stayed: already spilled once
	ReasonIneligible  Reason = "ineligible"   // stayed: priority below the policy's
	ReasonNoTarget    Reason = "no_target"    // stayed: no alive, fresh, unsaturated remote that is not spilling itself
	ReasonNoHopKey    Reason = "no_hop_key"   // stayed: Parent Mode, and no key to sign the hop marker yet
	ReasonNotWorth    Reason = "not_worth"    // stayed: the local wait is shorter than the trip
	ReasonFallback    Reason = "fallback"     // stayed on the policy's fallback pool or model: no target
	// ReasonCapped: spilled, the request's objective is at its capacity cap here
	// (Request.OverCap).
	ReasonCapped Reason = "objective_capped"
	// ReasonLatency: spilled before the pool tripped: the local expected time to first token
	// breaks the objective's (Request.TTFT) and the target's meets it.
	ReasonLatency Reason = "latency"
	// ReasonLatencyUnmet: stayed, no cluster is expected to meet the objective's time to first
	// token; the EPP sheds a sheddable request so.
	ReasonLatencyUnmet Reason = "latency_unmet"
)

// Request is what the decision needs of one request.
type Request struct {
	Priority     int
	PromptTokens int
	// Hop is true when the request already spilled from another cluster: the EPP verified its
	// hop marker.
	Hop bool
	// NoLocal is true when no local endpoint can take the request (none ready, none in the
	// gateway's subset or serving the model), whatever the last observed load said.
	NoLocal bool
	// NoHopKey is true when the EPP holds no key to sign a hop marker (none has come from the
	// hub yet). Parent Mode then sends nothing away: the remote EPP could not tell that the
	// request already spilled. The request stays (on the policy's fallback when it has one).
	// Endpoint Mode needs no marker: it reaches model servers, which never route.
	NoHopKey bool
	// Model is the model the request asks for: a cluster whose pool does not serve it is never
	// a target (failover never changes the model). Empty: any.
	Model string
	// Chain, when set, returns the prompt's chain of block hashes (of ChainBlockBytes-byte
	// blocks), for the targets' prefix sketches. It is called at most once, and only when the
	// decision ranks targets.
	Chain           func() []uint64
	ChainBlockBytes int
	// TTFT is the latency objective of the request's objective, 0 for none: an eligible request
	// whose local expected time to first token breaks it spills to a cluster expected to meet
	// it, even before the pool trips.
	TTFT time.Duration
	// OverCap is true when the request's objective is at its capacity cap in the local pool:
	// an eligible request spills (the target applies its own cap), whatever the local load.
	OverCap bool
}

// Decision is where a request goes.
type Decision struct {
	Spill  bool
	Reason Reason
	// Mode is how a spilled request reaches Target: in Parent Mode through the target's
	// gateway, whose EPP must see the hop marker.
	Mode Mode
	// Target and Destination (host:port list, best first) when Spill.
	Target      Remote
	Destination []string
	// FallbackPool and FallbackModel, when Reason is ReasonFallback: serve it here on them.
	FallbackPool, FallbackModel string
}

// maxTargets bounds the clusters (and, in Endpoint Mode, the endpoints of each) a spilled
// request's destination lists.
const maxTargets = 2

// Candidates lists the remote clusters of the pool.
type Candidates func() []Remote

// State is a pool's spill state, for status and metrics.
type State struct {
	Spilling bool
	Since    time.Time
	// LastTarget is the cluster that took the latest spilled request.
	LastTarget, LastRegion string
}

// Decider holds one pool's policy, hysteresis state and service-time estimate.
type Decider struct {
	remotes Candidates
	now     func() time.Time

	mu          sync.Mutex
	policy      Policy
	local       Local
	state       State
	belowSince  time.Time
	serviceTime time.Duration
	// sent holds, by cluster, when each request this decider spilled there and that has not
	// ended (Ended) was sent, oldest first: the ranking adds those sent since the cluster's
	// capacity report to the queue it reported.
	sent map[string][]time.Time
}

// New returns a decider for a pool whose remote clusters remotes lists.
func New(p Policy, remotes Candidates) (*Decider, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &Decider{remotes: remotes, now: time.Now, policy: p, serviceTime: time.Second, local: Local{Unobserved: true}, sent: map[string][]time.Time{}}, nil
}

// SetPolicy replaces the policy; the hysteresis state stays.
func (d *Decider) SetPolicy(p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	d.mu.Lock()
	d.policy = p
	d.mu.Unlock()
	return nil
}

// Policy returns the current policy.
func (d *Decider) Policy() Policy {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.policy
}

// ObserveLocal takes the local pool's latest load and moves the hysteresis: spilling starts when
// saturation reaches the trip mark, the detector says saturated, or no endpoint is ready; it
// stops once saturation stayed below the clear mark for MinDwell. An unobserved pool (unknown is
// not hot) moves nothing: the state holds.
func (d *Decider) ObserveLocal(l Local) {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.local = l
	if l.Unobserved {
		return
	}
	hot := l.ReadyEndpoints == 0 || l.Saturated || l.Saturation >= d.policy.TripMark
	switch {
	case hot:
		d.belowSince = time.Time{}
		if !d.state.Spilling {
			d.state.Spilling, d.state.Since = true, now
		}
	case l.Saturation < d.policy.ClearMark:
		if d.belowSince.IsZero() {
			d.belowSince = now
		}
		if d.state.Spilling && now.Sub(d.belowSince) >= d.policy.MinDwell && now.Sub(d.state.Since) >= d.policy.MinDwell {
			d.state = State{}
		}
	default: // between the marks: keep the current state
		d.belowSince = time.Time{}
	}
}

// ObserveDuration feeds one served request's duration into the service-time estimate: a request
// that did not wait for its endpoint (the model counts waits per queued request).
func (d *Decider) ObserveDuration(t time.Duration) {
	if t <= 0 {
		return
	}
	d.mu.Lock()
	d.serviceTime = time.Duration(0.9*float64(d.serviceTime) + 0.1*float64(t))
	d.mu.Unlock()
}

// State returns the pool's spill state.
func (d *Decider) State() State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state
}

// Decide says whether the request spills and where. A request it spills counts as in flight at
// its target until Ended.
func (d *Decider) Decide(r Request) Decision {
	dec := d.decide(r, nil)
	if dec.Spill {
		now := d.now()
		d.mu.Lock()
		d.state.LastTarget, d.state.LastRegion = dec.Target.ClusterID, dec.Target.Region
		d.sent[dec.Target.ClusterID] = append(d.sent[dec.Target.ClusterID], now)
		d.mu.Unlock()
	}
	return dec
}

// Ended says that a request Decide spilled to cluster ended (answered, failed or abandoned). The
// oldest of the cluster's stops counting: requests to one cluster end about in the order they
// were sent.
func (d *Decider) Ended(cluster string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch sent := d.sent[cluster]; {
	case len(sent) > 1:
		d.sent[cluster] = sent[1:]
	case len(sent) == 1:
		delete(d.sent, cluster)
	}
}

// unreported returns how many requests Decide spilled to r that have not ended and were sent
// after r's capacity report: sent since it was received less a round trip (the report's way
// here), which is what the report cannot count yet.
func (d *Decider) unreported(r Remote) int {
	since := d.now().Add(-r.Age - r.RTT)
	d.mu.Lock()
	defer d.mu.Unlock()
	sent := d.sent[r.ClusterID]
	i, _ := slices.BinarySearchFunc(sent, since, func(t, since time.Time) int { return t.Compare(since) })
	return len(sent) - i
}

// Trace is what a decision read and how it judged each remote: Explain fills it.
type Trace struct {
	Policy      Policy
	Local       Local
	State       State
	ServiceTime time.Duration
	// LocalWait and Prefill are the cost model's sides when the decision weighed them (a
	// saturated pool with a target): the request spills only when LocalWait > best RTT + Prefill,
	// Prefill being what the best target's cache does not hold. Weighing a latency objective
	// instead (a pool not spilling), LocalWait is the local expected time to first token.
	Weighed            bool
	LocalWait, Prefill time.Duration
	// Remotes are every remote cluster of the pool: the usable ones best first (Rank from 1),
	// then the others with the reason each is no target.
	Remotes []Verdict
}

// Verdict is one remote as a decision saw it.
type Verdict struct {
	Remote
	// Cost is RTT plus the remote's expected wait plus the prefill its cache does not hold
	// (usable remotes only).
	Cost time.Duration
	// CachedBlocks is how many leading blocks of the prompt the remote's prefix sketch holds.
	CachedBlocks int
	// Rank is the remote's place among the usable ones, from 1; 0 when it is no target.
	Rank int
	// Rejected says why the remote is no target: one of the Rejected* reasons.
	Rejected string
}

// Why a remote is no spill target (Verdict.Rejected).
const (
	RejectedGone        = "not_alive"
	RejectedUnreachable = "unreachable"
	RejectedCordoned    = "cordoned"
	RejectedSaturated   = "saturated"
	RejectedSpilling    = "spilling"
	RejectedNoEndpoints = "no_ready_endpoints"
	RejectedStale       = "stale"
	RejectedNoAddress   = "no_address"
	RejectedRegion      = "region_not_allowed"
	RejectedModel       = "model_not_served"
)

// Explain decides as Decide does, from the same state and by the same code, and returns what the
// decision read; it changes nothing (the last target stays).
func (d *Decider) Explain(r Request) (Decision, Trace) {
	var t Trace
	dec := d.decide(r, &t)
	return dec, t
}

// decide is Decide's logic; with a trace it records its inputs and every remote's verdict.
func (d *Decider) decide(r Request, t *Trace) Decision {
	d.mu.Lock()
	p, l, st, service := d.policy, d.local, d.state, d.serviceTime
	d.mu.Unlock()
	var ranked []target
	if t != nil {
		*t = Trace{Policy: p, Local: l, State: st, ServiceTime: service}
		// Every remote is judged, whatever the decision, so that an explanation lists them all.
		ranked = d.ranked(p, service, &r, &t.Remotes)
	}

	if r.Hop {
		return Decision{Reason: ReasonHop} // never twice: served here or refused here
	}
	var reason Reason
	switch {
	case l.ImportOnly:
		reason = ReasonImportOnly
	case l.ReadyEndpoints == 0 && !l.Unobserved || r.NoLocal:
		reason = ReasonNoEndpoints
		if r.Priority < p.MinPriority && !(p.FailoverStandard && r.Priority >= 0) {
			return Decision{Reason: ReasonIneligible}
		}
	case r.OverCap && r.Priority >= p.MinPriority:
		reason = ReasonCapped
	case !st.Spilling:
		if r.TTFT <= 0 || l.Unobserved {
			return Decision{Reason: ReasonLocal}
		}
		// The latency objective: the local expected time to first token is the wait for a
		// slot plus the prefill of the whole prompt (what the local cache holds is not known
		// here: the picker finds it).
		local := localWait(l, service) + p.prefill(r.PromptTokens)
		if t != nil {
			t.Weighed, t.LocalWait = true, local
		}
		if local <= r.TTFT {
			return Decision{Reason: ReasonLocal}
		}
		if r.Priority < p.MinPriority {
			// It may not spill: no cluster it may go to is expected to meet the objective.
			return Decision{Reason: ReasonLatencyUnmet}
		}
		reason = ReasonLatency
	case r.Priority < p.MinPriority:
		return Decision{Reason: ReasonIneligible}
	default:
		reason = ReasonSaturated
	}

	if t == nil {
		ranked = d.ranked(p, service, &r, nil)
	}
	if reason == ReasonLatency && (len(ranked) == 0 || ranked[0].cost > r.TTFT) {
		// No cluster is expected to meet the objective: served here (or shed, if sheddable),
		// never sent where it would wait as long.
		return Decision{Reason: ReasonLatencyUnmet}
	}
	if len(ranked) == 0 {
		if p.FallbackPool != "" || p.FallbackModel != "" {
			return Decision{Reason: ReasonFallback, FallbackPool: p.FallbackPool, FallbackModel: p.FallbackModel}
		}
		return Decision{Reason: ReasonNoTarget}
	}
	best := ranked[0]
	if reason == ReasonSaturated {
		wait := localWait(l, service)
		prefill := p.prefill(r.PromptTokens - best.cached)
		if t != nil {
			t.Weighed, t.LocalWait, t.Prefill = true, wait, prefill
		}
		if wait <= best.RTT+prefill {
			return Decision{Reason: ReasonNotWorth}
		}
	}
	if p.Mode == ParentMode && r.NoHopKey {
		if p.FallbackPool != "" || p.FallbackModel != "" {
			return Decision{Reason: ReasonFallback, FallbackPool: p.FallbackPool, FallbackModel: p.FallbackModel}
		}
		return Decision{Reason: ReasonNoHopKey}
	}
	// The destination lists fallbacks after the pick, as the EPP does locally: the gateway tries
	// them in order when one cannot be reached (a cluster that died since the last view).
	dec := Decision{Spill: true, Reason: reason, Mode: p.Mode, Target: best.Remote}
	for _, r := range ranked[:min(len(ranked), maxTargets)] {
		if p.Mode == EndpointMode && len(r.Endpoints) > 0 {
			dec.Destination = append(dec.Destination, r.Endpoints[:min(len(r.Endpoints), maxTargets)]...)
		} else if r.Gateway != "" {
			dec.Destination = append(dec.Destination, r.Gateway)
		}
	}
	return dec
}

// localWait is the cost model's expected wait for a local slot: the queued requests per ready
// endpoint times the service time, at least one service time when no endpoint has headroom.
func localWait(l Local, service time.Duration) time.Duration {
	w := time.Duration(float64(l.QueueDepth) / float64(max(l.ReadyEndpoints, 1)) * float64(service))
	if l.Saturated {
		w = max(w, service)
	}
	return w
}

// Targets returns the remotes a spilled request may go to now, best first.
func (d *Decider) Targets() []Remote {
	d.mu.Lock()
	p, service := d.policy, d.serviceTime
	d.mu.Unlock()
	ranked := d.ranked(p, service, &Request{}, nil)
	out := make([]Remote, len(ranked))
	for i, t := range ranked {
		out[i] = t.Remote
	}
	return out
}

// ranked returns the usable remotes for a request, best first: serving its model, within the
// allowed regions (their order first when the policy lists them), by RTT plus the remote's own
// expected wait plus the prefill of what its prefix sketch does not hold of the prompt.
//
// A remote whose own report says it is spilling the pool is never usable, saturated or not
// (hysteresis keeps a pool spilling between its marks, and past the trip mark while it has
// headroom). That is what bounds a request's journey when a proxy between two clusters strips
// the hop marker: each cluster it reaches spills it only to a cluster that is not spilling, and
// a cluster that spills it is, by then, spilling; so a request visits each cluster at most once
// while the views hold, and its path is at most as long as the fleet.
func (d *Decider) ranked(p Policy, service time.Duration, req *Request, verdicts *[]Verdict) []target {
	type scored struct {
		r    Remote
		rank int
		cost time.Duration
		hit  int
	}
	var cands []scored
	var rejected []Verdict
	var chain []uint64
	chained := false
	for _, r := range d.remotes() {
		why := rejection(p, r, req.Model)
		if why != "" {
			if verdicts != nil {
				rejected = append(rejected, Verdict{Remote: r, Rejected: why})
			}
			continue
		}
		rank := 0
		if len(p.TargetRegions) > 0 {
			rank = slices.Index(p.TargetRegions, r.Region)
		}
		hit := 0
		if r.Prefix != nil && req.Chain != nil && r.PrefixBlockBytes == req.ChainBlockBytes && r.PrefixBlockBytes > 0 {
			if !chained {
				chain, chained = req.Chain(), true
			}
			hit = r.Prefix.Matched(chain)
		}
		cached := min(hit*r.PrefixBlockBytes/bytesPerToken, req.PromptTokens)
		// The remote's queue as it reported it, plus half of the requests this decider sent
		// there since that report that have not ended (about half of them run, half wait):
		// between two reports the spilled requests spread over the targets instead of all
		// queueing at the best. Those sent before it, the report counts if they wait.
		queued := float64(r.QueueDepth) + float64(d.unreported(r))/2
		cost := r.RTT + time.Duration(queued/float64(r.ReadyEndpoints)*float64(service)) + p.prefill(req.PromptTokens-cached)
		cands = append(cands, scored{r, rank, cost, hit})
	}
	slices.SortFunc(cands, func(a, b scored) int {
		switch {
		case a.rank != b.rank:
			return a.rank - b.rank
		case a.cost != b.cost:
			return cmp.Compare(a.cost, b.cost)
		}
		return strings.Compare(a.r.ClusterID, b.r.ClusterID)
	})
	out := make([]target, len(cands))
	for i, c := range cands {
		out[i] = target{Remote: c.r, cost: c.cost, cached: min(c.hit*c.r.PrefixBlockBytes/bytesPerToken, req.PromptTokens)}
		if verdicts != nil {
			*verdicts = append(*verdicts, Verdict{Remote: c.r, Cost: c.cost, Rank: i + 1, CachedBlocks: c.hit})
		}
	}
	if verdicts != nil {
		slices.SortFunc(rejected, func(a, b Verdict) int { return strings.Compare(a.ClusterID, b.ClusterID) })
		*verdicts = append(*verdicts, rejected...)
	}
	return out
}

// target is a usable remote with its cost (RTT, its expected wait, the prefill its cache does
// not hold: its expected time to first token) and the prompt tokens its cache holds.
type target struct {
	Remote
	cost   time.Duration
	cached int
}

// bytesPerToken is the prompt bytes a token counts for, as the EPP estimates prompt tokens.
const bytesPerToken = 4

// prefill is how long prefilling tokens takes at the policy's rate.
func (p Policy) prefill(tokens int) time.Duration {
	return time.Duration(float64(max(tokens, 0)) / p.PrefillTokensPerSecond * float64(time.Second))
}

// rejection says why r is no spill target for a request for model under p, or "" when it is one.
func rejection(p Policy, r Remote, model string) string {
	switch {
	case !r.Alive:
		return RejectedGone
	case !r.Serves(model):
		return RejectedModel
	case r.Unreachable:
		return RejectedUnreachable
	case r.Cordoned:
		return RejectedCordoned
	case r.Saturated:
		return RejectedSaturated
	case r.Spilling:
		return RejectedSpilling
	case r.ReadyEndpoints == 0:
		return RejectedNoEndpoints
	case r.Age > p.Freshness:
		return RejectedStale
	case p.Mode == ParentMode && r.Gateway == "" || p.Mode == EndpointMode && len(r.Endpoints) == 0 && r.Gateway == "":
		return RejectedNoAddress
	case len(p.TargetRegions) > 0 && !slices.Contains(p.TargetRegions, r.Region):
		return RejectedRegion
	}
	return ""
}

// Package scheduler picks the endpoint of a pool for one request, the way GIE's endpoint picker
// does: weighted scorers (queue-scorer, kv-cache-utilization-scorer, prefix-cache-scorer,
// lora-affinity-scorer; names and semantics as GIE's, so configurations carry over) and a
// max-score picker with a random tie-break that also returns the next best endpoints as fallbacks.
// Endpoints the caller marks saturated rank after every endpoint with headroom, whatever their
// score: prefix affinity never sends a request to a deep queue while another endpoint has room.
package scheduler

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/spillway-io/spillway/pkg/epp/prefix"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

// Scorer names, as in GIE's EndpointPickerConfig.
const (
	QueueScorer       = "queue-scorer"
	KVCacheScorer     = "kv-cache-utilization-scorer"
	PrefixCacheScorer = "prefix-cache-scorer"
	LoRAScorer        = "lora-affinity-scorer"
	// GPUScorer prefers endpoints whose GPUs are less busy (NVIDIA DCGM's utilisation); off
	// unless a weight is given.
	GPUScorer = "gpu-utilization-scorer"
)

// Endpoint is a candidate with its latest metrics.
type Endpoint struct {
	Address   string
	Metrics   modelmetrics.Metrics
	ScrapedAt time.Time
	// Saturated is true when the endpoint has no headroom by the saturation detector's
	// thresholds (or its metrics are stale): it is picked only when no endpoint has headroom,
	// and follows those that have as a fallback.
	Saturated bool
	// Unobserved is true while nothing is known of the endpoint's load yet: no scrape of it has
	// ended and it became a scrape target no longer than the metrics' staleness ago (a spoke that
	// just started, an endpoint just added; capacity.Thresholds.Pending). Its zero metrics are no
	// measure, and the saturation detector does not count it saturated: unknown is not hot.
	Unobserved bool
	// GPUUtilization, when HasGPU, is the utilisation, 0..1, of the GPUs a DCGM exporter
	// attributes to the endpoint's Pod.
	GPUUtilization float64
	HasGPU         bool
}

// Request is what scoring reads of a request; Pick records its choice in it (Chosen).
type Request struct {
	// Model is the model the request is sent as (after model routing).
	Model string
	// LoRA is true when Model is an adapter rather than the pool's base model.
	LoRA bool
	// Prompt is the text whose prefix decides cache affinity.
	Prompt string
	// PrefixBoost, when above 1, multiplies the prefix-cache scorer's weight: a request another
	// cluster spilled here, ranked there by where its prefix is cached, goes to the endpoint
	// holding it while that one has headroom.
	PrefixBoost float64

	hashes []uint64
	chosen int
}

// Chosen is the index, in the candidates of the request's last Pick, of the endpoint it chose;
// -1 when it had none.
func (r *Request) Chosen() int { return r.chosen }

// Scorer scores every candidate in [0, 1]; higher is better.
type Scorer interface {
	Name() string
	Score(req *Request, eps []Endpoint, scores []float64)
}

// Weight is a scorer's weight in the sum.
type Weight struct {
	Scorer Scorer
	Weight float64
}

// Options configure a Scheduler.
type Options struct {
	// Weights by scorer name; a missing or zero weight leaves the scorer out. Defaults: GIE v1.5's
	// queue 2, KV-cache 2, prefix-cache 3, plus LoRA affinity 1 (GIE's chart leaves it out).
	Weights map[string]float64
	// Fallbacks is how many next-best endpoints follow the pick.
	Fallbacks int
	Prefix    prefix.Options
}

// DefaultWeights returns the scorer weights of GIE v1.5's default configuration.
func DefaultWeights() map[string]float64 {
	return map[string]float64{QueueScorer: 2, KVCacheScorer: 2, PrefixCacheScorer: 3, LoRAScorer: 1}
}

// Scheduler is safe for concurrent use.
type Scheduler struct {
	weights   []Weight
	fallbacks int
	prefix    *prefix.Indexer
}

// New returns a scheduler; unknown scorer names are an error.
func New(o Options) (*Scheduler, error) {
	if o.Weights == nil {
		o.Weights = DefaultWeights()
	}
	ix := prefix.New(o.Prefix)
	all := map[string]Scorer{
		QueueScorer:       queueScorer{},
		KVCacheScorer:     kvCacheScorer{},
		PrefixCacheScorer: prefixScorer{ix: ix},
		LoRAScorer:        loraScorer{},
		GPUScorer:         gpuScorer{},
	}
	s := &Scheduler{fallbacks: max(o.Fallbacks, 0), prefix: ix}
	names := make([]string, 0, len(o.Weights))
	for n := range o.Weights {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		sc, ok := all[n]
		if !ok {
			return nil, fmt.Errorf("unknown scorer %q: want one of %s, %s, %s, %s, %s", n, QueueScorer, KVCacheScorer, PrefixCacheScorer, LoRAScorer, GPUScorer)
		}
		w := o.Weights[n]
		if w < 0 {
			return nil, fmt.Errorf("scorer %q: weight %v must not be negative", n, w)
		}
		if w > 0 {
			s.weights = append(s.weights, Weight{Scorer: sc, Weight: w})
		}
	}
	return s, nil
}

// Prefix returns the prefix indexer, so that endpoints leaving the pool can be forgotten.
func (s *Scheduler) Prefix() *prefix.Indexer { return s.prefix }

// Pick returns the chosen endpoint followed by up to Fallbacks next-best ones, best first, and
// records the request's prefix as served by the chosen endpoint. eps must not be empty.
func (s *Scheduler) Pick(req *Request, eps []Endpoint) []string {
	out := s.rank(req, eps, nil)
	if len(out) > 0 {
		s.prefix.Add(out[0], req.hashes)
	}
	return out
}

// Scores are one candidate's scores, as Explain reports them.
type Scores struct {
	// ByScorer holds each scorer's score in [0, 1], before its weight.
	ByScorer map[string]float64
	// Total is the weighted sum the pick compares.
	Total float64
}

// Explain returns what Pick would return now, by the same code, with every candidate's scores
// (in eps's order); it records nothing. Equal totals are broken at random, by Pick as here.
func (s *Scheduler) Explain(req *Request, eps []Endpoint) ([]string, []Scores) {
	scores := make([]Scores, len(eps))
	for i := range scores {
		scores[i].ByScorer = make(map[string]float64, len(s.weights))
	}
	return s.rank(req, eps, scores), scores
}

// rank is Pick's choice; explain, when not nil, receives every candidate's scores.
func (s *Scheduler) rank(req *Request, eps []Endpoint, explain []Scores) []string {
	n := len(eps)
	req.chosen = -1
	if n == 0 {
		return nil
	}
	req.hashes = s.prefix.Hashes(req.hashes[:0], req.Model, req.Prompt)
	buf := scratch.Get().(*[]float64)
	if cap(*buf) < 2*n {
		*buf = make([]float64, 2*n)
	}
	total, scores := (*buf)[:n], (*buf)[n:2*n]
	clear(total)
	defer scratch.Put(buf)
	for _, w := range s.weights {
		clear(scores)
		w.Scorer.Score(req, eps, scores)
		weight := w.Weight
		if req.PrefixBoost > 1 {
			if _, ok := w.Scorer.(prefixScorer); ok {
				weight *= req.PrefixBoost
			}
		}
		for i, v := range scores {
			total[i] += weight * v
		}
		if explain != nil {
			for i, v := range scores {
				explain[i].ByScorer[w.Scorer.Name()] = v
			}
		}
	}
	if explain != nil {
		for i, v := range total {
			explain[i].Total = v
		}
	}
	k := min(s.fallbacks+1, n)
	// Selection of the k best (endpoints with headroom first, then by score) with a random
	// tie-break: reservoir choice among equals keeps the cost O(n·k) with no sort and no
	// allocation beyond the result.
	picked := make([]int, 0, k)
	taken := func(i int) bool { return slices.Contains(picked, i) }
	for len(picked) < k {
		best, ties := -1, 0
		for i := range n {
			if taken(i) {
				continue
			}
			switch {
			case best < 0 || eps[best].Saturated && !eps[i].Saturated:
				best, ties = i, 1
			case eps[i].Saturated != eps[best].Saturated:
			case total[i] > total[best]:
				best, ties = i, 1
			case total[i] == total[best]:
				ties++
				if rand.IntN(ties) == 0 {
					best = i
				}
			}
		}
		picked = append(picked, best)
	}
	out := make([]string, k)
	for j, i := range picked {
		out[j] = eps[i].Address
	}
	req.chosen = picked[0]
	return out
}

// scratch holds the per-pick score buffers.
var scratch = sync.Pool{New: func() any { return new([]float64) }}

// queueScorer prefers short waiting queues: (max − q) / (max − min) over the candidates, 1 for all
// when every queue is equal.
type queueScorer struct{}

func (queueScorer) Name() string { return QueueScorer }

func (queueScorer) Score(_ *Request, eps []Endpoint, scores []float64) {
	lo, hi := eps[0].Metrics.WaitingQueue, eps[0].Metrics.WaitingQueue
	for _, e := range eps[1:] {
		lo, hi = min(lo, e.Metrics.WaitingQueue), max(hi, e.Metrics.WaitingQueue)
	}
	for i, e := range eps {
		if hi == lo {
			scores[i] = 1
		} else {
			scores[i] = float64(hi-e.Metrics.WaitingQueue) / float64(hi-lo)
		}
	}
}

// kvCacheScorer prefers free KV-cache: 1 − utilisation.
type kvCacheScorer struct{}

func (kvCacheScorer) Name() string { return KVCacheScorer }

func (kvCacheScorer) Score(_ *Request, eps []Endpoint, scores []float64) {
	for i, e := range eps {
		scores[i] = 1 - min(max(e.Metrics.KVCacheUsage, 0), 1)
	}
}

// gpuScorer prefers endpoints whose GPUs are less busy: 1 − utilisation; an endpoint whose
// utilisation is unknown scores 0.5, neither preferred nor avoided.
type gpuScorer struct{}

func (gpuScorer) Name() string { return GPUScorer }

func (gpuScorer) Score(_ *Request, eps []Endpoint, scores []float64) {
	for i, e := range eps {
		scores[i] = 0.5
		if e.HasGPU {
			scores[i] = 1 - min(max(e.GPUUtilization, 0), 1)
		}
	}
}

// prefixScorer prefers endpoints that served the longest prefix of the prompt: matched blocks ÷
// the prompt's blocks.
type prefixScorer struct{ ix *prefix.Indexer }

func (prefixScorer) Name() string { return PrefixCacheScorer }

func (p prefixScorer) Score(req *Request, eps []Endpoint, scores []float64) {
	if len(req.hashes) == 0 {
		return
	}
	type hit struct {
		addr   string
		blocks int
	}
	var hits []hit
	p.ix.Match(req.hashes, func(addr string, blocks int) { hits = append(hits, hit{addr, blocks}) })
	if len(hits) == 0 {
		return
	}
	total := float64(len(req.hashes))
	// Few endpoints hold a prefix: scanning for them beats indexing every candidate.
	for _, h := range hits {
		for i := range eps {
			if eps[i].Address == h.addr {
				scores[i] = float64(h.blocks) / total
				break
			}
		}
	}
}

// loraScorer follows GIE's lora-affinity-scorer: an endpoint already running the requested
// adapter scores 1, one with a free adapter slot 0.8, one where the adapter waits 0.6, and one whose
// slots are all taken by other adapters 0. Requests for the base model score 1 everywhere (GIE
// scores them as adapters it cannot find, which would steer base-model traffic away from endpoints
// busy with adapters).
type loraScorer struct{}

func (loraScorer) Name() string { return LoRAScorer }

func (loraScorer) Score(req *Request, eps []Endpoint, scores []float64) {
	for i, e := range eps {
		m := e.Metrics
		switch {
		case !req.LoRA:
			scores[i] = 1
		case slices.Contains(m.ActiveLoRAs, req.Model):
			scores[i] = 1
		case m.MaxLoRAs == 0 || len(m.ActiveLoRAs)+len(m.WaitingLoRAs) < m.MaxLoRAs:
			scores[i] = 0.8
		case slices.Contains(m.WaitingLoRAs, req.Model):
			scores[i] = 0.6
		default:
			scores[i] = 0
		}
	}
}

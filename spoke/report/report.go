// Package report is the spoke's capacity report loop. It follows the local pools: on every
// change it points the metrics scraper at their endpoints, hands them to the EPP's datastore
// (the prefix index forgets the endpoints that left), and tells the hub client what this cluster
// exports and which pools' remote capacity it needs. Every period it turns the endpoints' latest
// metrics into each pool's capacity for the hub, with the EPP's request counts and spill state
// on the EPP's pool, whose load also feeds the spill decision.
//
// A spoke that starts, or a pool that gains an endpoint, has endpoints not scraped yet. Until
// each has been scraped once (or failed to be), or for at most the metrics' staleness after it
// became a target, the pool is unobserved (capacity.Unobserved): the spill decision holds its
// state rather than reading "no endpoint ready" as "spill", so a pool of idle endpoints never
// reports spilling at start-up, and one whose endpoints never answer still does.
package report

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/pkg/capacity"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/pkg/spill"
	"github.com/spillway-io/spillway/spoke/source"
)

// Pools is where the local pools come from (a spoke/source.Source).
type Pools interface {
	Pools() []source.Pool
	Changed() <-chan struct{}
}

// readier is a source that knows its pools only after a while (the Kubernetes controller,
// until its caches have synced): Ready returns an error until then.
type readier interface{ Ready() error }

// Scraper reads the endpoints' metrics (a *modelmetrics.Scraper).
type Scraper interface {
	SetTargets([]modelmetrics.Target)
	Sample(addr string) (modelmetrics.Sample, bool)
}

// Hub takes what the hub client sends (a *hubclient.Client).
type Hub interface {
	SetExports([]fleet.Export)
	SetInterest([]fleet.PoolRef)
	SetCapacity([]fleet.PoolCapacity)
}

// Endpoints is the EPP's datastore of local endpoints: Set replaces the pools and returns the
// endpoints that left every pool.
type Endpoints interface {
	Set(pools []source.Pool) (gone []string)
}

// EPP is what the report reads of the Endpoint Picker (a *epp.Server).
type EPP interface {
	Counts() (admitted, shed uint64)
	Spilled() uint64
}

// Forgetter drops what an index holds of an endpoint (the EPP's prefix index).
type Forgetter interface {
	Forget(endpoint string)
}

// Spill is the EPP pool's spill decision (a *spill.Decider).
type Spill interface {
	ObserveLocal(spill.Local)
	State() spill.State
}

// PoolEPP is the EPP of one pool.
type PoolEPP struct {
	// Pool is the pool the EPP serves. It is of interest to the hub even when it is only
	// imported here.
	Pool fleet.PoolRef
	// EPP counts the pool's requests.
	EPP EPP
	// Prefix forgets the endpoints that left every pool.
	Prefix Forgetter
	// Spill takes the pool's load and gives its state; nil without federated routing.
	Spill Spill
	// Sketch, when set, summarises the prompt prefixes the pool holds, for other clusters'
	// cache-aware spill; the loop calls it at most every SketchPeriod.
	Sketch func() *fleet.PrefixSketch
}

// Options configure a Loop. Pools, Scraper, Hub and Endpoints are required.
type Options struct {
	Pools     Pools
	Scraper   Scraper
	Hub       Hub
	Endpoints Endpoints
	// EPPs returns the EPPs the spoke runs now, one per pool; nil without an EPP.
	EPPs func() []PoolEPP
	// Thresholds define an endpoint's freshness and load.
	Thresholds capacity.Thresholds
	// ReportEndpoints adds per-endpoint load to the capacity reports.
	ReportEndpoints bool
	// Period is the time between capacity reports.
	Period time.Duration
	// MetricsPath is the path of the model servers' metrics page; /metrics when empty.
	MetricsPath string
	// GPU, when set, gives a Pod's GPU utilisation (a DCGM exporter's), for the endpoints'
	// capacity.
	GPU func(pod string) (float64, bool)
	// SketchPeriod is the least time between two prefix sketches of a pool (a sketch is a few
	// KiB, and a new one makes a new report); DefaultSketchPeriod when zero.
	SketchPeriod time.Duration
	// Now is the clock that ages metrics; nil means time.Now.
	Now func() time.Time
	// Registerer takes the loop's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
}

// Loop is the capacity report loop; Run runs it.
type Loop struct {
	opts    Options
	metrics *metrics
	// pools are the pools of the last change, and targetSince when each of their endpoints
	// became a scrape target; only Run's goroutine touches them.
	pools       []source.Pool
	targetSince map[string]time.Time
	// sketches are the pools' last prefix sketches and when each was made.
	sketches map[fleet.PoolRef]sketched
}

type sketched struct {
	at     time.Time
	sketch *fleet.PrefixSketch
}

// DefaultSketchPeriod is the least time between two prefix sketches of a pool.
const DefaultSketchPeriod = 5 * time.Second

// New returns the loop and registers its metrics.
func New(o Options) *Loop {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SketchPeriod <= 0 {
		o.SketchPeriod = DefaultSketchPeriod
	}
	return &Loop{opts: o, metrics: newMetrics(o.Registerer), sketches: map[fleet.PoolRef]sketched{}}
}

// Run follows the pools and reports capacity every period until ctx ends.
func (l *Loop) Run(ctx context.Context) error {
	tick := time.NewTicker(l.opts.Period)
	defer tick.Stop()
	changed := l.opts.Pools.Changed()
	l.apply()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			changed = l.opts.Pools.Changed()
			l.apply()
		case <-tick.C:
			l.report()
		}
	}
}

// apply takes the current pools: scrape targets, the EPP's endpoints, exports and interest.
func (l *Loop) apply() {
	l.pools = l.opts.Pools.Pools()
	now := l.opts.Now()
	since := make(map[string]time.Time, len(l.targetSince))
	var targets []modelmetrics.Target
	refs := make([]fleet.PoolRef, 0, len(l.pools))
	for _, p := range l.pools {
		refs = append(refs, p.Ref)
		for _, e := range p.Endpoints {
			targets = append(targets, modelmetrics.Target{Address: e.Address, Engine: e.Engine, Path: l.opts.MetricsPath})
			if t, ok := l.targetSince[e.Address]; ok {
				since[e.Address] = t
			} else {
				since[e.Address] = now
			}
		}
	}
	l.targetSince = since
	l.opts.Scraper.SetTargets(targets)
	epps := l.epps()
	for _, addr := range l.opts.Endpoints.Set(l.pools) {
		for _, e := range epps {
			e.Prefix.Forget(addr)
		}
	}
	// A source that does not know its pools yet has not said the cluster exports nothing: the
	// exports wait for it (an empty set would withdraw every export the hub holds).
	if r, ok := l.opts.Pools.(readier); !ok || r.Ready() == nil {
		l.opts.Hub.SetExports(source.Exports(l.pools))
	}
	for _, e := range epps {
		if !slices.Contains(refs, e.Pool) {
			refs = append(refs, e.Pool) // an imported pool an EPP serves: remote capacity needed
		}
	}
	l.opts.Hub.SetInterest(refs)
}

// sketch returns the pool's prefix sketch: the last one, or a new one when SketchPeriod has
// passed since.
func (l *Loop) sketch(e PoolEPP, now time.Time) *fleet.PrefixSketch {
	if e.Sketch == nil {
		return nil
	}
	last, ok := l.sketches[e.Pool]
	if !ok || now.Sub(last.at) >= l.opts.SketchPeriod {
		last = sketched{at: now, sketch: e.Sketch()}
		l.sketches[e.Pool] = last
	}
	return last.sketch
}

// epps returns the EPPs the spoke runs now.
func (l *Loop) epps() []PoolEPP {
	if l.opts.EPPs == nil {
		return nil
	}
	return l.opts.EPPs()
}

// report computes every pool's capacity and sends it to the hub.
func (l *Loop) report() {
	now := l.opts.Now()
	caps := make([]fleet.PoolCapacity, 0, len(l.pools))
	epps := l.epps()
	local := make(map[fleet.PoolRef]bool, len(epps))
	var fresh, stale int
	for _, p := range l.pools {
		eps := make([]capacity.Endpoint, 0, len(p.Endpoints))
		for _, e := range p.Endpoints {
			s, _ := l.opts.Scraper.Sample(e.Address)
			ce := capacity.Endpoint{Address: e.Address, Metrics: s.Metrics, ScrapedAt: s.ScrapedAt, Failed: s.Err != nil,
				FailReason: s.Reason, TargetSince: l.targetSince[e.Address], Models: e.Models}
			if l.opts.GPU != nil && e.Pod != "" {
				if u, ok := l.opts.GPU(e.Pod); ok {
					ce.GPUUtilization = &u
				}
			}
			if l.opts.Thresholds.Fresh(ce, now) {
				fresh++
			} else {
				stale++
			}
			eps = append(eps, ce)
		}
		c := capacity.Aggregate(p.Ref, eps, now, l.opts.Thresholds)
		if l.opts.ReportEndpoints {
			c.Endpoints = capacity.EndpointDetail(eps, now, l.opts.Thresholds)
		}
		if i := slices.IndexFunc(epps, func(e PoolEPP) bool { return e.Pool == p.Ref }); i >= 0 {
			addEPP(epps[i], &c, capacity.Unobserved(eps, now, l.opts.Thresholds))
			c.PrefixSketch = l.sketch(epps[i], now)
			local[p.Ref] = true
		}
		caps = append(caps, c)
	}
	for _, e := range epps {
		if e.Spill != nil && !local[e.Pool] {
			e.Spill.ObserveLocal(spill.Local{ImportOnly: true}) // only an import here: every request goes
		}
	}
	l.metrics.endpoints.WithLabelValues(freshnessFresh).Set(float64(fresh))
	l.metrics.endpoints.WithLabelValues(freshnessStale).Set(float64(stale))
	l.metrics.setPools(caps)
	l.opts.Hub.SetCapacity(caps)
}

// addEPP adds the EPP's counts to its pool's capacity, feeds the pool's load to the spill
// decision (unobserved when some endpoint of the pool is pending) and reports the decision's
// state.
func addEPP(e PoolEPP, c *fleet.PoolCapacity, unobserved bool) {
	c.AdmittedTotal, c.ShedTotal = e.EPP.Counts()
	c.SpilledTotal = e.EPP.Spilled()
	if e.Spill == nil {
		return
	}
	e.Spill.ObserveLocal(spill.Local{ReadyEndpoints: c.ReadyEndpoints, QueueDepth: c.QueueDepth, Saturation: c.Saturation, Saturated: c.Saturated,
		Unobserved: unobserved})
	st := e.Spill.State()
	c.Spilling, c.SpillTarget, c.SpillTargetRegion = st.Spilling, st.LastTarget, st.LastRegion
}

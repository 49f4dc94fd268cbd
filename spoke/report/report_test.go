package report

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/capacity"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/pkg/spill"
	"github.com/spillway-io/spillway/spoke/source"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	chat     = fleet.PoolRef{Namespace: "inference", Name: "chat"}
	code     = fleet.PoolRef{Namespace: "inference", Name: "code"}
	imported = fleet.PoolRef{Namespace: "inference", Name: "imported"}
	now      = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	// thresholds whose loads are exact in binary, so capacities compare exactly.
	thresholds = capacity.Thresholds{QueueDepth: 4, KVCacheUtilization: 0.5, Staleness: 200 * time.Millisecond}
)

// pools is a fake pool source; change replaces the pools and signals Changed.
type pools struct {
	mu      sync.Mutex
	pools   []source.Pool
	changed chan struct{}
}

func newPools(ps ...source.Pool) *pools { return &pools{pools: ps, changed: make(chan struct{})} }

func (p *pools) Pools() []source.Pool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pools
}

func (p *pools) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

func (p *pools) change(ps ...source.Pool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pools = ps
	close(p.changed)
	p.changed = make(chan struct{})
}

// scraper is a fake scraper with fixed samples.
type scraper struct {
	samples map[string]modelmetrics.Sample
	targets []modelmetrics.Target
}

func (s *scraper) SetTargets(ts []modelmetrics.Target) { s.targets = ts }
func (s *scraper) Sample(addr string) (modelmetrics.Sample, bool) {
	smp, ok := s.samples[addr]
	return smp, ok
}

// hub is a fake hub client that keeps what it was last given.
type hub struct {
	mu       sync.Mutex
	exports  []fleet.Export
	interest []fleet.PoolRef
	caps     []fleet.PoolCapacity
	reports  int
}

func (h *hub) SetExports(e []fleet.Export) {
	h.mu.Lock()
	h.exports = e
	h.mu.Unlock()
}

func (h *hub) SetInterest(i []fleet.PoolRef) {
	h.mu.Lock()
	h.interest = i
	h.mu.Unlock()
}
func (h *hub) SetCapacity(c []fleet.PoolCapacity) {
	h.mu.Lock()
	h.caps, h.reports = c, h.reports+1
	h.mu.Unlock()
}

func (h *hub) state() ([]fleet.Export, []fleet.PoolRef, []fleet.PoolCapacity, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.exports, h.interest, h.caps, h.reports
}

// endpoints is a fake EPP datastore: Set returns gone.
type endpoints struct {
	gone []string
	set  [][]source.Pool
}

func (e *endpoints) Set(ps []source.Pool) []string {
	e.set = append(e.set, ps)
	return e.gone
}

type forgotten []string

func (f *forgotten) Forget(addr string) { *f = append(*f, addr) }

type picker struct{ admitted, shed, spilled uint64 }

func (p picker) Counts() (uint64, uint64) { return p.admitted, p.shed }
func (p picker) Spilled() uint64          { return p.spilled }

// decider is a fake spill decision that records what it observed.
type decider struct {
	state    spill.State
	observed []spill.Local
}

func (d *decider) ObserveLocal(l spill.Local) { d.observed = append(d.observed, l) }
func (d *decider) State() spill.State         { return d.state }

// The local pools: chat (exported) has a lightly loaded endpoint, a full one, a stale one and
// one never scraped; code (not exported) has one endpoint without headroom.
func localPools() []source.Pool {
	return []source.Pool{{
		Ref: chat, Export: true, TargetPorts: []uint32{8000},
		Endpoints: []source.Endpoint{
			{Address: "10.0.0.1:8000", Engine: modelmetrics.EngineVLLM},
			{Address: "10.0.0.2:8000", Engine: modelmetrics.EngineVLLM},
			{Address: "10.0.0.3:8000", Engine: modelmetrics.EngineVLLM},
			{Address: "10.0.0.4:8000", Engine: modelmetrics.EngineVLLM},
		},
	}, {
		Ref:       code,
		Endpoints: []source.Endpoint{{Address: "10.0.1.1:8000", Engine: modelmetrics.EngineSGLang}},
	}}
}

func localSamples() *scraper {
	fresh := now.Add(-50 * time.Millisecond)
	return &scraper{samples: map[string]modelmetrics.Sample{
		"10.0.0.1:8000": {Metrics: modelmetrics.Metrics{WaitingQueue: 1, Running: 2}, ScrapedAt: fresh},         // load 0.25
		"10.0.0.2:8000": {Metrics: modelmetrics.Metrics{KVCacheUsage: 0.5, Running: 4}, ScrapedAt: fresh},       // load 1
		"10.0.0.3:8000": {Metrics: modelmetrics.Metrics{WaitingQueue: 9}, ScrapedAt: now.Add(-time.Second)},     // stale
		"10.0.1.1:8000": {Metrics: modelmetrics.Metrics{WaitingQueue: 4, KVCacheUsage: 0.25}, ScrapedAt: fresh}, // load 1
	}}
}

// chatCapacity and codeCapacity are what the pools aggregate to.
func chatCapacity() fleet.PoolCapacity {
	return fleet.PoolCapacity{Pool: chat, ReadyEndpoints: 2, TotalEndpoints: 4, QueueDepth: 1, RunningRequests: 6,
		KVCacheUtilization: 0.25, Saturation: 0.625, ObservedAt: now}
}

func codeCapacity() fleet.PoolCapacity {
	return fleet.PoolCapacity{Pool: code, ReadyEndpoints: 1, TotalEndpoints: 1, QueueDepth: 4,
		KVCacheUtilization: 0.25, Saturation: 1, Saturated: true, ObservedAt: now}
}

func gauge(t *testing.T, m *metrics, freshness string) float64 {
	t.Helper()
	return testutil.ToFloat64(m.endpoints.WithLabelValues(freshness))
}

func TestReport(t *testing.T) {
	spilling := spill.State{Spilling: true, Since: now.Add(-time.Minute), LastTarget: "us-west-1", LastRegion: "us-west"}
	for _, tc := range []struct {
		name         string
		opts         Options
		epp          *PoolEPP
		state        spill.State
		want         func() []fleet.PoolCapacity
		wantObserved []spill.Local
	}{{
		name: "no EPP: saturation and stale endpoints",
		want: func() []fleet.PoolCapacity { return []fleet.PoolCapacity{chatCapacity(), codeCapacity()} },
	}, {
		name: "EPP without spill: its pool carries the EPP's counts",
		epp:  &PoolEPP{Pool: chat, EPP: picker{admitted: 10, shed: 2, spilled: 3}},
		want: func() []fleet.PoolCapacity {
			c := chatCapacity()
			c.AdmittedTotal, c.ShedTotal, c.SpilledTotal = 10, 2, 3
			return []fleet.PoolCapacity{c, codeCapacity()}
		},
	}, {
		name:  "EPP with spill: the pool's load feeds the decision, its state is reported",
		epp:   &PoolEPP{Pool: chat, EPP: picker{admitted: 10, shed: 2, spilled: 3}},
		state: spilling,
		want: func() []fleet.PoolCapacity {
			c := chatCapacity()
			c.AdmittedTotal, c.ShedTotal, c.SpilledTotal = 10, 2, 3
			c.Spilling, c.SpillTarget, c.SpillTargetRegion = true, "us-west-1", "us-west"
			return []fleet.PoolCapacity{c, codeCapacity()}
		},
		wantObserved: []spill.Local{{ReadyEndpoints: 2, QueueDepth: 1, Saturation: 0.625}},
	}, {
		name:         "EPP pool only imported here: every request goes",
		epp:          &PoolEPP{Pool: imported, EPP: picker{admitted: 10}},
		state:        spilling,
		want:         func() []fleet.PoolCapacity { return []fleet.PoolCapacity{chatCapacity(), codeCapacity()} },
		wantObserved: []spill.Local{{ImportOnly: true}},
	}, {
		name: "per-endpoint detail",
		opts: Options{ReportEndpoints: true},
		want: func() []fleet.PoolCapacity {
			c, k := chatCapacity(), codeCapacity()
			c.Endpoints = []fleet.EndpointCapacity{
				{Address: "10.0.0.1:8000", QueueDepth: 1, RunningRequests: 2, Ready: true},
				{Address: "10.0.0.2:8000", RunningRequests: 4, KVCacheUtilization: 0.5},
				{Address: "10.0.0.3:8000", QueueDepth: 9},
				{Address: "10.0.0.4:8000"},
			}
			k.Endpoints = []fleet.EndpointCapacity{{Address: "10.0.1.1:8000", QueueDepth: 4, KVCacheUtilization: 0.25}}
			return []fleet.PoolCapacity{c, k}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h, d := &hub{}, &decider{state: tc.state}
			o := tc.opts
			o.Pools, o.Scraper, o.Hub, o.Endpoints = newPools(localPools()...), localSamples(), h, &endpoints{}
			clock := now.Add(-time.Second) // the endpoints became targets a while ago: none is pending
			o.Thresholds, o.Period, o.Now = thresholds, time.Hour, func() time.Time { return clock }
			if tc.epp != nil {
				e := *tc.epp
				e.Prefix = &forgotten{}
				if tc.wantObserved != nil {
					e.Spill = d
				}
				o.EPPs = func() []PoolEPP { return []PoolEPP{e} }
			}
			l := New(o)
			l.apply()
			clock = now
			l.report()
			if _, _, caps, _ := h.state(); !reflect.DeepEqual(caps, tc.want()) {
				t.Errorf("capacity =\n%+v\nwant\n%+v", caps, tc.want())
			}
			if !reflect.DeepEqual(d.observed, tc.wantObserved) {
				t.Errorf("spill observed %+v, want %+v", d.observed, tc.wantObserved)
			}
			if f, s := gauge(t, l.metrics, freshnessFresh), gauge(t, l.metrics, freshnessStale); f != 3 || s != 2 {
				t.Errorf("endpoints gauge: %v fresh, %v stale; want 3 and 2", f, s)
			}
			for _, c := range tc.want() {
				p := c.Pool.String()
				spilling := 0.0
				if c.Spilling {
					spilling = 1
				}
				for g, want := range map[*prometheus.GaugeVec]float64{l.metrics.ready: float64(c.ReadyEndpoints), l.metrics.queued: float64(c.QueueDepth),
					l.metrics.running: float64(c.RunningRequests), l.metrics.kvCache: c.KVCacheUtilization, l.metrics.saturation: c.Saturation,
					l.metrics.spilling: spilling} {
					if got := testutil.ToFloat64(g.WithLabelValues(p)); got != want {
						t.Errorf("pool %s: gauge %v, want %v", p, got, want)
					}
				}
			}
		})
	}
}

// TestPoolGaugesLeaveWithThePool: a pool no longer reported has no series left.
func TestPoolGaugesLeaveWithThePool(t *testing.T) {
	m := newMetrics(nil)
	m.setPools([]fleet.PoolCapacity{{Pool: chat, QueueDepth: 3}, {Pool: imported, QueueDepth: 1}})
	m.setPools([]fleet.PoolCapacity{{Pool: chat, QueueDepth: 4}})
	if n := testutil.CollectAndCount(m.queued); n != 1 {
		t.Fatalf("%d queue series after one pool left, want 1", n)
	}
	if got := testutil.ToFloat64(m.queued.WithLabelValues(chat.String())); got != 4 {
		t.Fatalf("queue of %s: %v, want 4", chat, got)
	}
}

func TestApply(t *testing.T) {
	for _, tc := range []struct {
		name          string
		epp           *fleet.PoolRef
		gone          []string
		wantInterest  []fleet.PoolRef
		wantForgotten forgotten
	}{{
		name:         "no EPP: the local pools",
		gone:         []string{"10.0.9.9:8000"},
		wantInterest: []fleet.PoolRef{chat, code},
	}, {
		name:          "EPP on a local pool: gone endpoints forgotten",
		epp:           &chat,
		gone:          []string{"10.0.9.9:8000", "10.0.9.8:8000"},
		wantInterest:  []fleet.PoolRef{chat, code},
		wantForgotten: forgotten{"10.0.9.9:8000", "10.0.9.8:8000"},
	}, {
		name:         "EPP on an imported pool: its remote capacity is needed",
		epp:          &imported,
		wantInterest: []fleet.PoolRef{chat, code, imported},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h, eps, sc, fg := &hub{}, &endpoints{gone: tc.gone}, &scraper{}, &forgotten{}
			o := Options{Pools: newPools(localPools()...), Scraper: sc, Hub: h, Endpoints: eps, Thresholds: thresholds}
			if tc.epp != nil {
				o.EPPs = func() []PoolEPP { return []PoolEPP{{Pool: *tc.epp, EPP: picker{}, Prefix: fg}} }
			}
			New(o).apply()
			exports, interest, _, _ := h.state()
			if want := []fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}}; !reflect.DeepEqual(exports, want) {
				t.Errorf("exports %+v, want %+v", exports, want)
			}
			if !slices.Equal(interest, tc.wantInterest) {
				t.Errorf("interest %v, want %v", interest, tc.wantInterest)
			}
			if len(eps.set) != 1 || !reflect.DeepEqual(eps.set[0], localPools()) {
				t.Errorf("datastore given %+v, want the local pools once", eps.set)
			}
			if want := 5; len(sc.targets) != want || sc.targets[4] != (modelmetrics.Target{Address: "10.0.1.1:8000", Engine: modelmetrics.EngineSGLang}) {
				t.Errorf("scrape targets %+v, want the %d local endpoints with their engines", sc.targets, want)
			}
			if !slices.Equal(*fg, tc.wantForgotten) {
				t.Errorf("prefix index forgot %q, want %q", *fg, tc.wantForgotten)
			}
		})
	}
}

func TestRunFollowsPoolsAndReportsEveryPeriod(t *testing.T) {
	src, h := newPools(localPools()[1]), &hub{}
	l := New(Options{Pools: src, Scraper: localSamples(), Hub: h, Endpoints: &endpoints{}, Thresholds: thresholds,
		Period: 5 * time.Millisecond, Now: func() time.Time { return now }, Registerer: prometheus.NewRegistry()})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	testkit.Eventually(t, 5*time.Second, "code's capacity reported twice", testkit.True(func() bool {
		_, _, caps, n := h.state()
		return n >= 2 && len(caps) == 1 && caps[0].Pool == code
	}))
	src.change(localPools()...)
	testkit.Eventually(t, 5*time.Second, "chat exported and reported", testkit.True(func() bool {
		exports, _, caps, _ := h.state()
		return len(exports) == 1 && exports[0].Pool == chat && len(caps) == 2
	}))
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v, want nil when the context ends", err)
	}
}

// startUp is a spoke starting with the EPP on chat, whose two endpoints are not scraped yet, a
// real spill decision with an idle remote cluster to go to, and a clock the test moves.
type startUp struct {
	clock time.Time
	sc    *scraper
	hub   *hub
	dec   *spill.Decider
	loop  *Loop
}

func newStartUp(t *testing.T, addrs ...string) *startUp {
	t.Helper()
	remote := spill.Remote{ClusterID: "us-west-1", Region: "us-west", Gateway: "us-west:8080", Alive: true, ReadyEndpoints: 3}
	dec, err := spill.New(spill.DefaultPolicy(), func() []spill.Remote { return []spill.Remote{remote} })
	if err != nil {
		t.Fatal(err)
	}
	p := source.Pool{Ref: chat, Export: true}
	for _, a := range addrs {
		p.Endpoints = append(p.Endpoints, source.Endpoint{Address: a, Engine: modelmetrics.EngineVLLM})
	}
	s := &startUp{clock: now, sc: &scraper{samples: map[string]modelmetrics.Sample{}}, hub: &hub{}, dec: dec}
	s.loop = New(Options{Pools: newPools(p), Scraper: s.sc, Hub: s.hub, Endpoints: &endpoints{},
		EPPs: func() []PoolEPP { return []PoolEPP{{Pool: chat, EPP: picker{}, Prefix: &forgotten{}, Spill: dec}} }, Thresholds: thresholds, Period: time.Hour, Now: func() time.Time { return s.clock }})
	s.loop.apply()
	return s
}

// at moves the clock to now+d and reports.
func (s *startUp) at(d time.Duration) { s.clock = now.Add(d); s.loop.report() }

// scrape records an idle scrape of addr ending at now+d.
func (s *startUp) scrape(addr string, d time.Duration) {
	s.sc.samples[addr] = modelmetrics.Sample{Metrics: modelmetrics.Metrics{Running: 1}, ScrapedAt: now.Add(d)}
}

// check fails unless the decision's state, the reported capacity and a Critical request agree
// that the pool is spilling (or not), and the request goes where want says.
func (s *startUp) check(t *testing.T, step string, spilling bool, want spill.Reason) {
	t.Helper()
	_, _, caps, _ := s.hub.state()
	if st := s.dec.State(); st.Spilling != spilling || len(caps) != 1 || caps[0].Spilling != spilling {
		t.Fatalf("%s: decision spilling %v, reported %+v; want spilling %v in both", step, st.Spilling, caps, spilling)
	}
	if d := s.dec.Decide(spill.Request{Priority: 100}); d.Reason != want {
		t.Fatalf("%s: a critical request: %+v, want reason %s", step, d, want)
	}
}

// TestStartUpIdlePoolNeverSpills: before the first scrape the pool is neither spilling nor
// reported spilling, and a Critical request stays; with one of two idle endpoints scraped, still
// not; with both, the pool is observed, idle and not spilling.
func TestStartUpIdlePoolNeverSpills(t *testing.T) {
	s := newStartUp(t, "10.0.0.1:8000", "10.0.0.2:8000")
	if d := s.dec.Decide(spill.Request{Priority: 100}); d.Spill || d.Reason != spill.ReasonLocal {
		t.Fatalf("before any report: %+v, want the request kept here", d)
	}
	s.at(0)
	s.check(t, "nothing scraped", false, spill.ReasonLocal)
	s.at(100 * time.Millisecond)
	s.check(t, "nothing scraped after one period", false, spill.ReasonLocal)
	s.scrape("10.0.0.1:8000", 120*time.Millisecond)
	s.at(150 * time.Millisecond)
	s.check(t, "one of two scraped", false, spill.ReasonLocal)
	s.scrape("10.0.0.2:8000", 160*time.Millisecond)
	s.at(200 * time.Millisecond)
	s.check(t, "both scraped, idle", false, spill.ReasonLocal)
	if _, _, caps, _ := s.hub.state(); caps[0].ReadyEndpoints != 2 || caps[0].Saturated {
		t.Fatalf("observed idle pool reported %+v, want 2 ready and not saturated", caps[0])
	}
	// Past the staleness bound, with fresh idle scrapes, nothing changes.
	s.scrape("10.0.0.1:8000", 350*time.Millisecond)
	s.scrape("10.0.0.2:8000", 360*time.Millisecond)
	s.at(400 * time.Millisecond)
	s.check(t, "later, still idle", false, spill.ReasonLocal)
}

// TestStartUpDeadPoolSpills: an endpoint that is never scraped counts as not ready once the
// staleness bound has passed since it became a target, so a pool whose endpoints never answer
// spills; one whose scrape failed counts as observed at once.
func TestStartUpDeadPoolSpills(t *testing.T) {
	s := newStartUp(t, "10.0.0.1:8000")
	s.at(100 * time.Millisecond)
	s.check(t, "within the bound", false, spill.ReasonLocal)
	s.at(thresholds.Staleness + time.Millisecond)
	s.check(t, "past the bound, never scraped", true, spill.ReasonNoEndpoints)

	s = newStartUp(t, "10.0.0.1:8000")
	s.sc.samples["10.0.0.1:8000"] = modelmetrics.Sample{Err: errors.New("connection refused")}
	s.at(50 * time.Millisecond)
	s.check(t, "first scrape failed", true, spill.ReasonNoEndpoints)
}

// TestEndpointAddedIsPendingAlone: a pool change keeps when each staying endpoint became a
// target, so only the added endpoint is pending, and a saturated pool that is spilling keeps
// spilling while it is.
func TestEndpointAddedIsPendingAlone(t *testing.T) {
	s := newStartUp(t, "10.0.0.1:8000")
	s.sc.samples["10.0.0.1:8000"] = modelmetrics.Sample{Metrics: modelmetrics.Metrics{WaitingQueue: 9}, ScrapedAt: now.Add(time.Second)}
	s.at(time.Second)
	s.check(t, "saturated", true, spill.ReasonSaturated)
	s.loop.opts.Pools.(*pools).change(source.Pool{Ref: chat, Export: true, Endpoints: []source.Endpoint{
		{Address: "10.0.0.1:8000", Engine: modelmetrics.EngineVLLM}, {Address: "10.0.0.2:8000", Engine: modelmetrics.EngineVLLM}}})
	s.loop.apply()
	if got, want := s.loop.targetSince, map[string]time.Time{"10.0.0.1:8000": now, "10.0.0.2:8000": now.Add(time.Second)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("targets since %v, want %v", got, want)
	}
	s.at(time.Second + 50*time.Millisecond)
	s.check(t, "an endpoint added, not scraped yet", true, spill.ReasonSaturated)
}

// syncingPools is a pool source that knows its pools only once synced, as the Kubernetes
// controller does.
type syncingPools struct {
	*pools
	mu     sync.Mutex
	synced bool
}

func (p *syncingPools) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.synced {
		return errors.New("not synced")
	}
	return nil
}

// TestExportsWaitForTheSource: before its source knows its pools, the loop tells the hub client
// nothing of the exports (an empty set would withdraw every export the hub holds); once the
// source is synced and says the pools changed, it does.
func TestExportsWaitForTheSource(t *testing.T) {
	src := &syncingPools{pools: newPools()}
	h := &hub{}
	l := New(Options{Pools: src, Scraper: &scraper{}, Hub: h, Endpoints: &endpoints{}, Thresholds: thresholds})
	l.apply()
	if exports, _, _, _ := h.state(); exports != nil {
		t.Fatalf("exports %+v told before the source synced, want none", exports)
	}
	src.mu.Lock()
	src.synced = true
	src.mu.Unlock()
	src.change(localPools()...)
	l.apply()
	if exports, _, _, _ := h.state(); !reflect.DeepEqual(exports, []fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}}) {
		t.Fatalf("exports %+v once synced, want chat's", exports)
	}
}

// TestPrefixSketchIsRateBounded: the EPP pool's capacity carries its prefix sketch, made again
// only once SketchPeriod has passed; the other pools carry none.
func TestPrefixSketchIsRateBounded(t *testing.T) {
	h := &hub{}
	made := 0
	clock := now
	l := New(Options{Pools: newPools(localPools()...), Scraper: localSamples(), Hub: h, Endpoints: &endpoints{}, Thresholds: thresholds,
		Period: time.Hour, SketchPeriod: 5 * time.Second, Now: func() time.Time { return clock },
		EPPs: func() []PoolEPP {
			return []PoolEPP{{Pool: chat, EPP: picker{}, Prefix: &forgotten{}, Sketch: func() *fleet.PrefixSketch {
				made++
				return &fleet.PrefixSketch{Bloom: []byte{byte(made)}, HashFunctions: 1, Sample: 1, BlockBytes: 64, Entries: uint32(made)}
			}}}
		}})
	l.apply()
	for _, step := range []struct {
		after   time.Duration
		entries uint32
	}{{0, 1}, {time.Second, 1}, {3 * time.Second, 1}, {time.Second, 2}, {time.Second, 2}} {
		clock = clock.Add(step.after)
		l.report()
		_, _, caps, _ := h.state()
		for _, c := range caps {
			switch {
			case c.Pool == chat && (c.PrefixSketch == nil || c.PrefixSketch.Entries != step.entries):
				t.Fatalf("at %s: chat's sketch %+v, want the one made %d", clock.Sub(now), c.PrefixSketch, step.entries)
			case c.Pool != chat && c.PrefixSketch != nil:
				t.Fatalf("%s, served by no EPP, carries a sketch", c.Pool)
			}
		}
	}
	if made != 2 {
		t.Fatalf("%d sketches made in 6 s with a 5 s period, want 2", made)
	}
}

// TestReportCarriesGPUUtilization: the endpoints whose Pods have GPU utilisation carry it in
// the per-endpoint detail, and the pool the mean of its ready ones; a pool without any, none.
func TestReportCarriesGPUUtilization(t *testing.T) {
	pools := localPools()
	pools[0].Endpoints[0].Pod, pools[0].Endpoints[1].Pod, pools[0].Endpoints[2].Pod = "llm/a", "llm/b", "llm/stale"
	h := &hub{}
	clock := now
	l := New(Options{Pools: newPools(pools...), Scraper: localSamples(), Hub: h, Endpoints: &endpoints{}, Thresholds: thresholds,
		ReportEndpoints: true, Period: time.Hour, Now: func() time.Time { return clock },
		GPU: func(pod string) (float64, bool) {
			u, ok := map[string]float64{"llm/a": 0.2, "llm/b": 0.6, "llm/stale": 0.9}[pod]
			return u, ok
		}})
	l.apply()
	l.report()
	_, _, caps, _ := h.state()
	for _, c := range caps {
		switch c.Pool {
		case chat:
			// The stale endpoint's GPUs are not in the mean of the ready ones: (0.2 + 0.6) / 2.
			if c.GPUUtilization == nil || *c.GPUUtilization < 0.399 || *c.GPUUtilization > 0.401 {
				t.Fatalf("chat's GPU utilisation %v, want 0.4", c.GPUUtilization)
			}
			if e := c.Endpoints[0]; e.GPUUtilization == nil || *e.GPUUtilization != 0.2 {
				t.Fatalf("endpoint %s: GPU utilisation %v, want 0.2", e.Address, e.GPUUtilization)
			}
			if e := c.Endpoints[3]; e.GPUUtilization != nil {
				t.Fatalf("endpoint %s without a Pod: GPU utilisation %v", e.Address, *e.GPUUtilization)
			}
		case code:
			if c.GPUUtilization != nil {
				t.Fatalf("code, whose endpoints have no GPU figures: %v", *c.GPUUtilization)
			}
		}
	}
}

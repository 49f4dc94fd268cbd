package epp_test

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/e2e/extproctest"
	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/epp/scheduler"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/pkg/spill"
)

// rawStore gives the EPP its endpoints as they are: ScrapedAt zero means never scraped (store
// makes every endpoint fresh instead).
type rawStore struct {
	mu  sync.Mutex
	eps []epp.Endpoint
}

func (s *rawStore) Endpoints(p fleet.PoolRef, dst []epp.Endpoint) ([]epp.Endpoint, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(dst, s.eps...), p == pool
}

func (s *rawStore) set(eps ...epp.Endpoint) {
	s.mu.Lock()
	s.eps = eps
	s.mu.Unlock()
}

// pendingEP is an endpoint that became a scrape target at since and was never scraped.
func pendingEP(addr string, since time.Time) epp.Endpoint {
	return epp.Endpoint{Endpoint: scheduler.Endpoint{Address: addr}, TargetSince: since}
}

// TestStartUpUnscrapedEndpointsAreNotBusy is the start-up sequence of a spoke's EPP: its
// endpoints are scrape targets not scraped yet, and its spill decision has observed nothing. Such
// endpoints are of unknown load, not saturated nor down: Critical and Standard requests are
// routed to them, neither spilled to the idle remote cluster nor refused, and BestEffort is not
// shed either. An endpoint of the pool scraped saturated beside a pending one does not make the
// pool saturated. Once the staleness bound has passed without a scrape (or a first scrape
// failed), the endpoints are down: Critical fails over and Standard gets 503, as before.
func TestStartUpUnscrapedEndpointsAreNotBusy(t *testing.T) {
	settings, err := epp.ParseConfig([]byte("objectives:\n- {name: critical, priority: Critical}\n- {name: standard, priority: Standard}\n- {name: batch, priority: BestEffort}\n"))
	if err != nil {
		t.Fatal(err)
	}
	// A bound long enough that a slow test machine stays within it while pending.
	settings.Thresholds.Staleness = 30 * time.Second
	remote := spill.Remote{ClusterID: "us-west-1", Region: "us-west", Gateway: "127.0.2.254:8080", Alive: true, ReadyEndpoints: 3, Saturation: 0.1}
	dec, err := spill.New(spill.DefaultPolicy(), func() []spill.Remote { return []spill.Remote{remote} })
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	st := &rawStore{}
	st.set(pendingEP("10.0.0.1:8000", now), pendingEP("10.0.0.2:8000", now))
	reg := prometheus.NewRegistry()
	srv, err := epp.New(epp.Options{Pool: pool, Settings: settings, Datastore: st, Registerer: reg, Spill: dec, ClusterID: "us-east-1", HopKeys: testHopKeys})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: srv, reg: reg, client: &gateway.Client{EPP: extproctest.Serve(t, srv)}}
	local := func(step, objective string) string {
		t.Helper()
		d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, objective), completion, nil)
		if d.Immediate != nil {
			t.Fatalf("%s: %s got %d %s, want it routed here", step, objective, d.Immediate.Status, d.Immediate.Body)
		}
		if len(d.Destinations) == 0 || d.Destinations[0] == remote.Gateway {
			t.Fatalf("%s: %s went to %v, want a local endpoint", step, objective, d.Destinations)
		}
		return d.Destinations[0]
	}

	// A fresh EPP: nothing scraped, the decision never observed the pool.
	for _, o := range []string{"critical", "standard", "batch"} {
		local("fresh EPP", o)
	}
	// The report loop's first observation of a pool with pending endpoints: unobserved, no
	// endpoint ready.
	dec.ObserveLocal(spill.Local{Unobserved: true})
	for _, o := range []string{"critical", "standard", "batch"} {
		local("first report, still unobserved", o)
	}
	if admitted, shed := srv.Counts(); admitted != 6 || shed != 0 || srv.Spilled() != 0 {
		t.Fatalf("admitted %d, shed %d, spilled %d: want 6, 0, 0", admitted, shed, srv.Spilled())
	}

	// One endpoint scraped saturated, the other still pending: the pool is not saturated, and
	// the request goes to the one with room for all we know.
	sat := epp.Endpoint{Endpoint: scheduler.Endpoint{Address: "10.0.0.1:8000", Metrics: modelmetrics.Metrics{WaitingQueue: 9}, ScrapedAt: time.Now()}, Ready: true, TargetSince: now}
	st.set(sat, pendingEP("10.0.0.2:8000", now))
	if got := local("one saturated, one pending", "batch"); got != "10.0.0.2:8000" {
		t.Fatalf("batch went to %s, want the pending endpoint before the saturated one", got)
	}

	// Past the bound without a scrape, or after a failed first scrape, an endpoint is down.
	for _, tc := range []struct {
		name string
		eps  []epp.Endpoint
	}{
		{"never scraped past the bound", []epp.Endpoint{pendingEP("10.0.0.1:8000", now.Add(-time.Minute))}},
		{"first scrape failed", []epp.Endpoint{{Endpoint: scheduler.Endpoint{Address: "10.0.0.1:8000"}, Failed: true, TargetSince: now}}},
		{"target time unknown", []epp.Endpoint{{Endpoint: scheduler.Endpoint{Address: "10.0.0.1:8000"}}}},
	} {
		st.set(tc.eps...)
		if d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, "critical"), completion, nil); d.Immediate != nil || d.Destinations[0] != remote.Gateway {
			t.Fatalf("%s: critical %+v, want it failed over to %s", tc.name, d, remote.Gateway)
		}
		if d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, "standard"), completion, nil); d.Immediate == nil || d.Immediate.Status != 503 {
			t.Fatalf("%s: standard %+v, want 503", tc.name, d)
		}
	}
	if got := spilled(t, reg, "no_endpoints", "critical", "us-west"); got != 3 {
		t.Fatalf("spilled{no_endpoints,critical,us-west} = %v, want 3 (only the down endpoints' requests)", got)
	}
}

package epp_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spillway-io/spillway/e2e/extproctest"
	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/pkg/spill"
)

// TestExplainAgreesWithRouting: for each state of the pool and each priority, the explanation
// names the destination (or the refusal) that a request sent through ext_proc right after gets,
// and explaining counts nothing, records no prefix and moves no spill state.
func TestExplainAgreesWithRouting(t *testing.T) {
	cfg := "objectives:\n- {name: critical, priority: Critical}\n- {name: standard, priority: Standard}\n- {name: batch, priority: BestEffort}\n"
	settings, err := epp.ParseConfig([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	west := spill.Remote{ClusterID: "us-west-1", Region: "us-west", Gateway: "127.0.2.254:8080", Alive: true, ReadyEndpoints: 3, QueueDepth: 1, Saturation: 0.1}
	cordoned := spill.Remote{ClusterID: "eu-west-1", Region: "eu-west", Gateway: "127.0.3.254:8080", Alive: true, Cordoned: true, ReadyEndpoints: 3}
	dec, err := spill.New(spill.DefaultPolicy(), func() []spill.Remote { return []spill.Remote{cordoned, west} })
	if err != nil {
		t.Fatal(err)
	}
	// Distinct loads: no two endpoints score alike, so the pick has no random tie-break.
	st := &store{eps: []epp.Endpoint{
		ep("10.0.0.1:8000", modelmetrics.Metrics{WaitingQueue: 1, KVCacheUsage: 0.2}),
		ep("10.0.0.2:8000", modelmetrics.Metrics{WaitingQueue: 0, KVCacheUsage: 0.1}),
		ep("10.0.0.3:8000", modelmetrics.Metrics{WaitingQueue: 3, KVCacheUsage: 0.5}),
	}}
	reg := prometheus.NewRegistry()
	srv, err := epp.New(epp.Options{Pool: pool, Settings: settings, Datastore: st, Registerer: reg, Spill: dec, ClusterID: "us-east-1", HopKeys: testHopKeys})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: srv, reg: reg, store: st, client: &gateway.Client{EPP: extproctest.Serve(t, srv)}}
	dec.ObserveLocal(spill.Local{ReadyEndpoints: 3, QueueDepth: 4, Saturation: 0.3})

	prompt := strings.Repeat("You are a helpful assistant. ", 40)
	body := fmt.Sprintf(`{"model":"m","prompt":%q}`, prompt)
	// explainThenRoute explains a request of objective, checks that explaining changed nothing,
	// then routes the same request and checks that the two agree.
	explainThenRoute := func(t *testing.T, objective string) epp.Explanation {
		t.Helper()
		before, _ := testutil.GatherAndCount(reg, "spillway_epp_requests_total")
		admitted, shed := srv.Counts()
		spilled, state := srv.Spilled(), dec.State()
		e, err := srv.Explain(epp.ExplainRequest{Objective: objective, Model: "m", Prompt: prompt})
		if err != nil {
			t.Fatal(err)
		}
		after, _ := testutil.GatherAndCount(reg, "spillway_epp_requests_total")
		if a, s := srv.Counts(); before != after || a != admitted || s != shed || srv.Spilled() != spilled || dec.State() != state {
			t.Fatalf("explaining counted or moved something: series %d→%d, admitted %d→%d, shed %d→%d, spill state %+v→%+v",
				before, after, admitted, a, shed, s, state, dec.State())
		}
		d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, objective), body, nil)
		switch {
		case d.Immediate != nil:
			if e.Status != int(d.Immediate.Status) || e.Destination != nil {
				t.Fatalf("%s: routing answered %d, explain said status %d destination %v (%s)", objective, d.Immediate.Status, e.Status, e.Destination, explained(e))
			}
		case !slices.Equal(e.Destination, d.Destinations) || e.Status != 0:
			t.Fatalf("%s: routing sent the request to %v, explain said %v status %d (%s)", objective, d.Destinations, e.Destination, e.Status, explained(e))
		}
		return e
	}

	// A pool with headroom: the best-scored endpoint, then the fallbacks, in score order.
	e := explainThenRoute(t, "standard")
	if e.Outcome != "routed" || e.Destination[0] != "10.0.0.2:8000" || e.Candidates[0].Rank != 1 || e.Candidates[0].Score <= e.Candidates[1].Score {
		t.Fatalf("pool with headroom: %s", explained(e))
	}
	if e.Spill == nil || e.Spill.Reason != string(spill.ReasonLocal) || len(e.Spill.Targets) != 2 ||
		e.Spill.Targets[0].Cluster != "us-west-1" || e.Spill.Targets[0].Rank != 1 || e.Spill.Targets[1].Rejected != spill.RejectedCordoned {
		t.Fatalf("spill part of a local decision: %s", explained(e))
	}
	// The routed request recorded its prefix on its endpoint; explaining reads it and, unlike the
	// first explanation, finds the prefix there.
	if got := e.Candidates[0].Scores["prefix-cache-scorer"]; got != 0 {
		t.Fatalf("prefix score before any request = %v, want 0: %s", got, explained(e))
	}
	e = explainThenRoute(t, "critical")
	if got := e.Candidates[0].Scores["prefix-cache-scorer"]; e.Candidates[0].Address != "10.0.0.2:8000" || got <= 0.9 {
		t.Fatalf("after one request of the prompt: %s, want 10.0.0.2:8000 first with the prefix score ≈ 1", explained(e))
	}

	// Saturated: Critical spills to the one usable remote, Standard stays, BestEffort is shed.
	for i := range st.eps {
		st.eps[i].Metrics.WaitingQueue = 9
	}
	dec.ObserveLocal(spill.Local{ReadyEndpoints: 3, QueueDepth: 27, Saturation: 1, Saturated: true})
	if e := explainThenRoute(t, "critical"); e.Outcome != "spilled" || e.Destination[0] != west.Gateway || !e.Spill.Spill || !e.Spill.Weighed || e.Spill.LocalWaitSeconds <= 0 {
		t.Fatalf("critical on a saturated pool: %s", explained(e))
	}
	if e := explainThenRoute(t, "standard"); e.Outcome != "routed" || e.Spill.Reason != string(spill.ReasonIneligible) || !e.Saturated {
		t.Fatalf("standard on a saturated pool: %s", explained(e))
	}
	if e := explainThenRoute(t, "batch"); e.Outcome != "shed" || e.Status != 429 {
		t.Fatalf("besteffort on a saturated pool: %s", explained(e))
	}
	// The only usable remote saturated too: Critical stays, and the explanation says why.
	west.Saturated = true
	if e := explainThenRoute(t, "critical"); e.Outcome != "routed" || e.Spill.Reason != string(spill.ReasonNoTarget) || e.Spill.Targets[1].Rejected != spill.RejectedSaturated {
		t.Fatalf("critical with no usable remote: %s", explained(e))
	}
	// No local endpoint: Standard gets 503.
	st.mu.Lock()
	st.eps = nil
	st.mu.Unlock()
	if e := explainThenRoute(t, "standard"); e.Outcome != "no_endpoints" || e.Status != 503 || e.Message == "" {
		t.Fatalf("standard with no endpoint: %s", explained(e))
	}
	if got := dec.State().LastTarget; got != "us-west-1" {
		t.Fatalf("last spill target %q: want us-west-1, the routed request's, not moved by the explanations", got)
	}
}

// TestExplainPriorityAndUnknownObjective: a priority given replaces the objective's, and an
// objective the EPP does not know is named in the steps, as a request with it gets the default.
func TestExplainPriorityAndUnknownObjective(t *testing.T) {
	h := start(t, "objectives:\n- {name: batch, priority: BestEffort}\n", ep("10.0.0.1:8000", modelmetrics.Metrics{WaitingQueue: 9}))
	e, err := h.srv.Explain(epp.ExplainRequest{Objective: "batch", Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Outcome != "shed" || e.Priority != epp.PriorityBestEffort || e.PriorityClass != "besteffort" {
		t.Fatalf("batch on a saturated pool: %s", explained(e))
	}
	critical := epp.PriorityCritical
	if e, _ = h.srv.Explain(epp.ExplainRequest{Objective: "batch", Priority: &critical, Model: "m"}); e.Outcome != "routed" || e.Priority != critical {
		t.Fatalf("batch with priority %d: %s", critical, explained(e))
	}
	if e, _ = h.srv.Explain(epp.ExplainRequest{Objective: "nightly", Model: "m"}); e.Objective != "" || !strings.Contains(strings.Join(e.Steps, "\n"), `"nightly" is not known`) {
		t.Fatalf("unknown objective: %s", explained(e))
	}
}

func explained(e epp.Explanation) string {
	b, _ := json.MarshalIndent(e, "", "  ")
	return string(b)
}

package epp_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/e2e/extproctest"
	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/pkg/spill"
)

// pools is a datastore of several pools.
type pools struct {
	mu  sync.Mutex
	eps map[fleet.PoolRef][]epp.Endpoint
}

func (p *pools) Endpoints(ref fleet.PoolRef, dst []epp.Endpoint) ([]epp.Endpoint, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	eps, ok := p.eps[ref]
	for _, e := range eps {
		e.ScrapedAt = time.Now()
		dst = append(dst, e)
	}
	return dst, ok
}

func (p *pools) set(ref fleet.PoolRef, eps ...epp.Endpoint) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.eps[ref] = eps
}

// servers are the EPPs of one process, as the spoke's set of them.
type servers []*epp.Server

func (s servers) ForModel(model string, except fleet.PoolRef) *epp.Server {
	for _, srv := range s {
		if listed, _ := srv.Lists(model); listed && srv.Pool() != except {
			return srv
		}
	}
	return nil
}

// labelled is a ready endpoint whose server labels its metrics with model (scraped, not
// declared by the source).
func labelled(addr, model string, m modelmetrics.Metrics) epp.Endpoint {
	m.Models = []string{model}
	return ep(addr, m)
}

const (
	llama = "meta-llama/Llama-3.1-8B-Instruct"
	qwen  = "Qwen/Qwen3-8B"
	phi   = "microsoft/phi-4"
)

func body(model string) string {
	return `{"model":"` + model + `","prompt":"hello","max_tokens":4}`
}

// TestModelSelectsTheLocalPool: three pools of different models share one metrics set; a
// request arriving on any pool's EPP goes to the endpoints of the pool serving its model (as
// GIE's body-based routing would route it), with the objective of that pool; a model no local
// pool serves stays on the pool it came to (and, without spill, is routed as GIE routes it).
func TestModelSelectsTheLocalPool(t *testing.T) {
	refs := []fleet.PoolRef{{Namespace: "inference", Name: "llama"}, {Namespace: "inference", Name: "qwen"}, {Namespace: "inference", Name: "phi"}}
	ds := &pools{eps: map[fleet.PoolRef][]epp.Endpoint{}}
	ds.set(refs[0], labelled("10.0.0.1:8000", llama, modelmetrics.Metrics{}), labelled("10.0.0.2:8000", llama, modelmetrics.Metrics{}))
	ds.set(refs[1], labelled("10.0.1.1:8000", qwen, modelmetrics.Metrics{ActiveLoRAs: []string{"sql-lora"}}))
	ds.set(refs[2], labelled("10.0.2.1:8000", phi, modelmetrics.Metrics{}))
	reg := prometheus.NewRegistry()
	metrics := epp.NewMetrics(reg)
	var set servers
	for _, ref := range refs {
		srv, err := epp.New(epp.Options{Pool: ref, Settings: epp.DefaultSettings(), Datastore: ds, Metrics: metrics, Local: &set})
		if err != nil {
			t.Fatal(err)
		}
		set = append(set, srv)
	}
	// One gateway route: every request enters through the llama pool's EPP.
	client := &gateway.Client{EPP: extproctest.Serve(t, set[0])}
	route := func(model string) *gateway.Decision {
		t.Helper()
		call, d, err := client.Request(t.Context(), hdrs("/v1/completions"), []byte(body(model)), nil)
		if err != nil {
			t.Fatal(err)
		}
		call.Close()
		return d
	}
	for model, want := range map[string]string{llama: "10.0.0.", qwen: "10.0.1.1", "sql-lora": "10.0.1.1", phi: "10.0.2.1"} {
		if d := route(model); d.Immediate != nil || !strings.HasPrefix(d.Destinations[0], want) {
			t.Errorf("model %s: %+v, want an endpoint %s*", model, d, want)
		}
	}
	// A model nobody serves stays where it came (GIE's EPP routes any model).
	if d := route("mistral"); d.Immediate != nil || !strings.HasPrefix(d.Destinations[0], "10.0.0.") {
		t.Errorf("unserved model: %+v, want the entry pool", d)
	}
	// GIE's pool metrics list every pool the process serves.
	for _, ref := range refs {
		if v := gaugeWithLabel(t, reg, "inference_pool_ready_pods", "name", ref.Name); v < 1 {
			t.Errorf("inference_pool_ready_pods{name=%s} = %v", ref.Name, v)
		}
	}
	set[2].Close()
	if v := gaugeWithLabel(t, reg, "inference_pool_ready_pods", "name", refs[2].Name); v != -1 {
		t.Errorf("a closed pool's EPP is still reported (%v)", v)
	}
}

// gaugeWithLabel returns the value of the gauge of family name whose label has value; -1 when
// there is none.
func gaugeWithLabel(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

// TestFailoverKeepsTheModel: a request whose model's pool here is down goes to a cluster whose
// pool serves that model, never to a closer one that serves another; with no such cluster it is
// not sent away under another model unless a fallback is declared, and then the response says
// which model served it.
func TestFailoverKeepsTheModel(t *testing.T) {
	settings, err := epp.ParseConfig([]byte("objectives:\n- {name: critical, priority: Critical}\n"))
	if err != nil {
		t.Fatal(err)
	}
	near := spill.Remote{ClusterID: "near", Region: "r1", Gateway: "127.0.2.1:8080", Alive: true, ReadyEndpoints: 3, RTT: time.Millisecond, Models: []string{qwen}}
	far := spill.Remote{ClusterID: "far", Region: "r2", Gateway: "127.0.2.2:8080", Alive: true, ReadyEndpoints: 3, RTT: 50 * time.Millisecond, Models: []string{llama, "sql-lora"}}
	remotes := []spill.Remote{near, far}
	var mu sync.Mutex
	dec, err := spill.New(spill.DefaultPolicy(), func() []spill.Remote { mu.Lock(); defer mu.Unlock(); return remotes })
	if err != nil {
		t.Fatal(err)
	}
	st := &store{eps: []epp.Endpoint{labelled("10.0.0.1:8000", llama, modelmetrics.Metrics{})}}
	srv, err := epp.New(epp.Options{Pool: pool, Settings: settings, Datastore: st, Spill: dec, ClusterID: "here", HopKeys: testHopKeys})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: srv, store: st, client: &gateway.Client{EPP: extproctest.Serve(t, srv)}}
	dec.ObserveLocal(spill.Local{ReadyEndpoints: 1, Saturation: 0.1})
	critical := hdrs("/v1/completions", epp.ObjectiveHeader, "critical")

	if d := h.route(t, critical, body(llama), nil); d.Immediate != nil || d.Destinations[0] != "10.0.0.1:8000" {
		t.Fatalf("served model with headroom: %+v, want it served here", d)
	}
	// A model this pool does not serve goes to the one cluster that serves it.
	if d := h.route(t, critical, body(qwen), nil); d.Immediate != nil || strings.Join(d.Destinations, ",") != near.Gateway {
		t.Fatalf("qwen: %+v, want only %s (the cluster serving it)", d, near.Gateway)
	}
	// The pool goes down: llama fails over to far, passing over near, which is closer.
	st.mu.Lock()
	st.eps = nil
	st.mu.Unlock()
	if d := h.route(t, critical, body(llama), nil); d.Immediate != nil || strings.Join(d.Destinations, ",") != far.Gateway {
		t.Fatalf("llama with its pool down: %+v, want only %s", d, far.Gateway)
	}
	// far leaves: no cluster serves llama; nothing is sent to near under another model.
	mu.Lock()
	remotes = []spill.Remote{near}
	mu.Unlock()
	if d := h.route(t, critical, body(llama), nil); d.Immediate == nil || d.Immediate.Status != 503 {
		t.Fatalf("llama with no cluster serving it: %+v, want 503", d)
	}
	exp, err := srv.Explain(epp.ExplainRequest{Objective: "critical", Model: llama})
	if err != nil {
		t.Fatal(err)
	}
	if exp.Spill == nil || len(exp.Spill.Targets) != 1 || exp.Spill.Targets[0].Rejected != spill.RejectedModel {
		t.Fatalf("explanation %+v: want near rejected as %s", exp.Spill, spill.RejectedModel)
	}
}

// TestModelRouteObjective: a request that names no objective takes its model's route's, so one
// gateway route carries models of several priorities; on a saturated pool the model whose route
// says batch is shed and another model (default priority) is served, and a request's own
// objective header wins over its model's.
func TestModelRouteObjective(t *testing.T) {
	h := start(t, "objectives:\n- {name: batch, priority: BestEffort}\n- {name: critical, priority: Critical}\n"+
		"models:\n- {name: "+llama+", objective: batch}\n- {name: chat, objective: unknown}\n",
		ep("10.0.0.1:8000", modelmetrics.Metrics{WaitingQueue: 9}))
	for _, tc := range []struct {
		name, body string
		headers    []string
		want       int // 0: routed
	}{
		{"the route's batch objective: shed", completion, nil, 429},
		{"the request's own objective wins", completion, []string{epp.ObjectiveHeader, "critical"}, 0},
		{"a model without a route: default priority", `{"model":"other","prompt":"hello"}`, nil, 0},
		{"a route naming an unknown objective: default priority", `{"model":"chat","prompt":"hello"}`, nil, 0},
	} {
		d := h.route(t, hdrs("/v1/completions", tc.headers...), tc.body, nil)
		switch {
		case tc.want == 0 && (d.Immediate != nil || len(d.Destinations) == 0):
			t.Errorf("%s: answered %+v, want routed", tc.name, d.Immediate)
		case tc.want != 0 && (d.Immediate == nil || d.Immediate.Status != tc.want):
			t.Errorf("%s: %+v, want %d", tc.name, d, tc.want)
		}
	}
}

// TestDeclaredFallbackModelIsNamedInTheResponse: a model route's fallback serves a request
// whose model no endpoint can take, and the response names the model that served it.
func TestDeclaredFallbackModelIsNamedInTheResponse(t *testing.T) {
	small := ep("10.0.0.2:8000", modelmetrics.Metrics{})
	small.Models = []string{"llama-small"}
	h := start(t, "models:\n- name: "+llama+"\n  fallback: llama-small\n", small)
	call, d, err := h.client.Request(t.Context(), hdrs("/v1/completions"), []byte(completion), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	if d.Immediate != nil || d.Destinations[0] != small.Address || !strings.Contains(string(d.Body), `"llama-small"`) {
		t.Fatalf("%+v, want the fallback's endpoint and the model rewritten", d)
	}
	if err := call.ResponseHeaders(200, http.Header{"Content-Type": {"application/json"}}, small.Address, false); err != nil {
		t.Fatal(err)
	}
	if got := call.ResponseSet[epp.FallbackModelHeader]; got != "llama-small" {
		t.Fatalf("response headers set %v, want %s: llama-small", call.ResponseSet, epp.FallbackModelHeader)
	}

	// Routed under its own model, the response says nothing.
	own := ep("10.0.0.1:8000", modelmetrics.Metrics{})
	h2 := start(t, "", own)
	call2, _, err := h2.client.Request(t.Context(), hdrs("/v1/completions"), []byte(completion), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer call2.Close()
	if err := call2.ResponseHeaders(200, nil, own.Address, false); err != nil {
		t.Fatal(err)
	}
	if len(call2.ResponseSet) != 0 {
		t.Fatalf("a request served under its own model: response headers set %v", call2.ResponseSet)
	}
}

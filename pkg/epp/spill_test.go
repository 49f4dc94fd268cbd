package epp_test

import (
	"context"
	"net/http"
	"strings"
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

// fleetKeys are the fleet's hop keys in these tests.
type fleetKeys []fleet.HopKey

func (k fleetKeys) HopKeys() []fleet.HopKey { return k }

var testHopKeys = fleetKeys{{ID: "hk-1", Secret: []byte("0123456789abcdef0123456789abcdef")}}

// TestSpillOverExtProc drives federated routing through the real ext_proc protocol: on a
// saturated pool a Critical request goes to the remote gateway with a hop marker that verifies
// there, BestEffort is shed, Standard stays, and a request that already hopped is served here.
func TestSpillOverExtProc(t *testing.T) {
	cfg := "objectives:\n- {name: critical, priority: Critical}\n- {name: standard, priority: Standard}\n- {name: batch, priority: BestEffort}\n"
	settings, err := epp.ParseConfig([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	remote := spill.Remote{ClusterID: "us-west-1", Region: "us-west", Gateway: "127.0.2.254:8080", Alive: true, ReadyEndpoints: 3, Saturation: 0.1}
	dec, err := spill.New(spill.DefaultPolicy(), func() []spill.Remote { return []spill.Remote{remote} })
	if err != nil {
		t.Fatal(err)
	}
	sat := modelmetrics.Metrics{WaitingQueue: 9}
	st := &store{eps: []epp.Endpoint{ep("10.0.0.1:8000", sat), ep("10.0.0.2:8000", sat)}}
	reg := prometheus.NewRegistry()
	srv, err := epp.New(epp.Options{Pool: pool, Settings: settings, Datastore: st, Registerer: reg, Spill: dec, ClusterID: "us-east-1", HopKeys: testHopKeys})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: srv, reg: reg, store: st, client: &gateway.Client{EPP: extproctest.Serve(t, srv)}}
	dec.ObserveLocal(spill.Local{ReadyEndpoints: 2, QueueDepth: 18, Saturation: 1, Saturated: true})

	d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, "critical"), completion, nil)
	if d.Immediate != nil || len(d.Destinations) != 1 || d.Destinations[0] != remote.Gateway || d.MetadataDestination != remote.Gateway {
		t.Fatalf("critical on a saturated pool: %+v, want the remote gateway", d)
	}
	if m, err := epp.VerifyHopMarker(d.SetHeaders[epp.HopHeader], testHopKeys, remote.ClusterID, time.Now()); err != nil || m.From != "us-east-1" || string(d.Body) != completion {
		t.Fatalf("spilled request: headers %v body %q: want a hop marker from us-east-1 that verifies at %s (%v), and the body unchanged",
			d.SetHeaders, d.Body, remote.ClusterID, err)
	}
	if d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, "standard"), completion, nil); d.Immediate != nil || d.Destinations[0] == remote.Gateway {
		t.Fatalf("standard must stay local: %+v", d)
	}
	if d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, "batch"), completion, nil); d.Immediate == nil || d.Immediate.Status != 429 {
		t.Fatalf("besteffort on a saturated pool must be shed: %+v", d)
	}
	// A request another cluster spilled here is served here, even saturated.
	hop, err := epp.SignHopMarker(testHopKeys[0], "eu-west-1", "us-east-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, "critical", epp.HopHeader, hop.String()), completion, nil); d.Immediate != nil || d.Destinations[0] == remote.Gateway {
		t.Fatalf("a hopped request must not spill twice: %+v", d)
	}
	// A marker a client wrote is no hop: the request spills, with the EPP's marker instead.
	d = h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, "critical", epp.HopHeader, "eu-west-1"), completion, nil)
	if d.Immediate != nil || d.Destinations[0] != remote.Gateway || d.SetHeaders[epp.HopHeader] == "eu-west-1" {
		t.Fatalf("a client's hop marker must change nothing: %+v", d)
	}
	// No local endpoint at all: Critical fails over, Standard gets 503.
	st.mu.Lock()
	st.eps = nil
	st.mu.Unlock()
	if d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, "critical"), completion, nil); d.Immediate != nil || d.Destinations[0] != remote.Gateway {
		t.Fatalf("critical with no local endpoint must fail over: %+v", d)
	}
	if d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, "standard"), completion, nil); d.Immediate == nil || d.Immediate.Status != 503 {
		t.Fatalf("standard with no local endpoint: %+v, want 503", d)
	}
	if got := spilled(t, reg, "saturated", "critical", "us-west"); got != 2 {
		t.Fatalf("spilled{saturated,critical,us-west} = %v, want 2", got)
	}
	if got := spilled(t, reg, "no_endpoints", "critical", "us-west"); got != 1 {
		t.Fatalf("spilled{no_endpoints,critical,us-west} = %v, want 1", got)
	}
}

// TestSpillFallbackModel: an eligible request that should leave finds no remote cluster; the
// policy's fallback model serves it here, on the endpoints that serve that model.
func TestSpillFallbackModel(t *testing.T) {
	settings, err := epp.ParseConfig([]byte("objectives:\n- {name: critical, priority: Critical}\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := spill.DefaultPolicy()
	p.FallbackModel = "llama-small"
	dec, err := spill.New(p, func() []spill.Remote { return nil })
	if err != nil {
		t.Fatal(err)
	}
	sat := modelmetrics.Metrics{WaitingQueue: 9}
	big := ep("10.0.0.1:8000", sat)
	big.Models = []string{"meta-llama/Llama-3.1-8B-Instruct"}
	small := ep("10.0.0.2:8000", sat)
	small.Models = []string{"llama-small"}
	st := &store{eps: []epp.Endpoint{big, small}}
	srv, err := epp.New(epp.Options{Pool: pool, Settings: settings, Datastore: st, Spill: dec, ClusterID: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: srv, store: st, client: &gateway.Client{EPP: extproctest.Serve(t, srv)}}
	dec.ObserveLocal(spill.Local{ReadyEndpoints: 2, QueueDepth: 18, Saturation: 1, Saturated: true})
	call, d, err := h.client.Request(t.Context(), hdrs("/v1/completions", epp.ObjectiveHeader, "critical"), []byte(completion), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	if d.Immediate != nil || d.Destinations[0] != small.Address || !strings.Contains(string(d.Body), `"llama-small"`) {
		t.Fatalf("critical with no remote target: %+v body %s: want the fallback model's endpoint and the model rewritten", d, d.Body)
	}
	// The response names the model that served it: the policy's fallback is declared, not silent.
	if err := call.ResponseHeaders(200, http.Header{"Content-Type": {"application/json"}}, small.Address, false); err != nil {
		t.Fatal(err)
	}
	if got := call.ResponseSet[epp.FallbackModelHeader]; got != "llama-small" {
		t.Fatalf("response headers set %v, want %s: llama-small", call.ResponseSet, epp.FallbackModelHeader)
	}
}

// TestRTTProbeIsAnsweredByTheEPP: another spoke's round-trip probe gets 204 from the EPP itself:
// no destination, no model server, nothing counted as admitted.
func TestRTTProbeIsAnsweredByTheEPP(t *testing.T) {
	h := start(t, "", ep("a:1", modelmetrics.Metrics{}))
	call, d, err := h.client.Request(context.Background(), []gateway.Header{{Key: ":method", Value: "HEAD"}, {Key: ":path", Value: "/"}, {Key: epp.ProbeHeader, Value: "us-west-1"}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	call.Close()
	if d.Immediate == nil || d.Immediate.Status != 204 || len(d.Destinations) != 0 {
		t.Fatalf("probe: %+v, want an immediate 204 and no destination", d)
	}
	if admitted, shed := h.srv.Counts(); admitted != 0 || shed != 0 {
		t.Fatalf("a probe was counted: admitted %d shed %d", admitted, shed)
	}
}

// spilled reads spillway_epp_spilled_requests_total{reason, priority, region} from the registry.
func spilled(t *testing.T, reg *prometheus.Registry, reason, priority, region string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"reason": reason, "priority": priority, "region": region}
	for _, f := range fams {
		if f.GetName() != "spillway_epp_spilled_requests_total" {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

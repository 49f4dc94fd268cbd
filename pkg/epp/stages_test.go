package epp

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/spillway-io/spillway/pkg/epp/request"
	"github.com/spillway-io/spillway/pkg/epp/scheduler"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/pkg/spill"
)

// These tests drive the stages of the request path (decide) one at a time, on a fake datastore.

func newTestServer(t *testing.T, cfg string, ds fakeDatastore, mod ...func(*Options)) *Server {
	t.Helper()
	settings := DefaultSettings()
	if cfg != "" {
		var err error
		if settings, err = ParseConfig([]byte(cfg)); err != nil {
			t.Fatal(err)
		}
	}
	o := Options{Pool: testPool, Settings: settings, Datastore: ds, Registerer: prometheus.NewRegistry()}
	for _, m := range mod {
		m(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// withBuffers gives the exchange pooled buffers, as decide does, for the length of the test.
func withBuffers(t *testing.T, s *Server, x *exchange) *exchange {
	x.bufs = s.buffers.Get().(*buffers)
	t.Cleanup(func() { s.release(x) })
	return x
}

// immediateStatus is the status of out's immediate response, 0 when it has none.
func immediateStatus(out []*extprocv3.ProcessingResponse) int {
	if len(out) == 0 {
		return 0
	}
	return int(out[0].GetImmediateResponse().GetStatus().GetCode())
}

// immediateBody is the body of out's immediate response, nil when it has none.
func immediateBody(out []*extprocv3.ProcessingResponse) []byte {
	if len(out) == 0 {
		return nil
	}
	return out[0].GetImmediateResponse().GetBody()
}

func headerOf(hs []*corev3.HeaderValueOption, key string) string {
	for _, h := range hs {
		if h.GetHeader().GetKey() == key {
			return string(h.GetHeader().GetRawValue())
		}
	}
	return ""
}

func addresses(eps []scheduler.Endpoint) []string {
	out := []string{}
	for _, e := range eps {
		out = append(out, e.Address)
	}
	return out
}

func requests(s *Server, objective, model, result string) float64 {
	return testutil.ToFloat64(s.metrics.requests.WithLabelValues(objective, model, result))
}

// observations reads how many values a histogram has observed (testutil.ToFloat64 reads only
// counters and gauges).
func observations(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	var pb dto.Metric
	if err := h.Write(&pb); err != nil {
		t.Fatal(err)
	}
	return pb.GetHistogram().GetSampleCount()
}

// series counts the series a collector has.
func series(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 1024)
	c.Collect(ch)
	close(ch)
	return len(ch)
}

const stageObjectives = "objectives:\n- {name: critical, priority: Critical}\n- {name: batch, priority: BestEffort}\n"

type fixedObjectives map[string]int

func (o fixedObjectives) Priority(name string) (int, bool) { p, ok := o[name]; return p, ok }

func TestResolveObjective(t *testing.T) {
	tests := []struct {
		name          string
		cfg           string
		objs          Objectives
		header        string
		wantObjective string
		wantPriority  int
	}{
		{"no header", stageObjectives, nil, "", "", 0},
		{"configured", stageObjectives, nil, "critical", "critical", 100},
		{"configured sheddable", stageObjectives, nil, "batch", "batch", -1},
		{"unknown", stageObjectives, nil, "made-up-by-a-client", "", 0},
		{"unknown takes the default priority", stageObjectives + "defaultPriority: BestEffort\n", nil, "nope", "", -1},
		{"cluster objectives replace the file's", stageObjectives, fixedObjectives{"tuned": 7}, "tuned", "tuned", 7},
		{"cluster objectives only", stageObjectives, fixedObjectives{"tuned": 7}, "critical", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, tt.cfg, fakeDatastore{}, func(o *Options) { o.Objectives = tt.objs })
			objective, priority := s.resolveObjective(tt.header)
			if objective != tt.wantObjective || priority != tt.wantPriority {
				t.Fatalf("resolveObjective(%q) = %q, %d; want %q, %d", tt.header, objective, priority, tt.wantObjective, tt.wantPriority)
			}
		})
	}
}

func TestAdmit(t *testing.T) {
	tests := []struct {
		name      string
		headers   map[string]string
		body      string
		status    int
		substr    string
		wantModel string
	}{
		{"probe", map[string]string{ProbeHeader: "us-west-1"}, "", 204, "", ""},
		{"probe with a body", map[string]string{ProbeHeader: "us-west-1"}, `{"model":`, 204, "", ""},
		{"no body", map[string]string{":path": "/v1/models"}, "", 0, "", ""},
		{"completion", map[string]string{":path": "/v1/completions"}, `{"model":"m","prompt":"hello"}`, 0, "", "m"},
		{"chat", map[string]string{":path": "/v1/chat/completions"}, `{"model":"c","messages":[{"role":"user","content":"hi"}]}`, 0, "", "c"},
		{"not JSON", map[string]string{":path": "/v1/completions"}, `{"model":`, 400, "not JSON", ""},
		{"no model", map[string]string{":path": "/v1/chat/completions"}, `{"messages":[]}`, 400, `\"model\" is required`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, stageObjectives, fakeDatastore{})
			x := &exchange{headers: tt.headers, body: []byte(tt.body), objective: "batch", req: request.Request{Model: "stale"}}
			out := s.admit(x)
			if got := immediateStatus(out); got != tt.status || (tt.status == 0) != (out == nil) {
				t.Fatalf("admit: status %d (%d responses), want %d", got, len(out), tt.status)
			}
			if body := immediateBody(out); !strings.Contains(string(body), tt.substr) {
				t.Fatalf("admit: body %s, want it to mention %q", body, tt.substr)
			}
			if tt.status == 0 && (x.req.Model != tt.wantModel || x.began.IsZero()) {
				t.Fatalf("admitted request %+v began %v, want model %q and a start time", x.req, x.began, tt.wantModel)
			}
			wantInvalid := 0.0
			if tt.status == 400 {
				wantInvalid = 1
			}
			if got := requests(s, "batch", "", resultInvalid); got != wantInvalid {
				t.Fatalf("requests{batch,\"\",invalid} = %v, want %v", got, wantInvalid)
			}
		})
	}
}

func TestTargetModel(t *testing.T) {
	cfg := `
models:
- name: chat
  targets: [{model: chat-v1, weight: 0}, {model: chat-v2, weight: 5}]
- name: pinned
  targets: [{model: pinned-v1, weight: 1}]
- name: summarise
  fallback: sum-small
`
	tests := []struct{ model, want string }{
		{"chat", "chat-v2"}, // a target of weight 0 gets nothing
		{"pinned", "pinned-v1"},
		{"summarise", "summarise"}, // a route without targets keeps the name
		{"unrouted", "unrouted"},
		{"", ""},
	}
	s := newTestServer(t, cfg, fakeDatastore{})
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			for range 100 {
				x := &exchange{req: request.Request{Model: tt.model}, target: "stale"}
				if s.targetModel(x); x.target != tt.want {
					t.Fatalf("target of %q = %q, want %q", tt.model, x.target, tt.want)
				}
			}
		})
	}
}

func TestLocalCandidates(t *testing.T) {
	cfg := "models:\n- name: summarise\n  targets: [{model: sum-big, weight: 1}]\n  fallback: sum-small\n"
	free := modelmetrics.Metrics{}
	unready := readyEndpoint("b:1", free)
	unready.Ready = false
	mixed := []Endpoint{readyEndpoint("a:1", free), unready, readyEndpoint("c:1", free, "x"), readyEndpoint("d:1", free, "m", "x")}
	tests := []struct {
		name       string
		eps        []Endpoint
		model      string // the body's
		target     string // targetModel's choice
		subset     []string
		hasSubset  bool
		want       []string
		wantTarget string
		wantLabel  string
	}{
		{"ready endpoints serving the model", mixed, "m", "m", nil, false, []string{"a:1", "d:1"}, "m", "other"},
		{"another model", mixed, "x", "x", nil, false, []string{"a:1", "c:1", "d:1"}, "x", "other"},
		{"no model: every ready endpoint", mixed, "", "", nil, false, []string{"a:1", "c:1", "d:1"}, "", ""},
		{"inside the gateway's subset", mixed, "x", "x", []string{"d:1", "z:9"}, true, []string{"d:1"}, "x", "other"},
		{"an empty subset keeps none", mixed, "x", "x", nil, true, []string{}, "x", "other"},
		{"no endpoint in the pool", nil, "m", "m", nil, false, []string{}, "m", "other"},
		{"the route's fallback model when no endpoint serves the target",
			[]Endpoint{readyEndpoint("a:1", free, "sum-small"), readyEndpoint("b:1", free, "base")},
			"summarise", "sum-big", nil, false, []string{"a:1"}, "sum-small", "sum-small"},
		{"the target when an endpoint serves it",
			[]Endpoint{readyEndpoint("a:1", free, "sum-small"), readyEndpoint("b:1", free, "sum-big")},
			"summarise", "sum-big", nil, false, []string{"b:1"}, "sum-big", "sum-big"},
		{"no fallback without a route",
			[]Endpoint{readyEndpoint("a:1", free, "base")}, "other", "other", nil, false, []string{}, "other", "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, cfg, fakeDatastore{testPool: tt.eps})
			x := withBuffers(t, s, &exchange{req: request.Request{Model: tt.model}, target: tt.target, subset: tt.subset, hasSubset: tt.hasSubset})
			s.localCandidates(x)
			if got := addresses(x.cands); !slices.Equal(got, tt.want) || x.target != tt.wantTarget || x.model != tt.wantLabel {
				t.Fatalf("candidates %v target %q label %q; want %v, %q, %q", got, x.target, x.model, tt.want, tt.wantTarget, tt.wantLabel)
			}
			// The candidates live in the pooled buffer, so the next request reuses them.
			if len(x.cands) > 0 && unsafe.SliceData(x.cands) != unsafe.SliceData(x.bufs.cands) {
				t.Fatal("candidates are not in the pooled buffer")
			}
		})
	}
}

func TestSpillOrFallback(t *testing.T) {
	sat := modelmetrics.Metrics{WaitingQueue: 9}
	ds := fakeDatastore{
		testPool: {readyEndpoint("10.0.0.1:8000", sat, "llama"), readyEndpoint("10.0.0.2:8000", sat, "llama-small")},
		fleet.PoolRef{Namespace: testPool.Namespace, Name: "spare"}: {readyEndpoint("10.0.9.1:8000", modelmetrics.Metrics{})},
	}
	remote := spill.Remote{ClusterID: "us-west-1", Region: "us-west", Gateway: "127.0.2.254:8080", Alive: true, ReadyEndpoints: 3, Saturation: 0.1}
	tests := []struct {
		name         string
		noSpill      bool
		remotes      []spill.Remote
		fallbackPool string
		fallbackMod  string
		objective    string
		wantDest     string // a spilled request's destination
		wantCands    []string
		wantTarget   string
		wantFallback float64
	}{
		{"no spill policy", true, []spill.Remote{remote}, "", "", "critical", "", []string{"10.0.0.1:8000"}, "llama", 0},
		{"critical leaves a saturated pool", false, []spill.Remote{remote}, "", "", "critical", remote.Gateway, nil, "llama", 0},
		{"standard stays", false, []spill.Remote{remote}, "", "", "", "", []string{"10.0.0.1:8000"}, "llama", 0},
		{"no remote: no fallback configured", false, nil, "", "", "critical", "", []string{"10.0.0.1:8000"}, "llama", 0},
		{"no remote: the fallback model", false, nil, "", "llama-small", "critical", "", []string{"10.0.0.2:8000"}, "llama-small", 1},
		{"no remote: the fallback pool", false, nil, "spare", "", "critical", "", []string{"10.0.9.1:8000"}, "llama", 1},
		{"no remote: a fallback nobody serves keeps the local candidates", false, nil, "", "nobody", "critical", "", []string{"10.0.0.1:8000"}, "llama", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := spill.DefaultPolicy()
			p.FallbackPool, p.FallbackModel = tt.fallbackPool, tt.fallbackMod
			dec, err := spill.New(p, func() []spill.Remote { return tt.remotes })
			if err != nil {
				t.Fatal(err)
			}
			dec.ObserveLocal(spill.Local{ReadyEndpoints: 2, QueueDepth: 18, Saturation: 1, Saturated: true})
			s := newTestServer(t, stageObjectives, ds, func(o *Options) {
				o.ClusterID, o.HopKeys, o.Now = "us-east-1", keySet(hopFleet), func() time.Time { return hopT0 }
				if !tt.noSpill {
					o.Spill = dec
				}
			})
			x := &exchange{headers: map[string]string{}, body: []byte(`{"model":"llama","prompt":"x"}`), duplexReq: true, req: request.Request{Model: "llama", Prompt: "x"}}
			x.objective, x.priority = s.resolveObjective(tt.objective)
			x.target = "llama"
			withBuffers(t, s, x)
			s.localCandidates(x) // the stage before
			out := s.spillOrFallback(x)
			if tt.wantDest != "" {
				f := forwardedOf(t, out)
				if f.headers[DestinationHeader] != tt.wantDest || f.metadata != tt.wantDest || string(f.body) != string(x.body) {
					t.Fatalf("spilled: %+v, want %s with the body unchanged", f, tt.wantDest)
				}
				m, err := VerifyHopMarker(f.headers[HopHeader], hopFleet, remote.ClusterID, hopT0)
				if err != nil || m.From != "us-east-1" || m.KeyID != hopKeyNew.ID {
					t.Fatalf("hop marker %q of the spilled request: %+v, %v; want one from us-east-1, signed with the first key, that verifies at %s",
						f.headers[HopHeader], m, err, remote.ClusterID)
				}
				if !x.spilled || !x.routed || s.Spilled() != 1 || requests(s, "critical", "other", resultSpilled) != 1 ||
					testutil.ToFloat64(s.metrics.spilled.WithLabelValues("saturated", "critical", "us-west")) != 1 {
					t.Fatalf("spilled request not counted: spilled=%v routed=%v Spilled()=%d", x.spilled, x.routed, s.Spilled())
				}
				return
			}
			if out != nil {
				t.Fatalf("stays here, but answered %v", out)
			}
			if got := addresses(x.cands); !slices.Equal(got, tt.wantCands) || x.target != tt.wantTarget || x.spilled || x.routed {
				t.Fatalf("candidates %v target %q (spilled %v), want %v, %q", got, x.target, x.spilled, tt.wantCands, tt.wantTarget)
			}
			if got := testutil.ToFloat64(s.metrics.fallbacks); got != tt.wantFallback {
				t.Fatalf("fallbacks = %v, want %v", got, tt.wantFallback)
			}
		})
	}
}

// TestSpillHopMarker: only a hop marker that verifies (a fleet key, meant for this cluster, made
// within a minute) keeps a Critical request on a saturated pool here. Any other marker is
// counted by its reason and changes nothing else: the request spills as a fresh one, with the
// EPP's own marker in place of the client's. Without a hop key nothing spills in Parent Mode;
// Endpoint Mode sends no marker.
func TestSpillHopMarker(t *testing.T) {
	const self, target = "us-east-1", "us-west-1"
	remote := spill.Remote{ClusterID: target, Region: "us-west", Gateway: "127.0.2.254:8080", Endpoints: []string{"10.1.0.1:8000"},
		Alive: true, ReadyEndpoints: 3, Saturation: 0.1}
	stranger := fleet.HopKey{ID: hopKeyNew.ID, Secret: []byte("a-secret-the-client-made-up-0000")}
	tests := []struct {
		name         string
		hop          string // the request's x-spillway-hop; "-" for none
		keys         []fleet.HopKey
		mode         spill.Mode
		wantSpill    bool
		wantMarker   bool   // the spilled request carries the EPP's marker for the target
		wantRejected string // the reason counted, "" for none
	}{
		{"no marker: spills with the EPP's marker", "-", hopFleet, spill.ParentMode, true, true, ""},
		{"a valid marker: stays", mustSign(t, hopKeyNew, "eu-west-1", self, hopT0.Add(-30*time.Second)), hopFleet, spill.ParentMode, false, false, ""},
		{"a valid marker of the previous key: stays", mustSign(t, hopKeyOld, "eu-west-1", self, hopT0), hopFleet, spill.ParentMode, false, false, ""},
		{"a client's plain cluster ID: spills as fresh", "eu-west-1", hopFleet, spill.ParentMode, true, true, hopMalformed},
		{"an empty marker: spills as fresh", "", hopFleet, spill.ParentMode, true, true, hopMalformed},
		{"forged: spills as fresh", mustSign(t, stranger, "eu-west-1", self, hopT0), hopFleet, spill.ParentMode, true, true, hopBadSignature},
		{"expired: spills as fresh", mustSign(t, hopKeyNew, "eu-west-1", self, hopT0.Add(-2*time.Minute)), hopFleet, spill.ParentMode, true, true, hopExpired},
		{"meant for another cluster: spills as fresh", mustSign(t, hopKeyNew, "eu-west-1", "ap-south-1", hopT0), hopFleet, spill.ParentMode, true, true, hopWrongDestination},
		{"a key no longer in the set: spills as fresh", mustSign(t, hopKeyOld, "eu-west-1", self, hopT0), hopFleet[:1], spill.ParentMode, true, true, hopUnknownKey},
		{"no hop key yet: stays, and no marker verifies", mustSign(t, hopKeyNew, "eu-west-1", self, hopT0), nil, spill.ParentMode, false, false, hopUnknownKey},
		{"a signing key with a short secret: stays", "-", []fleet.HopKey{{ID: "weak", Secret: []byte("123")}}, spill.ParentMode, false, false, ""},
		{"no hop key, endpoint mode: spills without a marker", "-", nil, spill.EndpointMode, true, false, ""},
		{"endpoint mode sends no marker", "-", hopFleet, spill.EndpointMode, true, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := spill.DefaultPolicy()
			p.Mode = tt.mode
			dec, err := spill.New(p, func() []spill.Remote { return []spill.Remote{remote} })
			if err != nil {
				t.Fatal(err)
			}
			dec.ObserveLocal(spill.Local{ReadyEndpoints: 2, QueueDepth: 18, Saturation: 1, Saturated: true})
			s := newTestServer(t, stageObjectives, fakeDatastore{testPool: {readyEndpoint("10.0.0.1:8000", modelmetrics.Metrics{WaitingQueue: 9})}},
				func(o *Options) {
					o.ClusterID, o.Spill, o.HopKeys, o.Now = self, dec, keySet(tt.keys), func() time.Time { return hopT0 }
				})
			x := &exchange{headers: map[string]string{}, body: []byte(`{"model":"m","prompt":"x"}`), duplexReq: true, req: request.Request{Model: "m", Prompt: "x"}}
			if tt.hop != "-" {
				x.headers[HopHeader] = tt.hop
			}
			x.objective, x.priority = s.resolveObjective("critical")
			x.target = "m"
			withBuffers(t, s, x)
			s.localCandidates(x)
			out := s.spillOrFallback(x)
			if got := out != nil; got != tt.wantSpill || x.spilled != tt.wantSpill {
				t.Fatalf("spilled %v (answer %v), want %v", x.spilled, out, tt.wantSpill)
			}
			for _, r := range hopReasons {
				want := 0.0
				if r == tt.wantRejected {
					want = 1
				}
				if got := testutil.ToFloat64(s.metrics.hopRejected.WithLabelValues(r)); got != want {
					t.Errorf("hop_markers_rejected_total{reason=%s} = %v, want %v", r, got, want)
				}
			}
			if n := series(s.metrics.hopRejected); n != len(hopReasons) {
				t.Errorf("%d series of hop_markers_rejected_total, want the %d reasons only", n, len(hopReasons))
			}
			if !tt.wantSpill {
				return
			}
			f := forwardedOf(t, out)
			marker, has := f.headers[HopHeader]
			if !tt.wantMarker {
				if has {
					t.Fatalf("marker %q sent in %s", marker, tt.mode)
				}
				return
			}
			m, err := VerifyHopMarker(marker, hopFleet, target, hopT0)
			if err != nil || m.From != self || m.To != target {
				t.Fatalf("the spilled request's marker %q: %+v, %v; want the EPP's own, verifying at %s", marker, m, err, target)
			}
			if m, err := VerifyHopMarker(marker, hopFleet, self, hopT0); err == nil {
				t.Fatalf("the marker sent to %s also verifies here: %+v", target, m)
			}
			if h := markerOption(t, out); h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				t.Fatalf("marker set with %v: a client's copy must be replaced, not appended to", h.GetAppendAction())
			}
		})
	}
}

// markerOption is the header mutation that sets the hop marker in out.
func markerOption(t *testing.T, out []*extprocv3.ProcessingResponse) *corev3.HeaderValueOption {
	t.Helper()
	cr := out[0].GetRequestHeaders().GetResponse()
	if cr == nil {
		cr = out[0].GetRequestBody().GetResponse()
	}
	for _, h := range cr.GetHeaderMutation().GetSetHeaders() {
		if h.GetHeader().GetKey() == HopHeader {
			return h
		}
	}
	t.Fatal("no hop marker set")
	return nil
}

func TestShedLoad(t *testing.T) {
	now := time.Now()
	free := scheduler.Endpoint{Address: "a:1", ScrapedAt: now}
	full := scheduler.Endpoint{Address: "b:1", Metrics: modelmetrics.Metrics{WaitingQueue: 9}, ScrapedAt: now}
	kv := scheduler.Endpoint{Address: "c:1", Metrics: modelmetrics.Metrics{KVCacheUsage: 0.85}, ScrapedAt: now}
	stale := scheduler.Endpoint{Address: "d:1", ScrapedAt: now.Add(-time.Hour)}
	tests := []struct {
		name          string
		cands         []scheduler.Endpoint
		hasSubset     bool
		objective     string
		status        int
		substr        string
		wantSaturated []bool
	}{
		{"no candidate", nil, false, "critical", 503, "has no ready endpoint", nil},
		{"no candidate in the subset", nil, true, "critical", 503, "in the gateway's subset", nil},
		{"sheddable on a saturated pool", []scheduler.Endpoint{full, kv}, false, "batch", 429, "sheddable (priority -1)", []bool{true, true}},
		{"stale metrics have no headroom", []scheduler.Endpoint{stale}, false, "batch", 429, "saturated", []bool{true}},
		{"standard on a saturated pool", []scheduler.Endpoint{full, kv}, false, "", 0, "", []bool{true, true}},
		{"critical on a saturated pool", []scheduler.Endpoint{full}, false, "critical", 0, "", []bool{true}},
		{"sheddable with headroom on one endpoint", []scheduler.Endpoint{full, free}, false, "batch", 0, "", []bool{true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, stageObjectives+"retryAfter: 3s\n", fakeDatastore{})
			x := &exchange{cands: slices.Clone(tt.cands), hasSubset: tt.hasSubset, model: "m"}
			x.objective, x.priority = s.resolveObjective(tt.objective)
			out := s.shedLoad(x)
			if got := immediateStatus(out); got != tt.status || (tt.status == 0) != (out == nil) || !strings.Contains(string(immediateBody(out)), tt.substr) {
				t.Fatalf("shedLoad: status %d body %s, want %d mentioning %q", got, immediateBody(out), tt.status, tt.substr)
			}
			var saturated []bool
			for _, e := range x.cands {
				saturated = append(saturated, e.Saturated)
			}
			if !slices.Equal(saturated, tt.wantSaturated) {
				t.Fatalf("saturated marks %v, want %v (the picker needs them whatever the priority)", saturated, tt.wantSaturated)
			}
			wantShed, result := 0.0, map[int]string{503: resultNoEndpoints, 429: resultShed}[tt.status]
			if tt.status == 429 {
				wantShed = 1
				if h := headerOf(out[0].GetImmediateResponse().GetHeaders().GetSetHeaders(), "retry-after"); h != "3" {
					t.Fatalf("429 with Retry-After %q, want 3", h)
				}
			}
			if _, shed := s.Counts(); float64(shed) != wantShed {
				t.Fatalf("shed count %d, want %v", shed, wantShed)
			}
			if result != "" && requests(s, x.objective, "m", result) != 1 {
				t.Fatalf("requests{%q,m,%s} not counted", x.objective, result)
			}
		})
	}
}

func TestPick(t *testing.T) {
	ep := func(addr string, queue int, saturated bool) scheduler.Endpoint {
		return scheduler.Endpoint{Address: addr, Metrics: modelmetrics.Metrics{WaitingQueue: queue}, ScrapedAt: time.Now(), Saturated: saturated}
	}
	tests := []struct {
		name  string
		cfg   string
		cands []scheduler.Endpoint
		want  string
	}{
		{"one", "", []scheduler.Endpoint{ep("a:1", 3, false)}, "a:1"},
		{"best first, then the fallbacks", "", []scheduler.Endpoint{ep("a:1", 4, false), ep("b:1", 0, false), ep("c:1", 2, false)}, "b:1,c:1,a:1"},
		{"fallbacks: 0", "fallbacks: 0\n", []scheduler.Endpoint{ep("a:1", 4, false), ep("b:1", 0, false), ep("c:1", 2, false)}, "b:1"},
		{"headroom before score", "", []scheduler.Endpoint{ep("a:1", 0, true), ep("b:1", 3, false)}, "b:1,a:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, tt.cfg, fakeDatastore{})
			x := &exchange{cands: tt.cands, target: "m", req: request.Request{Model: "m", Prompt: "hello"}}
			if s.pick(x); x.dest != tt.want {
				t.Fatalf("destination %q, want %q", x.dest, tt.want)
			}
		})
	}
}

func TestAnswer(t *testing.T) {
	const body = `{"model":"chat","prompt":"hello"}`
	tests := []struct {
		name       string
		duplex     bool
		body       string
		model      string // the body's
		target     string
		status     int
		wantBody   string // the body sent on; "" when the gateway keeps its own
		wantLength string
	}{
		{"streamed, model unchanged", true, body, "chat", "chat", 0, body, "33"},
		{"streamed, model rewritten", true, body, "chat", "chat-v2", 0, `{"model":"chat-v2","prompt":"hello"}`, "36"},
		{"buffered, model unchanged", false, body, "chat", "chat", 0, "", "33"},
		{"buffered, model rewritten", false, body, "chat", "chat-v2", 0, `{"model":"chat-v2","prompt":"hello"}`, "36"},
		{"no body", true, "", "", "", 0, "", ""},
		{"a body that cannot be rewritten", true, `not json`, "chat", "chat-v2", 400, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, stageObjectives, fakeDatastore{})
			x := &exchange{duplexReq: tt.duplex, body: []byte(tt.body), req: request.Request{Model: tt.model}, target: tt.target,
				dest: "a:1,b:1", objective: "critical", model: "other", began: time.Now()}
			out := s.answer(x)
			admitted, _ := s.Counts()
			if tt.status != 0 {
				if immediateStatus(out) != tt.status || x.routed || admitted != 0 || requests(s, "critical", "other", resultInvalid) != 1 {
					t.Fatalf("answer: status %d routed %v admitted %d, want %d, not routed, counted invalid", immediateStatus(out), x.routed, admitted, tt.status)
				}
				return
			}
			f := forwardedOf(t, out)
			if f.headers[DestinationHeader] != "a:1,b:1" || f.metadata != "a:1,b:1" || !f.clearRouteCache || f.headers["content-length"] != tt.wantLength {
				t.Fatalf("answer %+v: want destination a:1,b:1 in header and metadata, route re-selection, content-length %q", f, tt.wantLength)
			}
			if string(f.body) != tt.wantBody {
				t.Fatalf("body sent on %q, want %q", f.body, tt.wantBody)
			}
			if !x.routed || admitted != 1 || requests(s, "critical", "other", resultRouted) != 1 || observations(t, s.metrics.scheduling) != 1 {
				t.Fatalf("routed request not counted: routed %v admitted %d", x.routed, admitted)
			}
		})
	}
}

// TestObjectiveLabelIsResolved: whatever objective a client sends, only a configured one is a
// label value, on every path, including those that end before the body is parsed.
func TestObjectiveLabelIsResolved(t *testing.T) {
	large := `{"model":"m","prompt":"` + strings.Repeat("x", 4000) + `"}`
	tests := []struct {
		name      string
		objective string
		body      string
		status    int
		label     string
		result    string
	}{
		{"too large, unknown objective", "invented-by-a-client", large, 413, "", resultTooLarge},
		{"invalid body, unknown objective", "invented-by-a-client", `{"model":`, 400, "", resultInvalid},
		{"too large, configured objective", "batch", large, 413, "batch", resultTooLarge},
		{"invalid body, configured objective", "batch", `{"model":`, 400, "batch", resultInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, stageObjectives+"maxBodyBytes: 2048\n", fakeDatastore{testPool: {readyEndpoint("a:1", modelmetrics.Metrics{})}})
			st := &memStream{in: []*extprocv3.ProcessingRequest{
				requestHeaders(":method", "POST", ":path", "/v1/completions", ObjectiveHeader, tt.objective),
				requestBody(tt.body, true),
			}}
			if err := s.Process(st); err != nil {
				t.Fatal(err)
			}
			if got := immediateStatus(st.out); got != tt.status {
				t.Fatalf("status %d, want %d", got, tt.status)
			}
			if got := requests(s, tt.label, "", tt.result); got != 1 {
				t.Fatalf("requests{objective=%q,model=\"\",result=%s} = %v, want 1", tt.label, tt.result, got)
			}
			if n := series(s.metrics.requests); n != 1 {
				t.Fatalf("%d series of spillway_epp_requests_total, want the one above only", n)
			}
		})
	}
}

// forwarded is what an answer that sends the request on says.
type forwarded struct {
	headers         map[string]string
	metadata        string
	clearRouteCache bool
	body            []byte // streamed pieces, or a buffered body's replacement
}

func forwardedOf(t *testing.T, out []*extprocv3.ProcessingResponse) forwarded {
	t.Helper()
	if len(out) == 0 {
		t.Fatal("no answer")
	}
	cr := out[0].GetRequestHeaders().GetResponse()
	if cr == nil {
		cr = out[0].GetRequestBody().GetResponse()
	}
	if cr == nil {
		t.Fatalf("answer %v sends nothing on", out[0])
	}
	f := forwarded{headers: map[string]string{}, clearRouteCache: cr.GetClearRouteCache(), body: cr.GetBodyMutation().GetBody()}
	for _, h := range cr.GetHeaderMutation().GetSetHeaders() {
		f.headers[h.GetHeader().GetKey()] = string(h.GetHeader().GetRawValue())
	}
	f.metadata = out[0].GetDynamicMetadata().GetFields()[DestinationMetadata].GetStructValue().GetFields()[DestinationHeader].GetStringValue()
	for i, r := range out[1:] {
		sr := r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse()
		if sr == nil || sr.GetEndOfStream() != (i == len(out)-2) {
			t.Fatalf("piece %d of the body: %v", i, r)
		}
		f.body = append(f.body, sr.GetBody()...)
	}
	return f
}

// TestUnknownObjectivesAreBounded: a client that invents objective names, or spells a known one
// differently, gets the default priority (here Standard: not shed on a saturated pool, not
// spilled) and no metric series of its own, on the whole path from the request headers to the
// end of the response. The configured name, as a control, does spill.
func TestUnknownObjectivesAreBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	dec, err := spill.New(spill.DefaultPolicy(), func() []spill.Remote {
		return []spill.Remote{{ClusterID: "us-west-1", Region: "us-west", Gateway: "127.0.2.254:8080", Alive: true, ReadyEndpoints: 3}}
	})
	if err != nil {
		t.Fatal(err)
	}
	dec.ObserveLocal(spill.Local{ReadyEndpoints: 1, QueueDepth: 9, Saturation: 1, Saturated: true})
	s := newTestServer(t, stageObjectives, fakeDatastore{testPool: {readyEndpoint("a:1", modelmetrics.Metrics{WaitingQueue: 9})}}, func(o *Options) {
		o.Registerer, o.Spill, o.ClusterID, o.HopKeys, o.Now = reg, dec, "us-east-1", keySet(hopFleet), func() time.Time { return hopT0 }
	})
	exchange := func(objective string) string {
		st := &memStream{in: []*extprocv3.ProcessingRequest{
			requestHeaders(":method", "POST", ":path", "/v1/completions", ObjectiveHeader, objective),
			requestBody(`{"model":"m","prompt":"hello"}`, true),
			{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
				Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "content-type", RawValue: []byte("application/json")}}}}}},
			{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
				Body: []byte(`{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}`), EndOfStream: true}}},
		}}
		if err := s.Process(st); err != nil {
			t.Fatal(err)
		}
		if st.out[0].GetImmediateResponse() != nil {
			return fmt.Sprintf("immediate %d", immediateStatus(st.out))
		}
		return forwardedOf(t, st.out[:2]).headers[DestinationHeader]
	}
	// The control first: the spill decision weighs the local wait by the service time it learns
	// from served requests, and 207 in-memory exchanges would teach it microseconds, for which
	// spilling is not worth the trip.
	if got := exchange("critical"); got != "127.0.2.254:8080" {
		t.Fatalf("the configured critical objective went to %s, want the remote gateway", got)
	}
	invented := []string{"Critical", "CRITICAL", "critical ", " critical", "critical\x00", "batch-but-not", strings.Repeat("x", 4096)}
	for i := range 200 {
		invented = append(invented, fmt.Sprintf("invented-%d", i))
	}
	for _, o := range invented {
		if got := exchange(o); got != "a:1" {
			t.Fatalf("objective %.40q: sent to %s, want the local endpoint a:1 (default priority: neither shed nor spilled)", o, got)
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		objectives := map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == labelObjective {
					objectives[l.GetValue()] = true
				}
			}
		}
		for o := range objectives {
			if o != "" && o != "critical" {
				t.Errorf("%s has a series for objective %.40q", f.GetName(), o)
			}
		}
		if len(f.GetMetric()) > 2*len(hopReasons) {
			t.Errorf("%s has %d series after %d invented objectives", f.GetName(), len(f.GetMetric()), len(invented))
		}
	}
}

package epp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/spillway-io/spillway/e2e/extproctest"
	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/epp/scheduler"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var pool = fleet.PoolRef{Namespace: "default", Name: "chat"}

// store is the EPP's view of a pool, set by each test.
type store struct {
	mu  sync.Mutex
	eps []epp.Endpoint
}

func (s *store) Endpoints(p fleet.PoolRef, dst []epp.Endpoint) ([]epp.Endpoint, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p != pool {
		return dst, false
	}
	now := time.Now()
	for _, e := range s.eps {
		if e.ScrapedAt.IsZero() {
			e.ScrapedAt = now // fresh unless the test says otherwise
		}
		dst = append(dst, e)
	}
	return dst, true
}

func ep(addr string, m modelmetrics.Metrics) epp.Endpoint {
	return epp.Endpoint{Endpoint: scheduler.Endpoint{Address: addr, Metrics: m}, Ready: true}
}

type harness struct {
	srv    *epp.Server
	reg    *prometheus.Registry
	client *gateway.Client
	store  *store
}

func start(t testing.TB, cfg string, eps ...epp.Endpoint) *harness {
	t.Helper()
	settings := epp.DefaultSettings()
	if cfg != "" {
		var err error
		if settings, err = epp.ParseConfig([]byte(cfg)); err != nil {
			t.Fatal(err)
		}
	}
	st := &store{eps: eps}
	reg := prometheus.NewRegistry()
	srv, err := epp.New(epp.Options{Pool: pool, Settings: settings, Datastore: st, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{srv: srv, reg: reg, store: st, client: &gateway.Client{EPP: extproctest.Serve(t, srv)}}
}

func hdrs(path string, extra ...string) []gateway.Header {
	hs := []gateway.Header{{Key: ":method", Value: "POST"}, {Key: ":path", Value: path}, {Key: ":authority", Value: "gw"}, {Key: "content-type", Value: "application/json"}}
	for i := 0; i+1 < len(extra); i += 2 {
		hs = append(hs, gateway.Header{Key: extra[i], Value: extra[i+1]})
	}
	return hs
}

func (h *harness) route(t *testing.T, headers []gateway.Header, body string, subset []string) *gateway.Decision {
	t.Helper()
	call, d, err := h.client.Request(context.Background(), headers, []byte(body), subset)
	if err != nil {
		t.Fatal(err)
	}
	call.Close()
	return d
}

const completion = `{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"hello","max_tokens":4}`

func TestRoutesToTheBestEndpointWithFallbacks(t *testing.T) {
	h := start(t, "",
		ep("10.0.0.1:8000", modelmetrics.Metrics{WaitingQueue: 4, KVCacheUsage: 0.7}),
		ep("10.0.0.2:8000", modelmetrics.Metrics{WaitingQueue: 0, KVCacheUsage: 0.1}),
		ep("10.0.0.3:8000", modelmetrics.Metrics{WaitingQueue: 2, KVCacheUsage: 0.4}),
		epp.Endpoint{Endpoint: scheduler.Endpoint{Address: "10.0.0.4:8000"}, Ready: false},
	)
	d := h.route(t, hdrs("/v1/completions"), completion, nil)
	if d.Immediate != nil {
		t.Fatalf("immediate %d %s", d.Immediate.Status, d.Immediate.Body)
	}
	if strings.Join(d.Destinations, ",") != "10.0.0.2:8000,10.0.0.3:8000,10.0.0.1:8000" {
		t.Fatalf("destinations %v: want best first, then fallbacks by score, never the unready endpoint", d.Destinations)
	}
	if d.MetadataDestination != d.SetHeaders[epp.DestinationHeader] {
		t.Fatalf("metadata %q differs from header %q", d.MetadataDestination, d.SetHeaders[epp.DestinationHeader])
	}
	if string(d.Body) != completion || d.SetHeaders["content-length"] != fmt.Sprint(len(completion)) || !d.ClearRouteCache {
		t.Fatalf("body %q, content-length %q, clear route cache %v", d.Body, d.SetHeaders["content-length"], d.ClearRouteCache)
	}
}

func TestBodyModes(t *testing.T) {
	big := fmt.Sprintf(`{"model":"m","prompt":%q}`, strings.Repeat("long prompt text ", 12000)) // ~200 KB
	for _, tc := range []struct {
		name  string
		mode  filterv3.ProcessingMode_BodySendMode
		chunk int
		body  string
	}{
		{"full duplex, many small chunks", filterv3.ProcessingMode_FULL_DUPLEX_STREAMED, 1000, big},
		{"full duplex, 62 KB chunks", filterv3.ProcessingMode_FULL_DUPLEX_STREAMED, 0, big},
		{"buffered", filterv3.ProcessingMode_BUFFERED, 0, big},
		{"buffered small", filterv3.ProcessingMode_BUFFERED, 0, completion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, "", ep("10.0.0.1:8000", modelmetrics.Metrics{}))
			h.client.RequestMode, h.client.ChunkBytes = tc.mode, tc.chunk
			d := h.route(t, hdrs("/v1/completions"), tc.body, nil)
			if d.Immediate != nil || len(d.Destinations) != 1 || d.Destinations[0] != "10.0.0.1:8000" {
				t.Fatalf("decision %+v", d)
			}
			if string(d.Body) != tc.body {
				t.Fatalf("body changed: %d bytes back for %d sent", len(d.Body), len(tc.body))
			}
		})
	}
}

func TestErrors(t *testing.T) {
	saturated := modelmetrics.Metrics{WaitingQueue: 9}
	cfg := `
objectives:
- {name: critical-chat, priority: Critical}
- {name: batch, priority: BestEffort}
maxBodyBytes: 2048
retryAfter: 3s
`
	tests := []struct {
		name    string
		eps     []epp.Endpoint
		headers []gateway.Header
		body    string
		subset  []string
		status  int
		substr  string
	}{
		{"not JSON", []epp.Endpoint{ep("a:1", modelmetrics.Metrics{})}, hdrs("/v1/completions"), `{"model":`, nil, 400, "not JSON"},
		{"no model", []epp.Endpoint{ep("a:1", modelmetrics.Metrics{})}, hdrs("/v1/chat/completions"), `{"messages":[]}`, nil, 400, `\"model\" is required`},
		{"too large", []epp.Endpoint{ep("a:1", modelmetrics.Metrics{})}, hdrs("/v1/completions"), fmt.Sprintf(`{"model":"m","prompt":%q}`, strings.Repeat("x", 4000)), nil, 413, "larger than 2048"},
		{"no ready endpoint", []epp.Endpoint{{Endpoint: scheduler.Endpoint{Address: "a:1"}}}, hdrs("/v1/completions"), completion, nil, 503, "no ready endpoint"},
		{"subset without a match", []epp.Endpoint{ep("a:1", modelmetrics.Metrics{})}, hdrs("/v1/completions"), completion, []string{"b:1"}, 503, "subset"},
		{"empty subset", []epp.Endpoint{ep("a:1", modelmetrics.Metrics{})}, hdrs("/v1/completions"), completion, []string{}, 503, "subset"},
		{"sheddable while saturated", []epp.Endpoint{ep("a:1", saturated), ep("b:1", modelmetrics.Metrics{KVCacheUsage: 0.85})},
			hdrs("/v1/completions", epp.ObjectiveHeader, "batch"), completion, nil, 429, "sheddable"},
		{"stale metrics count as saturated", []epp.Endpoint{{Endpoint: scheduler.Endpoint{Address: "a:1", ScrapedAt: time.Now().Add(-time.Hour)}, Ready: true}},
			hdrs("/v1/completions", epp.ObjectiveHeader, "batch"), completion, nil, 429, "sheddable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t, cfg, tt.eps...)
			d := h.route(t, tt.headers, tt.body, tt.subset)
			if d.Immediate == nil || d.Immediate.Status != tt.status || !strings.Contains(string(d.Immediate.Body), tt.substr) {
				t.Fatalf("decision %+v (immediate %+v), want %d mentioning %q", d, d.Immediate, tt.status, tt.substr)
			}
			var e struct {
				Error struct {
					Message string `json:"message"`
					Code    int    `json:"code"`
				} `json:"error"`
			}
			if json.Unmarshal(d.Immediate.Body, &e) != nil || e.Error.Code != tt.status || d.Immediate.Headers["content-type"] != "application/json" {
				t.Fatalf("error body %s is not an OpenAI JSON error", d.Immediate.Body)
			}
			if tt.status == 429 && d.Immediate.Headers["retry-after"] != "3" {
				t.Fatalf("429 without Retry-After: %v", d.Immediate.Headers)
			}
		})
	}
}

func TestAdmissionByPriority(t *testing.T) {
	cfg := "objectives:\n- {name: critical-chat, priority: Critical}\n- {name: batch, priority: BestEffort}\n- {name: tuned, priority: -5}\n"
	saturated := []epp.Endpoint{ep("a:1", modelmetrics.Metrics{WaitingQueue: 5}), ep("b:1", modelmetrics.Metrics{KVCacheUsage: 0.9})}
	h := start(t, cfg, saturated...)
	for _, tc := range []struct {
		objective string
		shed      bool
	}{{"critical-chat", false}, {"", false}, {"unknown-objective", false}, {"batch", true}, {"tuned", true}} {
		d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, tc.objective), completion, nil)
		if shed := d.Immediate != nil && d.Immediate.Status == 429; shed != tc.shed {
			t.Errorf("objective %q on a saturated pool: shed=%v, want %v", tc.objective, shed, tc.shed)
		}
	}
	// With headroom on one endpoint, nothing is shed, and the request goes there.
	h.store.mu.Lock()
	h.store.eps = append(h.store.eps, ep("c:1", modelmetrics.Metrics{WaitingQueue: 1}))
	h.store.mu.Unlock()
	d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, "batch"), completion, nil)
	if d.Immediate != nil || d.Destinations[0] != "c:1" {
		t.Fatalf("sheddable request with headroom: %+v", d)
	}
	if admitted, shed := h.srv.Counts(); admitted != 4 || shed != 2 {
		t.Fatalf("counts admitted %d shed %d, want 4 and 2", admitted, shed)
	}
}

// TestAdmittedGoesWhereTheHeadroomIs: a sheddable request admitted because one endpoint has
// headroom is sent there, not to the prefix holder whose queue is far past the threshold (by
// score alone it would win: prefix affinity 3 outweighs the queue scorer's 2).
func TestAdmittedGoesWhereTheHeadroomIs(t *testing.T) {
	h := start(t, "objectives:\n- {name: batch, priority: BestEffort}\n",
		ep("a:1", modelmetrics.Metrics{KVCacheUsage: 0.03}), ep("b:1", modelmetrics.Metrics{KVCacheUsage: 0.03}))
	prompt := strings.Repeat("You are the support assistant of the billing team. ", 40)
	body := func(q string) string {
		return fmt.Sprintf(`{"model":"m","prompt":%q,"max_tokens":4}`, prompt+q)
	}
	holder := h.route(t, hdrs("/v1/completions"), body("first"), nil).Destinations[0]
	h.store.mu.Lock()
	other := ""
	for i := range h.store.eps {
		if h.store.eps[i].Address == holder {
			h.store.eps[i].Metrics.WaitingQueue = 179
		} else {
			h.store.eps[i].Metrics.WaitingQueue = 4
			other = h.store.eps[i].Address
		}
	}
	h.store.mu.Unlock()
	for i := range 10 {
		d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, "batch"), body(fmt.Sprint("question ", i)), nil)
		if d.Immediate != nil {
			t.Fatalf("shed with headroom on %s: %d %s", other, d.Immediate.Status, d.Immediate.Body)
		}
		if strings.Join(d.Destinations, ",") != other+","+holder {
			t.Fatalf("destinations %v: want %s (headroom) first, the saturated prefix holder %s as fallback", d.Destinations, other, holder)
		}
	}
}

func TestSubsetHintRestrictsThePick(t *testing.T) {
	h := start(t, "", ep("a:1", modelmetrics.Metrics{}), ep("b:1", modelmetrics.Metrics{WaitingQueue: 3}), ep("c:1", modelmetrics.Metrics{}))
	for range 20 {
		d := h.route(t, hdrs("/v1/completions"), completion, []string{"b:1", "z:9"})
		if strings.Join(d.Destinations, ",") != "b:1" {
			t.Fatalf("destinations %v outside the subset [b:1]", d.Destinations)
		}
	}
}

func TestModelRouting(t *testing.T) {
	cfg := `
models:
- name: chat
  targets: [{model: chat-v1, weight: 90}, {model: chat-v2, weight: 10}]
- name: summarise
  targets: [{model: sum-big, weight: 1}]
  fallback: sum-small
`
	h := start(t, cfg,
		epp.Endpoint{Endpoint: scheduler.Endpoint{Address: "a:1"}, Ready: true, Models: []string{"chat-v1", "chat-v2", "sum-small"}},
		epp.Endpoint{Endpoint: scheduler.Endpoint{Address: "b:1"}, Ready: true, Models: []string{"chat-v1", "chat-v2", "sum-small"}},
	)
	counts := map[string]int{}
	const n = 1000
	for range n {
		d := h.route(t, hdrs("/v1/completions"), `{"model":"chat","prompt":"x"}`, nil)
		var b struct{ Model string }
		if err := json.Unmarshal(d.Body, &b); err != nil {
			t.Fatal(err)
		}
		if d.SetHeaders["content-length"] != fmt.Sprint(len(d.Body)) {
			t.Fatalf("content-length %s for a rewritten body of %d bytes", d.SetHeaders["content-length"], len(d.Body))
		}
		counts[b.Model]++
	}
	if counts["chat-v2"] < 50 || counts["chat-v2"] > 160 || counts["chat-v1"]+counts["chat-v2"] != n {
		t.Fatalf("canary split %v, want about 900/100", counts)
	}
	// No endpoint serves sum-big: the fallback model takes over.
	d := h.route(t, hdrs("/v1/completions"), `{"model":"summarise","prompt":"x"}`, nil)
	if d.Immediate != nil || !strings.Contains(string(d.Body), `"model":"sum-small"`) {
		t.Fatalf("fallback model: %+v body %s", d.Immediate, d.Body)
	}
	// A model no endpoint serves and with no fallback has no ready endpoint.
	h2 := start(t, "", epp.Endpoint{Endpoint: scheduler.Endpoint{Address: "a:1"}, Ready: true, Models: []string{"base"}})
	d = h2.route(t, hdrs("/v1/completions"), `{"model":"other","prompt":"x"}`, nil)
	if d.Immediate == nil || d.Immediate.Status != 503 {
		t.Fatalf("unserved model: %+v", d)
	}
}

func TestRollbackByConfiguration(t *testing.T) {
	h := start(t, "models:\n- name: chat\n  targets: [{model: chat-v1, weight: 100}, {model: chat-v2, weight: 0}]\n", ep("a:1", modelmetrics.Metrics{}))
	for range 200 {
		d := h.route(t, hdrs("/v1/completions"), `{"model":"chat","prompt":"x"}`, nil)
		if !strings.Contains(string(d.Body), `"model":"chat-v1"`) {
			t.Fatalf("weight 0 target received traffic: %s", d.Body)
		}
	}
}

func TestRequestWithoutBodyAndTrailers(t *testing.T) {
	h := start(t, "", ep("a:1", modelmetrics.Metrics{}))
	call, d, err := h.client.Request(context.Background(), []gateway.Header{{Key: ":method", Value: "GET"}, {Key: ":path", Value: "/v1/models"}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	call.Close()
	if d.Immediate != nil || len(d.Destinations) != 1 {
		t.Fatalf("GET without body: %+v", d)
	}
}

func TestResponseMetrics(t *testing.T) {
	h := start(t, "objectives:\n- {name: critical-chat, priority: Critical}\nadapters: [meta-llama/Llama-3.1-8B-Instruct]\n", ep("a:1", modelmetrics.Metrics{}))
	call, d, err := h.client.Request(context.Background(), hdrs("/v1/completions", epp.ObjectiveHeader, "critical-chat"),
		[]byte(`{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"x","stream":true,"stream_options":{"include_usage":true}}`), nil)
	if err != nil || d.Immediate != nil {
		t.Fatal(err, d)
	}
	defer call.Close()
	if err := call.ResponseHeaders(200, http.Header{"Content-Type": {"text/event-stream"}}, "a:1", false); err != nil {
		t.Fatal(err)
	}
	sse := []string{
		"data: {\"choices\":[{\"text\":\" a\"}]}\n\n",
		"data: {\"choices\":[{\"text\":\" b\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":",
		"5,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
	}
	var relayed strings.Builder
	for i, c := range sse {
		time.Sleep(5 * time.Millisecond) // paces the pieces as a model server does; asserts nothing
		if err := call.SendResponseBody([]byte(c), i == len(sse)-1); err != nil {
			t.Fatal(err)
		}
		piece, eos, err := call.RecvResponseBody(nil, false)
		if err != nil {
			t.Fatal(err)
		}
		relayed.Write(piece)
		if eos != (i == len(sse)-1) {
			t.Fatalf("end of stream on piece %d: %v", i, eos)
		}
	}
	if relayed.String() != strings.Join(sse, "") {
		t.Fatalf("response body changed in transit: %q", relayed.String())
	}
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["objective"] != "critical-chat" || labels["model"] != "meta-llama/Llama-3.1-8B-Instruct" {
				continue
			}
			switch {
			case m.GetHistogram() != nil:
				found[mf.GetName()] = float64(m.GetHistogram().GetSampleCount())
				if mf.GetName() == "spillway_epp_request_ttft_seconds" && m.GetHistogram().GetSampleSum() <= 0 {
					t.Fatal("TTFT of zero")
				}
			case m.GetCounter() != nil:
				found[mf.GetName()+"/"+labels["result"]] = m.GetCounter().GetValue()
			}
		}
	}
	for k, want := range map[string]float64{
		"spillway_epp_request_ttft_seconds":     1,
		"spillway_epp_request_duration_seconds": 1,
		"spillway_epp_input_tokens_total/":      5,
		"spillway_epp_output_tokens_total/":     2,
		"spillway_epp_requests_total/routed":    1,
	} {
		if found[k] != want {
			t.Errorf("%s = %v, want %v (all: %v)", k, found[k], want, found)
		}
	}
}

func TestBrokenStreamsLeakNothing(t *testing.T) {
	h := start(t, "", ep("a:1", modelmetrics.Metrics{}))
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := h.client.EPP.Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{}}})
		_ = stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(`{"model":`)}}})
		cancel() // the gateway goes away mid-body
	}
	// goleak in TestMain checks that every Process handler returned.
}

// BenchmarkRequestPhase is one request phase over real gRPC on loopback, as eppbench drives it.
func BenchmarkRequestPhase(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) { benchmarkRequestPhase(b, n) })
	}
}

func benchmarkRequestPhase(b *testing.B, n int) {
	var eps []epp.Endpoint
	for i := range n {
		eps = append(eps, ep(fmt.Sprintf("10.0.%d.%d:8000", i/250, i%250), modelmetrics.Metrics{WaitingQueue: i % 5}))
	}
	h := start(b, "", eps...)
	prefix := strings.Repeat("You are a benchmark assistant. ", 70)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		body := fmt.Sprintf(`{"model":"m","messages":[{"role":"system","content":%q},{"role":"user","content":"q %d"}]}`, prefix, i)
		call, d, err := h.client.Request(context.Background(), hdrs("/v1/chat/completions"), []byte(body), nil)
		if err != nil || d.Immediate != nil {
			b.Fatal(err, d)
		}
		call.Close()
	}
}

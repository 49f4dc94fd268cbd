package epp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

// gieNames are the metrics of GIE's EPP that Spillway's EPP exports under the same name, with
// their type and label names (sorted), as GIE defines them in the module
// sigs.k8s.io/gateway-api-inference-extension@v1.5.0: pkg/epp/metrics/metrics.go (subsystems
// inference_objective, inference_pool, inference_extension; label sets modelLabels,
// modelWithPriorityLabels, poolLabels), pkg/epp/metrics/collectors/inference_pool.go
// (inference_pool_per_pod_queue_size) and the table of site-src/guides/metrics-and-observability.md.
// v1.5.0 is the last release with an EPP: v1.6.0 (go.mod's) moved it to llm-d/llm-d-router and
// has neither that code nor that guide, only the lightweight conformance EPP (pkg/lwepp), which
// exports none of these.
var gieNames = map[string]struct {
	kind   dto.MetricType
	labels []string
}{
	"inference_objective_request_total":                            {dto.MetricType_COUNTER, []string{"model_name", "priority", "target_model_name"}},
	"inference_objective_request_error_total":                      {dto.MetricType_COUNTER, []string{"error_code", "model_name", "target_model_name"}},
	"inference_objective_request_duration_seconds":                 {dto.MetricType_HISTOGRAM, []string{"model_name", "target_model_name"}},
	"inference_objective_request_ttft_seconds":                     {dto.MetricType_HISTOGRAM, []string{"model_name", "target_model_name"}},
	"inference_objective_request_sizes":                            {dto.MetricType_HISTOGRAM, []string{"model_name", "target_model_name"}},
	"inference_objective_response_sizes":                           {dto.MetricType_HISTOGRAM, []string{"model_name", "target_model_name"}},
	"inference_objective_input_tokens":                             {dto.MetricType_HISTOGRAM, []string{"model_name", "target_model_name"}},
	"inference_objective_output_tokens":                            {dto.MetricType_HISTOGRAM, []string{"model_name", "target_model_name"}},
	"inference_objective_normalized_time_per_output_token_seconds": {dto.MetricType_HISTOGRAM, []string{"model_name", "target_model_name"}},
	"inference_objective_running_requests":                         {dto.MetricType_GAUGE, []string{"model_name"}},
	"inference_pool_average_kv_cache_utilization":                  {dto.MetricType_GAUGE, []string{"name"}},
	"inference_pool_average_queue_size":                            {dto.MetricType_GAUGE, []string{"name"}},
	"inference_pool_average_running_requests":                      {dto.MetricType_GAUGE, []string{"name"}},
	"inference_pool_ready_pods":                                    {dto.MetricType_GAUGE, []string{"name"}},
	"inference_pool_per_pod_queue_size":                            {dto.MetricType_GAUGE, []string{"model_server_pod", "name"}},
	"inference_extension_scheduler_e2e_duration_seconds":           {dto.MetricType_HISTOGRAM, nil},
	"inference_extension_info":                                     {dto.MetricType_GAUGE, []string{"build_ref", "commit"}},
}

// TestGIEMetricNames: after routed, shed and refused requests, every GIE metric Spillway exports
// is there with GIE's type and label names, and the values follow the requests.
func TestGIEMetricNames(t *testing.T) {
	cfg := "objectives:\n- {name: batch, priority: BestEffort}\nmodels:\n- name: chat\n  targets: [{model: chat-v2, weight: 1}]\n"
	h := start(t, cfg,
		ep("10.0.0.1:8000", modelmetrics.Metrics{WaitingQueue: 1, Running: 2, KVCacheUsage: 0.2}),
		ep("10.0.0.2:8000", modelmetrics.Metrics{WaitingQueue: 3, Running: 4, KVCacheUsage: 0.6}),
		notReady(ep("10.0.0.3:8000", modelmetrics.Metrics{WaitingQueue: 5, Running: 8, KVCacheUsage: 0.9})))
	body := `{"model":"chat","prompt":"hello","max_tokens":4}`
	for range 3 {
		call, d, err := h.client.Request(context.Background(), hdrs("/v1/completions"), []byte(body), nil)
		if err != nil || d.Immediate != nil {
			t.Fatalf("routing: %v %+v", err, d)
		}
		if err := call.ResponseHeaders(200, http.Header{"Content-Type": {"application/json"}}, d.Destinations[0], false); err != nil {
			t.Fatal(err)
		}
		if err := call.SendResponseBody([]byte(`{"choices":[{"text":"hi"}],"usage":{"prompt_tokens":5,"completion_tokens":7}}`), true); err != nil {
			t.Fatal(err)
		}
		// The EPP records the response before it answers its last piece.
		if _, eos, err := call.RecvResponseBody(nil, false); err != nil || !eos {
			t.Fatalf("response body: end %v, %v", eos, err)
		}
		call.Close()
	}
	// A request whose client goes away before the response runs no longer.
	call, d, err := h.client.Request(context.Background(), hdrs("/v1/completions"), []byte(body), nil)
	if err != nil || d.Immediate != nil {
		t.Fatalf("routing: %v %+v", err, d)
	}
	call.Close()
	running := func() error {
		if v := gaugeValue(t, h, "inference_objective_running_requests"); v != 0 {
			return fmt.Errorf("running requests %v, want 0", v)
		}
		return nil
	}
	testkit.Eventually(t, 5*time.Second, "the abandoned request no longer runs", running)
	// Saturate the pool: the sheddable request is refused (ResourceExhausted), then a bad body.
	h.store.mu.Lock()
	for i := range h.store.eps[:2] {
		h.store.eps[i].Metrics.WaitingQueue = 9
	}
	h.store.mu.Unlock()
	if d := h.route(t, hdrs("/v1/completions", epp.ObjectiveHeader, "batch"), body, nil); d.Immediate == nil || d.Immediate.Status != 429 {
		t.Fatalf("batch on a saturated pool: %+v", d)
	}
	if d := h.route(t, hdrs("/v1/completions"), `{"prompt":`, nil); d.Immediate == nil || d.Immediate.Status != 400 {
		t.Fatalf("bad body: %+v", d)
	}

	fams, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		got[f.GetName()] = f
	}
	for name := range got {
		if _, ok := gieNames[name]; !ok && strings.HasPrefix(name, "inference_") {
			t.Errorf("%s is exported but not in GIE's list", name)
		}
	}
	for name, want := range gieNames {
		f, ok := got[name]
		if !ok {
			t.Errorf("no %s", name)
			continue
		}
		if f.GetType() != want.kind {
			t.Errorf("%s is a %s, GIE's a %s", name, f.GetType(), want.kind)
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName())
			}
			if !slices.Equal(labels, want.labels) {
				t.Errorf("%s has labels %v, GIE's %v", name, labels, want.labels)
			}
		}
	}

	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		for _, m := range got[name].GetMetric() {
			match := true
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					match = false
				}
			}
			if !match {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
		t.Fatalf("no %s%v", name, labels)
		return 0
	}
	routed := map[string]string{"model_name": "chat", "target_model_name": "chat-v2"}
	for name, want := range map[string]float64{
		"inference_objective_request_total":            4,
		"inference_objective_request_sizes":            4,
		"inference_objective_request_duration_seconds": 3,
		"inference_objective_input_tokens":             3,
		"inference_objective_output_tokens":            3,
		"inference_objective_running_requests":         0,
	} {
		if got := value(name, routed); got != want {
			t.Errorf("%s%v = %v, want %v", name, routed, got, want)
		}
	}
	if got := value("inference_objective_request_error_total", map[string]string{"error_code": "ResourceExhausted"}); got != 1 {
		t.Errorf("ResourceExhausted errors = %v, want 1 (the shed request)", got)
	}
	if got := value("inference_objective_request_error_total", map[string]string{"error_code": "BadRequest"}); got != 1 {
		t.Errorf("BadRequest errors = %v, want 1", got)
	}
	pool := map[string]string{"name": "chat"}
	if got := value("inference_pool_ready_pods", pool); got != 2 {
		t.Errorf("ready pods %v, want 2", got)
	}
	if got := value("inference_pool_average_kv_cache_utilization", pool); got < 0.399 || got > 0.401 {
		t.Errorf("average KV-cache %v, want 0.4", got)
	}
	if got := value("inference_pool_average_running_requests", pool); got != 3 {
		t.Errorf("average running %v, want 3", got)
	}
	if got := value("inference_pool_average_queue_size", pool); got != 9 {
		t.Errorf("average queue %v, want 9 (of the ready endpoints only)", got)
	}
	// Each endpoint's queue, ready or not, by its address.
	if n := len(got["inference_pool_per_pod_queue_size"].GetMetric()); n != 3 {
		t.Errorf("per-pod queue series %d, want 3 (one per endpoint)", n)
	}
	for addr, want := range map[string]float64{"10.0.0.1:8000": 9, "10.0.0.2:8000": 9, "10.0.0.3:8000": 5} {
		labels := map[string]string{"name": "chat", "model_server_pod": addr}
		if got := value("inference_pool_per_pod_queue_size", labels); got != want {
			t.Errorf("queue of %s = %v, want %v", addr, got, want)
		}
	}
	// Spillway's own names stay, beside GIE's.
	if _, ok := got["spillway_epp_requests_total"]; !ok || !strings.HasPrefix(got["inference_extension_info"].GetHelp(), "GIE's name") {
		t.Error("Spillway's own metrics or the help texts are missing")
	}
}

// gaugeValue is the value of the one series of a gauge in h's registry.
func gaugeValue(t *testing.T, h *harness, name string) float64 {
	t.Helper()
	fams, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no single series of %s", name)
	return 0
}

func notReady(e epp.Endpoint) epp.Endpoint {
	e.Ready = false
	return e
}

// TestGIEDashboardReadsSpillway: every EPP metric GIE v1.5.0's own Grafana dashboard
// (tools/dashboards/inference_gateway.json in its module, which hack/crds.sh downloads) queries
// is one Spillway's EPP exports, or one docs/epp.md says it does not (flow control: the EPP keeps
// no queue). The model servers' vllm: series it also shows come from the servers.
func TestGIEDashboardReadsSpillway(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(testkit.ModuleDir(t, testkit.GIEModule), "tools", "dashboards", "inference_gateway.json"))
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if s, ok := e.(string); ok && k == "expr" {
					exprs = append(exprs, s)
				} else {
					walk(e)
				}
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	var dash any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	walk(dash)
	name := regexp.MustCompile(`\binference_(objective|pool|extension)_[a-z_]+`)
	seen := 0
	for _, e := range exprs {
		for _, n := range name.FindAllString(e, -1) {
			n = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_count"), "_sum")
			if _, ok := gieNames[n]; ok {
				seen++
				continue
			}
			if !strings.HasPrefix(n, "inference_extension_flow_control_") {
				t.Errorf("GIE's dashboard queries %s, which Spillway's EPP does not export (in %s)", n, e)
			}
		}
	}
	if seen < 10 {
		t.Fatalf("GIE's dashboard names %d exported metrics in %d queries: the dashboard is not what this test expects", seen, len(exprs))
	}
}

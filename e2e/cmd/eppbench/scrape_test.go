package main

import (
	"strings"
	"testing"
)

const page = `# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 120
vllm:prefix_cache_hits_total{model_name="meta-llama/Llama-3.1-8B-Instruct",engine="1"} 30
vllm:prefix_cache_hits_total{engine="0",model_name="other"} 7
# HELP spillway_spoke_endpoints Endpoints by freshness.
# TYPE spillway_spoke_endpoints gauge
spillway_spoke_endpoints{freshness="stale"} 2
spillway_spoke_endpoints{freshness="fresh"} 8
# TYPE inference_pool_ready_pods gauge
inference_pool_ready_pods{name="chat"} 10
# TYPE latency_seconds histogram
latency_seconds_bucket{le="+Inf"} 1
latency_seconds_sum 0.5
latency_seconds_count 1
`

func TestSampleSumMatchesByLabelSet(t *testing.T) {
	fams, err := parsePage(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		// Label order on the page does not matter; the samples of both engines add up.
		{"vllm:prefix_cache_hits_total", map[string]string{"model_name": "meta-llama/Llama-3.1-8B-Instruct"}, 150},
		{"vllm:prefix_cache_hits_total", map[string]string{"engine": "1", "model_name": "meta-llama/Llama-3.1-8B-Instruct"}, 30},
		{"vllm:prefix_cache_hits_total", nil, 157},
		{"spillway_spoke_endpoints", map[string]string{"freshness": "fresh"}, 8},
		{"inference_pool_ready_pods", nil, 10},
	} {
		got, err := sampleSum(fams, tc.name, tc.labels)
		if err != nil || got != tc.want {
			t.Errorf("%s%v = %v, %v; want %v", tc.name, tc.labels, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{"spillway_spoke_endpoints", map[string]string{"freshness": "unknown"}, "no sample of spillway_spoke_endpoints"},
		{"spillway_spoke_endpoints", map[string]string{"pool": "chat"}, "no sample"},
		{"vllm:num_requests_running", nil, "no metric vllm:num_requests_running"},
		{"latency_seconds", nil, "is a HISTOGRAM"},
	} {
		if _, err := sampleSum(fams, tc.name, tc.labels); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s%v: err %v, want one saying %q", tc.name, tc.labels, err, tc.want)
		}
	}
}

func TestParsePageRejectsBrokenText(t *testing.T) {
	if _, err := parsePage(strings.NewReader("spillway_spoke_endpoints{freshness=\"fresh\" 8\n")); err == nil {
		t.Fatal("a sample with an unterminated label set parsed")
	}
}

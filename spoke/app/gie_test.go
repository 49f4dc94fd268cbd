package app

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

// parseGIE parses args as the spoke's command line does, completes and validates them.
func parseGIE(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	o := NewOptions()
	fs := pflag.NewFlagSet("spoke", pflag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse(append([]string{"--region=us-east", "--hub-address="}, args...)); err != nil {
		return nil, err
	}
	if err := o.Complete(); err != nil {
		return nil, err
	}
	return o, o.Validate()
}

// TestGIEChartFlags: the arguments GIE v1.5.0's chart gives its EPP (config/charts/epplib,
// _deployment.yaml, for each modelServerType, quotes and all) are taken, each doing what it does in GIE;
// deploy's TestGIEChartRunsTheSpoke renders the chart itself and runs the spoke with them.
func TestGIEChartFlags(t *testing.T) {
	common := []string{"--pool-name", "chat", "--pool-namespace", "llm", "--pool-group", "inference.networking.k8s.io",
		"--zap-encoder", "json", "--config-file", "../../pkg/epp/testdata/gie-v1.5.0-default-plugins.yaml", "--v", "1",
		"--tracing=false", "--metrics-endpoint-auth=false"}
	for _, tc := range []struct {
		serverType string
		args       []string
		engine     modelmetrics.Engine
		path       string
	}{
		{"vllm", nil, "", ""},
		{"sglang", []string{`--total-queued-requests-metric="sglang:num_queue_reqs"`, `--total-running-requests-metric="sglang:num_running_reqs"`,
			`--kv-cache-usage-percentage-metric="sglang:token_usage"`, `--cache-info-metric="sglang:cache_config_info"`}, modelmetrics.EngineSGLang, ""},
		{"triton-tensorrt-llm", []string{"--total-queued-requests-metric", "nv_trt_llm_request_metrics{request_type=waiting}",
			"--total-running-requests-metric", "nv_trt_llm_request_metrics{request_type=scheduled}",
			"--kv-cache-usage-percentage-metric", "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=fraction}", "--lora-info-metric", ""},
			modelmetrics.EngineTritonTRTLLM, ""},
		{"trtllm-serve", []string{`--total-queued-requests-metric="trtllm_num_requests_waiting"`, `--total-running-requests-metric="trtllm_num_requests_running"`,
			`--kv-cache-usage-percentage-metric="trtllm_kv_cache_utilization"`, `--cache-info-metric="trtllm_cache_config_info"`,
			`--model-server-metrics-path="/prometheus/metrics"`, "--lora-info-metric", ""},
			modelmetrics.EngineTRTLLMServe, "/prometheus/metrics"},
	} {
		t.Run(tc.serverType, func(t *testing.T) {
			o, err := parseGIE(t, append(append([]string{}, common...), tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if o.EPPPool != "llm/chat" || o.Log.Format != "json" || o.Log.Level != "info" || o.Tracing.Endpoint != "" {
				t.Errorf("pool %q, log %s at %s, tracing %q", o.EPPPool, o.Log.Format, o.Log.Level, o.Tracing.Endpoint)
			}
			if o.EPPAddress != ":9002" || o.HealthAddress != ":9003" {
				t.Errorf("EPP on %q, health on %q: want GIE's :9002 and :9003", o.EPPAddress, o.HealthAddress)
			}
			if o.DefaultEngine != tc.engine || o.MetricsPath != tc.path {
				t.Errorf("engine of unlabelled Pods %q, metrics path %q: want %q, %q", o.DefaultEngine, o.MetricsPath, tc.engine, tc.path)
			}
		})
	}

	t.Run("ports, verbosity and tracing", func(t *testing.T) {
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4317")
		o, err := parseGIE(t, "--pool-name=chat", "--grpc-port=19002", "--grpc-health-port=19003", "--metrics-port=19090",
			"--v=4", "--tracing=true", "--zap-encoder=console")
		if err != nil {
			t.Fatal(err)
		}
		if o.EPPAddress != ":19002" || o.HealthAddress != ":19003" || o.HTTPAddress != ":19090" {
			t.Errorf("addresses %q %q %q", o.EPPAddress, o.HealthAddress, o.HTTPAddress)
		}
		if o.Log.Level != "debug" || o.Log.Format != "text" || o.Tracing.Endpoint != "otel-collector:4317" || !o.Tracing.Insecure {
			t.Errorf("log %s at %s, tracing %q insecure %v", o.Log.Format, o.Log.Level, o.Tracing.Endpoint, o.Tracing.Insecure)
		}
		// The last of --epp-address and --grpc-port wins, as flags do.
		if o, _ = parseGIE(t, "--pool-name=chat", "--grpc-port=19002", "--epp-address=127.0.0.1:0", "--health-address="); o.EPPAddress != "127.0.0.1:0" || o.HealthAddress != "" {
			t.Errorf("--epp-address after --grpc-port: %q; --health-address empty: %q", o.EPPAddress, o.HealthAddress)
		}
		if o, _ = parseGIE(t, "--epp-pool=llm/chat"); o.HealthAddress != "" {
			t.Errorf("without GIE's --pool-name the health port opens only when asked: %q", o.HealthAddress)
		}
	})

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--pool-name=chat", "--total-queued-requests-metric=my_queue"}, `--total-queued-requests-metric "my_queue": not a metric of`},
		{[]string{"--pool-name=chat", "--total-queued-requests-metric=sglang:num_queue_reqs", "--kv-cache-usage-percentage-metric=vllm:kv_cache_usage_perc"}, "several engines"},
		{[]string{"--endpoint-selector=app=vllm", "--endpoint-target-ports=8000"}, "standalone mode is not supported"},
		{[]string{"--pool-name=chat", "--zap-encoder=logfmt"}, `--zap-encoder "logfmt"`},
		{[]string{"--pool-name=chat", "--model-server-metrics-path=metrics"}, "--model-server-metrics-path"},
		{[]string{"--pool-name=chat", "--health-address=9003"}, "--health-address"},
	} {
		if _, err := parseGIE(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
	if _, err := parseGIE(t, "--pool-name=chat", "--grpc-port=port"); err == nil {
		t.Error("--grpc-port=port: taken")
	}
}

// TestProbeHealth: liveness answers SERVING while the spoke runs; readiness and GIE's
// inference-extension follow the spoke's readiness; another service is NotFound.
func TestProbeHealth(t *testing.T) {
	notSynced := errors.New("caches not synced")
	var readyErr error = notSynced
	h := probeHealth{ready: func() error { return readyErr }}
	check := func(svc string) (healthpb.HealthCheckResponse_ServingStatus, codes.Code) {
		r, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		return r.GetStatus(), status.Code(err)
	}
	for _, ready := range []bool{false, true} {
		if ready {
			readyErr = nil
		}
		want := healthpb.HealthCheckResponse_NOT_SERVING
		if ready {
			want = healthpb.HealthCheckResponse_SERVING
		}
		for svc, w := range map[string]healthpb.HealthCheckResponse_ServingStatus{"": healthpb.HealthCheckResponse_SERVING,
			"liveness": healthpb.HealthCheckResponse_SERVING, "readiness": want, GIEHealthService: want} {
			if got, code := check(svc); got != w || code != codes.OK {
				t.Errorf("ready %v, service %q: %v %v, want %v", ready, svc, got, code, w)
			}
		}
	}
	if _, code := check("grpc.health.v1.Other"); code != codes.NotFound {
		t.Errorf("unknown service: %v, want NotFound", code)
	}
}

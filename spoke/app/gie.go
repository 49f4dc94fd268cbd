package app

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

// GIEOptions are the flags of GIE's EPP that its Helm chart passes (gateway-api-inference-extension
// v1.5.0, config/charts/epplib), beyond the pool and its EndpointPickerConfig (Options), so that a
// GIE install runs the spoke's image with the chart's own arguments. Each does what it does in
// GIE where the spoke has the same thing, is accepted where the spoke's behaviour already is what
// it asks for, and is refused with its name where the spoke cannot do it (docs/epp.md, "GIE's
// flags and EndpointPickerConfig").
type GIEOptions struct {
	ZapEncoder string // json or console: the log format
	Verbosity  int    // --v: 4 (GIE's debug level) and above log at debug
	// Tracing takes the collector from $OTEL_EXPORTER_OTLP_ENDPOINT, as GIE does, when
	// --tracing-endpoint is empty.
	Tracing bool
	// Accepted with nothing to change: the spoke already does what they ask (docs/epp.md).
	MetricsEndpointAuth, HALeaderElection, EnableCertReload bool

	RefreshPromMetrics time.Duration

	// GIE's metric flags: a metric of an engine the spoke reads makes it the engine of Pods
	// without the engine-type label.
	QueuedMetric, RunningMetric, KVCacheMetric, LoRAInfoMetric, CacheInfoMetric string
	// GIE's standalone mode, refused.
	EndpointSelector, EndpointTargetPorts string

	healthSet bool // --health-address or --grpc-health-port was given
}

// GIEHealthPort is GIE's --grpc-health-port default, where its chart's probes go.
const GIEHealthPort = "9003"

// portFlag sets the port of a host:port option: GIE's --grpc-port and --metrics-port are the
// ports of --epp-address and --http-address. The last of the two flags given wins.
type portFlag struct {
	addr *string
	set  *bool // marked when given; may be nil
}

func (p portFlag) String() string {
	if p.addr == nil {
		return ""
	}
	_, port, _ := net.SplitHostPort(*p.addr)
	return port
}

func (p portFlag) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return fmt.Errorf("want a port number: %w", err)
	}
	host, _, _ := net.SplitHostPort(*p.addr)
	*p.addr = net.JoinHostPort(host, strconv.FormatUint(n, 10))
	if p.set != nil {
		*p.set = true
	}
	return nil
}

func (p portFlag) Type() string { return "port" }

// addrFlag is a host:port option that marks when it was given.
type addrFlag struct {
	addr *string
	set  *bool
}

func (a addrFlag) String() string {
	if a.addr == nil {
		return ""
	}
	return *a.addr
}

func (a addrFlag) Set(s string) error {
	*a.addr, *a.set = s, true
	return nil
}

func (a addrFlag) Type() string { return "host:port" }

// AddFlags binds GIE's flags: those with a Spillway equivalent write the same option.
func (g *GIEOptions) AddFlags(fs *pflag.FlagSet, o *Options) {
	fs.Var(addrFlag{&o.HealthAddress, &g.healthSet}, "health-address", "host:port of a plaintext gRPC health service for kubelet's gRPC probes (services liveness, readiness and GIE's inference-extension; the readiness ones answer NOT_SERVING until /readyz would answer 200); kubelet's probes cannot speak TLS, and it serves nothing else. Empty: none, except with GIE's --pool-name, where it is :"+GIEHealthPort+" as GIE's")
	fs.Var(portFlag{&o.EPPAddress, nil}, "grpc-port", "GIE's flag: the port of --epp-address")
	fs.Var(portFlag{&o.HTTPAddress, nil}, "metrics-port", "GIE's flag: the port of --http-address (/metrics)")
	fs.Var(portFlag{&o.HealthAddress, &g.healthSet}, "grpc-health-port", "GIE's flag: the port of --health-address")
	fs.BoolVar(&o.Trust.EPPSecureServing, "secure-serving", o.Trust.EPPSecureServing, "GIE's flag: --epp-secure-serving")
	fs.StringVar(&o.Trust.EPPCertDir, "cert-path", o.Trust.EPPCertDir, "GIE's flag: --epp-cert-dir")
	fs.DurationVar(&o.ScrapeInterval, "refresh-metrics-interval", o.ScrapeInterval, "GIE's flag: --scrape-interval")
	fs.DurationVar(&o.Thresholds.Staleness, "metrics-staleness-threshold", o.Thresholds.Staleness, "GIE's flag: --metrics-staleness")
	fs.StringVar(&o.MetricsPath, "model-server-metrics-path", o.MetricsPath, "path of the model servers' metrics page (trtllm-serve: /prometheus/metrics)")
	fs.StringVar(&g.ZapEncoder, "zap-encoder", g.ZapEncoder, "GIE's flag: json or console, --log-format json or text")
	fs.IntVar(&g.Verbosity, "v", g.Verbosity, "GIE's flag: log verbosity; 4 and above is --log-level debug")
	fs.BoolVar(&g.Tracing, "tracing", g.Tracing, "GIE's flag: trace to $OTEL_EXPORTER_OTLP_ENDPOINT when --tracing-endpoint is empty")
	fs.BoolVar(&g.MetricsEndpointAuth, "metrics-endpoint-auth", g.MetricsEndpointAuth, "GIE's flag, accepted: /metrics is read-only and unauthenticated (docs/security.md)")
	fs.BoolVar(&g.HALeaderElection, "ha-enable-leader-election", g.HALeaderElection, "GIE's flag, accepted: every replica serves, and --leader-elect is on by default")
	fs.BoolVar(&g.EnableCertReload, "enable-cert-reload", g.EnableCertReload, "GIE's flag, accepted: certificates are always reloaded on change")
	fs.DurationVar(&g.RefreshPromMetrics, "refresh-prometheus-metrics-interval", g.RefreshPromMetrics, "GIE's flag, accepted: the pool gauges are computed when scraped")
	for _, m := range []struct {
		v    *string
		name string
	}{
		{&g.QueuedMetric, "total-queued-requests-metric"},
		{&g.RunningMetric, "total-running-requests-metric"},
		{&g.KVCacheMetric, "kv-cache-usage-percentage-metric"},
		{&g.LoRAInfoMetric, "lora-info-metric"},
		{&g.CacheInfoMetric, "cache-info-metric"},
	} {
		fs.StringVar(m.v, m.name, *m.v, "GIE's flag: a metric of vLLM, SGLang, trtllm-serve or Triton TensorRT-LLM picks the engine of Pods without the "+modelmetrics.EngineLabel+" label; another is refused")
	}
	fs.StringVar(&g.EndpointSelector, "endpoint-selector", g.EndpointSelector, "GIE's flag, refused: the EPP serves an InferencePool (--pool-name)")
	fs.StringVar(&g.EndpointTargetPorts, "endpoint-target-ports", g.EndpointTargetPorts, "GIE's flag, refused: the EPP serves an InferencePool (--pool-name)")
}

// metrics are GIE's metric flags by name, with their values unquoted (GIE's chart writes
// --total-queued-requests-metric="sglang:num_queue_reqs", quotes included).
func (g *GIEOptions) metrics() map[string]string {
	out := map[string]string{}
	for name, v := range map[string]string{
		"--total-queued-requests-metric":     g.QueuedMetric,
		"--total-running-requests-metric":    g.RunningMetric,
		"--kv-cache-usage-percentage-metric": g.KVCacheMetric,
		"--lora-info-metric":                 g.LoRAInfoMetric,
		"--cache-info-metric":                g.CacheInfoMetric,
	} {
		if v = strings.Trim(v, `"`); v != "" {
			out[name] = v
		}
	}
	return out
}

// complete maps GIE's flags onto the options they stand for.
func (g *GIEOptions) complete(o *Options) {
	switch g.ZapEncoder {
	case "json":
		o.Log.Format = "json"
	case "console":
		o.Log.Format = "text"
	}
	if g.Verbosity >= 4 {
		o.Log.Level = "debug"
	}
	if g.Tracing && o.Tracing.Endpoint == "" {
		// GIE's chart sets a URL (http://localhost:4317 by default); OTLP/gRPC wants host:port.
		if ep := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); ep != "" {
			if rest, ok := strings.CutPrefix(ep, "http://"); ok {
				ep, o.Tracing.Insecure = rest, true
			}
			o.Tracing.Endpoint = strings.TrimSuffix(strings.TrimPrefix(ep, "https://"), "/")
		}
	}
	o.MetricsPath = strings.Trim(o.MetricsPath, `"`) // as the metric flags, quoted by GIE's chart
	if g.HALeaderElection && o.PoolsFile == "" {
		o.LeaderElection.Enabled = true
	}
	if !g.healthSet && o.PoolName != "" {
		o.HealthAddress = ":" + GIEHealthPort
	}
	for _, m := range g.metrics() {
		if e, ok := modelmetrics.EngineOfMetric(m); ok {
			o.DefaultEngine = e
		}
	}
}

// errors names every GIE flag the spoke cannot honour.
func (g *GIEOptions) errors(o *Options) []error {
	var errs []error
	switch g.ZapEncoder {
	case "", "json", "console":
	default:
		errs = append(errs, fmt.Errorf("--zap-encoder %q: want json or console", g.ZapEncoder))
	}
	if g.EndpointSelector != "" || g.EndpointTargetPorts != "" {
		errs = append(errs, errors.New("--endpoint-selector, --endpoint-target-ports: GIE's standalone mode is not supported; the EPP serves an InferencePool (--pool-name)"))
	}
	engines := map[modelmetrics.Engine][]string{}
	metrics := g.metrics()
	for _, name := range slices.Sorted(maps.Keys(metrics)) {
		m := metrics[name]
		e, ok := modelmetrics.EngineOfMetric(m)
		if !ok {
			errs = append(errs, fmt.Errorf("%s %q: not a metric of vLLM, SGLang, trtllm-serve or Triton TensorRT-LLM, whose pages the spoke reads by their own names", name, m))
			continue
		}
		engines[e] = append(engines[e], name)
	}
	if len(engines) > 1 {
		errs = append(errs, fmt.Errorf("GIE's metric flags name the metrics of several engines: %v", engines))
	}
	if o.HealthAddress != "" {
		if _, _, err := net.SplitHostPort(o.HealthAddress); err != nil {
			errs = append(errs, fmt.Errorf("--health-address %q: want host:port", o.HealthAddress))
		}
	}
	if o.MetricsPath != "" && !modelmetrics.ValidPath(o.MetricsPath) {
		errs = append(errs, fmt.Errorf("--model-server-metrics-path %q: want an absolute path without spaces", o.MetricsPath))
	}
	return errs
}

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
)

// The observability files under test.
const (
	dashboardFile = "../deploy/observability/dashboard.json"
	rulesFile     = "../deploy/observability/prometheusrule.yaml"
	kedaFile      = "../deploy/observability/autoscaling/keda-scaledobject.yaml"
	adapterFile   = "../deploy/observability/autoscaling/prometheus-adapter-rules.yaml"
)

// TestDashboardAndAlertsOnALiveFleet runs a real Prometheus, with the PrometheusRule's rules,
// scraping a three-region fleet (hub and spokes, over TLS verified with the fleet CA) while it
// serves Critical, Standard and BestEffort traffic and us-east is saturated (so that it spills and
// sheds). Every query of the dashboard and of the autoscaling examples must return data, every
// metric a query or an alert names must be one the fleet exports, every rule must evaluate, and
// the alert of a spilling pool must be pending for us-east, and no other alert active.
func TestDashboardAndAlertsOnALiveFleet(t *testing.T) {
	bin := testkit.PrometheusBin(t, "prometheus")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f, regions := startThreeRegionsAt(ctx, t, 50)
	east, west := regions[0], regions[1]

	prom := startPrometheus(t, bin, f, "127.0.50.1:19090")

	// Traffic of every priority into two regions, and us-east saturated underneath it.
	lctx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, r := range []localfleet.Region{east, west} {
		for _, objective := range []string{"critical", "standard", "batch"} {
			wg.Go(func() {
				for lctx.Err() == nil {
					rctx, c := context.WithTimeout(lctx, 10*time.Second)
					_, _ = send(rctx, r.Gateway, objective, 2)
					c()
				}
			})
		}
	}
	stopSaturation := saturate(ctx, east)
	defer func() { stopSaturation(); stopLoad(); wg.Wait() }()

	var queries []promtest.Query
	dash, err := promtest.DashboardQueries(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	queries = append(queries, dash...)
	auto, err := autoscalingQueries()
	if err != nil {
		t.Fatal(err)
	}
	queries = append(queries, auto...)
	alerts, err := promtest.AlertQueries(rulesFile)
	if err != nil {
		t.Fatal(err)
	}

	// Every query returns data while the fleet is under load.
	testkit.Eventually(t, 2*time.Minute, "every dashboard and autoscaling query returns data", func() error {
		var errs []error
		for _, q := range queries {
			n, err := prom.query(ctx, promtest.Expand(q.Expr))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", q.Where, err))
			} else if n == 0 {
				errs = append(errs, fmt.Errorf("%s: %s returns nothing", q.Where, q.Expr))
			}
		}
		return errors.Join(errs...)
	})

	// Every metric named anywhere is one the fleet exports.
	exported, err := prom.metricNames(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range append(slices.Clone(queries), alerts...) {
		for _, name := range promtest.MetricNames(q.Expr) {
			if !exported[name] {
				t.Errorf("%s: %s is exported by no component of the fleet", q.Where, name)
			}
		}
	}

	// The rules evaluate, and two alerts are pending (each fires after its `for`): the spilling
	// pool's for us-east, and the certificates' (the fleet's certificates are valid for 7 days,
	// less than the alert's week); no other.
	testkit.Eventually(t, time.Minute, "SpillwayPoolSpilling and SpillwayCertificateExpiresSoon pending, every rule healthy", func() error {
		if err := prom.rulesHealthy(ctx, len(alerts)); err != nil {
			return err
		}
		active, err := prom.alerts(ctx)
		if err != nil {
			return err
		}
		spilling, certs := false, false
		for _, a := range active {
			switch a.Labels["alertname"] {
			case "SpillwayPoolSpilling":
				spilling = spilling || a.Labels["region"] == east.Name && a.Labels["pool"] == "default/chat"
			case "SpillwayCertificateExpiresSoon":
				certs = true
			default:
				return fmt.Errorf("alert %v is %s; want none but SpillwayPoolSpilling and SpillwayCertificateExpiresSoon", a.Labels, a.State)
			}
		}
		if !spilling || !certs {
			return fmt.Errorf("active alerts %+v: want SpillwayPoolSpilling for default/chat in us-east and SpillwayCertificateExpiresSoon", active)
		}
		return nil
	})
}

// autoscalingQueries reads the PromQL of the autoscaling examples: the KEDA trigger's query and
// prometheus-adapter's metricsQuery.
func autoscalingQueries() ([]promtest.Query, error) {
	var keda struct {
		Spec struct {
			Triggers []struct {
				Metadata struct {
					Query string `json:"query"`
				} `json:"metadata"`
			} `json:"triggers"`
		} `json:"spec"`
	}
	var adapter struct {
		Rules struct {
			External []struct {
				MetricsQuery string `json:"metricsQuery"`
			} `json:"external"`
		} `json:"rules"`
	}
	var out []promtest.Query
	for file, into := range map[string]any{kedaFile: &keda, adapterFile: &adapter} {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		if err := yaml.Unmarshal(b, into); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
	}
	for _, tr := range keda.Spec.Triggers {
		out = append(out, promtest.Query{Where: "KEDA trigger", Expr: tr.Metadata.Query})
	}
	for _, r := range adapter.Rules.External {
		out = append(out, promtest.Query{Where: "prometheus-adapter rule", Expr: r.MetricsQuery})
	}
	if len(out) != 2 {
		return nil, fmt.Errorf("%d autoscaling queries, want the KEDA trigger's and the adapter rule's", len(out))
	}
	return out, nil
}

// promServer is a Prometheus server a test started.
type promServer struct {
	base string
}

// startPrometheus starts Prometheus on addr, scraping f's hub and spokes every second over TLS
// verified with the fleet CA, with the PrometheusRule's rules evaluated every second.
func startPrometheus(t *testing.T, bin string, f *localfleet.Fleet, addr string) *promServer {
	t.Helper()
	dir := t.TempDir()
	spec, err := promtest.RuleSpec(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), spec, 0o644); err != nil {
		t.Fatal(err)
	}
	var spokes []string
	for _, r := range f.Opts.Regions {
		spokes = append(spokes, r.SpokeHTTP)
	}
	tls := map[string]any{"ca_file": f.CAFile()}
	cfg := map[string]any{
		"global":     map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"},
		"rule_files": []string{"rules.yaml"},
		"scrape_configs": []map[string]any{
			{"job_name": "spillway-hub", "scheme": "https", "tls_config": tls, "static_configs": []map[string]any{{"targets": []string{f.Opts.HubHTTP}}}},
			{"job_name": "spillway-spoke", "scheme": "https", "tls_config": tls, "static_configs": []map[string]any{{"targets": spokes}}},
		},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := localfleet.StartProc(dir, "prometheus", bin, "--config.file", filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path", filepath.Join(dir, "data"), "--web.listen-address", addr, "--log.level", "warn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(5 * time.Second) })
	prom := &promServer{base: "http://" + addr}
	testkit.Eventually(t, 30*time.Second, "prometheus ready and scraping every target", func() error {
		return prom.targetsUp(t.Context(), 1+len(spokes))
	})
	return prom
}

// get reads a Prometheus API path into data.
func (p *promServer) get(ctx context.Context, path string, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: HTTP %d: %w", path, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s", path, body.Error)
	}
	return json.Unmarshal(body.Data, data)
}

// query evaluates expr now and returns how many series (or scalars) it returned.
func (p *promServer) query(ctx context.Context, expr string) (int, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.get(ctx, "/api/v1/query?query="+url.QueryEscape(expr), &data); err != nil {
		return 0, err
	}
	if data.ResultType == "scalar" || data.ResultType == "string" {
		return 1, nil
	}
	var series []json.RawMessage
	if err := json.Unmarshal(data.Result, &series); err != nil {
		return 0, err
	}
	return len(series), nil
}

// metricNames returns the names of every metric Prometheus holds, a histogram's by its base name.
func (p *promServer) metricNames(ctx context.Context) (map[string]bool, error) {
	var names []string
	if err := p.get(ctx, "/api/v1/label/__name__/values", &names); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, n := range names {
		for _, base := range promtest.MetricNames(n) {
			out[base] = true
		}
	}
	return out, nil
}

// targetsUp says which of want targets are not up yet.
func (p *promServer) targetsUp(ctx context.Context, want int) error {
	var data struct {
		ActiveTargets []struct {
			ScrapeURL string `json:"scrapeUrl"`
			Health    string `json:"health"`
			LastError string `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := p.get(ctx, "/api/v1/targets", &data); err != nil {
		return err
	}
	up := 0
	var errs []string
	for _, tg := range data.ActiveTargets {
		if tg.Health == "up" {
			up++
		} else {
			errs = append(errs, fmt.Sprintf("%s %s %s", tg.ScrapeURL, tg.Health, tg.LastError))
		}
	}
	if up != want {
		return fmt.Errorf("%d of %d targets up: %s", up, want, strings.Join(errs, "; "))
	}
	return nil
}

// rulesHealthy checks that Prometheus loaded want alerting rules and evaluated each without error.
func (p *promServer) rulesHealthy(ctx context.Context, want int) error {
	var data struct {
		Groups []struct {
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := p.get(ctx, "/api/v1/rules?type=alert", &data); err != nil {
		return err
	}
	n := 0
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" {
				return fmt.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if n != want {
		return fmt.Errorf("%d alerting rules loaded, want %d", n, want)
	}
	return nil
}

type alert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// alerts returns the pending and firing alerts.
func (p *promServer) alerts(ctx context.Context) ([]alert, error) {
	var data struct {
		Alerts []alert `json:"alerts"`
	}
	if err := p.get(ctx, "/api/v1/alerts", &data); err != nil {
		return nil, err
	}
	return data.Alerts, nil
}

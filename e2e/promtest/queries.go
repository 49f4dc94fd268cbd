package promtest

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// Query is one PromQL expression of a dashboard, an alert or an autoscaler, and where it is.
type Query struct {
	Where string // the panel's or the alert's name
	Expr  string
}

// DashboardQueries reads every target expression of a Grafana dashboard's panels, rows included.
func DashboardQueries(path string) ([]Query, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	type panel struct {
		ID      int    `json:"id"`
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var d struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []Query
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			return nil, fmt.Errorf("%s: panel id %d twice", path, p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			return nil, fmt.Errorf("%s: panel %q has no query", path, p.Title)
		}
		for _, t := range p.Targets {
			if strings.TrimSpace(t.Expr) == "" {
				return nil, fmt.Errorf("%s: panel %q has an empty query", path, p.Title)
			}
			out = append(out, Query{Where: p.Title, Expr: t.Expr})
		}
	}
	return out, nil
}

// RuleSpec reads the spec of a PrometheusRule manifest: a Prometheus rules file.
func RuleSpec(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var obj struct {
		Kind string          `json:"kind"`
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if obj.Kind != "PrometheusRule" || len(obj.Spec) == 0 {
		return nil, fmt.Errorf("%s: not a PrometheusRule with a spec", path)
	}
	return yaml.JSONToYAML(obj.Spec)
}

// AlertQueries reads the alerts of a PrometheusRule manifest.
func AlertQueries(path string) ([]Query, error) {
	spec, err := RuleSpec(path)
	if err != nil {
		return nil, err
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(spec, &rules); err != nil {
		return nil, err
	}
	var out []Query
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out = append(out, Query{Where: r.Alert, Expr: r.Expr})
		}
	}
	return out, nil
}

// Grafana's variables as a test evaluates them: every value of a template variable, a rate
// window of a few scrapes of a test's Prometheus.
var variables = strings.NewReplacer("$__rate_interval", "15s", "$pool", ".*", "$region", ".*")

// Expand replaces a dashboard query's Grafana variables with values Prometheus evaluates.
func Expand(expr string) string { return variables.Replace(expr) }

// metricName matches the names of Spillway's metrics in an expression.
var metricName = regexp.MustCompile(`\bspillway_[a-z0-9_]*[a-z0-9]\b`)

// MetricNames returns the metric names an expression reads, without a histogram's _bucket, _sum
// or _count suffix, sorted.
func MetricNames(expr string) []string {
	var out []string
	for _, n := range metricName.FindAllString(expr, -1) {
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			n = strings.TrimSuffix(n, s)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

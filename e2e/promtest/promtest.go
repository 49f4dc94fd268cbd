// Package promtest checks the metrics a component registers: every name follows
// spillway_<component>_<name>_<unit>, every metric has help text, and the set of names, types and
// label names matches a golden file (regenerate with `go test -update`). The set is built from
// the collectors' descriptions, so a vector that has no series yet is listed all the same.
package promtest

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/spillway-io/spillway/e2e/testkit"
)

// Registry is a prometheus.Registerer that remembers what was registered with it. Registration
// goes through a real registry as well, so a duplicate or inconsistent metric fails as in
// production.
type Registry struct {
	*prometheus.Registry
	collectors []prometheus.Collector
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry { return &Registry{Registry: prometheus.NewRegistry()} }

// Register implements prometheus.Registerer.
func (r *Registry) Register(c prometheus.Collector) error {
	if err := r.Registry.Register(c); err != nil {
		return err
	}
	r.collectors = append(r.collectors, c)
	return nil
}

// MustRegister implements prometheus.Registerer.
func (r *Registry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Unregister implements prometheus.Registerer.
func (r *Registry) Unregister(c prometheus.Collector) bool {
	r.collectors = slices.DeleteFunc(r.collectors, func(x prometheus.Collector) bool { return x == c })
	return r.Registry.Unregister(c)
}

// desc reads a Desc's name, help and variable labels from its String form, the only view of
// them client_golang offers.
var desc = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: ("(?:[^"\\]|\\.)*"), unit: "(?:[^"\\]|\\.)*", constLabels: \{[^}]*\}, variableLabels: \{([^}]*)\}\}$`)

// CheckGolden describes every collector registered with reg and compares the result with the
// golden file.
func CheckGolden(t *testing.T, reg *Registry, component, golden string) {
	t.Helper()
	name := regexp.MustCompile(`^spillway_` + component + `_[a-z0-9]+(_[a-z0-9]+)*$`)
	var lines []string
	for _, c := range reg.collectors {
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			kind, err := kindOf(c, d)
			if err != nil {
				t.Fatal(err)
			}
			m := desc.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read the metric description %s", d)
			}
			fq, _ := strconv.Unquote(m[1])
			help, _ := strconv.Unquote(m[2])
			if !name.MatchString(fq) {
				t.Errorf("metric %q does not follow spillway_%s_<name>_<unit>", fq, component)
			}
			if strings.TrimSpace(help) == "" {
				t.Errorf("metric %q has no help text", fq)
			}
			labels := strings.Split(strings.NewReplacer("c(", "", ")", "").Replace(m[3]), ",")
			labels = slices.DeleteFunc(labels, func(l string) bool { return l == "" })
			slices.Sort(labels)
			lines = append(lines, fmt.Sprintf("%s %s {%s}", fq, kind, strings.Join(labels, ",")))
		}
	}
	slices.Sort(lines)
	testkit.Golden(t, golden, []byte(strings.Join(lines, "\n")+"\n"))
}

// kindOf names the type of the metric d describes: a vector's from its Go type, any other
// collector's from the metrics it collects (it must collect one of d's).
func kindOf(c prometheus.Collector, d *prometheus.Desc) (string, error) {
	switch c.(type) {
	case *prometheus.CounterVec:
		return "counter", nil
	case *prometheus.GaugeVec:
		return "gauge", nil
	case *prometheus.HistogramVec:
		return "histogram", nil
	case *prometheus.SummaryVec:
		return "summary", nil
	}
	ch := make(chan prometheus.Metric, 16)
	go func() { c.Collect(ch); close(ch) }()
	kind := ""
	for m := range ch {
		if m.Desc().String() != d.String() {
			continue
		}
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			return "", err
		}
		switch {
		case pb.Counter != nil:
			kind = "counter"
		case pb.Gauge != nil:
			kind = "gauge"
		case pb.Histogram != nil:
			kind = "histogram"
		case pb.Summary != nil:
			kind = "summary"
		default:
			kind = "untyped"
		}
	}
	if kind == "" {
		return "", fmt.Errorf("collector %T collected no metric of %s: register it as a vector or give it a value", c, d)
	}
	return kind, nil
}

// Value reads a counter's or a gauge's value from g: the series of metric name whose label
// values, in the order of their label names, are labelValues (the first series when none are
// given); 0 when there is no such series.
func Value(t testing.TB, g prometheus.Gatherer, name string, labelValues ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var got []string
			for _, l := range m.GetLabel() {
				got = append(got, l.GetValue())
			}
			if len(labelValues) > 0 && !slices.Equal(got, labelValues) {
				continue
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

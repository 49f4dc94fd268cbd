package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
)

// TestAlertRules checks the PrometheusRule's rules with promtool and runs their unit tests
// (observability/alerts.test.yaml): each alert fires when, and only when, its test says.
func TestAlertRules(t *testing.T) {
	bin := testkit.PrometheusBin(t, "promtool")
	spec, err := promtest.RuleSpec("observability/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), spec, 0o644); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("observability/alerts.test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "rules.yaml"}, {"test", "rules", "alerts.test.yaml"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

// TestDashboardIsWellFormed: every panel of the dashboard has a unique id and queries; the
// queries themselves run against a live fleet in e2e (TestDashboardAndAlertsOnALiveFleet).
func TestDashboardIsWellFormed(t *testing.T) {
	qs, err := promtest.DashboardQueries("observability/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if len(promtest.MetricNames(q.Expr)) == 0 {
			t.Errorf("panel %q: query %q reads no Spillway metric", q.Where, q.Expr)
		}
	}
}

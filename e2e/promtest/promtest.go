// Package promtest checks the metrics a component exposes: every name follows
// spillway_<component>_<name>_<unit>, every metric has help text, and the set of names, types and
// labels matches a golden file (regenerate with `go test -update`).
package promtest

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

var update = flag.Bool("update", false, "rewrite golden files")

// CheckGolden gathers reg and compares its metrics with the golden file.
func CheckGolden(t *testing.T, reg *prometheus.Registry, component, golden string) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`^spillway_` + component + `_[a-z0-9]+(_[a-z0-9]+)*$`)
	var lines []string
	for _, mf := range mfs {
		if !name.MatchString(mf.GetName()) {
			t.Errorf("metric %q does not follow spillway_%s_<name>_<unit>", mf.GetName(), component)
		}
		if strings.TrimSpace(mf.GetHelp()) == "" {
			t.Errorf("metric %q has no help text", mf.GetName())
		}
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		var ls []string
		for l := range labels {
			ls = append(ls, l)
		}
		slices.Sort(ls)
		lines = append(lines, fmt.Sprintf("%s %s {%s}", mf.GetName(), strings.ToLower(mf.GetType().String()), strings.Join(ls, ",")))
	}
	slices.Sort(lines)
	got := strings.Join(lines, "\n") + "\n"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("exposed metrics changed; if intended, run go test -update and review the diff\ngot:\n%swant:\n%s", got, want)
	}
}

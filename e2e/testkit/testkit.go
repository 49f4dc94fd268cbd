// Package testkit holds the few helpers every test of the repository shares: waiting for a
// condition by polling it (never sleeping, then asserting), golden files that `go test -update`
// rewrites, where the Prometheus binaries are, and where a module's own files are. It is test tooling: product code never
// imports it.
package testkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Interval is how often Eventually asks its condition.
const Interval = 20 * time.Millisecond

var update = flag.Bool("update", false, "rewrite golden files from what the tests produce")

// Updating reports whether the test run was asked to rewrite golden files (go test -update).
func Updating() bool { return *update }

// Eventually polls cond every Interval until it returns nil, and fails the test when it has not
// within the given time, with cond's last error. It returns early, without failing, when the
// test's context ends.
func Eventually(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(t.Context(), Interval, within, true, func(context.Context) (bool, error) {
		last = cond()
		return last == nil, nil
	})
	if err != nil && t.Context().Err() == nil {
		if last == nil {
			last = err
		}
		t.Fatalf("%s: not within %s: %v", what, within, last)
	}
}

// True adapts a boolean condition to Eventually: its error says only that cond is still false.
func True(cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}
}

var errNotYet = errors.New("condition still false")

// Golden compares got with the golden file at path, or rewrites the file under -update.
func Golden(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what the test produced; if the change is intended, run go test -update and review the diff\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// PrometheusBin returns the path of Debian's prometheus or promtool (name) in
// SPILLWAY_PROMETHEUS_BIN_DIR, which make test sets from hack/prometheus.sh. Without it the test
// is skipped, unless SPILLWAY_REQUIRE_PROMETHEUS is set (CI), where it fails.
func PrometheusBin(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("SPILLWAY_PROMETHEUS_BIN_DIR")
	if dir == "" {
		if os.Getenv("SPILLWAY_REQUIRE_PROMETHEUS") != "" {
			t.Fatal("SPILLWAY_PROMETHEUS_BIN_DIR is not set and SPILLWAY_REQUIRE_PROMETHEUS is: run hack/prometheus.sh")
		}
		t.Skip("SPILLWAY_PROMETHEUS_BIN_DIR is not set: no " + name + " (make test sets it; hack/prometheus.sh installs Debian's prometheus)")
	}
	return filepath.Join(dir, name)
}

// GIEModule is the version of GIE whose own files (its Grafana dashboard, its Helm charts) the
// tests hold Spillway to.
const GIEModule = "sigs.k8s.io/gateway-api-inference-extension@v1.5.0"

// ModuleDir is the directory of module (path@version) in the module cache, downloaded if it is
// not there yet (hack/crds.sh downloads GIE's).
func ModuleDir(t testing.TB, module string) string {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", module).Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", module, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s: %v %s", module, err, out)
	}
	return mod.Dir
}

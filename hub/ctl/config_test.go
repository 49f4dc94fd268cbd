package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/hubtest"
)

// TestContexts: set-context writes contexts, the current one (or --context) supplies --hub and
// --credentials-dir, flags and $SPILLWAY_CREDENTIALS come first, and an unknown context or a
// broken file is an error that names it.
func TestContexts(t *testing.T) {
	h := hubtest.Start(t, 10*time.Second)
	cfg := filepath.Join(t.TempDir(), "hubctl.yaml")
	t.Setenv(ConfigEnv, cfg)
	t.Setenv(CredentialsEnv, "")
	creds := h.CredentialsDir(hubtest.Admin())

	for _, args := range [][]string{
		{"config", "set-context", "prod", "--hub", h.AdminAddr, "--credentials-dir", creds},
		{"config", "set-context", "broken", "--hub", "127.0.0.1:1", "--credentials-dir", creds, "--timeout", "1s"},
	} {
		if out, err := run(t, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	if fi, err := os.Stat(cfg); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("configuration file: %v, mode %v; want 0600", err, fi.Mode())
	}
	// The first context made is the current one: whoami reaches the hub without a flag.
	if out, err := run(t, "whoami"); err != nil || !strings.Contains(out, "admin") {
		t.Fatalf("whoami through the current context: %v\n%s", err, out)
	}
	if out, err := run(t, "--context", "broken", "whoami", "--timeout", "1s"); err == nil || !strings.Contains(out, "127.0.0.1:1") {
		t.Fatalf("whoami through --context broken: %v\n%s, want a failure naming 127.0.0.1:1", err, out)
	}
	// A flag comes before the context.
	if out, err := run(t, "--context", "broken", "--hub", h.AdminAddr, "whoami"); err != nil {
		t.Fatalf("--hub over the context: %v\n%s", err, out)
	}
	// So does $SPILLWAY_CREDENTIALS.
	t.Setenv(CredentialsEnv, filepath.Join(t.TempDir(), "elsewhere"))
	if out, err := run(t, "whoami"); err == nil || !strings.Contains(out, "elsewhere") {
		t.Fatalf("$%s over the context: %v\n%s", CredentialsEnv, err, out)
	}
	t.Setenv(CredentialsEnv, "")

	if out, err := run(t, "config", "use-context", "broken"); err != nil || !strings.Contains(out, "switched to context broken") {
		t.Fatalf("use-context: %v\n%s", err, out)
	}
	out, err := run(t, "config", "get-contexts")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(strings.TrimSpace(lines[1]), "prod") || !strings.HasPrefix(lines[2], "*") {
		t.Fatalf("get-contexts:\n%s", out)
	}
	if out, err := run(t, "config", "current-context"); err != nil || strings.TrimSpace(out) != "broken" {
		t.Fatalf("current-context: %v %q", err, out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--context", "staging", "whoami"}, `context "staging" is not in ` + cfg + ` (contexts: prod, broken)`},
		{[]string{"config", "use-context", "staging"}, `no context "staging" (contexts: prod, broken)`},
		{[]string{"config", "set-context", "x", "--hub", ""}, "--hub is empty"},
	} {
		if out, err := run(t, tc.args...); err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%v: %v\n%s\nwant an error saying %q", tc.args, err, out, tc.want)
		}
	}
	if out, err := run(t, "config", "delete-context", "broken"); err != nil {
		t.Fatalf("delete-context: %v\n%s", err, out)
	}
	if out, err := run(t, "config", "current-context"); err == nil {
		t.Fatalf("current-context after the current one was deleted: %q", out)
	}

	// A file hubctl cannot read is an error naming it, never an empty configuration.
	if err := os.WriteFile(cfg, []byte("contexts: [{name: a, hubb: x}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "whoami"); err == nil || !strings.Contains(out, "hubctl configuration "+cfg) || !strings.Contains(out, "hubb") {
		t.Fatalf("a misspelt field: %v\n%s", err, out)
	}
}

package ctl

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/pkg/buildinfo"
)

// TestVersionNamesClientAndHub: `hubctl version` prints its own build and the answering
// replica's, as the replica reports it; with --client it asks nothing; with the hub down it
// prints its own build and fails, saying why.
func TestVersionNamesClientAndHub(t *testing.T) {
	h := hubtest.Start(t, 10*time.Second)
	creds := h.CredentialsDir(hubtest.Admin())
	out, err := run(t, "--hub", h.AdminAddr, "--credentials-dir", creds, "-o", "json", "version")
	if err != nil {
		t.Fatal(err)
	}
	var v versions
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	own := buildinfo.Get()
	v.Client.Time = own.Time // run hides timestamps
	if v.Client != own || v.Hub == nil || v.Hub.ID != h.ID || v.Hub.Version != own.String() {
		t.Errorf("version = %+v (hub %+v), want client %+v and hub %s at %s", v, v.Hub, own, h.ID, own)
	}

	out, err = run(t, "--hub", h.AdminAddr, "--credentials-dir", t.TempDir(), "version", "--client")
	if err != nil {
		t.Fatalf("version --client without credentials: %v", err)
	}
	if !strings.Contains(out, "hubctl") || !strings.Contains(out, own.String()) || strings.Contains(out, "\nhub ") {
		t.Errorf("version --client printed:\n%s", out)
	}

	down := refused(t)
	out, err = run(t, "--hub", down, "--credentials-dir", creds, "--timeout", "2s", "version")
	if err == nil || !strings.Contains(err.Error(), down) {
		t.Fatalf("version with the hub down: %v, want an error naming %s", err, down)
	}
	if !strings.Contains(out, own.String()) {
		t.Errorf("version with the hub down printed no client build:\n%s", out)
	}
}

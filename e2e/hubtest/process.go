package hubtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// ProcessOptions change the hub process StartProcess runs.
type ProcessOptions struct {
	// LeaseTTL of the hub's sessions (3s when zero).
	LeaseTTL time.Duration
	// MinReportInterval the hub announces and enforces (200ms when zero).
	MinReportInterval time.Duration
	// Args are further hub flags; the last value of a flag wins.
	Args []string
	// HubID is the replica's --hub-id ("hub-process" when empty).
	HubID string
	// CA is the hub's CA, given to several replicas of one fleet; nil makes a new one.
	CA *tlsconfig.CA
	// Env are further environment variables of the process (KEY=value).
	Env []string
}

// StartProcess runs the hub binary in bin as a real process, with a new CA of the test in its
// --pki-dir (so the hub signs join requests with it, and issues itself a serving certificate
// for localhost), its spokes' and admin ports on loopback, and the trust domain TrustDomain. The
// Hub it returns has no in-process Server, Model or Store: tests reach it over its ports only,
// with the same Peer credentials as an in-process hub. The process stops at the end of the test.
func StartProcess(t testing.TB, bin string, o ProcessOptions) *Hub {
	t.Helper()
	ca := o.CA
	if ca == nil {
		var err error
		if ca, err = tlsconfig.NewCA("hubtest process CA", 24*time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if o.HubID == "" {
		o.HubID = "hub-process"
	}
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	if err := os.Mkdir(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{tlsconfig.CAFile: ca.CertPEM(), "ca.key": ca.KeyPEM()} {
		if err := os.WriteFile(filepath.Join(pki, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 3 * time.Second
	}
	if o.MinReportInterval == 0 {
		o.MinReportInterval = 200 * time.Millisecond
	}
	addrs := freeAddrs(t, 3)
	args := append([]string{"--grpc-address", addrs[0], "--admin-address", addrs[1], "--http-address", addrs[2],
		"--data-dir", filepath.Join(dir, "data"), "--pki-dir", pki, "--hub-id", o.HubID, "--trust-domain", TrustDomain,
		"--lease-ttl", o.LeaseTTL.String(), "--min-report-interval", o.MinReportInterval.String(),
		"--capacity-heartbeat", max(time.Second, o.MinReportInterval).String(), "--view-interval", "20ms", "--log-level", "debug"}, o.Args...)
	proc, err := localfleet.StartProcEnv(dir, "hub", filepath.Join(bin, "hub"), o.Env, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := proc.Stop(10 * time.Second); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			if log, err := os.ReadFile(proc.LogPath); err == nil {
				t.Logf("hub %s log:\n%s", o.HubID, log)
			}
		}
	})
	h := &Hub{t: t, Addr: addrs[0], AdminAddr: addrs[1], HTTPAddr: addrs[2], ID: o.HubID, CA: ca, proc: proc}
	conn := h.AdminConnAs(Admin())
	testkit.Eventually(t, 30*time.Second, "the hub process serves its admin port", func() error {
		select {
		case <-proc.Done():
			t.Fatalf("the hub exited: %v", proc.Err())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(false))
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health %s", resp.GetStatus())
		}
		return nil
	})
	return h
}

// freeAddrs returns n loopback addresses whose ports were free a moment ago.
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, "127.0.0.1:"+strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// Kill ends the hub process at once (SIGKILL), as a crash would; the test's cleanup finds it
// stopped.
func (h *Hub) Kill() {
	h.t.Helper()
	if h.proc == nil {
		h.t.Fatal("Kill: not a hub process")
	}
	h.proc.Kill()
}

// Exited reports whether the hub process has exited.
func (h *Hub) Exited() bool {
	if h.proc == nil {
		return false
	}
	select {
	case <-h.proc.Done():
		return true
	default:
		return false
	}
}

// Metric reads one series of the hub process's /metrics page: the first sample of the metric
// name whose labels include labels (name="value" pairs, as written on the page). The process
// must serve it in plaintext (--insecure-http in Args).
func (h *Hub) Metric(name string, labels ...string) (float64, error) {
	if h.HTTPAddr == "" {
		return 0, errors.New("Metric: not a hub process")
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + h.HTTPAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name) || len(line) == len(name) || (line[len(name)] != ' ' && line[len(name)] != '{') {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(series, l) {
				match = false
			}
		}
		if match {
			return strconv.ParseFloat(strings.TrimSpace(value), 64)
		}
	}
	return 0, fmt.Errorf("%s%v not on the /metrics page of %s", name, labels, h.ID)
}

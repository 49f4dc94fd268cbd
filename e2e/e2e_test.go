package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/e2e/testkit"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// bins returns the directory of the binaries: SPILLWAY_BIN_DIR (set by `make test`), or a fresh
// build of the working tree.
func bins(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if d := os.Getenv("SPILLWAY_BIN_DIR"); d != "" {
			binDir = d
			return
		}
		binDir, buildErr = os.MkdirTemp("", "spillway-e2e-bin-")
		if buildErr != nil {
			return
		}
		for name, pkg := range map[string]string{"hub": "./hub/cmd/hub", "hubctl": "./hub/cmd/hubctl", "spoke": "./spoke/cmd/spoke", "modelsim": "./e2e/cmd/modelsim", "fleet": "./e2e/cmd/fleet", "gateway": "./e2e/cmd/gateway", "loadgen": "./e2e/cmd/loadgen"} {
			out, err := exec.Command("go", "build", "-C", "..", "-o", filepath.Join(binDir, name), pkg).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", name, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

type clusterJSON struct {
	Info struct {
		ClusterID string `json:"clusterId"`
		Region    string `json:"region"`
	} `json:"info"`
	State        string `json:"state"`
	RegisteredAt string `json:"registeredAt"`
	Exports      int    `json:"exports"`
}

// hubctlClusters runs hubctl get clusters with the given global flags (the hub's admin address
// and the admin's credentials).
func hubctlClusters(t *testing.T, hubctlArgs []string) []clusterJSON {
	t.Helper()
	out, err := exec.Command(filepath.Join(bins(t), "hubctl"), append(hubctlArgs, "get", "clusters", "-o", "json")...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("hubctl get clusters: %v: %s", err, ee.Stderr)
		}
		t.Fatalf("hubctl get clusters: %v", err)
	}
	var resp struct {
		Clusters []clusterJSON `json:"clusters"`
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("hubctl -o json: %v\n%s", err, out)
	}
	return resp.Clusters
}

// TestDemo runs `make demo`'s fleet with a short duration, as the README's first command does: the
// hubctl command it prints works, its hub answers only TLS clients, and load goes through every
// region.
func TestDemo(t *testing.T) {
	bin := bins(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "fleet"), "--bin-dir", bin, "--work-dir", t.TempDir(), "--duration", "10s")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 256)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var printed []string
	// The first hubctl command the demo prints, once the fleet is up.
	command := regexp.MustCompile(`^\$ hubctl (.*) get clusters$`)
	var hubctlArgs []string
	for hubctlArgs == nil {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("demo ended before it printed a hubctl command:\n%s", strings.Join(printed, "\n"))
			}
			printed = append(printed, l)
			if m := command.FindStringSubmatch(l); m != nil {
				hubctlArgs = strings.Fields(m[1])
			}
		case <-ctx.Done():
			t.Fatalf("fleet not up:\n%s", strings.Join(printed, "\n"))
		}
	}
	if !slices.Contains(printed, "fleet is up") || !slices.Contains(hubctlArgs, "--credentials-dir") {
		t.Fatalf("want the fleet up and hubctl given --credentials-dir:\n%s", strings.Join(printed, "\n"))
	}
	clusters := hubctlClusters(t, hubctlArgs)
	var regions []string
	for _, c := range clusters {
		if c.State != "CLUSTER_STATE_ALIVE" || c.Exports != 1 {
			t.Errorf("cluster %+v: want alive with one export", c)
		}
		regions = append(regions, c.Info.Region)
	}
	slices.Sort(regions)
	if strings.Join(regions, ",") != "eu-west,us-east,us-west" {
		t.Fatalf("regions %v, want eu-west, us-east, us-west", regions)
	}
	// The demo hub's spokes' port answers a TLS client that verifies it with the fleet CA (hubctl's
	// ca.crt), and a plaintext one not at all.
	caFile := filepath.Join(hubctlArgs[slices.Index(hubctlArgs, "--credentials-dir")+1], "ca.crt")
	hubGRPC := localfleet.DefaultOptions("", "").HubGRPC
	if err := healthCheck(ctx, hubGRPC, tlsTo(t, caFile)); err != nil {
		t.Errorf("grpc.health.v1 over TLS on the demo hub's %s: %v", hubGRPC, err)
	}
	if err := healthCheck(ctx, hubGRPC, insecure.NewCredentials()); err == nil {
		t.Errorf("grpc.health.v1 over plaintext on the demo hub's %s answered: want refused", hubGRPC)
	}
	for l := range lines {
		printed = append(printed, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("demo exit: %v\n%s", err, strings.Join(printed, "\n"))
	}
	out := strings.Join(printed, "\n")
	hubctl := "$ hubctl " + strings.Join(hubctlArgs, " ")
	for _, want := range []string{hubctl + " get clusters", hubctl + " get pools", "default/chat", "fleet stopped",
		"load through the us-east gateway", "load through the us-west gateway", "load through the eu-west gateway"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// Load went through every region's gateway → EPP → simulators, and succeeded.
	succeeded := regexp.MustCompile(`(?m)^  (Critical|Standard|BestEffort)\s+(\d+)\s+(\d+)\s`)
	rows := succeeded.FindAllStringSubmatch(out, -1)
	if len(rows) != 9 {
		t.Fatalf("want a load summary row per class and region, got %d:\n%s", len(rows), out)
	}
	for _, r := range rows {
		if r[2] == "0" || r[2] != r[3] {
			t.Errorf("class %s: %s requests, %s succeeded; want all of a non-zero load to succeed", r[1], r[2], r[3])
		}
	}
	// Every process is gone: every address the demo used can be bound again.
	o := localfleet.DefaultOptions("", "")
	addrs := []string{o.HubGRPC, o.HubAdmin, o.HubHTTP, o.HubGossip}
	for _, r := range o.Regions {
		addrs = append(addrs, r.SpokeHTTP, r.EPP, r.Gateway)
		addrs = append(addrs, r.Endpoints...)
	}
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Errorf("%s still in use after the demo stopped: %v", a, err)
			continue
		}
		l.Close()
	}
}

// TestFleetSurvivesCrashesAndRestarts kills a spoke and restarts the hub, as real processes.
func TestFleetSurvivesCrashesAndRestarts(t *testing.T) {
	bin := bins(t)
	o := localfleet.Options{BinDir: bin, WorkDir: t.TempDir(), HubGRPC: "127.0.20.1:18470", HubHTTP: "127.0.20.1:18471", HubAdmin: "127.0.20.1:18472",
		LeaseTTL: 3 * time.Second}
	for i, name := range []string{"north", "south"} {
		r := localfleet.Region{Name: name, Cluster: name + "-1", SpokeHTTP: fmt.Sprintf("127.0.20.1:%d", 18481+i)}
		for j := 1; j <= 2; j++ {
			r.Endpoints = append(r.Endpoints, fmt.Sprintf("127.0.%d.%d:8000", 21+i, j))
		}
		o.Regions = append(o.Regions, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f, err := localfleet.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	if err := f.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	before := hubctlClusters(t, f.HubctlArgs())

	// A spoke crashes: its cluster stays registered but goes Gone and loses its export after the lease.
	f.Spokes["south-1"].Kill()
	killed := time.Now()
	testkit.Eventually(t, 15*time.Second, "south-1 Gone with no export", func() error {
		for _, c := range hubctlClusters(t, f.HubctlArgs()) {
			if c.Info.ClusterID == "south-1" {
				if c.State != "CLUSTER_STATE_GONE" || c.Exports != 0 {
					return fmt.Errorf("south-1 is %s with %d exports", c.State, c.Exports)
				}
				return nil
			}
		}
		return errors.New("south-1 is not listed")
	})
	// The hub renews a session's lease every third of its TTL (etcd's client keep-alive), so the
	// lease lapses between two thirds of the TTL and the whole TTL after the last renewal before
	// the crash; earlier than that, the exports were withdrawn without the lease lapsing.
	if d, least := time.Since(killed), o.LeaseTTL*2/3; d < least {
		t.Fatalf("withdrawn %s after the crash, before the %s lease could lapse (at least %s)", d, o.LeaseTTL, least)
	}

	// The hub restarts on the same data directory: the registry is still there.
	if err := f.Hub.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := f.StartHub(); err != nil {
		t.Fatal(err)
	}
	if err := f.StartSpoke(o.Regions[1]); err != nil {
		t.Fatal(err)
	}
	if err := f.WaitReady(ctx); err != nil {
		t.Fatalf("fleet after hub restart and spoke return: %v", err)
	}
	after := hubctlClusters(t, f.HubctlArgs())
	if len(after) != len(before) {
		t.Fatalf("clusters before %v, after %v", before, after)
	}
	for i := range after {
		if after[i].RegisteredAt != before[i].RegisteredAt {
			t.Fatalf("registration of %s changed across the restart: %s → %s", after[i].Info.ClusterID, before[i].RegisteredAt, after[i].RegisteredAt)
		}
	}
}

// tlsTo returns transport credentials that verify a server with the CA bundle in caFile and
// present no client certificate.
func tlsTo(t *testing.T, caFile string) credentials.TransportCredentials {
	t.Helper()
	b, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("no certificate in %s", caFile)
	}
	return credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool})
}

// healthCheck asks grpc.health.v1 at addr, dialed with creds, whether the server is serving.
func healthCheck(ctx context.Context, addr string, creds credentials.TransportCredentials) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("status %s", resp.GetStatus())
	}
	return nil
}

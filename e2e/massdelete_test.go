package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
	"github.com/spillway-io/spillway/spoke/hubclient"
	spokekube "github.com/spillway-io/spillway/spoke/kube"
)

// massPools is how many pools spoke A exports: the most a cluster may by default.
const massPools = 1000

// massTrustDomain is the trust domain of the fleet of TestHubRestartsDuringAResendDeleteNoImport.
const massTrustDomain = "spillway.test"

// restartableHub is a real hub process on fixed ports and a fixed data directory, killed with
// SIGKILL and started again on the same data, as a crash and a restart would.
type restartableHub struct {
	t                 *testing.T
	bin, dir          string
	grpc, admin, http string
	proc              *localfleet.Proc
	starts            int
	adminTLS          *tls.Config
	ca                *tlsconfig.CA
	leaseTTL          time.Duration
}

func startRestartableHub(t *testing.T, bin string, leaseTTL time.Duration) *restartableHub {
	t.Helper()
	ca, err := tlsconfig.NewCA("massdelete CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
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
	addrs := loopbackAddrs(t, 3)
	h := &restartableHub{t: t, bin: bin, dir: dir, grpc: addrs[0], admin: addrs[1], http: addrs[2], ca: ca, leaseTTL: leaseTTL}
	h.adminTLS = clientTLS(t, ca, tlsconfig.Identity{TrustDomain: massTrustDomain, Kind: tlsconfig.KindUser, Name: server.DefaultAdminUser}, "127.0.0.1")
	t.Cleanup(func() {
		if h.proc != nil {
			if err := h.proc.Stop(10 * time.Second); err != nil {
				t.Error(err)
			}
		}
		if t.Failed() {
			for i := 1; i <= h.starts; i++ {
				if log, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("hub-%d.log", i))); err == nil {
					t.Logf("hub log, start %d (last 60 lines):\n%s", i, tail(string(log), 60))
				}
			}
		}
	})
	h.start()
	return h
}

// start starts the hub process (again) on the same ports and data directory.
func (h *restartableHub) start() {
	h.t.Helper()
	h.starts++
	args := []string{"--grpc-address", h.grpc, "--admin-address", h.admin, "--http-address", h.http,
		"--data-dir", filepath.Join(h.dir, "data"), "--pki-dir", filepath.Join(h.dir, "pki"), "--hub-id", "hub-mass",
		"--trust-domain", massTrustDomain, "--lease-ttl", h.leaseTTL.String(), "--min-report-interval", "200ms",
		"--capacity-heartbeat", "1s", "--view-interval", "50ms", "--log-level", "debug"}
	p, err := localfleet.StartProc(h.dir, fmt.Sprintf("hub-%d", h.starts), filepath.Join(h.bin, "hub"), args...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.proc = p
}

// kill ends the hub process with SIGKILL.
func (h *restartableHub) kill() { h.proc.Kill() }

// logPath is the log of the current start.
func (h *restartableHub) logPath() string { return h.proc.LogPath }

// exportsOf returns the pools the hub's view holds as exported by cluster; an error while the
// hub is not serving.
func (h *restartableHub) exportsOf(ctx context.Context, cluster string) (map[fleet.PoolRef]bool, error) {
	conn, err := grpc.NewClient(h.admin, grpc.WithTransportCredentials(credentials.NewTLS(h.adminTLS)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	imports, err := hubtest.AllImports(ctx, pb.NewAdminServiceClient(conn))
	if err != nil {
		return nil, err
	}
	out := map[fleet.PoolRef]bool{}
	for _, imp := range imports {
		if slices.Contains(imp.GetExportingClusters(), cluster) {
			out[fleet.PoolRef{Namespace: imp.GetPool().GetNamespace(), Name: imp.GetPool().GetName()}] = true
		}
	}
	return out, nil
}

// clientTLS is a client's TLS configuration with a certificate for id from ca, verifying the
// server for serverName.
func clientTLS(t *testing.T, ca *tlsconfig.CA, id tlsconfig.Identity, serverName string) *tls.Config {
	t.Helper()
	kp, pool := keyPair(t, ca, id)
	return tlsconfig.ClientConfig(kp, pool, serverName)
}

func keyPair(t *testing.T, ca *tlsconfig.CA, id tlsconfig.Identity) (*tlsconfig.KeyPair, *tlsconfig.CAPool) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(id, nil, nil, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tlsconfig.NewStaticKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsconfig.NewStaticCAPool(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	return kp, pool
}

// loopbackAddrs returns n loopback addresses whose ports were free a moment ago.
func loopbackAddrs(t *testing.T, n int) []string {
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

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// countLines returns how many lines of the file at path contain substr.
func countLines(path, substr string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			n++
		}
	}
	return n
}

// writeMassPools writes spoke A's static pool file: massPools exported pools in namespace ns.
func writeMassPools(t *testing.T, path string) map[fleet.PoolRef]bool {
	t.Helper()
	var b strings.Builder
	want := map[fleet.PoolRef]bool{}
	b.WriteString("pools:\n")
	for i := range massPools {
		name := fmt.Sprintf("pool-%04d", i)
		fmt.Fprintf(&b, "- {namespace: %s, name: %s, export: true, targetPorts: [8000], endpoints: []}\n", ns, name)
		want[fleet.PoolRef{Namespace: ns, Name: name}] = true
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return want
}

// deletionWatch counts the DELETED events of InferencePoolImports in one cluster, from its start
// until the test ends, watching again from the last resource version when the API server ends a
// watch.
type deletionWatch struct {
	mu      sync.Mutex
	deleted []string
	err     error
}

func watchDeletions(t *testing.T, c *k8sCluster) *deletionWatch {
	t.Helper()
	d := &deletionWatch{}
	ctx, cancel := context.WithCancel(context.Background())
	list, err := c.gie.XInferenceV1alpha1().InferencePoolImports(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	rv := list.ResourceVersion
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			w, err := c.gie.XInferenceV1alpha1().InferencePoolImports(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
			if err != nil {
				if ctx.Err() == nil {
					d.mu.Lock()
					d.err = err
					d.mu.Unlock()
				}
				return
			}
			for ev := range w.ResultChan() {
				if m, err := metaOf(ev.Object); err == nil {
					rv = m.GetResourceVersion()
					if ev.Type == watch.Deleted {
						d.mu.Lock()
						d.deleted = append(d.deleted, m.GetName())
						d.mu.Unlock()
					}
				}
			}
			w.Stop()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

func metaOf(obj any) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no metadata", obj)
	}
	return m, nil
}

func (d *deletionWatch) seen() ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.deleted), d.err
}

// startImporter runs cluster c's in-process spoke (hub client and Kubernetes controller) against
// the hub's gRPC address, until the test ends.
func (c *k8sCluster) startImporter(t *testing.T, h *restartableHub) {
	t.Helper()
	kp, pool := keyPair(t, h.ca, tlsconfig.Identity{TrustDomain: massTrustDomain, Kind: tlsconfig.KindCluster, Name: c.id})
	c.hub = hubclient.New(hubclient.Options{
		Cluster:      fleet.ClusterInfo{ID: c.id, Region: "region-" + c.id, GatewayAddress: "gateway." + c.id + ".test:8080"},
		HubAddresses: []string{h.grpc},
		TLSFor:       func(name string) *tls.Config { return tlsconfig.ClientConfig(kp, pool, name) },
		MinBackoff:   50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
	})
	// 1,000 imports, each created and given its status: a client rate that does not make the
	// test wait on it.
	cfg := c.api.RESTConfig()
	cfg.QPS, cfg.Burst = 1000, 2000
	ctrl, err := spokekube.New(spokekube.Options{
		Config: cfg, ClusterID: c.id, View: c.hub.View(), Reporter: c.hub,
		CreateNamespaces: true, Resync: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.ctrl = ctrl
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = c.hub.Run(ctx) }()
	go func() {
		defer wg.Done()
		if err := ctrl.Run(ctx); err != nil {
			t.Errorf("controller of %s: %v", c.id, err)
		}
	}()
	var once sync.Once
	c.stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(c.stop)
}

// importCount returns how many InferencePoolImports cluster c holds.
func (c *k8sCluster) importCount(ctx context.Context) (int, error) {
	list, err := c.gie.XInferenceV1alpha1().InferencePoolImports(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	return len(list.Items), nil
}

// massFleet is the fleet of the mass-deletion tests: a real hub process, spoke A (the spoke
// binary with a static pool file of massPools exported pools) and cluster B (a real API server,
// the spoke's controller and hub client in-process) importing them, with a watch on B's
// InferencePoolImports from the start.
type massFleet struct {
	t         *testing.T
	ctx       context.Context
	h         *restartableHub
	b         *k8sCluster
	deletions *deletionWatch
	want      map[fleet.PoolRef]bool
	spoke     *localfleet.Proc
	start     time.Time
	startA    func()
}

func startMassFleet(t *testing.T, ctx context.Context, leaseTTL time.Duration) *massFleet {
	t.Helper()
	bin := bins(t)
	apis := startAPIServers(t, ctx, "b")
	f := &massFleet{t: t, ctx: ctx, h: startRestartableHub(t, bin, leaseTTL), start: time.Now()}
	f.b = newK8sCluster(t, "b", apis["b"])
	f.deletions = watchDeletions(t, f.b)
	f.b.startImporter(t, f.h)

	dir := t.TempDir()
	poolsFile := filepath.Join(dir, "pools.yaml")
	f.want = writeMassPools(t, poolsFile)
	credsDir := filepath.Join(dir, "creds")
	if err := os.Mkdir(credsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := f.h.ca.Issue(tlsconfig.Identity{TrustDomain: massTrustDomain, Kind: tlsconfig.KindCluster, Name: "a"}, nil, nil, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{tlsconfig.CAFile: f.h.ca.CertPEM(), tlsconfig.CertFile: certPEM, tlsconfig.KeyFile: keyPEM} {
		if err := os.WriteFile(filepath.Join(credsDir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	spokeHTTP := loopbackAddrs(t, 1)[0]
	starts := 0
	f.startA = func() {
		t.Helper()
		starts++
		p, err := localfleet.StartProc(dir, fmt.Sprintf("spoke-a-%d", starts), filepath.Join(bin, "spoke"),
			"--cluster-id", "a", "--region", "region-a", "--trust-domain", massTrustDomain,
			"--hub-address", f.h.grpc, "--credentials-dir", credsDir, "--pools-file", poolsFile, "--pools-reload", "0",
			"--http-address", spokeHTTP, "--insecure-http", "--epp-address", "", "--spill=false", "--log-level", "debug")
		if err != nil {
			t.Fatal(err)
		}
		f.spoke = p
	}
	t.Cleanup(func() {
		if f.spoke != nil {
			_ = f.spoke.Stop(10 * time.Second)
		}
		if t.Failed() {
			for i := 1; i <= starts; i++ {
				if log, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("spoke-a-%d.log", i))); err == nil {
					t.Logf("spoke A log, start %d (last 40 lines):\n%s", i, tail(string(log), 40))
				}
			}
		}
	})
	f.startA()
	return f
}

func (f *massFleet) phase(what string) { f.t.Logf("%6.1fs %s", time.Since(f.start).Seconds(), what) }

// exported waits until the hub holds all of A's exports, and returns them.
func (f *massFleet) exported(what string) map[fleet.PoolRef]bool {
	f.t.Helper()
	var got map[fleet.PoolRef]bool
	testkit.Eventually(f.t, 90*time.Second, what, func() error {
		var err error
		if got, err = f.h.exportsOf(f.ctx, "a"); err != nil {
			return err
		}
		if len(got) != len(f.want) {
			return fmt.Errorf("the hub holds %d exports of A, want %d", len(got), len(f.want))
		}
		return nil
	})
	return got
}

// imported waits until B holds an InferencePoolImport of each of A's pools.
func (f *massFleet) imported(what string) {
	f.t.Helper()
	testkit.Eventually(f.t, 90*time.Second, what, func() error {
		n, err := f.b.importCount(f.ctx)
		if err != nil {
			return err
		}
		if n != massPools {
			return fmt.Errorf("B holds %d InferencePoolImports, want %d", n, massPools)
		}
		return nil
	})
}

// restartHubDuringResend starts spoke A again (a new incarnation resends all its exports) and
// kills the hub with SIGKILL as soon as A's new session starts, in the middle of that resend;
// starts it again on the same data, kills it again during its startup, and starts it once more.
func (f *massFleet) restartHubDuringResend() {
	f.t.Helper()
	const sessionLine = "spoke session started"
	sessions := countLines(f.h.logPath(), sessionLine)
	f.startA()
	testkit.Eventually(f.t, 30*time.Second, "A's new session on the hub", testkit.True(func() bool {
		return countLines(f.h.logPath(), sessionLine) > sessions
	}))
	f.h.kill()
	f.phase("hub killed during A's resend")
	f.h.start()
	// Killed again during its startup: once it has logged anything, before it serves.
	testkit.Eventually(f.t, 30*time.Second, "the restarted hub's first log line", testkit.True(func() bool {
		fi, err := os.Stat(f.h.logPath())
		return err == nil && fi.Size() > 0
	}))
	f.h.kill()
	f.phase("hub killed during its startup")
	f.h.start()
}

// checkAfter checks that A's exports are before and that B deleted none of its imports.
func (f *massFleet) checkAfter(before map[fleet.PoolRef]bool) {
	f.t.Helper()
	after := f.exported("A's exports in the hub after the restarts")
	f.phase("A's exports back in the hub")
	for p := range before {
		if !after[p] {
			f.t.Errorf("export %s lost", p)
		}
	}
	for p := range after {
		if !before[p] {
			f.t.Errorf("export %s appeared", p)
		}
	}
	f.imported("B's InferencePoolImports after the restarts")
	testkit.Eventually(f.t, 30*time.Second, "B's view holding no withdrawal", testkit.True(func() bool {
		w, d := f.b.hub.View().HeldWithdrawals()
		return w == 0 && d == 0 && f.b.hub.Connected()
	}))
	deleted, err := f.deletions.seen()
	if err != nil {
		f.t.Fatalf("watching B's InferencePoolImports: %v", err)
	}
	if len(deleted) > 0 {
		f.t.Errorf("%d InferencePoolImports of B were deleted during the hub's restarts (first: %s)", len(deleted), deleted[0])
	}
}

// TestHubRestartsDuringAResendDeleteNoImport: spoke A exports 1,000 pools, which cluster B
// imports. A dies and stays away past its session lease, so the hub withdraws its exports and
// B's view holds the 1,000 withdrawals for the damping (the mass-deletion guard of
// spoke/hubclient). A comes back and resends its 1,000 exports; the hub is killed with SIGKILL
// in the middle of that resend, started again on the same data, killed again during its
// startup and started once more. A's export set is the same before and after, and a watch on
// B's API server from the start sees no InferencePoolImport deleted.
func TestHubRestartsDuringAResendDeleteNoImport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The damping is the lease TTL: long enough for A's return through two hub restarts.
	f := startMassFleet(t, ctx, 20*time.Second)
	before := f.exported("A's 1,000 exports in the hub")
	f.phase("A's exports in the hub")
	f.imported("B's 1,000 InferencePoolImports")
	f.phase("B's imports written")

	f.spoke.Kill()
	f.phase("A killed")
	testkit.Eventually(t, time.Minute, "the hub withdrawing A's exports after its lease, and B's view holding the withdrawals", func() error {
		got, err := f.h.exportsOf(ctx, "a")
		if err != nil {
			return err
		}
		if _, d := f.b.hub.View().HeldWithdrawals(); len(got) != 0 || d != massPools {
			return fmt.Errorf("the hub holds %d exports of A, B's view holds %d withdrawals", len(got), d)
		}
		return nil
	})
	f.phase("A's exports withdrawn by the hub, held by B")

	f.restartHubDuringResend()
	f.checkAfter(before)
}

// TestHubRestartsDuringANewIncarnationsResend: A restarts within its lease, so its new
// incarnation resends its 1,000 exports while the old ones are still stored, and the hub is
// killed during that resend. The hub keeps the old incarnation's exports until the new
// replace_all is stored, and stores its upserts before its withdrawals, so the fleet view never
// shows A with only part of its pools, and B deletes nothing.
func TestHubRestartsDuringANewIncarnationsResend(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f := startMassFleet(t, ctx, 15*time.Second)
	before := f.exported("A's 1,000 exports in the hub")
	f.imported("B's 1,000 InferencePoolImports")
	f.phase("1,000 exports stored and imported")
	f.spoke.Kill()
	f.restartHubDuringResend()
	f.checkAfter(before)
}

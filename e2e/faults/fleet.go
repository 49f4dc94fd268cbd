package faults

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/spillway-io/spillway/e2e/apiserver"
	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Ports every hub replica, etcd member and spoke uses on its own address.
const (
	hubGRPCPort  = 8470
	hubHTTPPort  = 8471
	hubAdminPort = 8472
	gossipPort   = 7946
	etcdPort     = 2379
	etcdPeerPort = 2380
	gatewayPort  = 8080
	// spokeHTTP, eppAddress and toxiproxyAPI are loopback addresses inside a region's namespace.
	spokeHTTP    = "127.0.0.1:8481"
	eppAddress   = "127.0.0.1:9002"
	toxiproxyAPI = "127.0.0.1:8474"
)

// Region is one simulated cluster: node r<Index>, address 10.79.<Index>.1, a spoke with its EPP,
// a gateway, and two simulated model servers on loopback.
type Region struct {
	Name    string
	Cluster string
	Index   int
	Node    string
	IP      string
}

// Gateway is the region's gateway address.
func (r Region) Gateway() string { return hostPort(r.IP, gatewayPort) }

// Hub is one hub replica, in node h<Index> with the etcd member of the same index.
type Hub struct {
	Name  string // hub-<Index>, also its --hub-id
	Index int
	Node  string
	IP    string
}

// GRPC is the replica's spokes' port.
func (h Hub) GRPC() string { return hostPort(h.IP, hubGRPCPort) }

// Admin is the replica's admin port.
func (h Hub) Admin() string { return hostPort(h.IP, hubAdminPort) }

// RegionNames are the regions of every run.
var RegionNames = []string{"us-east", "us-west", "eu-west"}

// proxyAddress is where a region reaches region n's gateway: its own toxiproxy.
func proxyAddress(n int) string { return fmt.Sprintf("127.0.0.1:%d", 18100+n) }

// oneWay is the data-path latency toxiproxy adds between two regions, per direction: 10 ms
// between us-east and us-west, 40 ms to and from eu-west.
func oneWay(a, b string) int {
	if a == "eu-west" || b == "eu-west" {
		return 40
	}
	return 10
}

// Config describes a fleet.
type Config struct {
	// Prefix of the namespaces.
	Prefix string
	// BinDir holds hub, spoke, gateway, modelsim, loadgen, toxiproxy-server; EtcdBin etcd.
	BinDir  string
	EtcdBin string
	WorkDir string
	// Hubs is the number of hub replicas (1 when zero), each on the one 3-member etcd cluster.
	Hubs int
	// LeaseTTL of the hub's sessions (6s when zero).
	LeaseTTL  time.Duration
	HubArgs   []string
	SpokeArgs []string
	// Env, when set, gives extra environment variables (KEY=value) of the process named name
	// (hub-1, spoke-us-east-1, ...).
	Env func(name string) []string
	// GossipAdvertisePort, when not zero, makes every gossip member advertise <its IP>:<port>
	// instead of its own port: the WAN scenario puts delaying relays there.
	GossipAdvertisePort int
	// Kubernetes runs a kube-apiserver per region and the spokes on the Kubernetes source (pools
	// from InferencePools, imports written back as InferencePoolImports, leader election on a
	// Lease) instead of pool files.
	Kubernetes bool
	// BeforeStart, when set, runs once the network exists, before any process starts.
	BeforeStart func(ctx context.Context, f *Fleet) error
}

// Fleet is a running fleet in its own network.
type Fleet struct {
	Config
	Net     *Network
	Hubs    []Hub
	Regions []Region

	pki   *pki
	procs []*Proc
	byNm  map[string]*Proc
	http  map[string]*http.Client // by node
	admin tls.Certificate
	toxic map[string]bool // nodes with a toxiproxy

	kube       map[string]*apiserver.Cluster // by cluster, with Kubernetes
	forwarders []*forwarder

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // admin connections by hub
}

// StartFleet creates the network, the etcd cluster and the fleet, and waits until every region
// is alive at the hub with full capacity and every spoke knows the two others. Stop undoes it.
func StartFleet(ctx context.Context, c Config) (*Fleet, error) {
	if c.Hubs == 0 {
		c.Hubs = 1
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 6 * time.Second
	}
	f := &Fleet{Config: c, byNm: map[string]*Proc{}, http: map[string]*http.Client{}, toxic: map[string]bool{}, conns: map[string]*grpc.ClientConn{}}
	var nodes []Node
	for i := 1; i <= 3; i++ {
		h := Hub{Name: fmt.Sprintf("hub-%d", i), Index: i, Node: fmt.Sprintf("h%d", i), IP: fmt.Sprintf("10.79.0.%d", i)}
		nodes = append(nodes, Node{Name: h.Node, IP: h.IP})
		if i <= c.Hubs {
			f.Hubs = append(f.Hubs, h)
		}
	}
	for i, name := range RegionNames {
		r := Region{Name: name, Cluster: name + "-1", Index: i + 1, Node: fmt.Sprintf("r%d", i+1), IP: fmt.Sprintf("10.79.%d.1", i+1)}
		nodes = append(nodes, Node{Name: r.Node, IP: r.IP})
		f.Regions = append(f.Regions, r)
	}
	nw, err := NewNetwork(ctx, c.Prefix, nodes)
	if err != nil {
		return nil, err
	}
	f.Net = nw
	if err := f.setup(ctx); err != nil {
		f.Stop()
		return nil, err
	}
	if c.BeforeStart != nil {
		if err := c.BeforeStart(ctx, f); err != nil {
			f.Stop()
			return nil, err
		}
	}
	if err := f.start(ctx); err != nil {
		var tails []string
		for _, p := range f.procs {
			if strings.HasPrefix(p.Name, "hub-") || strings.HasPrefix(p.Name, "spoke-") {
				tails = append(tails, p.LogTail(1500))
			}
		}
		f.Stop()
		return nil, fmt.Errorf("%w\n%s", err, strings.Join(tails, "\n"))
	}
	return f, nil
}

func (f *Fleet) logDir() string { return filepath.Join(f.WorkDir, "logs") }

// setup makes the fleet's files: log directory, CA, the admin's credentials, gossip key, EPP
// configuration.
func (f *Fleet) setup(context.Context) error {
	if err := os.MkdirAll(f.logDir(), 0o755); err != nil {
		return err
	}
	p, err := newPKI(filepath.Join(f.WorkDir, "pki"))
	if err != nil {
		return err
	}
	f.pki = p
	adminDir, err := p.issue("admin", user("admin"))
	if err != nil {
		return err
	}
	if f.admin, err = tls.LoadX509KeyPair(filepath.Join(adminDir, tlsconfig.CertFile), filepath.Join(adminDir, tlsconfig.KeyFile)); err != nil {
		return err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	if err := os.WriteFile(f.gossipKey(), []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		return err
	}
	return os.WriteFile(f.eppConfig(), []byte(localfleet.EPPConfig), 0o644)
}

func (f *Fleet) start(ctx context.Context) error {
	if f.Kubernetes {
		if err := f.startKube(ctx); err != nil {
			return err
		}
	}
	if err := f.startEtcd(ctx); err != nil {
		return err
	}
	for _, h := range f.Hubs {
		if err := f.addHub(h); err != nil {
			return err
		}
	}
	for _, r := range f.Regions {
		if err := f.addRegion(ctx, r); err != nil {
			return err
		}
	}
	return f.WaitReady(ctx)
}

func (f *Fleet) gossipKey() string { return filepath.Join(f.WorkDir, "gossip.key") }
func (f *Fleet) eppConfig() string { return filepath.Join(f.WorkDir, "epp.yaml") }

// newProc registers and starts a process.
func (f *Fleet) newProc(name, node, bin string, args ...string) (*Proc, error) {
	var env []string
	if f.Env != nil {
		env = f.Env(name)
	}
	p := &Proc{Name: name, Node: node, ns: f.Net.NS(node), logDir: f.logDir(), bin: bin, args: args, env: env}
	if err := p.start(); err != nil {
		return nil, err
	}
	f.procs = append(f.procs, p)
	f.byNm[name] = p
	return p, nil
}

// Proc returns the process named name (etcd-1, hub-1, spoke-us-east-1, gateway-us-east-1,
// modelsim-us-east-1, toxiproxy-r1), nil when there is none.
func (f *Fleet) Proc(name string) *Proc { return f.byNm[name] }

// Procs returns every process.
func (f *Fleet) Procs() []*Proc { return slices.Clone(f.procs) }

func (f *Fleet) gossipAdvertise(ip string) []string {
	if f.GossipAdvertisePort == 0 {
		return nil
	}
	return []string{"--gossip-advertise-address", hostPort(ip, f.GossipAdvertisePort)}
}

func (f *Fleet) addHub(h Hub) error {
	serving, err := f.pki.issue("serving-"+h.Name, infra(h.Name), "10.79.0.1", "10.79.0.2", "10.79.0.3")
	if err != nil {
		return err
	}
	pkiDir, err := f.pki.hubPKIDir(h.Name)
	if err != nil {
		return err
	}
	etcdClient, err := f.pki.issue("etcd-client-"+h.Name, infra("etcd-client-"+h.Name))
	if err != nil {
		return err
	}
	var endpoints []string
	for i := 1; i <= 3; i++ {
		endpoints = append(endpoints, "https://"+hostPort(fmt.Sprintf("10.79.0.%d", i), etcdPort))
	}
	args := []string{"--grpc-address", h.GRPC(), "--admin-address", h.Admin(), "--http-address", hostPort(h.IP, hubHTTPPort),
		"--etcd-endpoints", strings.Join(endpoints, ","), "--etcd-cacert", f.pki.CAFile(),
		"--etcd-cert", filepath.Join(etcdClient, tlsconfig.CertFile), "--etcd-key", filepath.Join(etcdClient, tlsconfig.KeyFile),
		"--pki-dir", pkiDir, "--hub-id", h.Name, "--lease-ttl", f.LeaseTTL.String(),
		"--tls-cert-file", filepath.Join(serving, tlsconfig.CertFile), "--tls-key-file", filepath.Join(serving, tlsconfig.KeyFile),
		"--gossip-address", hostPort(h.IP, gossipPort), "--gossip-key-file", f.gossipKey()}
	args = append(args, f.gossipAdvertise(h.IP)...)
	args = append(args, f.HubArgs...)
	_, err = f.newProc(h.Name, h.Node, filepath.Join(f.BinDir, "hub"), args...)
	return err
}

// HubAddresses are the spokes' addresses of every hub replica, comma-separated.
func (f *Fleet) HubAddresses() string {
	var out []string
	for _, h := range f.Hubs {
		out = append(out, h.GRPC())
	}
	return strings.Join(out, ",")
}

// PoolsFile is a region's static pool file.
func (f *Fleet) PoolsFile(r Region) string { return filepath.Join(f.WorkDir, r.Cluster+"-pools.yaml") }

// Endpoints are the model servers of every region's pool default/chat (in its namespace).
var Endpoints = []string{"127.0.0.1:8000", "127.0.0.2:8000"}

// WritePools writes a region's pool file: default/chat with the region's endpoints, then extra
// pools default/extra-<i> (i < extra) on the same endpoints, every one exported.
// With Kubernetes, the extra pools are InferencePools created in the region's API server (the
// selector of default/chat: the same Pods).
func (f *Fleet) WritePools(r Region, extra int) error {
	if f.Kubernetes {
		return f.kubePools(r, extra)
	}
	return f.writePools(r, Endpoints, extra)
}

func (f *Fleet) kubePools(r Region, extra int) error {
	var b strings.Builder
	for i := range extra {
		fmt.Fprintf(&b, `---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: extra-%d
  namespace: default
  annotations: {inference.networking.x-k8s.io/export: ClusterSet}
spec:
  selector: {matchLabels: {app: chat}}
  targetPorts: [{number: 8000}]
  endpointPickerRef: {name: spillway-spoke-epp, port: {number: 9002}}
`, i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := f.kube[r.Cluster].KubectlStdin(ctx, b.String(), "apply", "--server-side", "--field-manager=spillway-faults", "-f", "-")
	return err
}

// ScalePool writes a region's pool file with default/chat on the first n endpoints only.
func (f *Fleet) ScalePool(r Region, n int) error { return f.writePools(r, Endpoints[:n], 0) }

func (f *Fleet) writePools(r Region, endpoints []string, extra int) error {
	var b strings.Builder
	b.WriteString("pools:\n")
	pool := func(name string) {
		fmt.Fprintf(&b, "- namespace: default\n  name: %s\n  export: true\n  targetPorts: [8000]\n  engine: vllm\n  endpoints:\n", name)
		for _, e := range endpoints {
			fmt.Fprintf(&b, "  - %q\n", e)
		}
	}
	pool("chat")
	for i := range extra {
		pool(fmt.Sprintf("extra-%d", i))
	}
	tmp := f.PoolsFile(r) + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, f.PoolsFile(r))
}

func (f *Fleet) addRegion(ctx context.Context, r Region) error {
	creds, err := f.pki.issue("cluster-"+r.Cluster, cluster(r.Cluster))
	if err != nil {
		return err
	}
	eppCert, err := f.pki.issue("epp-"+r.Cluster, infra("epp-"+r.Cluster))
	if err != nil {
		return err
	}
	gwCert, err := f.pki.issue("gateway-"+r.Cluster, infra("gateway-"+r.Cluster))
	if err != nil {
		return err
	}
	if _, err := f.newProc("modelsim-"+r.Cluster, r.Node, filepath.Join(f.BinDir, "modelsim"),
		"--endpoints", strings.Join(Endpoints, ","), "--max-num-seqs", "4", "--decode-latency", "20ms"); err != nil {
		return err
	}
	if err := f.startToxiproxy(ctx, r.Node); err != nil {
		return err
	}
	for _, o := range f.Regions {
		if o.Index == r.Index {
			continue
		}
		if err := f.AddProxy(ctx, r.Node, "to-"+o.Name, proxyAddress(o.Index), o.Gateway(), oneWay(r.Name, o.Name)); err != nil {
			return err
		}
	}
	if !f.Kubernetes {
		if err := f.WritePools(r, 0); err != nil {
			return err
		}
	}
	var joins []string
	for _, h := range f.Hubs {
		joins = append(joins, hostPort(h.IP, gossipPort))
	}
	args := []string{"--region", r.Name, "--zone", r.Name + "-a",
		"--hub-address", f.HubAddresses(), "--credentials-dir", creds,
		"--http-address", spokeHTTP, "--epp-address", eppAddress, "--epp-config", f.eppConfig(), "--epp-pool", "default/chat",
		"--epp-cert-dir", eppCert, "--epp-client-ca-file", f.pki.CAFile(), "--gateway-address", r.Gateway(),
		"--gossip-address", hostPort(r.IP, gossipPort), "--gossip-join", strings.Join(joins, ","), "--gossip-key-file", f.gossipKey()}
	if f.Kubernetes {
		args = append(args, "--kubeconfig", f.kube[r.Cluster].Kubeconfig)
		if f.spokeHas("--leader-elect-lease-duration") {
			// A restarted spoke takes its cluster's Lease over in seconds, not kube-controller-
			// manager's 15.
			args = append(args, "--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "1s")
		}
	} else {
		args = append(args, "--cluster-id", r.Cluster, "--pools-file", f.PoolsFile(r), "--pools-reload", "500ms")
	}
	args = append(args, f.gossipAdvertise(r.IP)...)
	for _, o := range f.Regions {
		if o.Index != r.Index {
			args = append(args, "--remote-gateway", fmt.Sprintf("%s=%s", o.Cluster, proxyAddress(o.Index)))
		}
	}
	args = append(args, f.SpokeArgs...)
	if _, err := f.newProc("spoke-"+r.Cluster, r.Node, filepath.Join(f.BinDir, "spoke"), args...); err != nil {
		return err
	}
	_, err = f.newProc("gateway-"+r.Cluster, r.Node, filepath.Join(f.BinDir, "gateway"), "--listen", r.Gateway(), "--epp", eppAddress,
		"--epp-ca-file", f.pki.CAFile(),
		"--epp-cert-file", filepath.Join(gwCert, tlsconfig.CertFile), "--epp-key-file", filepath.Join(gwCert, tlsconfig.KeyFile))
	return err
}

// spokeHas reports whether the spoke binary has a flag.
func (f *Fleet) spokeHas(flag string) bool {
	out, _ := exec.Command(filepath.Join(f.BinDir, "spoke"), "--help").CombinedOutput()
	return strings.Contains(string(out), flag)
}

// startToxiproxy runs a toxiproxy in node's namespace, its API on loopback there.
func (f *Fleet) startToxiproxy(ctx context.Context, node string) error {
	if f.toxic[node] {
		return nil
	}
	if _, err := f.newProc("toxiproxy-"+node, node, filepath.Join(f.BinDir, "toxiproxy-server"), "-host", "127.0.0.1", "-port", "8474"); err != nil {
		return err
	}
	f.toxic[node] = true
	return poll(ctx, 10*time.Second, "toxiproxy in "+node, func() error {
		_, err := f.Get(ctx, node, "http://"+toxiproxyAPI+"/version")
		return err
	})
}

// AddProxy makes node's toxiproxy listen on listen (inside the namespace) and forward to
// upstream, adding ms of latency to each direction.
func (f *Fleet) AddProxy(ctx context.Context, node, name, listen, upstream string, ms int) error {
	if err := f.startToxiproxy(ctx, node); err != nil {
		return err
	}
	if err := f.post(ctx, node, "/proxies", fmt.Sprintf(`{"name":%q,"listen":%q,"upstream":%q,"enabled":true}`, name, listen, upstream)); err != nil {
		return err
	}
	for _, stream := range []string{"upstream", "downstream"} {
		if err := f.post(ctx, node, "/proxies/"+name+"/toxics",
			fmt.Sprintf(`{"name":"latency-%s","type":"latency","stream":%q,"attributes":{"latency":%d,"jitter":1}}`, stream, stream, ms)); err != nil {
			return err
		}
	}
	return nil
}

func (f *Fleet) post(ctx context.Context, node, path, body string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+toxiproxyAPI+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.client(node).Do(req)
	if err != nil {
		return fmt.Errorf("toxiproxy in %s: %w", node, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("toxiproxy in %s: POST %s: %s: %s", node, path, resp.Status, b)
	}
	return nil
}

// client is an HTTP client whose connections start in node's namespace and verify the fleet's
// servers with its CA.
func (f *Fleet) client(node string) *http.Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.http[node]; ok {
		return c
	}
	roots := x509.NewCertPool()
	roots.AddCert(f.pki.ca.Certificate())
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: f.Net.Dialer(node),
		// The admin's certificate, for the servers that ask for one (etcd's client port).
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, Certificates: []tls.Certificate{f.admin}},
		// A fresh connection each time: a partition must not hide behind a kept one.
		DisableKeepAlives: true,
	}}
	f.http[node] = c
	return c
}

// Get reads url from inside node's namespace and returns the body of a 2xx answer.
func (f *Fleet) Get(ctx context.Context, node, url string) ([]byte, error) {
	code, body, err := f.GetStatus(ctx, node, url)
	if err != nil {
		return nil, err
	}
	if code/100 != 2 {
		return nil, fmt.Errorf("GET %s: %d: %s", url, code, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// GetStatus reads url from inside node's namespace and returns the status and body.
func (f *Fleet) GetStatus(ctx context.Context, node, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := f.client(node).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// SpillReport is what a spoke's GET /spill says of its pool.
type SpillReport struct {
	State struct {
		Spilling bool
	} `json:"state"`
	Targets    []Remote `json:"targets"`
	Candidates []Remote `json:"candidates"`
}

// Remote is one remote cluster in a SpillReport.
type Remote struct {
	ClusterID string
	Region    string
	Alive     bool
	// Unreachable: the spoke's gossip pings to it went unanswered for a second.
	Unreachable bool
	Age         time.Duration
	// Its own report's view of its pool.
	Saturated, Spilling bool
	ReadyEndpoints      int
}

// Spill reads a region's GET /spill.
func (f *Fleet) Spill(ctx context.Context, r Region) (SpillReport, error) {
	var rep SpillReport
	body, err := f.Get(ctx, r.Node, "https://"+spokeHTTP+"/spill")
	if err != nil {
		return rep, fmt.Errorf("%s: %w", r.Name, err)
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		return rep, fmt.Errorf("GET /spill of %s: %w", r.Name, err)
	}
	return rep, nil
}

// TargetRegions are the regions of a report's targets.
func (s SpillReport) TargetRegions() []string {
	var out []string
	for _, t := range s.Targets {
		out = append(out, t.Region)
	}
	return out
}

// CandidateClusters are the clusters of a report's candidates: the remote exporters of the
// pool the spoke imports.
func (s SpillReport) CandidateClusters() []string {
	var out []string
	for _, t := range s.Candidates {
		out = append(out, t.ClusterID)
	}
	slices.Sort(out)
	return out
}

// Admin returns an AdminService client of hub h as the admin, connecting from h's namespace.
func (f *Fleet) Admin(h Hub) (pb.AdminServiceClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[h.Name]; ok {
		return pb.NewAdminServiceClient(c), nil
	}
	roots := x509.NewCertPool()
	roots.AddCert(f.pki.ca.Certificate())
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, Certificates: []tls.Certificate{f.admin}}
	dial := f.Net.Dialer(h.Node)
	conn, err := grpc.NewClient("passthrough:///"+h.Admin(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dial(ctx, "tcp", addr) }))
	if err != nil {
		return nil, err
	}
	f.conns[h.Name] = conn
	return pb.NewAdminServiceClient(conn), nil
}

// HubReady reads a hub replica's /readyz: nil when ready, else the reason it gives.
func (f *Fleet) HubReady(ctx context.Context, h Hub) error {
	code, body, err := f.GetStatus(ctx, h.Node, "https://"+hostPort(h.IP, hubHTTPPort)+"/readyz")
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("%d: %s", code, strings.TrimSpace(string(body)))
	}
	return nil
}

// Exports is the fleet's export set as a hub replica serves it: pool → exporting clusters.
func (f *Fleet) Exports(ctx context.Context, h Hub) (map[string][]string, error) {
	admin, err := f.Admin(h)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	imports, err := hubtest.AllImports(ctx, admin)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, imp := range imports {
		out[imp.GetPool().GetNamespace()+"/"+imp.GetPool().GetName()] = slices.Sorted(slices.Values(imp.GetExportingClusters()))
	}
	return out, nil
}

// WaitReady waits until a running hub replica lists every region alive with full capacity in
// pool default/chat, and every spoke lists the two others as candidates.
func (f *Fleet) WaitReady(ctx context.Context) error {
	return poll(ctx, 60*time.Second, "the fleet is ready", func() error {
		for _, p := range f.procs {
			if !p.Running() && strings.HasPrefix(p.Name, "spoke-") {
				return fmt.Errorf("%s exited:\n%s", p.Name, p.LogTail(2000))
			}
		}
		if err := f.hubReady(ctx); err != nil {
			return err
		}
		for _, r := range f.Regions {
			rep, err := f.Spill(ctx, r)
			if err != nil {
				return err
			}
			if n := len(rep.CandidateClusters()); n != len(f.Regions)-1 {
				return fmt.Errorf("%s knows %d remote clusters", r.Name, n)
			}
		}
		return nil
	})
}

func (f *Fleet) hubReady(ctx context.Context) error {
	running := 0
	for _, h := range f.Hubs {
		if !f.byNm[h.Name].Running() {
			continue
		}
		running++
		admin, err := f.Admin(h)
		if err != nil {
			return err
		}
		if err := f.fleetComplete(ctx, admin); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	if running == 0 {
		return errors.New("no hub replica is running")
	}
	return nil
}

func (f *Fleet) fleetComplete(ctx context.Context, admin pb.AdminServiceClient) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cl, err := hubtest.AllClusters(ctx, admin)
	if err != nil {
		return err
	}
	alive := 0
	for _, c := range cl {
		if c.GetState() == pb.ClusterState_CLUSTER_STATE_ALIVE {
			alive++
		}
	}
	if alive < len(f.Regions) {
		return fmt.Errorf("%d of %d clusters alive", alive, len(f.Regions))
	}
	pools, err := hubtest.AllPools(ctx, admin)
	if err != nil {
		return err
	}
	for _, p := range pools {
		if p.GetPool().GetName() != "chat" {
			continue
		}
		if len(p.GetMembers()) < len(f.Regions) {
			return fmt.Errorf("pool chat has %d members", len(p.GetMembers()))
		}
		for _, m := range p.GetMembers() {
			c := m.GetCapacity().GetCapacity()
			if c == nil || c.GetReadyEndpoints() == 0 || c.GetReadyEndpoints() < c.GetTotalEndpoints() {
				return fmt.Errorf("cluster %s has no full capacity report yet", m.GetClusterId())
			}
		}
		return nil
	}
	return errors.New("pool chat not exported yet")
}

// KillRegion kills a region's spoke, gateway and model servers with SIGKILL.
func (f *Fleet) KillRegion(r Region) {
	for _, p := range []string{"spoke-", "gateway-", "modelsim-"} {
		f.byNm[p+r.Cluster].Kill()
	}
}

// Stop stops every process (gateways, spokes and toxiproxies, then hubs, simulators and etcd),
// closes the admin connections and removes the network.
func (f *Fleet) Stop() {
	order := []string{"gateway-", "spoke-", "toxiproxy-", "hub-", "modelsim-", "etcd-"}
	for _, prefix := range order {
		var wg sync.WaitGroup
		for _, p := range f.procs {
			if strings.HasPrefix(p.Name, prefix) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_ = p.Stop(10 * time.Second)
				}()
			}
		}
		wg.Wait()
	}
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = map[string]*grpc.ClientConn{}
	for _, c := range f.http {
		c.CloseIdleConnections()
	}
	f.mu.Unlock()
	for _, fw := range f.forwarders {
		fw.Close()
	}
	f.forwarders = nil
	for _, c := range f.kube {
		c.Stop()
	}
	if f.Net != nil {
		f.Net.Close()
	}
}

// poll calls cond every 100 ms until it returns nil, for at most within.
func poll(ctx context.Context, within time.Duration, what string, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		last := cond()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not within %s: %w", what, within, last)
		case <-t.C:
		}
	}
}

// sleepCtx waits for d or the end of ctx: the scenarios hold a fault for a set time while load
// runs; what they assert is polled or read from samples afterwards.
func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

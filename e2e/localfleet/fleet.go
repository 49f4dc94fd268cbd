// Package localfleet starts a whole Spillway fleet on one machine as real processes: a hub with
// embedded etcd, one spoke per region, and the simulated model servers of each region's pool. It
// is what `make demo` runs and what the end-to-end tests start.
//
// Everything runs with TLS, as in production. The fleet makes its own CA in its work directory
// and issues from it the hub's serving certificate, one cluster certificate per spoke
// (spiffe://spillway.local/cluster/<id>, in a credentials directory the spoke is given), each
// EPP's serving certificate (its spoke's HTTP port presents it too), each gateway's client
// certificate for the EPP, and hubctl credentials for the admin. The hub signs join requests with
// the same CA (its --pki-dir holds it). Every client the fleet opens verifies the servers with
// the fleet CA: TLSConfig, HTTPClient and DialAdmin give tests the same. Liveness gossip is
// encrypted with a key made for the fleet.
package localfleet

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Region is one simulated workload cluster.
type Region struct {
	Name      string
	Cluster   string
	SpokeHTTP string
	// EPP is the spoke's Endpoint Picker address, Gateway the region's HTTP gateway.
	EPP     string
	Gateway string
	// Gossip is the spoke's gossip address (with Options.HubGossip).
	Gossip string
	// Netns, when set, is the network namespace the region's processes run in (through
	// `ip netns exec`); its addresses are the namespace's.
	Netns string
	// SpokeArgs are extra spoke flags.
	SpokeArgs []string
	// Endpoints are the model-server addresses of the region's pool default/chat (PoolName);
	// none: the fleet starts no simulator for the region.
	Endpoints []string
	// PoolName names the region's pool of Endpoints, in namespace default; "" is chat.
	PoolName string
	// SimArgs are extra modelsim flags of the region's simulator (after Options.SimArgs).
	SimArgs []string
	// EPPService, with the Kubernetes source, makes the spoke serve the EPP of every pool whose
	// endpointPickerRef names this Service (--epp-service), each on its port at EPP's host,
	// instead of the one pool default/<PoolName> at EPP.
	EPPService string
}

// pool is the name of the region's pool.
func (r Region) pool() string {
	if r.PoolName == "" {
		return "chat"
	}
	return r.PoolName
}

// Options describe the fleet.
type Options struct {
	BinDir  string
	WorkDir string
	// HubGRPC is the spokes' port of the hub (sync, join), HubAdmin its admin port (hubctl),
	// HubHTTP its /metrics, /healthz and /readyz. All three are required.
	HubGRPC  string
	HubAdmin string
	HubHTTP  string
	// HubGossip, when set, turns liveness gossip on: the hub gossips there, every spoke at its
	// region's Gossip address, with a key generated for the fleet.
	HubGossip string
	// LeaseTTL of the hub's sessions.
	LeaseTTL time.Duration
	Regions  []Region
	// SimArgs are extra modelsim flags.
	SimArgs []string
	// EPPConfig replaces the spokes' EPP configuration (EPPConfig below) when set.
	EPPConfig string
	// HubNetns, when set, is the network namespace the hub runs in.
	HubNetns string
	// HubArgs are extra hub flags.
	HubArgs []string
	// Kubeconfigs, by cluster, switch the spokes from pool files to the Kubernetes source: each
	// spoke watches its cluster's API server and reads its identity from ClusterProperty objects.
	Kubeconfigs map[string]string
}

// DefaultOptions is the demo fleet: three regions, each with a pool default/chat of three
// simulated endpoints on its own loopback addresses (127.0.1.x, 127.0.2.x, 127.0.3.x).
func DefaultOptions(binDir, workDir string) Options {
	o := Options{BinDir: binDir, WorkDir: workDir, HubGRPC: "127.0.0.1:8470", HubHTTP: "127.0.0.1:8471", HubAdmin: "127.0.0.1:8472",
		HubGossip: "127.0.0.1:8473", LeaseTTL: 10 * time.Second}
	for i, name := range []string{"us-east", "us-west", "eu-west"} {
		r := Region{Name: name, Cluster: name + "-1", SpokeHTTP: "127.0.0.1:" + strconv.Itoa(8481+i),
			EPP: fmt.Sprintf("127.0.%d.254:9002", i+1), Gateway: fmt.Sprintf("127.0.%d.254:8080", i+1), Gossip: fmt.Sprintf("127.0.%d.254:7946", i+1)}
		for j := 1; j <= 3; j++ {
			r.Endpoints = append(r.Endpoints, fmt.Sprintf("127.0.%d.%d:8000", i+1, j))
		}
		o.Regions = append(o.Regions, r)
	}
	return o
}

// Fleet is a running local fleet.
type Fleet struct {
	Opts     Options
	Hub      *Proc
	Spokes   map[string]*Proc // by cluster
	Sims     map[string]*Proc // by cluster
	Gateways map[string]*Proc // by cluster

	ca         *tlsconfig.CA
	roots      *x509.CertPool  // the fleet CA
	admin      tls.Certificate // hubctl's admin certificate
	httpClient *http.Client
	hubStarts  int
}

// EPPConfig is the Endpoint Picker configuration of every demo spoke: three objectives, one per
// priority class.
const EPPConfig = `objectives:
- {name: critical, priority: Critical}
- {name: standard, priority: Standard}
- {name: batch, priority: BestEffort}
`

// EPPConfigCriticalTTFT is EPPConfig with a latency objective (docs/epp.md) on the critical
// objective.
func EPPConfigCriticalTTFT(ttft time.Duration) string {
	return strings.Replace(EPPConfig, "{name: critical, priority: Critical}", fmt.Sprintf("{name: critical, priority: Critical, ttft: %s}", ttft), 1)
}

// validate reports what the options lack.
func (o Options) validate() error {
	var errs []error
	for flag, v := range map[string]string{"BinDir": o.BinDir, "WorkDir": o.WorkDir, "HubGRPC": o.HubGRPC, "HubAdmin": o.HubAdmin, "HubHTTP": o.HubHTTP} {
		if v == "" {
			errs = append(errs, fmt.Errorf("localfleet: %s is required", flag))
		}
	}
	return errors.Join(errs...)
}

// Start makes the fleet's CA and certificates and starts the fleet. On error everything already
// started is stopped.
func Start(ctx context.Context, o Options) (*Fleet, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	logs := filepath.Join(o.WorkDir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, err
	}
	f := &Fleet{Opts: o, Spokes: map[string]*Proc{}, Sims: map[string]*Proc{}, Gateways: map[string]*Proc{}}
	if err := f.setupPKI(); err != nil {
		return nil, err
	}
	f.httpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: f.TLSConfig()}}
	eppConfig := EPPConfig
	if o.EPPConfig != "" {
		eppConfig = o.EPPConfig
	}
	if err := os.WriteFile(f.eppConfigPath(), []byte(eppConfig), 0o644); err != nil {
		return nil, err
	}
	fail := func(err error) (*Fleet, error) {
		f.Stop()
		return nil, err
	}
	for _, r := range o.Regions {
		if len(r.Endpoints) == 0 {
			continue
		}
		args := append(append([]string{"--endpoints", strings.Join(r.Endpoints, ",")}, o.SimArgs...), r.SimArgs...)
		p, err := startIn(r.Netns, logs, "modelsim-"+r.Cluster, filepath.Join(o.BinDir, "modelsim"), args...)
		if err != nil {
			return fail(err)
		}
		f.Sims[r.Cluster] = p
	}
	if o.HubGossip != "" {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return fail(err)
		}
		if err := os.WriteFile(f.gossipKeyPath(), []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
			return fail(err)
		}
	}
	if err := f.StartHub(); err != nil {
		return fail(err)
	}
	for _, r := range o.Regions {
		if err := f.StartSpoke(r); err != nil {
			return fail(err)
		}
		if r.Gateway != "" {
			p, err := startIn(r.Netns, logs, "gateway-"+r.Cluster, filepath.Join(o.BinDir, "gateway"), "--listen", r.Gateway, "--epp", r.EPP,
				"--epp-ca-file", f.CAFile(),
				"--epp-cert-file", filepath.Join(f.gatewayClient(r), tlsconfig.CertFile), "--epp-key-file", filepath.Join(f.gatewayClient(r), tlsconfig.KeyFile))
			if err != nil {
				return fail(err)
			}
			f.Gateways[r.Cluster] = p
		}
	}
	return f, nil
}

func (f *Fleet) gossipKeyPath() string { return filepath.Join(f.Opts.WorkDir, "gossip.key") }

func (f *Fleet) eppConfigPath() string { return filepath.Join(f.Opts.WorkDir, "epp.yaml") }

// startIn starts a process, inside network namespace ns when it is not empty. `ip netns exec`
// execs the binary, so the process keeps its PID and process group.
func startIn(ns, dir, name, bin string, args ...string) (*Proc, error) {
	if ns == "" {
		return StartProc(dir, name, bin, args...)
	}
	return StartProc(dir, name, "ip", append([]string{"netns", "exec", ns, bin}, args...)...)
}

// StartIn starts a process of the fleet's in network namespace ns ("" for this one), logging to
// the fleet's log directory.
func (f *Fleet) StartIn(ns, name, bin string, args ...string) (*Proc, error) {
	return startIn(ns, filepath.Join(f.Opts.WorkDir, "logs"), name, bin, args...)
}

// StartHub (re)starts the hub on the fleet's addresses, data directory and certificates. The first
// start logs to hub.log, the n-th restart to hub-<n+1>.log.
func (f *Fleet) StartHub() error {
	o := f.Opts
	args := []string{"--grpc-address", o.HubGRPC, "--admin-address", o.HubAdmin, "--http-address", o.HubHTTP,
		"--data-dir", filepath.Join(o.WorkDir, "hub-data"), "--hub-id", "hub-0",
		"--lease-ttl", o.LeaseTTL.String(),
		// The fleet CA signs join requests; the hub serves the fleet's certificate for its addresses.
		"--pki-dir", f.pkiDir(),
		"--tls-cert-file", filepath.Join(f.hubServing(), tlsconfig.CertFile), "--tls-key-file", filepath.Join(f.hubServing(), tlsconfig.KeyFile)}
	if o.HubGossip != "" {
		args = append(args, "--gossip-address", o.HubGossip, "--gossip-key-file", f.gossipKeyPath())
	}
	args = append(args, o.HubArgs...)
	f.hubStarts++
	name := "hub"
	if f.hubStarts > 1 {
		name = fmt.Sprintf("hub-%d", f.hubStarts)
	}
	hub, err := startIn(o.HubNetns, filepath.Join(o.WorkDir, "logs"), name, filepath.Join(o.BinDir, "hub"), args...)
	if err != nil {
		return err
	}
	f.Hub = hub
	return nil
}

// PoolsFile is where a region's static pool file is written.
func (f *Fleet) PoolsFile(r Region) string {
	return filepath.Join(f.Opts.WorkDir, r.Cluster+"-pools.yaml")
}

// WritePools writes a region's pool file with the given endpoints.
func (f *Fleet) WritePools(r Region, endpoints []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "pools:\n- namespace: default\n  name: %s\n  export: true\n  targetPorts: [8000]\n  engine: vllm\n  endpoints:\n", r.pool())
	for _, e := range endpoints {
		fmt.Fprintf(&b, "  - %q\n", e)
	}
	tmp := f.PoolsFile(r) + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, f.PoolsFile(r))
}

// RemovePools leaves a region without any local pool: it only imports the fleet's.
func (f *Fleet) RemovePools(r Region) error {
	tmp := f.PoolsFile(r) + ".tmp"
	if err := os.WriteFile(tmp, []byte("pools: []\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, f.PoolsFile(r))
}

// StartSpoke (re)starts a region's spoke: its cluster certificate in its credentials directory,
// its EPP (and HTTP port) serving the fleet's certificate and asking gateways for theirs.
func (f *Fleet) StartSpoke(r Region) error {
	args := []string{"--region", r.Name, "--zone", r.Name + "-a",
		"--hub-address", f.Opts.HubGRPC, "--credentials-dir", f.spokeCredentials(r),
		"--http-address", r.SpokeHTTP,
		"--epp-address", r.EPP, "--epp-config", f.eppConfigPath(), "--epp-cert-dir", f.eppServing(r)}
	if r.EPPService != "" {
		args = append(args, "--epp-service", r.EPPService)
	} else {
		args = append(args, "--epp-pool", "default/"+r.pool())
	}
	if r.EPP != "" {
		args = append(args, "--epp-client-ca-file", f.CAFile())
	}
	if kc, ok := f.Opts.Kubeconfigs[r.Cluster]; ok {
		// One spoke per cluster: it takes its Lease in a namespace the seeded cluster has, at
		// once at start and within seconds after a restart.
		args = append(args, "--kubeconfig", kc, "--leader-elect-namespace", "default",
			"--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "1s")
	} else {
		if _, err := os.Stat(f.PoolsFile(r)); errors.Is(err, os.ErrNotExist) {
			if err := f.WritePools(r, r.Endpoints); err != nil {
				return err
			}
		}
		args = append(args, "--cluster-id", r.Cluster, "--pools-file", f.PoolsFile(r), "--pools-reload", "500ms")
	}
	if r.Gateway != "" {
		args = append(args, "--gateway-address", r.Gateway)
	}
	if f.Opts.HubGossip != "" && r.Gossip != "" {
		args = append(args, "--gossip-address", r.Gossip, "--gossip-join", f.Opts.HubGossip, "--gossip-key-file", f.gossipKeyPath())
	}
	args = append(args, r.SpokeArgs...)
	p, err := startIn(r.Netns, filepath.Join(f.Opts.WorkDir, "logs"), "spoke-"+r.Cluster, filepath.Join(f.Opts.BinDir, "spoke"), args...)
	if err != nil {
		return err
	}
	f.Spokes[r.Cluster] = p
	return nil
}

// Stop stops every process: gateways and spokes, then the hub, then the simulators.
func (f *Fleet) Stop() []error {
	var errs []error
	for _, p := range f.Gateways {
		if err := p.Stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range f.Spokes {
		if err := p.Stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if f.Hub != nil {
		if err := f.Hub.Stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range f.Sims {
		if err := p.Stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Procs returns every process of the fleet.
func (f *Fleet) Procs() []*Proc {
	var out []*Proc
	if f.Hub != nil {
		out = append(out, f.Hub)
	}
	for _, p := range f.Spokes {
		out = append(out, p)
	}
	for _, p := range f.Sims {
		out = append(out, p)
	}
	for _, p := range f.Gateways {
		out = append(out, p)
	}
	return out
}

// WaitReady waits until every region's cluster is alive at the hub and reports capacity with all
// its endpoints ready.
func (f *Fleet) WaitReady(ctx context.Context) error {
	var admin lister = hubctlIn{f}
	if f.Opts.HubNetns == "" {
		conn, err := f.DialAdmin()
		if err != nil {
			return err
		}
		defer conn.Close()
		admin = pb.NewAdminServiceClient(conn)
	}
	var last error
	for {
		last = f.ready(ctx, admin)
		if last == nil {
			return nil
		}
		for _, p := range f.Procs() {
			select {
			case <-p.Done():
				return fmt.Errorf("%s exited during start-up (%v); see %s", p.Name, p.Err(), p.LogPath)
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fleet not ready: %w", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lister is what readiness asks the hub.
type lister interface {
	ListClusters(context.Context, *pb.ListClustersRequest, ...grpc.CallOption) (*pb.ListClustersResponse, error)
	ListPools(context.Context, *pb.ListPoolsRequest, ...grpc.CallOption) (*pb.ListPoolsResponse, error)
}

// hubctlIn asks a hub in another network namespace, through hubctl run there.
type hubctlIn struct{ f *Fleet }

func (h hubctlIn) get(ctx context.Context, what string, into proto.Message) error {
	args := append([]string{"netns", "exec", h.f.Opts.HubNetns, filepath.Join(h.f.Opts.BinDir, "hubctl")}, h.f.HubctlArgs()...)
	out, err := exec.CommandContext(ctx, "ip", append(args, "get", what, "-o", "json")...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("hubctl get %s: %w: %s", what, err, strings.TrimSpace(string(ee.Stderr)))
		}
		return fmt.Errorf("hubctl get %s: %w", what, err)
	}
	return protojson.Unmarshal(out, into)
}

func (h hubctlIn) ListClusters(ctx context.Context, _ *pb.ListClustersRequest, _ ...grpc.CallOption) (*pb.ListClustersResponse, error) {
	var r pb.ListClustersResponse
	return &r, h.get(ctx, "clusters", &r)
}

func (h hubctlIn) ListPools(ctx context.Context, _ *pb.ListPoolsRequest, _ ...grpc.CallOption) (*pb.ListPoolsResponse, error) {
	var r pb.ListPoolsResponse
	return &r, h.get(ctx, "pools", &r)
}

func (f *Fleet) ready(ctx context.Context, admin lister) error {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cl, err := admin.ListClusters(rctx, &pb.ListClustersRequest{})
	if err != nil {
		return err
	}
	alive := 0
	for _, c := range cl.GetClusters() {
		if c.GetState() == pb.ClusterState_CLUSTER_STATE_ALIVE {
			alive++
		}
	}
	if alive < len(f.Opts.Regions) {
		return fmt.Errorf("%d of %d clusters alive", alive, len(f.Opts.Regions))
	}
	pools, err := admin.ListPools(rctx, &pb.ListPoolsRequest{})
	if err != nil {
		return err
	}
	for _, p := range pools.GetPools() {
		if len(p.GetMembers()) < len(f.Opts.Regions) {
			return fmt.Errorf("pool %s has %d members", p.GetPool().GetName(), len(p.GetMembers()))
		}
		for _, m := range p.GetMembers() {
			c := m.GetCapacity().GetCapacity()
			if c == nil || c.GetReadyEndpoints() == 0 || c.GetReadyEndpoints() < c.GetTotalEndpoints() {
				return fmt.Errorf("cluster %s has no full capacity report yet", m.GetClusterId())
			}
		}
	}
	if len(pools.GetPools()) == 0 {
		return errors.New("no pool exported yet")
	}
	for _, r := range f.Opts.Regions {
		if r.Gateway == "" || r.Netns != "" { // a namespace's gateway is checked by its traffic
			continue
		}
		c, err := net.DialTimeout("tcp", r.Gateway, time.Second)
		if err != nil {
			return fmt.Errorf("gateway of %s: %w", r.Cluster, err)
		}
		c.Close()
	}
	return nil
}

// Package app wires the hub binary: flags (Options), their defaults and checks (Complete,
// Validate), and the run group that owns every goroutine: etcd (embedded or external), the fleet
// view that follows the registry, the gRPC services and the HTTP endpoints for metrics and health.
//
// Transport security is set up before anything listens. The hub's CA comes from --pki-dir (made
// there at the first start, with hubctl's admin credentials beside it) or from --ca-cert-file;
// its SPKI hash is logged for spokes to pin. Every port presents one serving certificate
// (--tls-cert-file, reloaded, or issued by the CA at each start). The spokes' port
// (--grpc-address) is TLS and verifies a client certificate when one is given; the admin port
// (--admin-address) requires one; the HTTP port is HTTPS unless --insecure-http. The embedded
// etcd speaks mutual TLS on loopback; an external one is reached with etcdctl's TLS flags.
package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/rest"

	hubetcd "github.com/spillway-io/spillway/hub/etcd"
	"github.com/spillway-io/spillway/hub/kube"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/replica"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/budget"
	"github.com/spillway-io/spillway/pkg/buildinfo"
	"github.com/spillway-io/spillway/pkg/cli"
	"github.com/spillway-io/spillway/pkg/logging"
	"github.com/spillway-io/spillway/pkg/serve"
	"github.com/spillway-io/spillway/pkg/thinstream"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// etcdCheckTimeout bounds the first read of etcd at start.
const etcdCheckTimeout = 10 * time.Second

// The probe of etcd's quorum: a linearizable read every probeInterval, bounded by probeTimeout.
const (
	probeInterval = 500 * time.Millisecond
	probeTimeout  = 2 * time.Second
)

// quorumGrace is how long etcd may answer no linearizable read before /readyz says so. An etcd
// leader election answers none while it lasts: about 1.0 to 1.5 s with etcd's default election
// timeout of 1 s on an idle machine, longer on a busy one; losing the member that leads must not
// make the hub unready. A lost quorum is reported within about quorumGrace.
const quorumGrace = 3 * time.Second

// quorumFailures is how many probes in a row must fail before the view is marked incomplete. One
// slow answer is not a lost quorum: a hub whose etcd is busy (a thousand spokes connecting at
// once) answers a read in more than probeTimeout now and then, and every time the mark is lifted
// each stream sends its spoke a snapshot, which at that size slows etcd again. A failed probe
// takes probeTimeout, so a lost quorum is marked within about 3 of them.
const quorumFailures = 3

// quorum follows the probes of etcd: what /readyz says of etcd, and the view's mark, set once
// quorumFailures probes in a row failed and lifted at the first that succeeds. Probe calls
// probed from one goroutine; err is called from any.
type quorum struct {
	model interface {
		SetIncomplete(reason, message string)
		ClearIncomplete(reason string)
	}
	log *slog.Logger
	now func() time.Time

	mu       sync.Mutex
	probes   int       // probes done
	lastOK   time.Time // when the last probe that succeeded ended
	lastErr  error     // the last probe's error, nil when it succeeded
	failures int       // probes failed in a row
}

func newQuorum(model *view.Model, log *slog.Logger) *quorum {
	return &quorum{model: model, log: log, now: time.Now}
}

func (q *quorum) probed(err error) {
	q.mu.Lock()
	q.probes++
	q.lastErr = err
	if err == nil {
		q.lastOK = q.now()
	}
	q.mu.Unlock()
	if err == nil {
		q.model.ClearIncomplete(incompleteEtcd)
		if q.failures >= quorumFailures {
			q.log.Info("etcd reachable again")
		}
		q.failures = 0
		return
	}
	q.failures++
	if q.failures < quorumFailures {
		return
	}
	q.model.SetIncomplete(incompleteEtcd, err.Error())
	if q.failures == quorumFailures {
		q.log.Warn("etcd quorum lost or etcd unreachable: the view keeps its last state, marked incomplete", "err", err, "probes", q.failures)
	}
}

// readiness is what /readyz says of etcd: the last probe's error once no probe has succeeded
// for quorumGrace (or none ever has), else nil. probed is false before the first probe ended.
func (q *quorum) readiness() (probed bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.probes == 0 {
		return false, nil
	}
	if q.lastErr != nil && (q.lastOK.IsZero() || q.now().Sub(q.lastOK) >= quorumGrace) {
		return true, q.lastErr
	}
	return true, nil
}

// incompleteEtcd is the reason the view is marked incomplete with while etcd answers no
// linearizable read.
const incompleteEtcd = "etcd"

// advertiseAddress is where the other replicas reach this one's admin port: --advertise-address,
// else --admin-address's host (the host name when it is unspecified) with the port listened on.
func advertiseAddress(cfg *Config, admin net.Addr) (string, error) {
	if cfg.AdvertiseAddress != "" {
		return cfg.AdvertiseAddress, nil
	}
	host, _, err := net.SplitHostPort(cfg.AdminAddress)
	if err != nil {
		return "", fmt.Errorf("--admin-address %q: %w", cfg.AdminAddress, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if host, err = os.Hostname(); err != nil {
			return "", fmt.Errorf("--advertise-address not set and no host name: %w", err)
		}
	}
	_, port, err := net.SplitHostPort(admin.String())
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, port), nil
}

// peerDialer dials another replica's admin port with this replica's peer certificate, verifying
// the replica's serving certificate for the host dialed.
func peerDialer(pki *hubTLS) func(address string) (*grpc.ClientConn, error) {
	return func(address string) (*grpc.ClientConn, error) {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return nil, fmt.Errorf("hub replica address %q: %w", address, err)
		}
		opts := append(thinstream.DialOptions(address),
			grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.ClientConfig(pki.peer, pki.servingCAs, host))),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}))
		return grpc.NewClient("passthrough:///"+address, opts...)
	}
}

// Config is the completed, validated configuration.
type Config struct {
	Options
	Logger *slog.Logger
	// EtcdClientTLS is the TLS to an external etcd, read from EtcdTLS's files; nil for the
	// embedded etcd (it makes its own) or for https endpoints verified with the system's roots.
	EtcdClientTLS *tls.Config
	// KubeConfig reaches the hub's own cluster, with BudgetsFromCluster; nil otherwise.
	KubeConfig *rest.Config
}

// Config returns the configuration the hub runs with. It reads the external etcd's TLS files and,
// with --budgets-from-cluster, the kubeconfig, and nothing else; the hub's own TLS material is
// loaded, or made, by Run.
func (o *Options) Config() (*Config, error) {
	if err := o.Complete(); err != nil {
		return nil, err
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	log, err := logging.New(o.Log, os.Stderr)
	if err != nil {
		return nil, err
	}
	etcdTLS, err := o.EtcdTLS.Config()
	if err != nil {
		return nil, err
	}
	cfg := &Config{Options: *o, Logger: log.With("hub", o.HubID), EtcdClientTLS: etcdTLS}
	if o.BudgetsFromCluster {
		if cfg.KubeConfig, err = kube.RESTConfig(o.Kubeconfig); err != nil {
			return nil, fmt.Errorf("--budgets-from-cluster: %w", err)
		}
	}
	return cfg, nil
}

// NewCommand returns the hub's root command.
func NewCommand() *cobra.Command {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:          "hub",
		Short:        "Spillway hub: the fleet registry, import computation and fleet view for every spoke",
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.Config()
			if err != nil {
				return err
			}
			return Run(cmd.Context(), cfg)
		},
	}
	o.AddFlags(cmd.Flags())
	cmd.AddCommand(cli.VersionCommand())
	return cmd
}

// listeners are the hub's three ports.
type listeners struct {
	spokes, admin, http net.Listener
}

func listen(cfg *Config) (*listeners, error) {
	var ls listeners
	var err error
	// The spokes' sessions and the replicas' peer streams are thin streams (pkg/thinstream).
	if ls.spokes, err = thinstream.Listen(cfg.GRPCAddress); err != nil {
		return nil, fmt.Errorf("listen --grpc-address: %w", err)
	}
	if ls.admin, err = thinstream.Listen(cfg.AdminAddress); err != nil {
		ls.close()
		return nil, fmt.Errorf("listen --admin-address: %w", err)
	}
	if ls.http, err = net.Listen("tcp", cfg.HTTPAddress); err != nil {
		ls.close()
		return nil, fmt.Errorf("listen --http-address: %w", err)
	}
	return &ls, nil
}

// close closes the listeners not yet handed to a server.
func (ls *listeners) close() {
	for _, l := range []net.Listener{ls.spokes, ls.admin, ls.http} {
		if l != nil {
			l.Close()
		}
	}
}

// budgetSettle is the least time a hub that just started raises no budget ceiling
// (budget.AllocatorOptions.Settle).
const budgetSettle = 15 * time.Second

// Run runs the hub until ctx ends or a component fails.
func Run(ctx context.Context, cfg *Config) error {
	log := cfg.Logger
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildinfo.Collector("hub", buildinfo.Get()))
	pki, err := setUpTLS(cfg, reg, log)
	if err != nil {
		return err
	}

	endpoints, etcdTLS := cfg.EtcdEndpoints, cfg.EtcdClientTLS
	var etcdErr <-chan error // a fatal error of the embedded etcd; nil (never ready) for an external one
	if cfg.embedded() {
		emb, err := hubetcd.StartEmbedded(ctx, hubetcd.EmbeddedOptions{Dir: cfg.DataDir, ListenAddress: cfg.EmbeddedEtcdAddr, QuotaBytes: cfg.EtcdQuotaBytes})
		if err != nil {
			return err
		}
		defer emb.Close()
		endpoints, etcdTLS = []string{emb.Endpoint}, emb.ClientTLS
		etcdErr = emb.Err()
		log.Info("embedded etcd started", "dataDir", cfg.DataDir, "endpoint", emb.Endpoint, "quotaBytes", cfg.EtcdQuotaBytes)
	}
	cli, err := hubetcd.Dial(endpoints, etcdTLS)
	if err != nil {
		return err
	}
	defer cli.Close()
	if err := hubetcd.Check(ctx, cli, etcdTLS, etcdCheckTimeout); err != nil {
		return err
	}

	model := view.New()
	store := registry.New(cli, registry.Options{Prefix: cfg.EtcdPrefix, LeaseTTL: cfg.LeaseTTL, HubIncarnation: model.Incarnation()})
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "spillway_hub_registry_revision",
		Help: "The etcd revision the hub's fleet view reflects: its rate is the registry's write rate.",
	}, func() float64 { return float64(model.Revision()) }), view.NewFleetCollector(model))
	// Budgets: declared in --budgets-file, in the hub's cluster (--budgets-from-cluster), or
	// none (then spokes enforce nothing). Either source is read before the hub serves.
	var budgets *budget.Allocator
	var tokenBudgets *kube.Watcher
	if cfg.BudgetsFile != "" || cfg.BudgetsFromCluster {
		// No ceiling is raised until the spokes that held ceilings from the hub before this one
		// started have reported again: within their reconnect backoff (at most 10 s) and a
		// report interval.
		budgets = budget.NewAllocator(budget.AllocatorOptions{Settle: max(2*cfg.BudgetReportInterval, budgetSettle)})
	}
	switch {
	case cfg.BudgetsFile != "":
		if err := loadBudgets(cfg.BudgetsFile, cfg.TenantHeader, budgets); err != nil {
			return err
		}
	case cfg.BudgetsFromCluster:
		if tokenBudgets, err = startTokenBudgets(ctx, cfg, budgets, log.With("component", "hub-budgets")); err != nil {
			return err
		}
		defer tokenBudgets.Close()
	}
	srv := server.New(store, model, server.Options{
		Budgets:              budgets,
		BudgetReportInterval: cfg.BudgetReportInterval,
		HubID:                cfg.HubID,
		Version:              buildinfo.Get().String(),
		MinReportInterval:    cfg.MinReportInterval,
		CapacityHeartbeat:    cfg.CapacityHeartbeat,
		ViewInterval:         cfg.ViewInterval,
		Logger:               log,
		Registerer:           reg,
		TrustDomain:          cfg.TrustDomain,
		AdminUsers:           cfg.AdminUsers,
		CA:                   pki.ca,
		CABundle:             pki.bundle,
		ClusterCertValidity:  cfg.ClusterCertValidity,
		Limits: server.Limits{
			MaxClusters:             cfg.MaxClusters,
			MaxExportsPerCluster:    cfg.MaxExportsPerCluster,
			MaxConcurrentStreams:    cfg.MaxConcurrentStreams,
			MaxSessionOpens:         cfg.MaxSessionOpens,
			SessionOpenWait:         cfg.SessionOpenWait,
			AllowedExportNamespaces: cfg.AllowedExportNamespaces,
			DeniedExportNamespaces:  cfg.DeniedExportNamespaces,
		},
	})

	ls, err := listen(cfg)
	if err != nil {
		return err
	}
	hs := health.NewServer()
	// The spokes' port: TLS always; a client certificate is verified when given (against the
	// client CA bundle as it is at each handshake), and the server's interceptors decide which
	// calls need one.
	spokes := grpc.NewServer(append(srv.SpokeServerOptions(),
		grpc.Creds(credentials.NewTLS(tlsconfig.ServerConfig(pki.serving, pki.clientCAs, false))))...)
	srv.RegisterSpokeServices(spokes)
	healthpb.RegisterHealthServer(spokes, hs)
	// The admin port: mutual TLS; a client without a certificate of the client CA gets nothing.
	admin := grpc.NewServer(append(srv.AdminServerOptions(),
		grpc.Creds(credentials.NewTLS(tlsconfig.ServerConfig(pki.serving, pki.clientCAs, true))))...)
	srv.RegisterAdminServices(admin)
	healthpb.RegisterHealthServer(admin, hs)

	httpL := ls.http
	if cfg.InsecureHTTP {
		log.Warn("serving /metrics, /healthz and /readyz in plaintext (--insecure-http)", "http", ls.http.Addr().String())
	} else {
		httpL = tls.NewListener(ls.http, tlsconfig.ServerConfig(pki.serving, nil, false))
	}

	// /readyz follows the probes of etcd once there is one; before, it reads etcd itself.
	etcdQuorum := newQuorum(model, log)
	ready := func() error {
		probed, err := etcdQuorum.readiness()
		if !probed {
			c, cancel := context.WithTimeout(context.Background(), probeTimeout)
			defer cancel()
			if _, gerr := cli.Get(c, "health", clientv3.WithCountOnly()); gerr != nil {
				err = fmt.Errorf("%w: %w", replica.ErrQuorumLost, gerr)
			}
		}
		if err != nil {
			return err
		}
		return srv.Ready()
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "spillway_hub_ready",
		Help: "1 when the replica is ready (what /readyz answers 200 to: etcd has quorum and the fleet view is loaded), else 0.",
	}, func() float64 {
		if ready() != nil {
			return 0
		}
		return 1
	}))
	advertise, err := advertiseAddress(cfg, ls.admin.Addr())
	if err != nil {
		ls.close()
		return err
	}
	elector := replica.New(cli, store, replica.Options{
		HubID: cfg.HubID, Incarnation: model.Incarnation(), AdvertiseAddress: advertise,
		LeaseTTL: cfg.LeaderLeaseTTL, Logger: log, Registerer: reg,
	})

	member, err := cfg.Gossip.Start("hub/"+cfg.HubID, log, reg)
	if err != nil {
		ls.close()
		return err
	}
	if member != nil {
		defer member.Close()
		srv.SetGossip(member)
	}
	log.Info("hub started", "grpc", ls.spokes.Addr().String(), "admin", ls.admin.Addr().String(),
		"http", ls.http.Addr().String(), "gossip", cfg.Gossip.Address, "advertise", advertise, "incarnation", model.Incarnation())
	g, gctx := errgroup.WithContext(ctx)
	if member != nil {
		g.Go(func() error { return member.Run(gctx) })
	}
	for _, run := range pki.runners {
		g.Go(func() error { return run(gctx) })
	}
	g.Go(func() error { return model.Follow(gctx, store, log.With("component", "view")) })
	g.Go(func() error { return model.Batch(gctx) })
	g.Go(func() error { return srv.Run(gctx) })
	lead := srv.Lead
	switch {
	case cfg.BudgetsFile != "":
		g.Go(func() error {
			return followBudgets(gctx, cfg.BudgetsFile, cfg.TenantHeader, budgets, log.With("component", "hub-budgets"))
		})
	case tokenBudgets != nil:
		g.Go(func() error { return tokenBudgets.Run(gctx) })
		// The TokenBudgets' status is written once for the fleet, by the leader.
		lead = func(ctx context.Context) error {
			lg, lctx := errgroup.WithContext(ctx)
			lg.Go(func() error { return srv.Lead(lctx) })
			lg.Go(func() error { return tokenBudgets.Lead(lctx) })
			return lg.Wait()
		}
	}
	g.Go(func() error { return srv.RunStartGrace(gctx) })
	g.Go(func() error { return elector.Run(gctx, lead) })
	g.Go(func() error {
		return replica.Probe(gctx, cli, cfg.EtcdPrefix+"health", probeInterval, probeTimeout, etcdQuorum.probed)
	})
	// An embedded etcd serves this process alone: there are no other replicas to hear from.
	if pki.peer != nil && !cfg.embedded() {
		g.Go(func() error {
			return srv.RunPeers(gctx, server.PeerOptions{Hubs: store, Dial: peerDialer(pki)})
		})
	}
	g.Go(func() error { return serve.GRPC(gctx, ls.spokes, spokes) })
	g.Go(func() error { return serve.GRPC(gctx, ls.admin, admin) })
	mux := serve.HTTPMux(reg, ready)
	if cfg.EnablePprof {
		serve.Pprof(mux)
	}
	g.Go(func() error { return serve.HTTP(gctx, httpL, mux) })
	g.Go(func() error {
		select {
		case <-gctx.Done():
		case err := <-etcdErr:
			hs.Shutdown()
			return fmt.Errorf("embedded etcd: %w", err)
		}
		hs.Shutdown()
		return nil
	})
	err = g.Wait()
	log.Info("hub stopped")
	return err
}

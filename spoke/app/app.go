// Package app wires the spoke binary: flags (Options), their defaults and checks, and the run
// group that owns every goroutine: the pool source, the metrics scraper, the hub client, the loop
// that turns local pools into exports and capacity reports, the Endpoint Picker's gRPC service,
// and the HTTP endpoints.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/spillway-io/spillway/pkg/capacity"
	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/gossip"
	"github.com/spillway-io/spillway/pkg/logging"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/pkg/serve"
	"github.com/spillway-io/spillway/pkg/spill"
	"github.com/spillway-io/spillway/spoke/hubclient"
	"github.com/spillway-io/spillway/spoke/kube"
	"github.com/spillway-io/spillway/spoke/source"
)

// Version is the spoke's version, reported to the hub.
var Version = "dev"

// Options are what the operator sets on the command line.
type Options struct {
	ClusterID      string
	Region         string
	Zone           string
	ClusterSet     string
	GatewayAddress string
	HubAddress     string
	PoolsFile      string
	PoolsReload    time.Duration
	// Kubernetes source (used when PoolsFile is empty).
	Kubeconfig       string
	ControllerName   string
	CreateNamespaces bool
	GatewayService   string
	// RemoteGateways override where remote clusters' gateways are reached (cluster ID → host:port).
	RemoteGateways map[string]string
	HTTPAddress    string
	ScrapeInterval time.Duration
	CapacityPeriod time.Duration
	Thresholds     capacity.Thresholds
	EPPAddress     string
	EPPPool        string
	EPPConfig      string
	// EPPStreamWorkers is how many goroutines serve ext_proc streams (0: one new per stream).
	EPPStreamWorkers int
	EnablePprof      bool
	// Spill enables federated routing in the EPP (needs a hub).
	Spill bool
	// ReportEndpoints adds per-endpoint load to capacity reports, for remote clusters whose
	// spill policy uses Endpoint Mode (flat networks).
	ReportEndpoints bool
	Gossip          gossip.Flags
	Log             logging.Options
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		HubAddress:       "127.0.0.1:8470",
		PoolsReload:      2 * time.Second,
		ControllerName:   kube.DefaultControllerName,
		Spill:            true,
		HTTPAddress:      ":8481",
		ScrapeInterval:   50 * time.Millisecond,
		CapacityPeriod:   100 * time.Millisecond,
		Thresholds:       capacity.DefaultThresholds(),
		EPPAddress:       ":9002",
		EPPStreamWorkers: epp.DefaultStreamWorkers,
		Log:              logging.Options{Level: "info", Format: "text"},
	}
}

// AddFlags binds the options to flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.ClusterID, "cluster-id", o.ClusterID, "this cluster's ID in the ClusterSet (default: the ClusterProperty cluster.clusterset.k8s.io)")
	fs.StringVar(&o.Region, "region", o.Region, "this cluster's region (required)")
	fs.StringVar(&o.Zone, "zone", o.Zone, "this cluster's zone")
	fs.StringVar(&o.ClusterSet, "cluster-set", o.ClusterSet, "the ClusterSet this cluster belongs to (default: the ClusterProperty clusterset.k8s.io)")
	fs.StringVar(&o.GatewayAddress, "gateway-address", o.GatewayAddress, "host:port where other clusters reach this cluster's inference gateway")
	fs.StringVar(&o.HubAddress, "hub-address", o.HubAddress, "host:port of the hub's gRPC address (empty: standalone, no hub)")
	fs.StringVar(&o.PoolsFile, "pools-file", o.PoolsFile, "YAML file listing the cluster's pools and endpoints (the static source; empty: watch Kubernetes)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig of the cluster (default: $KUBECONFIG, else the in-cluster service account)")
	fs.StringVar(&o.ControllerName, "controller-name", o.ControllerName, "name written into InferencePoolImport and InferencePool status")
	fs.BoolVar(&o.CreateNamespaces, "create-namespaces", o.CreateNamespaces, "create a missing namespace for an InferencePoolImport (otherwise report NamespaceNotFound)")
	fs.StringToStringVar(&o.RemoteGateways, "remote-gateway", o.RemoteGateways, "cluster-id=host:port: reach that cluster's gateway at this address instead of the one it registered (a proxy, a private link); repeatable")
	fs.StringVar(&o.GatewayService, "gateway-service", o.GatewayService, "namespace/name of the inference gateway Service to export with an MCS-API ServiceExport")
	fs.DurationVar(&o.PoolsReload, "pools-reload", o.PoolsReload, "how often to check --pools-file for changes (0: never)")
	fs.StringVar(&o.HTTPAddress, "http-address", o.HTTPAddress, "host:port of /metrics, /healthz and /readyz")
	fs.DurationVar(&o.ScrapeInterval, "scrape-interval", o.ScrapeInterval, "how often each endpoint's /metrics is read")
	fs.DurationVar(&o.CapacityPeriod, "capacity-period", o.CapacityPeriod, "how often pool capacity is recomputed for the hub")
	fs.IntVar(&o.Thresholds.QueueDepth, "saturation-queue-depth", o.Thresholds.QueueDepth, "waiting queue at which an endpoint has no headroom")
	fs.Float64Var(&o.Thresholds.KVCacheUtilization, "saturation-kv-cache", o.Thresholds.KVCacheUtilization, "KV-cache use (0..1) at which an endpoint has no headroom")
	fs.DurationVar(&o.Thresholds.Staleness, "metrics-staleness", o.Thresholds.Staleness, "age at which an endpoint's metrics count as stale (saturated)")
	fs.StringVar(&o.EPPAddress, "epp-address", o.EPPAddress, "host:port of the Endpoint Picker's ext_proc gRPC service (empty: no EPP)")
	fs.StringVar(&o.EPPPool, "epp-pool", o.EPPPool, "namespace/name of the local pool the EPP serves (default: the first pool of the source)")
	fs.StringVar(&o.EPPConfig, "epp-config", o.EPPConfig, "YAML file of the EPP's scorers, objectives and model routing (see docs/epp.md)")
	fs.IntVar(&o.EPPStreamWorkers, "epp-stream-workers", o.EPPStreamWorkers, "goroutines kept to serve ext_proc streams, so that a request neither starts one nor grows its stack (0: a new goroutine per stream)")
	fs.BoolVar(&o.Spill, "spill", o.Spill, "send eligible requests to other clusters when the local pool is saturated or empty (federated routing; needs --hub-address)")
	fs.BoolVar(&o.ReportEndpoints, "report-endpoints", o.ReportEndpoints, "send per-endpoint load with capacity reports, for remote clusters that spill in Endpoint Mode (flat networks)")
	o.Gossip.AddFlags(fs)
	fs.BoolVar(&o.EnablePprof, "enable-pprof", o.EnablePprof, "serve Go profiles at /debug/pprof/ on --http-address")
	fs.StringVar(&o.Log.Level, "log-level", o.Log.Level, "debug, info, warn or error")
	fs.StringVar(&o.Log.Format, "log-format", o.Log.Format, "text or json")
}

// Complete fills in derived defaults.
func (o *Options) Complete() error { return nil }

// Validate checks the options and names every problem.
func (o *Options) Validate() error {
	var errs []error
	if o.ClusterID == "" && o.PoolsFile != "" {
		errs = append(errs, errors.New("--cluster-id is required with --pools-file"))
	}
	if o.Region == "" {
		errs = append(errs, errors.New("--region is required"))
	}
	if o.PoolsFile == "" && o.EPPAddress != "" && o.EPPPool == "" {
		errs = append(errs, errors.New("--epp-pool is required with the Kubernetes source (or set --epp-address to empty)"))
	}
	for id, addr := range o.RemoteGateways {
		if _, _, err := net.SplitHostPort(addr); err != nil || id == "" {
			errs = append(errs, fmt.Errorf("--remote-gateway %s=%s: want cluster-id=host:port", id, addr))
		}
	}
	if o.GatewayService != "" {
		if ns, name, ok := strings.Cut(o.GatewayService, "/"); !ok || ns == "" || name == "" {
			errs = append(errs, fmt.Errorf("--gateway-service %q: want namespace/name", o.GatewayService))
		}
	}
	if o.ControllerName == "" || !strings.Contains(o.ControllerName, "/") {
		errs = append(errs, fmt.Errorf("--controller-name %q: want domain/path", o.ControllerName))
	}
	if _, _, err := net.SplitHostPort(o.HTTPAddress); err != nil {
		errs = append(errs, fmt.Errorf("--http-address %q: want host:port", o.HTTPAddress))
	}
	if _, _, err := net.SplitHostPort(o.HubAddress); err != nil && o.HubAddress != "" {
		errs = append(errs, fmt.Errorf("--hub-address %q: want host:port", o.HubAddress))
	}
	if o.EPPAddress != "" {
		if _, _, err := net.SplitHostPort(o.EPPAddress); err != nil {
			errs = append(errs, fmt.Errorf("--epp-address %q: want host:port", o.EPPAddress))
		}
	}
	if o.EPPStreamWorkers < 0 || o.EPPStreamWorkers > 1<<16 {
		errs = append(errs, fmt.Errorf("--epp-stream-workers %d: want 0..65536", o.EPPStreamWorkers))
	}
	if o.EPPPool != "" {
		if ns, name, ok := strings.Cut(o.EPPPool, "/"); !ok || ns == "" || name == "" {
			errs = append(errs, fmt.Errorf("--epp-pool %q: want namespace/name", o.EPPPool))
		}
	}
	if o.GatewayAddress != "" {
		if _, _, err := net.SplitHostPort(o.GatewayAddress); err != nil {
			errs = append(errs, fmt.Errorf("--gateway-address %q: want host:port", o.GatewayAddress))
		}
	}
	if o.ScrapeInterval <= 0 || o.CapacityPeriod <= 0 {
		errs = append(errs, errors.New("--scrape-interval and --capacity-period must be positive"))
	}
	if o.Thresholds.Staleness < o.ScrapeInterval {
		errs = append(errs, fmt.Errorf("--metrics-staleness %s is shorter than --scrape-interval %s: every endpoint would look stale", o.Thresholds.Staleness, o.ScrapeInterval))
	}
	if o.Thresholds.QueueDepth < 1 || !(o.Thresholds.KVCacheUtilization > 0 && o.Thresholds.KVCacheUtilization <= 1) {
		errs = append(errs, errors.New("--saturation-queue-depth must be at least 1 and --saturation-kv-cache in (0, 1]"))
	}
	errs = append(errs, o.Log.Validate(), o.Gossip.Validate())
	return errors.Join(errs...)
}

// Config is the completed, validated configuration.
type Config struct {
	Options
	Logger *slog.Logger
	// Source is the static file source; nil with the Kubernetes source, which Run builds on
	// KubeConfig because it needs the hub client.
	Source     source.Source
	KubeConfig *rest.Config
	// EPP is the Endpoint Picker's configuration; nil when --epp-address is empty.
	EPP *epp.Settings
	// EPPPoolRef is the pool the EPP serves.
	EPPPoolRef fleet.PoolRef
}

// Config returns the configuration the spoke runs with.
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
	cfg := &Config{Options: *o}
	var firstPool []source.Pool
	if o.PoolsFile != "" {
		src, err := source.NewStatic(o.PoolsFile, o.PoolsReload, log.With("component", "static-source", "cluster", o.ClusterID))
		if err != nil {
			return nil, err
		}
		cfg.Source, firstPool = src, src.Pools()
	} else if err := cfg.completeKube(); err != nil {
		return nil, err
	}
	cfg.Logger = log.With("cluster", cfg.ClusterID)
	if o.EPPAddress != "" {
		settings := epp.DefaultSettings()
		if o.EPPConfig != "" {
			data, err := os.ReadFile(o.EPPConfig)
			if err != nil {
				return nil, fmt.Errorf("--epp-config: %w", err)
			}
			if settings, err = epp.ParseConfig(data); err != nil {
				return nil, fmt.Errorf("--epp-config %s: %w", o.EPPConfig, err)
			}
		}
		if settings.ThresholdsSet {
			cfg.Thresholds = settings.Thresholds // one saturation definition for admission and reports
		} else {
			settings.Thresholds = o.Thresholds
		}
		cfg.EPP = &settings
		if ns, name, ok := strings.Cut(o.EPPPool, "/"); ok {
			cfg.EPPPoolRef = fleet.PoolRef{Namespace: ns, Name: name}
		} else if len(firstPool) > 0 {
			cfg.EPPPoolRef = firstPool[0].Ref
		} else {
			return nil, errors.New("--epp-pool is not set and the source has no pool")
		}
	}
	return cfg, nil
}

// completeKube loads the cluster's API configuration and identity: the ClusterProperty objects
// of KEP-2149 name the cluster and its ClusterSet; the flags are the fallback and must agree.
func (c *Config) completeKube() error {
	rc, err := kube.RESTConfig(c.Kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, err := kube.ReadIdentity(ctx, rc)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		flag, property string
		value          *string
		found          string
	}{
		{"--cluster-id", kube.PropertyClusterID, &c.ClusterID, id.ClusterID},
		{"--cluster-set", kube.PropertyClusterSet, &c.ClusterSet, id.ClusterSet},
	} {
		switch {
		case f.found == "":
		case *f.value == "":
			*f.value = f.found
		case *f.value != f.found:
			return fmt.Errorf("%s %q disagrees with the ClusterProperty %s (%q)", f.flag, *f.value, f.property, f.found)
		}
	}
	if c.ClusterID == "" {
		return fmt.Errorf("no cluster ID: create the ClusterProperty %s or set --cluster-id", kube.PropertyClusterID)
	}
	c.KubeConfig = rc
	return nil
}

// NewCommand returns the spoke's root command.
func NewCommand() *cobra.Command {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:          "spoke",
		Short:        "Spillway spoke: exports this cluster's pools to the hub and keeps its fleet view",
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
	return cmd
}

// Run runs the spoke until ctx ends or a component fails.
func Run(ctx context.Context, cfg *Config) error {
	log := cfg.Logger
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := newMetrics(reg)
	scraper := modelmetrics.NewScraper(modelmetrics.ScraperOptions{Interval: cfg.ScrapeInterval})
	client := hubclient.New(hubclient.Options{
		Cluster: fleet.ClusterInfo{
			ID:             cfg.ClusterID,
			Region:         cfg.Region,
			Zone:           cfg.Zone,
			GatewayAddress: cfg.GatewayAddress,
			Version:        Version,
			ClusterSet:     cfg.ClusterSet,
		},
		HubAddress: cfg.HubAddress,
		Logger:     log,
		Registerer: reg,
	})
	// Federated routing: the EPP's pool gets a spill decision fed with the fleet view.
	var decider *spill.Decider
	rtt := newRTTProber(cfg.ClusterID, time.Second)
	rem := &remotes{self: cfg.ClusterID, pool: cfg.EPPPoolRef, view: client.View(), rtt: rtt, now: time.Now, overrides: cfg.RemoteGateways}
	if cfg.EPP != nil && cfg.Spill && cfg.HubAddress != "" {
		var err error
		if decider, err = spill.New(cfg.EPP.Spill, rem.candidates); err != nil {
			return fmt.Errorf("spill policy: %w", err)
		}
	}
	member, err := cfg.Gossip.Start(cfg.ClusterID, log)
	if err != nil {
		return err
	}
	if member != nil {
		defer member.Close()
		rem.live = member
	}
	var ctrl *kube.Controller
	if cfg.KubeConfig != nil {
		klog.SetSlogLogger(log.With("component", "client-go")) // one log stream, one format
		ko := kube.Options{
			Config:           cfg.KubeConfig,
			ClusterID:        cfg.ClusterID,
			ControllerName:   cfg.ControllerName,
			CreateNamespaces: cfg.CreateNamespaces,
			Logger:           log,
		}
		if ns, name, ok := strings.Cut(cfg.GatewayService, "/"); ok {
			ko.GatewayService = types.NamespacedName{Namespace: ns, Name: name}
		}
		if cfg.HubAddress != "" {
			ko.View, ko.Reporter = client.View(), client
		}
		if decider != nil {
			ko.Spill, ko.SpillPool, ko.DefaultSpillPolicy = decider, cfg.EPPPoolRef, cfg.EPP.Spill
		}
		var err error
		if ctrl, err = kube.New(ko); err != nil {
			return err
		}
		cfg.Source = ctrl
		rem.gateways = ctrl
	}
	ds := newDatastore(scraper)
	var picker *epp.Server
	var eppL net.Listener
	var eppGRPC *grpc.Server
	if cfg.EPP != nil {
		var err error
		var objs epp.Objectives
		if ctrl != nil {
			objs = clusterObjectives{ctrl: ctrl, pool: cfg.EPPPoolRef, file: cfg.EPP.Objectives}
		}
		picker, err = epp.New(epp.Options{Pool: cfg.EPPPoolRef, Settings: *cfg.EPP, Datastore: ds, Objectives: objs,
			Spill: decider, ClusterID: cfg.ClusterID, Logger: log, Registerer: reg})
		if err != nil {
			return err
		}
		if eppL, err = net.Listen("tcp", cfg.EPPAddress); err != nil {
			return fmt.Errorf("listen --epp-address: %w", err)
		}
		eppGRPC = grpc.NewServer(epp.GRPCServerOptions(cfg.EPPStreamWorkers)...)
		extprocv3.RegisterExternalProcessorServer(eppGRPC, picker)
		hs := health.NewServer()
		for _, svc := range []string{"liveness", "readiness", extprocv3.ExternalProcessor_ServiceDesc.ServiceName} {
			hs.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
		}
		healthpb.RegisterHealthServer(eppGRPC, hs)
		defer hs.Shutdown()
	}
	httpL, err := net.Listen("tcp", cfg.HTTPAddress)
	if err != nil {
		if eppL != nil {
			eppL.Close()
		}
		return fmt.Errorf("listen --http-address: %w", err)
	}
	log.Info("spoke started", "region", cfg.Region, "hub", cfg.HubAddress, "http", httpL.Addr().String(), "epp", cfg.EPPAddress, "eppPool", cfg.EPPPoolRef.String())
	g, gctx := errgroup.WithContext(ctx)
	if eppGRPC != nil {
		g.Go(func() error { return serve.GRPC(gctx, eppL, eppGRPC) })
	}
	g.Go(func() error { return cfg.Source.Run(gctx) })
	g.Go(func() error { return scraper.Run(gctx) })
	if decider != nil {
		g.Go(func() error { return rtt.Run(gctx) })
	}
	if member != nil {
		g.Go(func() error { return member.Run(gctx) })
	}
	if cfg.HubAddress != "" {
		g.Go(func() error { return client.Run(gctx) })
	}
	g.Go(func() error { return reconcile(gctx, cfg, scraper, client, ds, picker, decider, m) })
	var ready serve.ReadyFunc
	if ctrl != nil {
		ready = ctrl.Ready
	}
	mux := serve.HTTPMux(reg, ready)
	if decider != nil {
		mux.Handle("/spill", spillHandler(decider, rem))
	}
	if cfg.EnablePprof {
		serve.Pprof(mux)
	}
	g.Go(func() error { return serve.HTTP(gctx, httpL, mux) })
	err = g.Wait()
	log.Info("spoke stopped")
	return err
}

// clusterObjectives resolves objective names from the cluster's InferenceObjectives of the
// EPP's pool first, then from the EPP configuration file (where Critical, Standard and
// BestEffort are defined).
type clusterObjectives struct {
	ctrl *kube.Controller
	pool fleet.PoolRef
	file map[string]int
}

func (o clusterObjectives) Priority(name string) (int, bool) {
	if p, ok := o.ctrl.Priority(o.pool, name); ok {
		return p, true
	}
	p, ok := o.file[name]
	return p, ok
}

// reconcile feeds local pools to the scraper and the hub client, and recomputes capacity.
func reconcile(ctx context.Context, cfg *Config, scraper *modelmetrics.Scraper, client *hubclient.Client,
	ds *datastore, picker *epp.Server, decider *spill.Decider, m *metrics) error {
	tick := time.NewTicker(cfg.CapacityPeriod)
	defer tick.Stop()
	var pools []source.Pool
	apply := func() {
		pools = cfg.Source.Pools()
		var targets []modelmetrics.Target
		refs := make([]fleet.PoolRef, 0, len(pools))
		for _, p := range pools {
			refs = append(refs, p.Ref)
			for _, e := range p.Endpoints {
				targets = append(targets, modelmetrics.Target{Address: e.Address, Engine: e.Engine})
			}
		}
		scraper.SetTargets(targets)
		for _, addr := range ds.set(pools) {
			if picker != nil {
				picker.Scheduler().Prefix().Forget(addr)
			}
		}
		client.SetExports(source.Exports(pools))
		if cfg.EPP != nil && !slices.Contains(refs, cfg.EPPPoolRef) {
			refs = append(refs, cfg.EPPPoolRef) // an imported pool the EPP serves: remote capacity needed
		}
		client.SetInterest(refs)
	}
	changed := cfg.Source.Changed()
	apply()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			changed = cfg.Source.Changed()
			apply()
		case <-tick.C:
			now := time.Now()
			caps := make([]fleet.PoolCapacity, 0, len(pools))
			eppLocal := false
			var ready, stale int
			for _, p := range pools {
				eps := make([]capacity.Endpoint, 0, len(p.Endpoints))
				for _, e := range p.Endpoints {
					s, _ := scraper.Sample(e.Address)
					ce := capacity.Endpoint{Address: e.Address, Metrics: s.Metrics, ScrapedAt: s.ScrapedAt}
					if cfg.Thresholds.Fresh(ce, now) {
						ready++
					} else {
						stale++
					}
					eps = append(eps, ce)
				}
				c := capacity.Aggregate(p.Ref, eps, now, cfg.Thresholds)
				if cfg.ReportEndpoints {
					c.Endpoints = capacity.EndpointDetail(eps, now, cfg.Thresholds)
				}
				if picker != nil && p.Ref == cfg.EPPPoolRef {
					c.AdmittedTotal, c.ShedTotal = picker.Counts()
					c.SpilledTotal = picker.Spilled()
					eppLocal = true
					if decider != nil {
						decider.ObserveLocal(spill.Local{ReadyEndpoints: c.ReadyEndpoints, QueueDepth: c.QueueDepth, Saturation: c.Saturation, Saturated: c.Saturated})
						st := decider.State()
						c.Spilling, c.SpillTarget, c.SpillTargetRegion = st.Spilling, st.LastTarget, st.LastRegion
					}
				}
				caps = append(caps, c)
			}
			if decider != nil && !eppLocal {
				decider.ObserveLocal(spill.Local{ImportOnly: true}) // only an import here: every request goes
			}
			m.endpoints.WithLabelValues("fresh").Set(float64(ready))
			m.endpoints.WithLabelValues("stale").Set(float64(stale))
			client.SetCapacity(caps)
		}
	}
}

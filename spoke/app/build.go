package app

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/spillway-io/spillway/pkg/budget"
	"github.com/spillway-io/spillway/pkg/buildinfo"
	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	"github.com/spillway-io/spillway/pkg/gossip"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/pkg/serve"
	"github.com/spillway-io/spillway/pkg/spill"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
	"github.com/spillway-io/spillway/spoke/hubclient"
	"github.com/spillway-io/spillway/spoke/join"
	"github.com/spillway-io/spillway/spoke/kube"
	"github.com/spillway-io/spillway/spoke/report"
	"github.com/spillway-io/spillway/spoke/rttprobe"
	"github.com/spillway-io/spillway/spoke/source"
)

// spoke holds the components Run's group runs. The optional ones are nil when off.
type spoke struct {
	cfg     *Config
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics
	scraper *modelmetrics.Scraper
	gpus    *modelmetrics.GPUScraper // --dcgm-exporters
	client  *hubclient.Client
	// budgets is the ledger of the fleet's token budgets (with a hub).
	budgets *budget.Ledger
	source  source.Source
	ds      *datastore
	report  *report.Loop

	hubKP   *tlsconfig.KeyPair // --hub-address: the cluster's certificate
	hubCAs  *tlsconfig.CAPool  // --hub-address: the hub's CA bundle
	renewer *join.Renewer      // --hub-address, with joined credentials

	servingKP      *tlsconfig.KeyPair // unless both the EPP and HTTP serve plaintext
	servingReloads bool               // --epp-cert-dir
	eppClientCAs   *tlsconfig.CAPool  // --epp-client-ca-file

	member   *gossip.Member           // --gossip-address
	rtt      *rttprobe.Prober         // --spill
	gateways *controllerGateways      // --spill: where remote clusters' gateways are
	ctrl     *kube.Controller         // the Kubernetes source
	elector  *kube.Elector            // the Kubernetes source with --leader-elect
	tracing  *sdktrace.TracerProvider // --tracing-endpoint
	tracer   trace.Tracer             // --tracing-endpoint

	// The EPPs (--epp-address): primary is the one pool's with --epp-pool (nil with
	// --epp-service, whose pools' EPPs come and go in epps while the spoke runs).
	eppMetrics *epp.Metrics
	epps       *eppSet
	primary    *poolEPP
}

// build builds the components in dependency order. The spoke it returns, even with an error,
// must be closed.
func build(cfg *Config) (*spoke, error) {
	s := &spoke{cfg: cfg, log: cfg.Logger.With("cluster", cfg.ClusterID), reg: prometheus.NewRegistry(), source: cfg.Source}
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildinfo.Collector("spoke", buildinfo.Get()))
	s.metrics = newMetrics(s.reg)
	s.scraper = modelmetrics.NewScraper(modelmetrics.ScraperOptions{Interval: cfg.ScrapeInterval, AllFamilies: cfg.ScrapeAllFamilies, Registerer: s.reg, Logger: s.log.With("component", "scraper")})
	if err := s.loadHubCredentials(); err != nil {
		return s, err
	}
	if cfg.HubAddress != "" {
		// The fleet's token budgets, as the hub declares and divides them (docs/budgets.md).
		s.budgets = budget.NewLedger(budget.LedgerOptions{})
		s.reg.MustRegister(epp.NewBudgetCollector(s.budgets))
	}
	s.client = s.newHubClient()
	s.ds = newDatastore(s.scraper)
	if len(cfg.DCGMExporters) > 0 {
		s.gpus = modelmetrics.NewGPUScraper(modelmetrics.GPUScraperOptions{Exporters: cfg.DCGMExporters, Interval: cfg.DCGMInterval,
			Logger: s.log.With("component", "gpu-scraper"), Registerer: s.reg})
		s.ds.gpu = s.gpus.Pod
	}
	s.gateways = &controllerGateways{}
	s.epps = newEPPSet(cfg.PrefixSketch && cfg.HubAddress != "")
	for _, step := range []func() error{
		s.buildServing,
		s.startGossip,
		s.buildSpill,
		s.buildController,
		s.buildElector,
		s.buildEPP,
		s.buildAffinity,
	} {
		if err := step(); err != nil {
			return s, err
		}
	}
	s.report = s.newReport()
	return s, nil
}

func (s *spoke) newHubClient() *hubclient.Client {
	o := hubclient.Options{
		Cluster: fleet.ClusterInfo{
			ID:             s.cfg.ClusterID,
			Region:         s.cfg.Region,
			Zone:           s.cfg.Zone,
			Labels:         s.cfg.ClusterLabels,
			GatewayAddress: s.cfg.GatewayAddress,
			Version:        Version,
			ClusterSet:     s.cfg.ClusterSet,
		},
		HubAddress: s.cfg.HubAddress,
		TLSFor:     s.hubTLSFor(),
		// An elected replica starts as an observer: the leader switches its own to a full
		// session (lead).
		Observer:   s.elected(),
		Explain:    s.explain,
		Logger:     s.log,
		Registerer: s.reg,
	}
	if s.budgets != nil {
		o.Budgets = s.budgets
	}
	return hubclient.New(o)
}

// elected reports whether the replicas elect their leader: the Kubernetes source with
// --leader-elect.
func (s *spoke) elected() bool {
	return s.cfg.KubeConfig != nil && s.cfg.LeaderElection.Enabled
}

func (s *spoke) startGossip() error {
	m, err := s.cfg.Gossip.Start(s.cfg.ClusterID, s.log, s.reg)
	s.member = m
	return err
}

// buildSpill builds what federated routing shares between the EPPs' pools: the RTT prober of
// the remote gateways. Each pool's EPP has its remote candidates and spill decision
// (newPoolEPP).
func (s *spoke) buildSpill() error {
	if !s.cfg.Spill {
		return nil
	}
	// The spill policy is checked at start, whichever pools come.
	if _, err := spill.New(s.cfg.EPP.Spill, func() []spill.Remote { return nil }); err != nil {
		return fmt.Errorf("spill policy: %w", err)
	}
	probeTLS, err := remoteGatewayTLS(s.cfg.Trust)
	if err != nil {
		return err
	}
	s.rtt = rttprobe.New(rttprobe.Options{Self: s.cfg.ClusterID, TLS: probeTLS})
	return nil
}

// buildController builds the Kubernetes source, which also resolves remote gateways.
func (s *spoke) buildController() error {
	if s.cfg.KubeConfig == nil {
		return nil
	}
	// One log stream, one format. klog's logger is the process's: the first spoke of the
	// process sets it (tests run several).
	klogOnce.Do(func() { klog.SetSlogLogger(s.log.With("component", "client-go")) })
	ko := kube.Options{
		Config:           s.cfg.KubeConfig,
		ClusterID:        s.cfg.ClusterID,
		ControllerName:   s.cfg.ControllerName,
		CreateNamespaces: s.cfg.CreateNamespaces,
		DefaultEngine:    s.cfg.DefaultEngine,
		// The writes run in lead, under the election or not.
		LeaderElection: true,
		Logger:         s.log,
	}
	if ns, name, ok := strings.Cut(s.cfg.GatewayService, "/"); ok {
		ko.GatewayService = types.NamespacedName{Namespace: ns, Name: name}
	}
	if s.cfg.HubAddress != "" {
		ko.View, ko.Reporter, ko.Refused = s.client.View(), s.client, s.client
	}
	if s.cfg.Spill {
		ko.Spillers, ko.DefaultSpillPolicy = s.epps.spillers, s.cfg.EPP.Spill
	}
	ctrl, err := kube.New(ko)
	if err != nil {
		return err
	}
	s.ctrl, s.source, s.gateways.ctrl = ctrl, ctrl, ctrl
	return nil
}

// buildElector builds the election of the replica that writes, with the Kubernetes source and
// --leader-elect.
func (s *spoke) buildElector() error {
	if !s.elected() {
		return nil
	}
	le := s.cfg.LeaderElection
	e, err := kube.NewElector(kube.ElectorOptions{
		Config: s.cfg.KubeConfig, Namespace: le.Namespace, Name: kube.LeaseName(s.cfg.ClusterID),
		LeaseDuration: le.LeaseDuration, RenewDeadline: le.RenewDeadline, RetryPeriod: le.RetryPeriod, Logger: s.log,
	})
	s.elector = e
	return err
}

// lead does the leader's work until ctx ends (the lease is lost, or the spoke stops): the hub
// session turns full (exports, capacity and import reports) and the controller writes. When ctx
// ends the session turns back to an observer one at once and the writes stop with ctx.
// Without an election the one replica leads from start to stop.
func (s *spoke) lead(ctx context.Context) error {
	s.metrics.leader.Set(1)
	defer s.metrics.leader.Set(0)
	if s.elector != nil && s.cfg.HubAddress != "" {
		s.client.SetObserver(false)
		defer s.client.SetObserver(true)
	}
	if s.ctrl == nil {
		<-ctx.Done()
		return nil
	}
	return s.ctrl.Lead(ctx)
}

// buildEPP builds what the EPPs share (metrics, tracing) and, with --epp-pool, the one pool's
// EPP; with --epp-service the pools' EPPs are built as the pools come (runEPPService).
func (s *spoke) buildEPP() error {
	if s.cfg.EPP == nil {
		return nil
	}
	s.eppMetrics = epp.NewMetrics(s.reg)
	if s.cfg.Tracing.Endpoint != "" {
		tp, err := newTracerProvider(s.cfg.Tracing, s.cfg.ClusterID)
		if err != nil {
			return err
		}
		s.tracing, s.tracer = tp, tp.Tracer("github.com/spillway-io/spillway/pkg/epp")
	}
	if s.cfg.EPPService != "" {
		return nil
	}
	p, err := s.newPoolEPP(s.cfg.EPPPoolRef, s.cfg.EPPAddress)
	if err != nil {
		return err
	}
	s.primary = p
	s.epps.put(p)
	s.metrics.eppPools.Set(1)
	return nil
}

// explain answers the hub's explain query with the EPP's explanation (hubctl explain).
func (s *spoke) explain(req *pb.ExplainRequest) ([]byte, error) {
	if s.cfg.EPP == nil {
		return nil, errors.New("this spoke runs no EPP (--epp-address is empty)")
	}
	eps := s.epps.sorted()
	pickers := make([]*epp.Server, len(eps))
	for i, p := range eps {
		pickers[i] = p.picker
	}
	return Explain(pickers, req)
}

// Explain answers an explain query with the JSON of the explanation of the EPP of the pool it
// names among pickers (the one EPP when it names none and there is one): what a spoke sends
// back to the hub.
func Explain(pickers []*epp.Server, req *pb.ExplainRequest) ([]byte, error) {
	var picker *epp.Server
	switch p := req.GetPool(); {
	case p != nil:
		ref := fleetpb.PoolRefFrom(p)
		i := slices.IndexFunc(pickers, func(s *epp.Server) bool { return s.Pool() == ref })
		if i < 0 {
			return nil, fmt.Errorf("this spoke's EPPs serve %s, not pool %s", poolList(pickers), ref)
		}
		picker = pickers[i]
	case len(pickers) == 1:
		picker = pickers[0]
	case len(pickers) == 0:
		return nil, errors.New("this spoke's EPP serves no pool yet")
	default:
		return nil, fmt.Errorf("this spoke's EPPs serve %s: name one (--pool)", poolList(pickers))
	}
	r := epp.ExplainRequest{Objective: req.GetObjective(), Model: req.GetModel(), Prompt: req.GetPrompt()}
	if req.Priority != nil {
		p := int(req.GetPriority())
		r.Priority = &p
	}
	e, err := picker.Explain(r)
	if err != nil {
		return nil, err
	}
	return json.Marshal(e)
}

// poolList names the pickers' pools.
func poolList(pickers []*epp.Server) string {
	names := make([]string, len(pickers))
	for i, p := range pickers {
		names[i] = p.Pool().String()
	}
	return strings.Join(names, ", ")
}

// newReport builds the capacity report loop on the other components.
func (s *spoke) newReport() *report.Loop {
	o := report.Options{Pools: s.source, Scraper: s.scraper, Hub: s.client, Endpoints: s.ds, Thresholds: s.cfg.Thresholds,
		ReportEndpoints: s.cfg.ReportEndpoints, Period: s.cfg.CapacityPeriod, MetricsPath: s.cfg.MetricsPath, Registerer: s.reg}
	if s.cfg.EPP != nil {
		o.EPPs = s.epps.reported
	}
	if s.gpus != nil {
		o.GPU = s.gpus.Pod
	}
	return report.New(o)
}

// listeners are the spoke's open listeners; epp and health are nil when not served.
type listeners struct {
	http, epp, health net.Listener
}

func (l listeners) close() {
	for _, x := range []net.Listener{l.http, l.epp, l.health} {
		if x != nil {
			x.Close()
		}
	}
}

// listen opens the EPP's listener (none without an EPP), the HTTP one, and the health one with
// --health-address.
func (s *spoke) listen() (ls listeners, err error) {
	defer func() {
		if err != nil {
			ls.close()
		}
	}()
	if s.primary != nil {
		if ls.epp, err = net.Listen("tcp", s.cfg.EPPAddress); err != nil {
			return ls, fmt.Errorf("listen --epp-address: %w", err)
		}
	}
	if ls.http, err = net.Listen("tcp", s.cfg.HTTPAddress); err != nil {
		return ls, fmt.Errorf("listen --http-address: %w", err)
	}
	if cfg := s.httpTLS(); cfg != nil {
		ls.http = tls.NewListener(ls.http, cfg)
	}
	if ls.health, err = listenHealth(s.cfg.HealthAddress); err != nil {
		return ls, fmt.Errorf("listen --health-address: %w", err)
	}
	return ls, nil
}

// run runs every component in one group until ctx ends or one fails.
func (s *spoke) run(ctx context.Context, ls listeners) error {
	g, gctx := errgroup.WithContext(ctx)
	if s.primary != nil {
		g.Go(func() error { return s.primary.run(gctx, ls.epp, s.cfg.EPPDrainTimeout, s.log) })
	}
	if ls.health != nil {
		hs := newHealthServer(s.ready())
		g.Go(func() error { return serve.GRPC(gctx, ls.health, hs) })
	}
	if s.cfg.EPPService != "" {
		g.Go(func() error { return s.runEPPService(gctx) })
	}
	g.Go(func() error { return s.source.Run(gctx) })
	g.Go(func() error { return s.scraper.Run(gctx) })
	if s.gpus != nil {
		g.Go(func() error { return s.gpus.Run(gctx) })
	}
	if s.rtt != nil {
		g.Go(func() error { return s.rtt.Run(gctx) })
	}
	if s.member != nil {
		g.Go(func() error { return s.member.Run(gctx) })
	}
	if s.cfg.HubAddress != "" {
		g.Go(func() error { return s.hubKP.Run(gctx) })
		g.Go(func() error { return s.hubCAs.Run(gctx) })
		g.Go(func() error { return s.client.Run(gctx) })
	}
	if s.elector != nil {
		g.Go(func() error { return s.elector.Run(gctx, s.lead) })
	} else {
		g.Go(func() error { return s.lead(gctx) })
	}
	if s.renewer != nil {
		g.Go(func() error { return s.renewer.Run(gctx) })
	}
	if s.servingReloads {
		g.Go(func() error { return s.servingKP.Run(gctx) })
	}
	if s.eppClientCAs != nil {
		g.Go(func() error { return s.eppClientCAs.Run(gctx) })
	}
	g.Go(func() error { return s.report.Run(gctx) })
	s.runAffinity(gctx, g)
	mux := s.mux()
	g.Go(func() error { return serve.HTTP(gctx, ls.http, mux) })
	return g.Wait()
}

// mux serves /metrics, /healthz, /readyz, /spill with federated routing, and the profiles
// with --enable-pprof.
func (s *spoke) mux() *http.ServeMux {
	mux := serve.HTTPMux(s.reg, s.ready())
	if s.cfg.Spill {
		mux.Handle("/spill", s.spillStatus())
	}
	if s.cfg.EnablePprof {
		serve.Pprof(mux)
	}
	return mux
}

// ready is what /readyz and the readiness probes follow: the Kubernetes caches synced; nil
// (always ready) with the static source.
func (s *spoke) ready() serve.ReadyFunc {
	if s.ctrl != nil {
		return s.ctrl.Ready
	}
	return nil
}

// close releases what build started: the EPP's gRPC server (its stream workers start with it,
// served or not), its health server and the gossip member.
func (s *spoke) close() {
	if s.primary != nil {
		s.primary.close()
	}
	if s.member != nil {
		s.member.Close()
	}
	if s.tracing != nil {
		// Sends the spans still batched, for at most a few seconds.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.tracing.Shutdown(ctx); err != nil {
			s.log.Warn("spans not all sent to the collector", "err", err)
		}
	}
}

// klogOnce sets client-go's logger once per process.
var klogOnce sync.Once

// controllerGateways resolves remote gateways through the Kubernetes controller. The controller
// needs the spill decision, which needs the candidates, which need the controller: ctrl is set
// once built, before any goroutine starts, and stays nil with the static source.
type controllerGateways struct {
	ctrl *kube.Controller
}

func (g *controllerGateways) RemoteGateway(clusterID string) (addr, from string, ok bool) {
	if g.ctrl == nil {
		return "", "", false
	}
	return g.ctrl.RemoteGateway(clusterID)
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

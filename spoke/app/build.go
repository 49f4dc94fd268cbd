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
	"strings"
	"sync"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

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
	"github.com/spillway-io/spillway/spoke/remote"
	"github.com/spillway-io/spillway/spoke/report"
	"github.com/spillway-io/spillway/spoke/rttprobe"
	"github.com/spillway-io/spillway/spoke/source"
	"github.com/spillway-io/spillway/spoke/spillstatus"
)

// spoke holds the components Run's group runs. The optional ones are nil when off.
type spoke struct {
	cfg     *Config
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics
	scraper *modelmetrics.Scraper
	client  *hubclient.Client
	source  source.Source
	ds      *datastore
	report  *report.Loop

	hubKP   *tlsconfig.KeyPair // --hub-address: the cluster's certificate
	hubCAs  *tlsconfig.CAPool  // --hub-address: the hub's CA bundle
	renewer *join.Renewer      // --hub-address, with joined credentials

	servingKP      *tlsconfig.KeyPair // unless both the EPP and HTTP serve plaintext
	servingReloads bool               // --epp-cert-dir
	eppClientCAs   *tlsconfig.CAPool  // --epp-client-ca-file

	member  *gossip.Member           // --gossip-address
	rtt     *rttprobe.Prober         // --spill
	remotes *remote.Candidates       // --spill
	decider *spill.Decider           // --spill
	ctrl    *kube.Controller         // the Kubernetes source
	elector *kube.Elector            // the Kubernetes source with --leader-elect
	picker  *epp.Server              // --epp-address
	tracing *sdktrace.TracerProvider // --tracing-endpoint
	eppGRPC *grpc.Server             // --epp-address
	health  *health.Server           // --epp-address
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
	s.client = s.newHubClient()
	s.ds = newDatastore(s.scraper)
	gateways := &controllerGateways{}
	for _, step := range []func() error{
		s.buildServing,
		s.startGossip,
		func() error { return s.buildSpill(gateways) },
		func() error { return s.buildController(gateways) },
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
	return hubclient.New(hubclient.Options{
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
	})
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

// buildSpill builds federated routing for the EPP's pool: the RTT prober, the remote candidates
// and the spill decision, fed with the fleet view.
func (s *spoke) buildSpill(gateways remote.GatewayResolver) error {
	if !s.cfg.Spill {
		return nil
	}
	probeTLS, err := remoteGatewayTLS(s.cfg.Trust)
	if err != nil {
		return err
	}
	s.rtt = rttprobe.New(rttprobe.Options{Self: s.cfg.ClusterID, TLS: probeTLS})
	o := remote.Options{Self: s.cfg.ClusterID, Pool: s.cfg.EPPPoolRef, View: s.client.View(), Gateways: gateways,
		RTT: s.rtt, Overrides: s.cfg.RemoteGateways}
	if s.member != nil {
		o.Live = s.member
	}
	s.remotes = remote.New(o)
	d, err := spill.New(s.cfg.EPP.Spill, s.remotes.List)
	if err != nil {
		return fmt.Errorf("spill policy: %w", err)
	}
	s.decider = d
	return nil
}

// buildController builds the Kubernetes source, which also resolves remote gateways.
func (s *spoke) buildController(gateways *controllerGateways) error {
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
	if s.decider != nil {
		ko.Spill, ko.SpillPool, ko.DefaultSpillPolicy = s.decider, s.cfg.EPPPoolRef, s.cfg.EPP.Spill
	}
	ctrl, err := kube.New(ko)
	if err != nil {
		return err
	}
	s.ctrl, s.source, gateways.ctrl = ctrl, ctrl, ctrl
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

// buildEPP builds the Endpoint Picker and its gRPC server (ext_proc and health).
func (s *spoke) buildEPP() error {
	if s.cfg.EPP == nil {
		return nil
	}
	var objs epp.Objectives
	if s.ctrl != nil {
		objs = clusterObjectives{ctrl: s.ctrl, pool: s.cfg.EPPPoolRef, file: s.cfg.EPP.Objectives}
	}
	o := epp.Options{Pool: s.cfg.EPPPoolRef, Settings: *s.cfg.EPP, Datastore: s.ds, Objectives: objs,
		Spill: s.decider, ClusterID: s.cfg.ClusterID, Logger: s.log, Registerer: s.reg}
	if s.cfg.Tracing.Endpoint != "" {
		tp, err := newTracerProvider(s.cfg.Tracing, s.cfg.ClusterID)
		if err != nil {
			return err
		}
		s.tracing, o.Tracer = tp, tp.Tracer("github.com/spillway-io/spillway/pkg/epp")
	}
	if s.cfg.HubAddress != "" {
		o.HopKeys = s.client
	}
	picker, err := epp.New(o)
	if err != nil {
		return err
	}
	s.picker = picker
	s.eppGRPC = grpc.NewServer(s.eppServerOptions(epp.GRPCServerOptions(s.cfg.EPPStreamWorkers))...)
	extprocv3.RegisterExternalProcessorServer(s.eppGRPC, picker)
	s.health = health.NewServer()
	for _, svc := range []string{"liveness", "readiness", extprocv3.ExternalProcessor_ServiceDesc.ServiceName} {
		s.health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(s.eppGRPC, s.health)
	return nil
}

// explain answers the hub's explain query with the EPP's explanation (hubctl explain).
func (s *spoke) explain(req *pb.ExplainRequest) ([]byte, error) {
	if s.picker == nil {
		return nil, errors.New("this spoke runs no EPP (--epp-address is empty)")
	}
	return Explain(s.picker, s.cfg.EPPPoolRef, req)
}

// Explain answers an explain query with the JSON of the explanation of picker, the EPP of pool:
// what a spoke sends back to the hub.
func Explain(picker *epp.Server, pool fleet.PoolRef, req *pb.ExplainRequest) ([]byte, error) {
	if p := req.GetPool(); p != nil {
		if ref := fleetpb.PoolRefFrom(p); ref != pool {
			return nil, fmt.Errorf("this spoke's EPP serves pool %s, not %s", pool, ref)
		}
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

// newReport builds the capacity report loop on the other components.
func (s *spoke) newReport() *report.Loop {
	o := report.Options{Pools: s.source, Scraper: s.scraper, Hub: s.client, Endpoints: s.ds, Thresholds: s.cfg.Thresholds,
		ReportEndpoints: s.cfg.ReportEndpoints, Period: s.cfg.CapacityPeriod, Registerer: s.reg}
	if s.picker != nil {
		o.EPPPool, o.EPP, o.Prefix = s.cfg.EPPPoolRef, s.picker, s.picker.Scheduler().Prefix()
	}
	if s.decider != nil {
		o.Spill = s.decider
	}
	return report.New(o)
}

// listen opens the EPP's listener (nil without an EPP), then the HTTP one.
func (s *spoke) listen() (httpL, eppL net.Listener, err error) {
	if s.eppGRPC != nil {
		if eppL, err = net.Listen("tcp", s.cfg.EPPAddress); err != nil {
			return nil, nil, fmt.Errorf("listen --epp-address: %w", err)
		}
	}
	if httpL, err = net.Listen("tcp", s.cfg.HTTPAddress); err != nil {
		if eppL != nil {
			eppL.Close()
		}
		return nil, nil, fmt.Errorf("listen --http-address: %w", err)
	}
	if cfg := s.httpTLS(); cfg != nil {
		httpL = tls.NewListener(httpL, cfg)
	}
	return httpL, eppL, nil
}

// run runs every component in one group until ctx ends or one fails.
func (s *spoke) run(ctx context.Context, httpL, eppL net.Listener) error {
	g, gctx := errgroup.WithContext(ctx)
	if s.eppGRPC != nil {
		g.Go(func() error { return s.serveEPP(gctx, eppL) })
	}
	g.Go(func() error { return s.source.Run(gctx) })
	g.Go(func() error { return s.scraper.Run(gctx) })
	if s.rtt != nil {
		g.Go(func() error { return s.rtt.Run(gctx) })
	}
	if s.remotes != nil {
		g.Go(func() error { return s.remotes.Run(gctx) })
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
	g.Go(func() error { return serve.HTTP(gctx, httpL, mux) })
	return g.Wait()
}

// serveEPP serves ext_proc on l until ctx ends, then drains: the listener closes and the
// gateways' connections are told to go away (new requests go to another replica), the health
// service answers NOT_SERVING, and the streams in flight, which last until their responses have
// passed through, finish for up to --epp-drain-timeout before they are cut.
func (s *spoke) serveEPP(ctx context.Context, l net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.eppGRPC.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("grpc server on %s: %w", l.Addr(), err)
	case <-ctx.Done():
	}
	s.health.Shutdown()
	drained := make(chan struct{})
	go func() { s.eppGRPC.GracefulStop(); close(drained) }()
	t := time.NewTimer(s.cfg.EPPDrainTimeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
		s.log.Warn("EPP requests still in flight at the end of the drain; cutting them", "drainTimeout", s.cfg.EPPDrainTimeout)
		s.eppGRPC.Stop()
		<-drained
	}
	<-errc
	return nil
}

// mux serves /metrics, /healthz, /readyz, /spill with federated routing, and the profiles
// with --enable-pprof.
func (s *spoke) mux() *http.ServeMux {
	var ready serve.ReadyFunc
	if s.ctrl != nil {
		ready = s.ctrl.Ready
	}
	mux := serve.HTTPMux(s.reg, ready)
	if s.decider != nil {
		mux.Handle("/spill", spillstatus.Handler(s.cfg.EPPPoolRef, s.decider, s.remotes.List))
	}
	if s.cfg.EnablePprof {
		serve.Pprof(mux)
	}
	return mux
}

// close releases what build started: the EPP's gRPC server (its stream workers start with it,
// served or not), its health server and the gossip member.
func (s *spoke) close() {
	if s.eppGRPC != nil {
		s.eppGRPC.Stop()
	}
	if s.health != nil {
		s.health.Shutdown()
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

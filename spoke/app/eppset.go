package app

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/epp/prefix"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/spill"
	"github.com/spillway-io/spillway/spoke/kube"
	"github.com/spillway-io/spillway/spoke/remote"
	"github.com/spillway-io/spillway/spoke/report"
	"github.com/spillway-io/spillway/spoke/source"
	"github.com/spillway-io/spillway/spoke/spillstatus"
)

// poolEPP is the EPP of one pool: its picker, its spill decision and remote candidates (with
// federated routing), and its gRPC server (ext_proc and health) on its own listener.
type poolEPP struct {
	ref     fleet.PoolRef
	addr    string
	picker  *epp.Server
	remotes *remote.Candidates // --spill
	decider *spill.Decider     // --spill
	grpc    *grpc.Server
	health  *health.Server
}

// newPoolEPP builds the EPP of pool ref, to listen on addr.
func (s *spoke) newPoolEPP(ref fleet.PoolRef, addr string) (*poolEPP, error) {
	p := &poolEPP{ref: ref, addr: addr}
	if s.cfg.Spill {
		o := remote.Options{Self: s.cfg.ClusterID, Pool: ref, View: s.client.View(), Gateways: s.gateways,
			RTT: s.rtt, Overrides: s.cfg.RemoteGateways}
		if s.member != nil {
			o.Live = s.member
		}
		p.remotes = remote.New(o)
		policy := s.cfg.EPP.Spill
		if s.ctrl != nil {
			policy = s.ctrl.SpillPolicy(ref) // the controller's reconciles keep it current
		}
		d, err := spill.New(policy, p.remotes.List)
		if err != nil {
			return nil, fmt.Errorf("spill policy of pool %s: %w", ref, err)
		}
		p.decider = d
	}
	var objs epp.Objectives
	if s.ctrl != nil {
		objs = clusterObjectives{ctrl: s.ctrl, pool: ref, file: s.cfg.EPP.Objectives}
	}
	o := epp.Options{Pool: ref, Settings: *s.cfg.EPP, Datastore: s.ds, Objectives: objs, Spill: p.decider,
		ClusterID: s.cfg.ClusterID, Tracer: s.tracer, Local: s.epps, Logger: s.log, Metrics: s.eppMetrics}
	if s.cfg.HubAddress != "" {
		o.HopKeys = s.client
	}
	if s.budgets != nil {
		o.Budgets = s.budgets
	}
	picker, err := epp.New(o)
	if err != nil {
		return nil, err
	}
	p.picker = picker
	p.grpc = grpc.NewServer(s.eppServerOptions(epp.GRPCServerOptions(s.cfg.EPPStreamWorkers))...)
	extprocv3.RegisterExternalProcessorServer(p.grpc, picker)
	p.health = health.NewServer()
	for _, svc := range []string{"liveness", "readiness", extprocv3.ExternalProcessor_ServiceDesc.ServiceName} {
		p.health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(p.grpc, p.health)
	return p, nil
}

// run serves the pool's EPP on l, and keeps its remote candidates current, until ctx ends.
func (p *poolEPP) run(ctx context.Context, l net.Listener, drain time.Duration, log *slog.Logger) error {
	g, gctx := errgroup.WithContext(ctx)
	if p.remotes != nil {
		g.Go(func() error { return p.remotes.Run(gctx) })
	}
	g.Go(func() error { return p.serve(gctx, l, drain, log) })
	return g.Wait()
}

// serve serves ext_proc on l until ctx ends, then drains: the listener closes and the
// gateways' connections are told to go away (new requests go to another replica), the health
// service answers NOT_SERVING, and the streams in flight, which last until their responses have
// passed through, finish for up to drain before they are cut.
func (p *poolEPP) serve(ctx context.Context, l net.Listener, drain time.Duration, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- p.grpc.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("grpc server on %s: %w", l.Addr(), err)
	case <-ctx.Done():
	}
	p.health.Shutdown()
	drained := make(chan struct{})
	go func() { p.grpc.GracefulStop(); close(drained) }()
	t := time.NewTimer(drain)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
		log.Warn("EPP requests still in flight at the end of the drain; cutting them", "pool", p.ref.String(), "drainTimeout", drain)
		p.grpc.Stop()
		<-drained
	}
	<-errc
	return nil
}

// close releases what newPoolEPP started: the gRPC server (its stream workers start with it,
// served or not), the health server and the picker's share of the metrics.
func (p *poolEPP) close() {
	p.grpc.Stop()
	p.health.Shutdown()
	p.picker.Close()
}

// eppSet holds the EPPs the spoke runs, by pool: with --epp-pool the one built at start, with
// --epp-service those of the pools naming the Service now. It is the EPPs' epp.LocalPools: a
// request for a model its pool does not serve goes to the local pool that does.
type eppSet struct {
	// sketches: the capacity reports carry each pool's prefix sketch (--prefix-sketch).
	sketches bool

	mu    sync.RWMutex
	pools map[fleet.PoolRef]*poolEPP
}

func newEPPSet(sketches bool) *eppSet {
	return &eppSet{sketches: sketches, pools: map[fleet.PoolRef]*poolEPP{}}
}

// sketchOf sketches the prompt prefixes an EPP's index holds (nil when it holds none), for
// other clusters' cache-aware spill.
func sketchOf(ix *prefix.Indexer) func() *fleet.PrefixSketch {
	return func() *fleet.PrefixSketch {
		sk := prefix.NewSketch(ix.Recent(prefix.SketchEntries, prefix.SketchSample), ix.BlockSize())
		if sk.Entries == 0 {
			return nil
		}
		return &fleet.PrefixSketch{Bloom: sk.Bloom, HashFunctions: uint32(sk.Hashes), Sample: uint32(sk.Sample),
			BlockBytes: uint32(sk.BlockBytes), Entries: uint32(sk.Entries)}
	}
}

func (e *eppSet) put(p *poolEPP) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pools[p.ref] = p
}

func (e *eppSet) remove(ref fleet.PoolRef) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.pools, ref)
}

func (e *eppSet) get(ref fleet.PoolRef) *poolEPP {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.pools[ref]
}

// sorted returns the EPPs by pool.
func (e *eppSet) sorted() []*poolEPP {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]*poolEPP, 0, len(e.pools))
	for _, ref := range slices.SortedFunc(maps.Keys(e.pools), fleet.PoolRef.Compare) {
		out = append(out, e.pools[ref])
	}
	return out
}

// ForModel implements epp.LocalPools: the first pool by name that lists the model, else the
// first that does not say which models it serves.
func (e *eppSet) ForModel(model string, except fleet.PoolRef) *epp.Server {
	var unsaid *epp.Server
	for _, p := range e.sorted() {
		if p.ref == except {
			continue
		}
		switch listed, said := p.picker.Lists(model); {
		case listed:
			return p.picker
		case !said && unsaid == nil:
			unsaid = p.picker
		}
	}
	return unsaid
}

// spillers returns the EPPs' spill decisions, for the controller's SpillPolicies.
func (e *eppSet) spillers() map[fleet.PoolRef]kube.Spiller {
	out := map[fleet.PoolRef]kube.Spiller{}
	for _, p := range e.sorted() {
		if p.decider != nil {
			out[p.ref] = p.decider
		}
	}
	return out
}

// reported returns the EPPs as the capacity report loop takes them.
func (e *eppSet) reported() []report.PoolEPP {
	var out []report.PoolEPP
	for _, p := range e.sorted() {
		r := report.PoolEPP{Pool: p.ref, EPP: p.picker, Prefix: p.picker.Scheduler().Prefix()}
		if p.decider != nil {
			r.Spill = p.decider
		}
		if e.sketches {
			r.Sketch = sketchOf(p.picker.Scheduler().Prefix())
		}
		out = append(out, r)
	}
	return out
}

// wantedEPPs maps the pools naming service as their EPP to the address each is served on: its
// endpointPickerRef port on host. Of two pools naming the same port the first by name has it;
// the other is returned in clashes.
func wantedEPPs(pools []source.Pool, service, host string) (want map[fleet.PoolRef]string, clashes []fleet.PoolRef) {
	want = map[fleet.PoolRef]string{}
	taken := map[uint32]bool{}
	for _, p := range pools { // sorted by reference
		if p.EndpointPicker != service || p.EndpointPickerPort == 0 {
			continue
		}
		if taken[p.EndpointPickerPort] {
			clashes = append(clashes, p.Ref)
			continue
		}
		taken[p.EndpointPickerPort] = true
		want[p.Ref] = net.JoinHostPort(host, strconv.FormatUint(uint64(p.EndpointPickerPort), 10))
	}
	return want, clashes
}

// runEPPService serves, until ctx ends, the EPP of every pool naming --epp-service: a pool that
// comes (or changes its port) gets its EPP started, one that goes has its EPP drained and
// stopped, without a restart. A port that cannot be listened on, or an EPP whose server failed,
// is logged and started again at the next change of the pools.
func (s *spoke) runEPPService(ctx context.Context) error {
	host, _, _ := net.SplitHostPort(s.cfg.EPPAddress)
	type running struct {
		p      *poolEPP
		cancel context.CancelFunc
		done   chan struct{}
	}
	live := map[fleet.PoolRef]*running{}
	stop := func(ref fleet.PoolRef) {
		r := live[ref]
		s.epps.remove(ref)
		r.cancel()
		<-r.done
		r.p.close()
		delete(live, ref)
		s.log.Info("EPP of pool stopped", "pool", ref.String(), "address", r.p.addr)
	}
	defer func() {
		for ref := range live {
			stop(ref)
		}
	}()
	warned := map[fleet.PoolRef]bool{}
	for {
		changed := s.source.Changed()
		want, clashes := wantedEPPs(s.source.Pools(), s.cfg.EPPService, host)
		for _, ref := range clashes {
			if !warned[ref] {
				warned[ref] = true
				s.log.Warn("pool names the same EPP port as another pool; not served", "pool", ref.String())
			}
		}
		for ref, r := range live {
			exited := false
			select {
			case <-r.done: // its server failed (logged): started again below
				exited = true
			default:
			}
			if exited || want[ref] != r.p.addr {
				stop(ref)
			}
		}
		for _, ref := range slices.SortedFunc(maps.Keys(want), fleet.PoolRef.Compare) {
			if live[ref] != nil {
				continue
			}
			p, l, err := s.startPoolEPP(ref, want[ref])
			if err != nil {
				s.log.Error("EPP of pool not started", "pool", ref.String(), "address", want[ref], "err", err)
				continue
			}
			pctx, cancel := context.WithCancel(ctx)
			r := &running{p: p, cancel: cancel, done: make(chan struct{})}
			go func() {
				defer close(r.done)
				if err := p.run(pctx, l, s.cfg.EPPDrainTimeout, s.log); err != nil {
					s.log.Error("EPP of pool failed", "pool", ref.String(), "err", err)
				}
			}()
			live[ref] = r
			s.epps.put(p)
			s.log.Info("EPP of pool serving", "pool", ref.String(), "address", p.addr)
		}
		s.metrics.eppPools.Set(float64(len(live)))
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// startPoolEPP builds a pool's EPP and opens its listener.
func (s *spoke) startPoolEPP(ref fleet.PoolRef, addr string) (*poolEPP, net.Listener, error) {
	p, err := s.newPoolEPP(ref, addr)
	if err != nil {
		return nil, nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		p.close()
		return nil, nil, err
	}
	return p, l, nil
}

// spillStatus serves /spill: the spill state of the pool named by ?pool=namespace/name, or of
// the one pool when the EPPs serve one.
func (s *spoke) spillStatus() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		eps := s.epps.sorted()
		var p *poolEPP
		if q := r.URL.Query().Get("pool"); q != "" {
			ns, name, _ := strings.Cut(q, "/")
			p = s.epps.get(fleet.PoolRef{Namespace: ns, Name: name})
		} else if len(eps) == 1 {
			p = eps[0]
		}
		if p == nil || p.decider == nil {
			names := make([]string, len(eps))
			for i, e := range eps {
				names[i] = e.ref.String()
			}
			http.Error(w, "name a pool the EPPs serve with ?pool=namespace/name: "+strings.Join(names, ", "), http.StatusNotFound)
			return
		}
		spillstatus.Handler(p.ref, p.decider, p.remotes.List).ServeHTTP(w, r)
	})
}

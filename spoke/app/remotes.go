package app

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/spill"
	"github.com/spillway-io/spillway/spoke/hubclient"
)

// GatewayResolver finds a remote cluster's inference gateway (spoke/kube: MCS-API first).
type GatewayResolver interface {
	RemoteGateway(clusterID string) (addr, from string, ok bool)
}

// Liveness says whether gossip has declared a cluster dead.
type Liveness interface {
	Dead(clusterID string) bool
}

// remotes turns the fleet view into spill candidates for one pool: the other clusters that
// report capacity for it, alive by the hub's view and by gossip, with the RTT this spoke measures
// to their gateways. A remote gateway is reached at its --remote-gateway override, else where
// the Kubernetes controller finds it (MCS-API), else at the address its spoke registered.
type remotes struct {
	self     string
	pool     fleet.PoolRef
	view     *hubclient.View
	gateways GatewayResolver
	live     Liveness
	rtt      *rttProber
	now      func() time.Time
	// overrides come from --remote-gateway and win over the other sources.
	overrides map[string]string
}

func (r *remotes) candidates() []spill.Remote {
	caps := r.view.Capacity(r.pool)
	if len(caps) == 0 {
		return nil
	}
	clusters := map[string]fleet.Cluster{}
	for _, c := range r.view.Clusters() {
		clusters[c.Info.ID] = c
	}
	now := r.now()
	out := make([]spill.Remote, 0, len(caps))
	for _, rc := range caps {
		if rc.ClusterID == r.self {
			continue
		}
		cl := clusters[rc.ClusterID]
		c := rc.Capacity
		rem := spill.Remote{
			ClusterID:      rc.ClusterID,
			Region:         cl.Info.Region,
			Gateway:        cl.Info.GatewayAddress,
			Alive:          cl.State == fleet.StateAlive && (r.live == nil || !r.live.Dead(rc.ClusterID)),
			Age:            now.Sub(rc.ReceivedAt),
			Saturated:      c.Saturated,
			Saturation:     c.Saturation,
			ReadyEndpoints: c.ReadyEndpoints,
			QueueDepth:     c.QueueDepth,
		}
		if addr, ok := r.overrides[rc.ClusterID]; ok {
			rem.Gateway = addr
		} else if r.gateways != nil {
			if addr, _, ok := r.gateways.RemoteGateway(rc.ClusterID); ok {
				rem.Gateway = addr
			}
		}
		eps := slices.Clone(c.Endpoints)
		slices.SortStableFunc(eps, func(a, b fleet.EndpointCapacity) int { return int(a.QueueDepth) - int(b.QueueDepth) })
		for _, e := range eps {
			if e.Ready {
				rem.Endpoints = append(rem.Endpoints, e.Address)
			}
		}
		if rem.Gateway != "" {
			rem.RTT = r.rtt.observe(rem.Gateway)
		}
		out = append(out, rem)
	}
	return out
}

// rttProber measures the round trip to remote gateways every period with an HTTP HEAD request
// on a kept-alive connection, timed until the response headers arrive: the data path as requests
// see it (gateway and its ext_proc call included), through whatever proxies sit between the
// regions, which a TCP connect to a proxy would not measure. The request carries epp.ProbeHeader,
// so the remote EPP answers 204 itself and no model server sees it. An address not asked for for a minute is forgotten.
type rttProber struct {
	self   string // this cluster's ID, in the probe header
	period time.Duration
	client *http.Client

	mu   sync.Mutex
	rtts map[string]*rttEntry
}

type rttEntry struct {
	rtt     time.Duration
	wanted  time.Time
	samples int
}

func newRTTProber(self string, period time.Duration) *rttProber {
	return &rttProber{self: self, period: period, rtts: map[string]*rttEntry{}, client: &http.Client{
		Timeout:   period,
		Transport: &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute, DisableCompression: true},
	}}
}

// observe returns the address's RTT estimate (0 until measured) and keeps it probed.
func (p *rttProber) observe(addr string) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.rtts[addr]
	if !ok {
		e = &rttEntry{}
		p.rtts[addr] = e
	}
	e.wanted = time.Now()
	return e.rtt
}

// Run probes until ctx ends.
func (p *rttProber) Run(ctx context.Context) error {
	tick := time.NewTicker(p.period)
	defer tick.Stop()
	defer p.client.CloseIdleConnections()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		p.mu.Lock()
		var addrs []string
		for a, e := range p.rtts {
			if time.Since(e.wanted) > time.Minute {
				delete(p.rtts, a)
				continue
			}
			addrs = append(addrs, a)
		}
		p.mu.Unlock()
		for _, a := range addrs {
			rtt, err := p.probe(ctx, a)
			if err != nil {
				continue // unreachable: liveness and freshness take it out, not the RTT
			}
			p.mu.Lock()
			if e, ok := p.rtts[a]; ok {
				switch e.samples++; e.samples {
				case 1: // the connection's first request also paid its handshake
				case 2:
					e.rtt = rtt
				default:
					e.rtt = (e.rtt*7 + rtt) / 8
				}
			}
			p.mu.Unlock()
		}
	}
}

// spillReport is what GET /spill answers: the EPP pool's spill state and policy, the remote
// clusters the spoke knows for it, and the ones a spilled request may go to now, best first.
type spillReport struct {
	Pool       string         `json:"pool"`
	State      spill.State    `json:"state"`
	Policy     spill.Policy   `json:"policy"`
	Targets    []spill.Remote `json:"targets"`
	Candidates []spill.Remote `json:"candidates"`
}

func spillHandler(d *spill.Decider, r *remotes) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		rep := spillReport{Pool: r.pool.String(), State: d.State(), Policy: d.Policy(), Targets: d.Targets(), Candidates: r.candidates()}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	})
}

// probe times one HEAD request to addr. The first request of a connection also pays its
// handshake, so the estimate starts from the second.
func (p *rttProber) probe(ctx context.Context, addr string) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, "http://"+addr+"/", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", "spillway-spoke-rtt")
	req.Header.Set(epp.ProbeHeader, p.self) // the remote EPP answers it itself: no model server is asked
	start := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	rtt := time.Since(start)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return rtt, nil
}

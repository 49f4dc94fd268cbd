// Package remote turns the spoke's fleet view into spill candidates for the pool its EPP serves:
// the other clusters that report capacity for it, alive by the hub's view and by gossip, with
// the round trip this spoke measures to their gateways.
//
// A remote gateway is reached at its --remote-gateway override, else where the Kubernetes
// controller finds it (MCS-API), else at the address its spoke registered with the hub.
//
// Freshness is measured on one clock: a report's age is this process's clock (clock.Now) less
// its ReceivedAt, which the view (spoke/hubclient) sets on the same clock from the report's age
// as the hub sent it. No timestamp of the hub's (received_at, last_seen) is compared with this
// clock: hosts' clocks differ.
package remote

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/spillway-io/spillway/pkg/clock"
	"github.com/spillway-io/spillway/pkg/epp/prefix"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/spill"
)

// View is what the candidates are built from: the fleet as the hub last sent it.
type View interface {
	// Capacity returns the capacity reports of one pool, sorted by cluster.
	Capacity(pool fleet.PoolRef) []fleet.RemoteCapacity
	// Clusters returns the registered clusters.
	Clusters() []fleet.Cluster
}

// GatewayResolver finds a remote cluster's inference gateway (spoke/kube: MCS-API first).
type GatewayResolver interface {
	RemoteGateway(clusterID string) (addr, from string, ok bool)
}

// Liveness is gossip's: whether a cluster was declared dead (the fleet's verdict), and whether
// this spoke's own pings to it went unanswered for a while (pkg/gossip: quicker, local and
// undone by the next answer).
type Liveness interface {
	Dead(clusterID string) bool
	Unreachable(clusterID string) bool
}

// RTT gives the round-trip estimate to a gateway (0 while unknown) and keeps it measured.
type RTT interface {
	Observe(addr string) time.Duration
}

// Options configure Candidates.
type Options struct {
	// Self is this cluster's ID; its own report is never a candidate.
	Self string
	// Pool is the pool the candidates serve.
	Pool fleet.PoolRef
	View View
	// Gateways resolves gateways in the cluster; nil when there is no Kubernetes source.
	Gateways GatewayResolver
	// Live is gossip's liveness; nil without gossip: the hub's view alone decides.
	Live Liveness
	// RTT measures gateways; nil leaves every RTT unknown.
	RTT RTT
	// Now is the clock that ages capacity reports, the view's (its ReceivedAt are on it); nil
	// means clock.Now.
	Now func() time.Time
	// Overrides come from --remote-gateway (cluster ID → host:port) and win over the other
	// sources.
	Overrides map[string]string
	// Warm is how often Run lists the candidates; zero means DefaultWarm.
	Warm time.Duration
}

// DefaultWarm is how often Run lists the candidates.
const DefaultWarm = 2 * time.Second

// Candidates lists the remote clusters of one pool.
type Candidates struct {
	opts Options
}

// New returns the candidates of o.Pool.
func New(o Options) *Candidates {
	if o.Now == nil {
		o.Now = clock.Now
	}
	if o.Warm <= 0 {
		o.Warm = DefaultWarm
	}
	return &Candidates{opts: o}
}

// Run lists the candidates every Options.Warm until ctx ends. Listing is what starts (and keeps
// going) the gossip pings of Liveness.Unreachable and the RTT probes of each candidate, which
// otherwise run only while requests spill: this way a cluster that died before the spilling
// starts is already out, and every target's round trip is known, at the first spilled request.
// A candidate that appears is pinged and probed within Options.Warm.
func (c *Candidates) Run(ctx context.Context) error {
	t := time.NewTicker(c.opts.Warm)
	defer t.Stop()
	for {
		c.List()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Pool is the pool the candidates serve.
func (c *Candidates) Pool() fleet.PoolRef { return c.opts.Pool }

// List returns the other clusters that report capacity for the pool, in the view's order. It
// is a spill.Candidates.
func (c *Candidates) List() []spill.Remote {
	caps := c.opts.View.Capacity(c.opts.Pool)
	if len(caps) == 0 {
		return nil
	}
	clusters := map[string]fleet.Cluster{}
	for _, cl := range c.opts.View.Clusters() {
		clusters[cl.Info.ID] = cl
	}
	now := c.opts.Now()
	out := make([]spill.Remote, 0, len(caps))
	for _, rc := range caps {
		if rc.ClusterID == c.opts.Self {
			continue
		}
		out = append(out, c.remote(rc, clusters[rc.ClusterID], now))
	}
	return out
}

// remote builds one candidate from its capacity report and its registration.
func (c *Candidates) remote(rc fleet.RemoteCapacity, cl fleet.Cluster, now time.Time) spill.Remote {
	r := spill.Remote{
		ClusterID:      rc.ClusterID,
		Region:         cl.Info.Region,
		Gateway:        c.gateway(rc.ClusterID, cl.Info.GatewayAddress),
		Endpoints:      readyByQueue(rc.Capacity.Endpoints),
		Alive:          cl.State == fleet.StateAlive && (c.opts.Live == nil || !c.opts.Live.Dead(rc.ClusterID)),
		Unreachable:    c.opts.Live != nil && c.opts.Live.Unreachable(rc.ClusterID),
		Cordoned:       cl.Cordoned,
		Age:            now.Sub(rc.ReceivedAt),
		Saturated:      rc.Capacity.Saturated,
		Saturation:     rc.Capacity.Saturation,
		ReadyEndpoints: rc.Capacity.ReadyEndpoints,
		QueueDepth:     rc.Capacity.QueueDepth,
		Spilling:       rc.Capacity.Spilling,
	}
	if r.Gateway != "" && c.opts.RTT != nil {
		r.RTT = c.opts.RTT.Observe(r.Gateway)
	}
	// A report that names no model says nothing of them (an older spoke, servers that label
	// none): the pool is taken to serve any. One that does serves its models and the adapters
	// loaded on its endpoints.
	if len(rc.Capacity.Models) > 0 {
		r.Models = append(slices.Clip(rc.Capacity.Models), rc.Capacity.LoRAAdapters...)
	}
	if ps := rc.Capacity.PrefixSketch; ps != nil {
		sk := &prefix.Sketch{Bloom: ps.Bloom, Hashes: int(ps.HashFunctions), Sample: int(ps.Sample), BlockBytes: int(ps.BlockBytes), Entries: int(ps.Entries)}
		if sk.Validate() == nil { // the hub checked it; a sketch that does not validate is ignored
			r.Prefix, r.PrefixBlockBytes = sk, sk.BlockBytes
		}
	}
	return r
}

// gateway returns where the cluster's gateway is reached: its override, else what the resolver
// finds, else the address it registered.
func (c *Candidates) gateway(clusterID, registered string) string {
	if addr, ok := c.opts.Overrides[clusterID]; ok {
		return addr
	}
	if c.opts.Gateways != nil {
		if addr, _, ok := c.opts.Gateways.RemoteGateway(clusterID); ok {
			return addr
		}
	}
	return registered
}

// readyByQueue returns the ready endpoints' addresses, shortest queue first (stable).
func readyByQueue(eps []fleet.EndpointCapacity) []string {
	eps = slices.Clone(eps)
	slices.SortStableFunc(eps, func(a, b fleet.EndpointCapacity) int { return cmp.Compare(a.QueueDepth, b.QueueDepth) })
	var out []string
	for _, e := range eps {
		if e.Ready {
			out = append(out, e.Address)
		}
	}
	return out
}

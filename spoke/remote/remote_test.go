package remote

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/spill"
)

var (
	pool  = fleet.PoolRef{Namespace: "inference", Name: "chat"}
	other = fleet.PoolRef{Namespace: "inference", Name: "code"}
	now   = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
)

// view is a fake fleet view.
type view struct {
	caps     map[fleet.PoolRef][]fleet.RemoteCapacity
	clusters []fleet.Cluster
}

func (v view) Capacity(p fleet.PoolRef) []fleet.RemoteCapacity { return v.caps[p] }
func (v view) Clusters() []fleet.Cluster                       { return v.clusters }

type gateways map[string]string

func (g gateways) RemoteGateway(id string) (string, string, bool) {
	addr, ok := g[id]
	return addr, "ServiceImport", ok
}

// liveness is a fake gossip: the clusters declared dead, and those this spoke cannot reach.
type liveness struct{ dead, unreachable map[string]bool }

func (l liveness) Dead(id string) bool        { return l.dead[id] }
func (l liveness) Unreachable(id string) bool { return l.unreachable[id] }

// rtts is a fake RTT source that remembers what it was asked.
type rtts struct {
	known map[string]time.Duration
	asked []string
}

func (r *rtts) Observe(addr string) time.Duration {
	r.asked = append(r.asked, addr)
	return r.known[addr]
}

func cluster(id, region, gw string, state fleet.ClusterState) fleet.Cluster {
	return fleet.Cluster{Info: fleet.ClusterInfo{ID: id, Region: region, GatewayAddress: gw}, State: state}
}

func report(id string, age time.Duration, c fleet.PoolCapacity) fleet.RemoteCapacity {
	c.Pool = pool
	return fleet.RemoteCapacity{ClusterID: id, Capacity: c, ReceivedAt: now.Add(-age)}
}

func TestList(t *testing.T) {
	fleetOf := func(caps ...fleet.RemoteCapacity) view {
		return view{
			caps: map[fleet.PoolRef][]fleet.RemoteCapacity{pool: caps, other: {report("eu-west-1", 0, fleet.PoolCapacity{})}},
			clusters: []fleet.Cluster{
				cluster("us-east-1", "us-east", "10.0.0.1:80", fleet.StateAlive),
				cluster("us-west-1", "us-west", "10.0.1.1:80", fleet.StateAlive),
				cluster("eu-west-1", "eu-west", "10.0.2.1:80", fleet.StateAlive),
				cluster("ap-gone-1", "ap", "10.0.3.1:80", fleet.StateGone),
			},
		}
	}
	for _, tc := range []struct {
		name      string
		opts      Options
		want      []spill.Remote
		wantAsked []string
	}{{
		name: "no report for the pool",
		opts: Options{View: view{}},
	}, {
		name: "self excluded, load, spill state and age copied",
		opts: Options{View: fleetOf(
			report("us-east-1", time.Second, fleet.PoolCapacity{ReadyEndpoints: 9}),
			report("us-west-1", 300*time.Millisecond, fleet.PoolCapacity{ReadyEndpoints: 2, QueueDepth: 7, Saturation: 0.9, Saturated: true, Spilling: true}),
		)},
		want: []spill.Remote{{ClusterID: "us-west-1", Region: "us-west", Gateway: "10.0.1.1:80", Alive: true,
			Age: 300 * time.Millisecond, Saturated: true, Saturation: 0.9, ReadyEndpoints: 2, QueueDepth: 7, Spilling: true, RTT: 40 * time.Millisecond}},
		wantAsked: []string{"10.0.1.1:80"},
	}, {
		name: "gone by the hub or dead by gossip: not alive; unreachable by gossip: alive, unreachable",
		opts: Options{View: fleetOf(report("ap-gone-1", 0, fleet.PoolCapacity{}), report("eu-west-1", 0, fleet.PoolCapacity{}),
			report("us-west-1", 0, fleet.PoolCapacity{})), Live: liveness{dead: map[string]bool{"eu-west-1": true}, unreachable: map[string]bool{"us-west-1": true}}},
		want: []spill.Remote{
			{ClusterID: "ap-gone-1", Region: "ap", Gateway: "10.0.3.1:80"},
			{ClusterID: "eu-west-1", Region: "eu-west", Gateway: "10.0.2.1:80"},
			{ClusterID: "us-west-1", Region: "us-west", Gateway: "10.0.1.1:80", Alive: true, Unreachable: true, RTT: 40 * time.Millisecond},
		},
		wantAsked: []string{"10.0.3.1:80", "10.0.2.1:80", "10.0.1.1:80"},
	}, {
		name: "override beats the resolver beats the registered address",
		opts: Options{
			View:      fleetOf(report("ap-gone-1", 0, fleet.PoolCapacity{}), report("eu-west-1", 0, fleet.PoolCapacity{}), report("us-west-1", 0, fleet.PoolCapacity{})),
			Gateways:  gateways{"eu-west-1": "eu.mcs:80", "us-west-1": "us.mcs:80"},
			Overrides: map[string]string{"us-west-1": "proxy:8080"},
		},
		want: []spill.Remote{
			{ClusterID: "ap-gone-1", Region: "ap", Gateway: "10.0.3.1:80"},
			{ClusterID: "eu-west-1", Region: "eu-west", Gateway: "eu.mcs:80", Alive: true},
			{ClusterID: "us-west-1", Region: "us-west", Gateway: "proxy:8080", Alive: true},
		},
		wantAsked: []string{"10.0.3.1:80", "eu.mcs:80", "proxy:8080"},
	}, {
		name: "unregistered cluster: no gateway, no RTT asked",
		opts: Options{View: fleetOf(report("new-1", 2*time.Second, fleet.PoolCapacity{ReadyEndpoints: 1}))},
		want: []spill.Remote{{ClusterID: "new-1", Age: 2 * time.Second, ReadyEndpoints: 1}},
	}, {
		name: "endpoints: ready ones only, shortest queue first",
		opts: Options{View: fleetOf(report("us-west-1", 0, fleet.PoolCapacity{Endpoints: []fleet.EndpointCapacity{
			{Address: "a:1", QueueDepth: 4, Ready: true},
			{Address: "b:1", QueueDepth: 0, Ready: false},
			{Address: "c:1", QueueDepth: 1, Ready: true},
			{Address: "d:1", QueueDepth: 4, Ready: true},
			{Address: "e:1", QueueDepth: 0, Ready: true},
		}}))},
		want: []spill.Remote{{ClusterID: "us-west-1", Region: "us-west", Gateway: "10.0.1.1:80", Alive: true,
			Endpoints: []string{"e:1", "c:1", "a:1", "d:1"}, RTT: 40 * time.Millisecond}},
		wantAsked: []string{"10.0.1.1:80"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			rtt := &rtts{known: map[string]time.Duration{"10.0.1.1:80": 40 * time.Millisecond}}
			tc.opts.Self, tc.opts.Pool, tc.opts.RTT, tc.opts.Now = "us-east-1", pool, rtt, func() time.Time { return now }
			got := New(tc.opts).List()
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("List() =\n%+v\nwant\n%+v", got, tc.want)
			}
			if !reflect.DeepEqual(rtt.asked, tc.wantAsked) {
				t.Errorf("RTT asked for %q, want %q", rtt.asked, tc.wantAsked)
			}
		})
	}
}

func TestListWithoutRTTSource(t *testing.T) {
	c := New(Options{Self: "us-east-1", Pool: pool, View: view{
		caps:     map[fleet.PoolRef][]fleet.RemoteCapacity{pool: {report("us-west-1", 0, fleet.PoolCapacity{})}},
		clusters: []fleet.Cluster{cluster("us-west-1", "us-west", "10.0.1.1:80", fleet.StateAlive)},
	}})
	got := c.List()
	if len(got) != 1 || got[0].Gateway != "10.0.1.1:80" || got[0].RTT != 0 {
		t.Errorf("List() = %+v, want us-west-1 at 10.0.1.1:80 with an unknown RTT", got)
	}
	if c.Pool() != pool {
		t.Errorf("Pool() = %s, want %s", c.Pool(), pool)
	}
}

// askedLiveness is a fake gossip that counts the Unreachable asks by cluster.
type askedLiveness struct {
	mu    sync.Mutex
	asked map[string]int
}

func (l *askedLiveness) Dead(string) bool { return false }

func (l *askedLiveness) Unreachable(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.asked[id]++
	return false
}

func (l *askedLiveness) count(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.asked[id]
}

// TestRunKeepsCandidatesWarm: without any request, Run asks gossip about every candidate of the
// pool (so their pings run) again and again, and not about a cluster of another pool nor about
// this cluster; it returns when its context ends.
func TestRunKeepsCandidatesWarm(t *testing.T) {
	live := &askedLiveness{asked: map[string]int{}}
	v := view{
		caps: map[fleet.PoolRef][]fleet.RemoteCapacity{
			pool:  {report("us-east-1", 0, fleet.PoolCapacity{}), report("us-west-1", 0, fleet.PoolCapacity{})},
			other: {report("eu-west-1", 0, fleet.PoolCapacity{})},
		},
		clusters: []fleet.Cluster{cluster("us-west-1", "us-west", "10.0.1.1:80", fleet.StateAlive)},
	}
	c := New(Options{Self: "us-east-1", Pool: pool, View: v, Live: live, Warm: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testkit.Eventually(t, 5*time.Second, "us-west-1 asked about over and over", func() error {
		if n := live.count("us-west-1"); n < 3 {
			return fmt.Errorf("asked %d times", n)
		}
		return nil
	})
	if n, m := live.count("eu-west-1"), live.count("us-east-1"); n != 0 || m != 0 {
		t.Fatalf("asked about another pool's cluster %d times and about itself %d times", n, m)
	}
}

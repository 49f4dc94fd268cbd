package epp

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/pkg/spill"
)

// loopFleet is a few clusters, each with its own EPP and spill decider, whose views of one
// another are the others' current capacity reports (the views hold: a report is seen at once).
type loopFleet struct {
	members []*loopMember
	byGW    map[string]*loopMember
}

type loopMember struct {
	id    string
	gw    string
	srv   *Server
	dec   *spill.Decider
	local spill.Local
}

// A cluster that "saturates" is past its trip mark with some headroom left: it spills, but
// its report does not say saturated, so only its spill state keeps it from being a target.
var (
	loopIdle = spill.Local{ReadyEndpoints: 3, QueueDepth: 0, Saturation: 0.2}
	loopHot  = spill.Local{ReadyEndpoints: 3, QueueDepth: 30, Saturation: 0.95}
)

func newLoopFleet(t *testing.T, n int) *loopFleet {
	t.Helper()
	f := &loopFleet{byGW: map[string]*loopMember{}}
	for i := range n {
		m := &loopMember{id: fmt.Sprintf("cluster-%d", i), gw: fmt.Sprintf("127.0.3.%d:8080", i+1), local: loopIdle}
		dec, err := spill.New(spill.DefaultPolicy(), func() []spill.Remote { return f.view(m) })
		if err != nil {
			t.Fatal(err)
		}
		m.dec = dec
		m.dec.ObserveLocal(m.local)
		m.srv = newTestServer(t, stageObjectives, fakeDatastore{testPool: {readyEndpoint(fmt.Sprintf("10.0.%d.1:8000", i), modelmetrics.Metrics{WaitingQueue: 9})}},
			func(o *Options) {
				o.ClusterID, o.Spill, o.HopKeys, o.Now = m.id, dec, keySet(hopFleet), func() time.Time { return hopT0 }
			})
		f.members = append(f.members, m)
		f.byGW[m.gw] = m
	}
	return f
}

// view is what self knows of the others: each one's own capacity report, spill state included.
func (f *loopFleet) view(self *loopMember) []spill.Remote {
	var out []spill.Remote
	for _, m := range f.members {
		if m == self {
			continue
		}
		out = append(out, spill.Remote{ClusterID: m.id, Region: m.id, Gateway: m.gw, Alive: true,
			ReadyEndpoints: m.local.ReadyEndpoints, QueueDepth: m.local.QueueDepth, Saturation: m.local.Saturation,
			Saturated: m.local.Saturated, Spilling: m.dec.State().Spilling})
	}
	return out
}

// saturate makes the cluster hot, as the arrival of one more request might.
func (m *loopMember) saturate() {
	m.local = loopHot
	m.dec.ObserveLocal(m.local)
}

// route sends a Critical request with the given extra headers through the cluster's EPP and
// returns the headers the EPP set and the first destination.
func (m *loopMember) route(t *testing.T, extra ...string) (set map[string]string, dest string) {
	t.Helper()
	kv := append([]string{":method", "POST", ":path", "/v1/completions", ObjectiveHeader, "critical"}, extra...)
	st := &memStream{in: []*extprocv3.ProcessingRequest{requestHeaders(kv...), requestBody(`{"model":"m","prompt":"hello"}`, true)}}
	if err := m.srv.Process(st); err != nil {
		t.Fatal(err)
	}
	f := forwardedOf(t, st.out)
	return f.headers, strings.Split(f.headers[DestinationHeader], ",")[0]
}

// TestSpilledRequestCannotLoop: two or three clusters, each of which saturates when the request
// reaches it, with a proxy between their gateways that either keeps or strips x-spillway-hop.
// Keeping it, the request is served where it first spilled to. Stripping it, each cluster sees a
// fresh request and may spill it again, but only to a cluster whose report does not say it spills:
// the chain ends within as many hops as there are clusters and never comes back to a cluster it
// left. (Without the spill-state filter a cluster past its trip mark with headroom is a target,
// and the request goes back and forth for ever.)
func TestSpilledRequestCannotLoop(t *testing.T) {
	tests := []struct {
		clusters int
		strip    bool
		want     []string // the clusters the request passes through; the last serves it
	}{
		{2, false, []string{"cluster-0", "cluster-1"}},
		{2, true, []string{"cluster-0", "cluster-1"}},
		{3, false, []string{"cluster-0", "cluster-1"}},
		{3, true, []string{"cluster-0", "cluster-1", "cluster-2"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d clusters, marker stripped %v", tt.clusters, tt.strip), func(t *testing.T) {
			f := newLoopFleet(t, tt.clusters)
			var path []string
			at, extra := f.members[0], []string(nil)
			for hop := 0; ; hop++ {
				if slices.Contains(path, at.id) {
					t.Fatalf("the request came back to %s: path %v", at.id, append(path, at.id))
				}
				if hop > tt.clusters {
					t.Fatalf("more hops than clusters: path %v", path)
				}
				path = append(path, at.id)
				at.saturate()
				set, dest := at.route(t, extra...)
				next, spilled := f.byGW[dest]
				if !spilled {
					break // served here, on a local endpoint
				}
				if !at.dec.State().Spilling {
					t.Fatalf("%s spilled while its own state says it does not", at.id)
				}
				extra = nil
				if marker, ok := set[HopHeader]; ok && !tt.strip {
					extra = []string{HopHeader, marker}
				}
				at = next
			}
			if !slices.Equal(path, tt.want) {
				t.Fatalf("path %v, want %v", path, tt.want)
			}
			// The last cluster served it although it was hot: kept, the marker said so; stripped,
			// every other cluster reported spilling.
			last := f.members[len(tt.want)-1]
			if last.srv.Spilled() != 0 {
				t.Fatalf("%s spilled %d requests, want 0", last.id, last.srv.Spilled())
			}
		})
	}
}

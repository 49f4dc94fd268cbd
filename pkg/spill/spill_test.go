package spill

import (
	"slices"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func remotes(rs ...Remote) Candidates    { return func() []Remote { return rs } }
func healthy(id, region string, rtt time.Duration) Remote {
	return Remote{ClusterID: id, Region: region, Gateway: id + ":8080", Endpoints: []string{id + "-0:8000"}, Alive: true,
		ReadyEndpoints: 3, Saturation: 0.2, RTT: rtt}
}

func newDecider(t *testing.T, p Policy, rs Candidates) (*Decider, *clock) {
	t.Helper()
	d, err := New(p, rs)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Unix(1000, 0)}
	d.now = c.now
	return d, c
}

// spillingButFree is r as it reports while its pool spills between the marks (or past the trip
// mark with headroom): not saturated, but sending requests away itself.
func cordoned(r Remote) Remote {
	r.Cordoned = true
	return r
}

func spillingButFree(r Remote) Remote {
	r.Spilling, r.Saturation = true, 0.8
	return r
}

var saturated = Local{ReadyEndpoints: 3, QueueDepth: 30, Saturation: 1, Saturated: true}

func TestDecide(t *testing.T) {
	near, far := healthy("us-west", "us-west", 20*time.Millisecond), healthy("eu-west", "eu-west", 80*time.Millisecond)
	for _, tc := range []struct {
		name   string
		policy func(*Policy)
		local  Local
		rs     []Remote
		req    Request
		spill  bool
		reason Reason
		to     string
	}{
		{name: "local capacity keeps everything local", local: Local{ReadyEndpoints: 3, Saturation: 0.3}, rs: []Remote{near}, req: Request{Priority: 100}, reason: ReasonLocal},
		{name: "saturated: critical spills to the nearest", local: saturated, rs: []Remote{far, near}, req: Request{Priority: 100}, spill: true, reason: ReasonSaturated, to: "us-west:8080"},
		{name: "saturated: standard stays", local: saturated, rs: []Remote{near}, req: Request{Priority: 0}, reason: ReasonIneligible},
		{name: "saturated: besteffort stays (and is shed by the EPP)", local: saturated, rs: []Remote{near}, req: Request{Priority: -1}, reason: ReasonIneligible},
		{name: "a spilled request never spills again", local: saturated, rs: []Remote{near}, req: Request{Priority: 100, Hop: true}, reason: ReasonHop},
		{name: "whole fleet saturated: nothing spills", local: saturated, rs: []Remote{{ClusterID: "x", Gateway: "x:1", Alive: true, Saturated: true, ReadyEndpoints: 3}}, req: Request{Priority: 100}, reason: ReasonNoTarget},
		{name: "no target: the policy's fallback serves it here", policy: func(p *Policy) { p.FallbackModel = "small" }, local: saturated,
			rs: []Remote{{ClusterID: "x", Gateway: "x:1", Alive: true, Saturated: true, ReadyEndpoints: 3}}, req: Request{Priority: 100}, reason: ReasonFallback},
		{name: "dead, unreachable and stale remotes are not targets", local: saturated,
			rs: []Remote{{ClusterID: "dead", Gateway: "d:1", ReadyEndpoints: 3}, {ClusterID: "unreachable", Gateway: "u:1", Alive: true, Unreachable: true, ReadyEndpoints: 3},
				{ClusterID: "stale", Gateway: "s:1", Alive: true, ReadyEndpoints: 3, Age: time.Minute}},
			req: Request{Priority: 100}, reason: ReasonNoTarget},
		{name: "no local endpoint: critical fails over", local: Local{}, rs: []Remote{near}, req: Request{Priority: 100}, spill: true, reason: ReasonNoEndpoints, to: "us-west:8080"},
		{name: "no local endpoint: standard does not by default", local: Local{}, rs: []Remote{near}, req: Request{Priority: 0}, reason: ReasonIneligible},
		{name: "no local endpoint: standard does when the policy says", policy: func(p *Policy) { p.FailoverStandard = true }, local: Local{}, rs: []Remote{near}, req: Request{Priority: 0}, spill: true, reason: ReasonNoEndpoints, to: "us-west:8080"},
		{name: "import only: every priority goes", local: Local{ImportOnly: true}, rs: []Remote{near}, req: Request{Priority: -1}, spill: true, reason: ReasonImportOnly, to: "us-west:8080"},
		{name: "allowed regions in order", policy: func(p *Policy) { p.TargetRegions = []string{"eu-west", "us-west"} }, local: saturated, rs: []Remote{near, far}, req: Request{Priority: 100}, spill: true, reason: ReasonSaturated, to: "eu-west:8080"},
		{name: "regions outside the allowed list are not targets", policy: func(p *Policy) { p.TargetRegions = []string{"ap-south"} }, local: saturated, rs: []Remote{near, far}, req: Request{Priority: 100}, reason: ReasonNoTarget},
		{name: "endpoint mode sends to the remote endpoints", policy: func(p *Policy) { p.Mode = EndpointMode }, local: saturated, rs: []Remote{near}, req: Request{Priority: 100}, spill: true, reason: ReasonSaturated, to: "us-west-0:8000"},
		{name: "a short local wait is not worth a long prefill", local: Local{ReadyEndpoints: 10, QueueDepth: 1, Saturation: 0.95}, rs: []Remote{near}, req: Request{Priority: 100, PromptTokens: 80000}, reason: ReasonNotWorth},
		{name: "a remote that spills itself is not a target, even with headroom", local: saturated,
			rs:  []Remote{spillingButFree(near)},
			req: Request{Priority: 100}, reason: ReasonNoTarget},
		{name: "a cordoned remote is not a target: the next one is", local: saturated, rs: []Remote{cordoned(near), far},
			req: Request{Priority: 100}, spill: true, reason: ReasonSaturated, to: "eu-west:8080"},
		{name: "every remote cordoned: nothing spills", local: saturated, rs: []Remote{cordoned(near), cordoned(far)},
			req: Request{Priority: 100}, reason: ReasonNoTarget},
		{name: "a spilling remote loses to any other", local: saturated, rs: []Remote{spillingButFree(near), far},
			req: Request{Priority: 100}, spill: true, reason: ReasonSaturated, to: "eu-west:8080"},
		{name: "a remote that spills itself is not a failover target either", local: Local{},
			rs: []Remote{spillingButFree(near)}, req: Request{Priority: 100}, reason: ReasonNoTarget},
		{name: "no hop key: parent mode keeps it here", local: saturated, rs: []Remote{near},
			req: Request{Priority: 100, NoHopKey: true}, reason: ReasonNoHopKey},
		{name: "no hop key: parent mode serves it on the fallback", policy: func(p *Policy) { p.FallbackModel = "small" }, local: saturated,
			rs: []Remote{near}, req: Request{Priority: 100, NoHopKey: true}, reason: ReasonFallback},
		{name: "no hop key: no failover in parent mode", local: Local{}, rs: []Remote{near},
			req: Request{Priority: 100, NoHopKey: true}, reason: ReasonNoHopKey},
		{name: "no hop key: endpoint mode needs none", policy: func(p *Policy) { p.Mode = EndpointMode }, local: saturated, rs: []Remote{near},
			req: Request{Priority: 100, NoHopKey: true}, spill: true, reason: ReasonSaturated, to: "us-west-0:8000"},
		{name: "no hop key: not worth it says so", local: Local{ReadyEndpoints: 10, QueueDepth: 1, Saturation: 0.95}, rs: []Remote{near},
			req: Request{Priority: 100, PromptTokens: 80000, NoHopKey: true}, reason: ReasonNotWorth},
		{name: "a loaded remote loses to a farther idle one", local: saturated,
			rs:  []Remote{{ClusterID: "busy", Region: "r1", Gateway: "busy:1", Alive: true, ReadyEndpoints: 1, QueueDepth: 4, RTT: time.Millisecond}, far},
			req: Request{Priority: 100}, spill: true, reason: ReasonSaturated, to: "eu-west:8080"},
		// Latency objectives (the service time is New's 1 s; 3 queued on 3 endpoints wait 1 s).
		{name: "latency objective: a local wait that breaks it spills before the pool trips", local: Local{ReadyEndpoints: 3, QueueDepth: 3, Saturation: 0.5},
			rs: []Remote{far, near}, req: Request{Priority: 100, TTFT: 300 * time.Millisecond}, spill: true, reason: ReasonLatency, to: "us-west:8080"},
		{name: "latency objective met here: stays", local: Local{ReadyEndpoints: 3, QueueDepth: 0, Saturation: 0.3},
			rs: []Remote{near}, req: Request{Priority: 100, TTFT: 300 * time.Millisecond}, reason: ReasonLocal},
		{name: "latency objective no cluster meets: stays, unmet", local: Local{ReadyEndpoints: 3, QueueDepth: 3, Saturation: 0.5},
			rs:  []Remote{{ClusterID: "busy", Region: "r1", Gateway: "busy:1", Alive: true, ReadyEndpoints: 3, QueueDepth: 3, RTT: time.Millisecond}},
			req: Request{Priority: 100, TTFT: 300 * time.Millisecond}, reason: ReasonLatencyUnmet},
		{name: "latency objective with no remote at all: unmet", local: Local{ReadyEndpoints: 3, QueueDepth: 3, Saturation: 0.5},
			req: Request{Priority: 100, TTFT: 300 * time.Millisecond}, reason: ReasonLatencyUnmet},
		{name: "latency objective: a remote farther than the objective is no help", local: Local{ReadyEndpoints: 3, QueueDepth: 3, Saturation: 0.5},
			rs: []Remote{far}, req: Request{Priority: 100, TTFT: 50 * time.Millisecond}, reason: ReasonLatencyUnmet},
		{name: "latency objective below the policy's priority: unmet, it may not spill", local: Local{ReadyEndpoints: 3, QueueDepth: 3, Saturation: 0.5},
			rs: []Remote{near}, req: Request{Priority: 0, TTFT: 300 * time.Millisecond}, reason: ReasonLatencyUnmet},
		{name: "latency objective below the policy's priority, met here: stays", local: Local{ReadyEndpoints: 3, Saturation: 0.5},
			rs: []Remote{near}, req: Request{Priority: -1, TTFT: 300 * time.Millisecond}, reason: ReasonLocal},
		{name: "latency objective: a spilled request never spills again", local: Local{ReadyEndpoints: 3, QueueDepth: 3, Saturation: 0.5},
			rs: []Remote{near}, req: Request{Priority: 100, TTFT: 300 * time.Millisecond, Hop: true}, reason: ReasonHop},
		// Objective caps.
		{name: "objective at its cap: critical spills whatever the load", local: Local{ReadyEndpoints: 3, Saturation: 0.1},
			rs: []Remote{far, near}, req: Request{Priority: 100, OverCap: true}, spill: true, reason: ReasonCapped, to: "us-west:8080"},
		{name: "objective at its cap: below the policy's priority stays (the EPP refuses it)", local: Local{ReadyEndpoints: 3, Saturation: 0.1},
			rs: []Remote{near}, req: Request{Priority: 0, OverCap: true}, reason: ReasonLocal},
		{name: "objective at its cap, no target: stays", local: Local{ReadyEndpoints: 3, Saturation: 0.1},
			rs: []Remote{cordoned(near)}, req: Request{Priority: 100, OverCap: true}, reason: ReasonNoTarget},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultPolicy()
			if tc.policy != nil {
				tc.policy(&p)
			}
			d, _ := newDecider(t, p, remotes(tc.rs...))
			d.ObserveLocal(tc.local)
			got := d.Decide(tc.req)
			if got.Spill != tc.spill || got.Reason != tc.reason {
				t.Fatalf("Decide = spill %v reason %s, want %v %s", got.Spill, got.Reason, tc.spill, tc.reason)
			}
			if tc.spill && (len(got.Destination) == 0 || got.Destination[0] != tc.to) {
				t.Fatalf("destination %v, want %s first", got.Destination, tc.to)
			}
			if tc.spill && got.Mode != p.Mode {
				t.Fatalf("mode %q, want the policy's %q", got.Mode, p.Mode)
			}
		})
	}
}

func TestHysteresis(t *testing.T) {
	p := DefaultPolicy()
	p.MinDwell = 5 * time.Second
	d, c := newDecider(t, p, remotes(healthy("b", "b", time.Millisecond)))
	obs := func(sat float64) {
		d.ObserveLocal(Local{ReadyEndpoints: 3, QueueDepth: uint32(sat * 30), Saturation: sat})
	}
	obs(0.85)
	if d.State().Spilling {
		t.Fatal("below the trip mark: not spilling")
	}
	obs(0.92)
	if !d.State().Spilling {
		t.Fatal("at the trip mark: spilling")
	}
	c.advance(time.Second)
	obs(0.8) // between the marks: keeps spilling
	c.advance(10 * time.Second)
	obs(0.8)
	if !d.State().Spilling {
		t.Fatal("between the marks the state holds")
	}
	obs(0.5)
	c.advance(4 * time.Second)
	obs(0.5)
	if !d.State().Spilling {
		t.Fatal("below the clear mark for less than the dwell: still spilling")
	}
	c.advance(2 * time.Second)
	obs(0.5)
	if d.State().Spilling {
		t.Fatal("below the clear mark for the dwell: stopped")
	}
	if got := d.Decide(Request{Priority: 100}); got.Spill || got.Reason != ReasonLocal {
		t.Fatalf("after clearing: %+v", got)
	}
}

func TestPolicyValidate(t *testing.T) {
	p := DefaultPolicy()
	p.ClearMark, p.Mode = 0.95, "Somewhere"
	err := p.Validate()
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"clearMark", "mode"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v does not name %s", err, want)
		}
	}
	if _, err := New(p, remotes()); err == nil {
		t.Fatal("New must refuse an invalid policy")
	}
}

// TestUnobservedHoldsState: a new decider and an unobserved pool start no spilling and do not
// fail over on ReadyEndpoints == 0; a request no local endpoint can take still fails over; a pool
// already spilling keeps spilling while unobserved; once observed, the hysteresis moves as usual.
func TestUnobservedHoldsState(t *testing.T) {
	d, c := newDecider(t, DefaultPolicy(), remotes(healthy("b", "b", time.Millisecond)))
	decide := func(step string, r Request, spill bool, reason Reason) {
		t.Helper()
		if got := d.Decide(r); got.Spill != spill || got.Reason != reason {
			t.Fatalf("%s: Decide = %+v, want spill %v reason %s", step, got, spill, reason)
		}
	}
	if d.State().Spilling {
		t.Fatal("a new decider is not spilling")
	}
	decide("before any observation", Request{Priority: 100}, false, ReasonLocal)
	decide("before any observation, nothing local", Request{Priority: 100, NoLocal: true}, true, ReasonNoEndpoints)
	d.ObserveLocal(Local{Unobserved: true, Saturation: 1, Saturated: true})
	if d.State().Spilling {
		t.Fatal("unobserved: unknown is not hot")
	}
	decide("unobserved", Request{Priority: 100}, false, ReasonLocal)
	c.advance(time.Second)
	d.ObserveLocal(Local{ReadyEndpoints: 2})
	if d.State().Spilling {
		t.Fatal("observed idle: not spilling")
	}
	d.ObserveLocal(Local{})
	if !d.State().Spilling {
		t.Fatal("observed with no endpoint ready: spilling")
	}
	decide("observed, none ready", Request{Priority: 100}, true, ReasonNoEndpoints)
	c.advance(time.Minute)
	d.ObserveLocal(Local{Unobserved: true, ReadyEndpoints: 1})
	if !d.State().Spilling {
		t.Fatal("spilling, then unobserved: the state holds")
	}
	d.ObserveLocal(Local{ReadyEndpoints: 2})
	c.advance(DefaultPolicy().MinDwell)
	d.ObserveLocal(Local{ReadyEndpoints: 2})
	if d.State().Spilling {
		t.Fatal("observed idle for the dwell: stopped")
	}
}

// heldPrefix is a remote's prefix sketch that holds the first n blocks of every chain.
type heldPrefix int

func (h heldPrefix) Matched(chain []uint64) int { return min(int(h), len(chain)) }

// TestCacheAwareRanking: a farther region whose prefix sketch holds the prompt's prefix saves
// its prefill and wins over a nearer one that holds nothing; without sketches (or with blocks of
// another size) the nearer wins; the cost of the best target's missing prefill decides whether
// spilling is worth it at all; the chain is computed once, and only when targets are ranked.
func TestCacheAwareRanking(t *testing.T) {
	near, far := healthy("us-west", "us-west", 20*time.Millisecond), healthy("eu-west", "eu-west", 80*time.Millisecond)
	warmFar := far
	warmFar.Prefix, warmFar.PrefixBlockBytes = heldPrefix(200), 64
	calls := 0
	// 12,800 bytes of prompt: 3,200 tokens, 200 blocks of 64 bytes, 400 ms of prefill at 8,000/s.
	req := Request{Priority: 100, PromptTokens: 3200, ChainBlockBytes: 64, Chain: func() []uint64 { calls++; return make([]uint64, 200) }}
	policy := DefaultPolicy()
	policy.PrefillTokensPerSecond = 8000

	d, _ := newDecider(t, policy, remotes(near, warmFar))
	d.ObserveLocal(saturated)
	d.serviceTime = time.Second
	dec, tr := d.Explain(req)
	if !dec.Spill || dec.Target.ClusterID != "eu-west" {
		t.Fatalf("decision %+v, want eu-west, which holds the prefix", dec)
	}
	if calls != 1 || tr.Remotes[0].CachedBlocks != 200 || tr.Prefill != 0 {
		t.Fatalf("chain computed %d times; best target's cached blocks %d, prefill %s: want 1, 200 and 0", calls, tr.Remotes[0].CachedBlocks, tr.Prefill)
	}
	// The same without sketches, or with blocks of another size: the nearer.
	otherBlocks := warmFar
	otherBlocks.PrefixBlockBytes = 16
	for _, rs := range [][]Remote{{near, far}, {near, otherBlocks}} {
		d, _ := newDecider(t, policy, remotes(rs...))
		d.ObserveLocal(saturated)
		d.serviceTime = time.Second
		if dec := d.Decide(req); !dec.Spill || dec.Target.ClusterID != "us-west" {
			t.Fatalf("remotes %v: decision %+v, want us-west", rs, dec)
		}
	}
	// A request that stays local computes no chain.
	calls = 0
	d, _ = newDecider(t, policy, remotes(near, warmFar))
	d.ObserveLocal(Local{ReadyEndpoints: 3, Saturation: 0.2})
	if dec := d.Decide(req); dec.Spill || calls != 0 {
		t.Fatalf("decision %+v with the chain computed %d times, want local and none", dec, calls)
	}
	// The local wait (about one service time of 300 ms) is below a cold target's RTT plus
	// 400 ms of prefill, but above a warm one's RTT: only the warm one makes spilling worth it.
	for _, tc := range []struct {
		rs    []Remote
		spill bool
	}{{[]Remote{near}, false}, {[]Remote{warmFar}, true}} {
		d, _ := newDecider(t, policy, remotes(tc.rs...))
		d.ObserveLocal(Local{ReadyEndpoints: 3, QueueDepth: 0, Saturation: 1, Saturated: true})
		d.serviceTime = 300 * time.Millisecond
		if dec := d.Decide(req); dec.Spill != tc.spill {
			t.Fatalf("remotes %s: decision %+v, want spill %v", tc.rs[0].ClusterID, dec, tc.spill)
		}
	}
}

// TestSpilledRequestsSpread: the requests a decider spilled to a cluster and that have not
// ended count in its queue, so that between two capacity reports the spilled requests spread
// over the targets instead of all queueing at the nearest; once they end it is the nearest again.
func TestSpilledRequestsSpread(t *testing.T) {
	// 1 s service time (New's), 3 ready endpoints: each request in flight adds 1/6 s to
	// us-west's cost, and eu-west is 60 ms farther.
	near, far := healthy("us-west", "us-west", 20*time.Millisecond), healthy("eu-west", "eu-west", 80*time.Millisecond)
	d, _ := newDecider(t, DefaultPolicy(), remotes(near, far))
	d.ObserveLocal(saturated)
	var to []string
	for range 4 {
		to = append(to, d.Decide(Request{Priority: 100}).Target.ClusterID)
	}
	if want := []string{"us-west", "eu-west", "us-west", "eu-west"}; strings.Join(to, ",") != strings.Join(want, ",") {
		t.Fatalf("four spilled requests went to %v, want %v", to, want)
	}
	for _, c := range to {
		d.Ended(c)
	}
	d.Ended("us-west") // one more than was sent: nothing below zero
	if got := d.Decide(Request{Priority: 100}).Target.ClusterID; got != "us-west" {
		t.Fatalf("after every spilled request ended: %s, want us-west", got)
	}
	if got := d.Decide(Request{Priority: 100}).Target.ClusterID; got != "eu-west" {
		t.Fatalf("with one in flight at us-west: %s, want eu-west", got)
	}
	// Explaining a decision counts nothing.
	if _, tr := d.Explain(Request{Priority: 100}); tr.Remotes[0].ClusterID != "us-west" {
		t.Fatalf("explained ranking %+v, want us-west first with one request in flight at each", tr.Remotes)
	}
}

// TestReportedRequestsCountOnce: a spilled request still in flight counts in its target's cost
// only until a capacity report taken after it arrives: from then on the report counts it, in
// its queue if it waits there, and a request running there delays nobody.
func TestReportedRequestsCountOnce(t *testing.T) {
	// 1 s service time (New's), 3 ready endpoints: each unreported request adds 1/6 s to its
	// target's cost; eu-west is 280 ms farther.
	near, far := healthy("us-west", "us-west", 20*time.Millisecond), healthy("eu-west", "eu-west", 300*time.Millisecond)
	var age time.Duration // of both clusters' reports
	d, c := newDecider(t, DefaultPolicy(), func() []Remote {
		n, f := near, far
		n.Age, f.Age = age, age
		return []Remote{n, f}
	})
	d.ObserveLocal(saturated)
	spill := func() string { return d.Decide(Request{Priority: 100}).Target.ClusterID }
	// A report received 300 ms ago: nothing sent now is in it.
	age = 300 * time.Millisecond
	if got := []string{spill(), spill()}; !slices.Equal(got, []string{"us-west", "us-west"}) {
		t.Fatalf("two spilled requests went to %v, want us-west twice (one unreported costs less than the 280 ms to eu-west)", got)
	}
	// Half a second later, reports received 100 ms ago, taken after both requests arrived:
	// still in flight, but the reports count them.
	c.advance(500 * time.Millisecond)
	age = 100 * time.Millisecond
	if got := spill(); got != "us-west" {
		t.Fatalf("with both requests in us-west's report: %s, want us-west", got)
	}
	// The two oldest end; the third, sent just now, is in no report and still counts: one
	// more goes to us-west, the next to eu-west.
	d.Ended("us-west")
	d.Ended("us-west")
	if got := []string{spill(), spill()}; !slices.Equal(got, []string{"us-west", "eu-west"}) {
		t.Fatalf("with the third request unreported at us-west: %v, want us-west then eu-west", got)
	}
}

package epp

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spillway-io/spillway/pkg/epp/request"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/pkg/spill"
)

// routeRequest routes one request of objective through the server's whole pool path (route),
// as decide does after admission.
func routeRequest(s *Server, objective string) (*exchange, int) {
	x := &exchange{headers: map[string]string{}, ctx: context.Background(), body: []byte(`{"model":"m","prompt":"hello"}`), duplexReq: true,
		req: request.Request{Model: "m", Prompt: "hello"}, began: time.Now()}
	x.objective, x.priority = s.resolveObjective(objective)
	return x, immediateStatus(s.route(x))
}

func idlePool() fakeDatastore {
	return fakeDatastore{testPool: {readyEndpoint("10.0.0.1:8000", modelmetrics.Metrics{}), readyEndpoint("10.0.0.2:8000", modelmetrics.Metrics{})}}
}

// TestObjectiveCap: an objective capped at a number of requests in flight (or a share of the
// candidates' slots) gets that many routed at once, whatever the load; the next is refused with
// 429 and counted, and routed again once one ends. Objectives without a cap are not counted.
func TestObjectiveCap(t *testing.T) {
	const cfg = "slotsPerEndpoint: 2\nobjectives:\n- {name: batch, priority: BestEffort, maxConcurrency: 2}\n" +
		"- {name: standard, priority: Standard, maxShare: 0.75}\n- {name: critical, priority: Critical}\n"
	s := newTestServer(t, cfg, idlePool())
	var running []*exchange
	for i := range 2 {
		x, status := routeRequest(s, "batch")
		if status != 0 || !x.routed {
			t.Fatalf("batch request %d under its cap of 2: status %d, routed %v", i, status, x.routed)
		}
		running = append(running, x)
	}
	x, status := routeRequest(s, "batch")
	if status != 429 || x.routed || requests(s, "batch", "other", resultCapped) != 1 {
		t.Fatalf("a third batch request: status %d routed %v capped %v, want 429, not routed, counted capped",
			status, x.routed, requests(s, "batch", "other", resultCapped))
	}
	s.abandoned(x) // the refused request's stream ends: it held no place
	for i := range 5 {
		if x, status := routeRequest(s, "critical"); status != 0 {
			t.Fatalf("critical request %d (no cap) beside the capped objective: status %d", i, status)
		} else {
			running = append(running, x)
		}
	}
	s.finish(running[0])
	if x, status := routeRequest(s, "batch"); status != 0 {
		t.Fatalf("a batch request after one of two ended: status %d", status)
	} else {
		running = append(running, x)
	}
	if x, status := routeRequest(s, "batch"); status != 429 {
		t.Fatalf("batch at its cap again: status %d", status)
	} else {
		s.abandoned(x)
	}

	// maxShare 0.75 of 2 endpoints × 2 slots: 3.
	for i := range 3 {
		if x, status := routeRequest(s, "standard"); status != 0 {
			t.Fatalf("standard request %d under its share: status %d", i, status)
		} else {
			running = append(running, x)
		}
	}
	if _, status := routeRequest(s, "standard"); status != 429 {
		t.Fatalf("standard past 0.75 of 4 slots: status %d, want 429", status)
	}
	for _, x := range running {
		s.abandoned(x) // a stream that ends without its response releases its place too
	}
	if n := s.inflight["batch"].Load() + s.inflight["standard"].Load(); n != 0 {
		t.Fatalf("%d places still taken after every request ended", n)
	}
	if _, ok := s.inflight["critical"]; ok {
		t.Fatal("an objective without a cap is counted")
	}
}

// TestObjectiveCapSpills: a Critical request whose objective is at its cap spills (reason
// objective_capped) to a remote cluster with headroom, on an idle local pool; a hopped one is
// refused instead (the target applies its own cap), and so is one that may not spill.
func TestObjectiveCapSpills(t *testing.T) {
	const cfg = "objectives:\n- {name: critical, priority: Critical, maxConcurrency: 1}\n- {name: standard, priority: Standard, maxConcurrency: 1}\n"
	// Its report is a second old: a request spilled now is not in it.
	remote := spill.Remote{ClusterID: "us-west-1", Region: "us-west", Gateway: "127.0.2.254:8080", Alive: true, ReadyEndpoints: 3, Saturation: 0.1,
		Age: time.Second}
	dec, err := spill.New(spill.DefaultPolicy(), func() []spill.Remote { return []spill.Remote{remote} })
	if err != nil {
		t.Fatal(err)
	}
	dec.ObserveLocal(spill.Local{ReadyEndpoints: 2, Saturation: 0.1})
	s := newTestServer(t, cfg, idlePool(), func(o *Options) {
		o.ClusterID, o.HopKeys, o.Now, o.Spill = "us-east-1", keySet(hopFleet), func() time.Time { return hopT0 }, dec
	})
	first, status := routeRequest(s, "critical")
	if status != 0 || first.spilled {
		t.Fatalf("the first critical request: status %d spilled %v, want routed here", status, first.spilled)
	}
	x, status := routeRequest(s, "critical")
	if status != 0 || !x.spilled || x.dest != remote.Gateway ||
		testutil.ToFloat64(s.metrics.spilled.WithLabelValues(string(spill.ReasonCapped), "critical", "us-west")) != 1 {
		t.Fatalf("critical at its cap: status %d spilled %v to %q, want spilled to %s, counted objective_capped", status, x.spilled, x.dest, remote.Gateway)
	}
	if s.inflight["critical"].Load() != 1 {
		t.Fatalf("a spilled request took a place here: %d in flight", s.inflight["critical"].Load())
	}
	// The spilled request counts in the target's cost (half a queued request: 1/6 s on 3
	// endpoints at the 1 s service time) until its stream ends.
	cost := func() time.Duration {
		_, tr := dec.Explain(spill.Request{Priority: 100})
		return tr.Remotes[0].Cost
	}
	if c := cost(); c != time.Second/6 {
		t.Fatalf("the target's cost with the spilled request in flight: %s, want %s", c, time.Second/6)
	}
	s.abandoned(x)
	if c := cost(); c != 0 {
		t.Fatalf("the target's cost once the spilled request ended: %s, want 0", c)
	}
	if _, status := routeRequest(s, "standard"); status != 0 {
		t.Fatalf("standard under its cap: %d", status)
	}
	if x, status := routeRequest(s, "standard"); status != 429 || x.spilled {
		t.Fatalf("standard at its cap (it may not spill): status %d spilled %v, want 429", status, x.spilled)
	}
	m, err := SignHopMarker(hopKeyNew, "eu-west-1", "us-east-1", hopT0)
	if err != nil {
		t.Fatal(err)
	}
	hx := &exchange{headers: map[string]string{HopHeader: m.String()}, ctx: context.Background(), body: []byte(`{"model":"m","prompt":"hello"}`),
		duplexReq: true, req: request.Request{Model: "m", Prompt: "hello"}}
	hx.objective, hx.priority = s.resolveObjective("critical")
	if status := immediateStatus(s.route(hx)); status != 429 || hx.spilled {
		t.Fatalf("a hopped critical request at the cap: status %d spilled %v, want 429 here", status, hx.spilled)
	}
}

// TestLatencyObjective: on a pool that is not spilling, a Critical request whose objective's
// time to first token the local queue would break spills to a remote expected to meet it; a
// sheddable one, which may not spill, is shed (429) when the local queue breaks it and routed
// when it does not; with no remote meeting it, a Critical one is served here.
func TestLatencyObjective(t *testing.T) {
	const cfg = "objectives:\n- {name: critical, priority: Critical, ttft: 300ms}\n- {name: batch, priority: BestEffort, ttft: 300ms}\n"
	near := spill.Remote{ClusterID: "us-west-1", Region: "us-west", Gateway: "127.0.2.254:8080", Alive: true, ReadyEndpoints: 3, Saturation: 0.1, RTT: 20 * time.Millisecond}
	busy := near
	busy.QueueDepth = 6 // 2 queued per endpoint: 2 s at New's 1 s service time
	for _, tc := range []struct {
		name      string
		queue     uint32 // the local pool's waiting requests (2 endpoints)
		remote    spill.Remote
		objective string
		status    int
		spilled   bool
		reason    spill.Reason
	}{
		{"a queue that breaks it: critical spills", 4, near, "critical", 0, true, spill.ReasonLatency},
		{"an idle pool meets it: critical stays", 0, near, "critical", 0, false, ""},
		{"no cluster meets it: critical is served here", 4, busy, "critical", 0, false, ""},
		{"a queue that breaks it: besteffort is shed", 4, near, "batch", 429, false, ""},
		{"an idle pool meets it: besteffort is routed", 0, near, "batch", 0, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec, err := spill.New(spill.DefaultPolicy(), func() []spill.Remote { return []spill.Remote{tc.remote} })
			if err != nil {
				t.Fatal(err)
			}
			// Below the trip mark: the pool is not spilling.
			dec.ObserveLocal(spill.Local{ReadyEndpoints: 2, QueueDepth: tc.queue, Saturation: 0.5})
			s := newTestServer(t, cfg, idlePool(), func(o *Options) {
				o.ClusterID, o.HopKeys, o.Now, o.Spill = "us-east-1", keySet(hopFleet), func() time.Time { return hopT0 }, dec
			})
			x, status := routeRequest(s, tc.objective)
			if status != tc.status || x.spilled != tc.spilled {
				t.Fatalf("status %d spilled %v, want %d %v", status, x.spilled, tc.status, tc.spilled)
			}
			if tc.reason != "" && testutil.ToFloat64(s.metrics.spilled.WithLabelValues(string(tc.reason), tc.objective, "us-west")) != 1 {
				t.Fatalf("spill not counted with reason %s", tc.reason)
			}
			if tc.status == 429 && requests(s, tc.objective, "other", resultShed) != 1 {
				t.Fatal("the shed request is not counted shed")
			}
		})
	}
}

// TestObjectiveConfig: ttft, maxConcurrency and maxShare are checked, and maxShare needs
// slotsPerEndpoint.
func TestObjectiveConfig(t *testing.T) {
	s, err := ParseConfig([]byte("slotsPerEndpoint: 4\nobjectives:\n- {name: a, priority: Critical, ttft: 250ms, maxConcurrency: 3, maxShare: 0.5}\n- {name: b, priority: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Limits["a"], (ObjectiveLimits{TTFT: 250 * time.Millisecond, MaxConcurrency: 3, MaxShare: 0.5}); got != want || s.SlotsPerEndpoint != 4 {
		t.Fatalf("limits %+v slots %d, want %+v 4", got, s.SlotsPerEndpoint, want)
	}
	if _, ok := s.Limits["b"]; ok {
		t.Fatal("an objective without limits has limits")
	}
	for cfg, want := range map[string]string{
		"objectives: [{name: a, priority: 1, ttft: soon}]":         `ttft "soon"`,
		"objectives: [{name: a, priority: 1, ttft: 0s}]":           `ttft "0s"`,
		"objectives: [{name: a, priority: 1, maxConcurrency: -1}]": "maxConcurrency -1",
		"objectives: [{name: a, priority: 1, maxShare: 1.5}]":      "maxShare 1.5",
		"objectives: [{name: a, priority: 1, maxShare: 0.5}]":      "maxShare needs slotsPerEndpoint",
		"slotsPerEndpoint: -2":                                     "slotsPerEndpoint -2",
	} {
		if _, err := ParseConfig([]byte(cfg)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one naming %q", cfg, err, want)
		}
	}
}

// TestServiceTimeWithoutWait: the spill cost model's service time learns from requests that
// found no request waiting at their endpoint, not from those that queued (their duration holds
// the wait, which the model already counts per queued request).
func TestServiceTimeWithoutWait(t *testing.T) {
	serviceTime := func(waiting int) time.Duration {
		t.Helper()
		dec, err := spill.New(spill.DefaultPolicy(), func() []spill.Remote { return nil })
		if err != nil {
			t.Fatal(err)
		}
		m := modelmetrics.Metrics{WaitingQueue: waiting}
		s := newTestServer(t, "", fakeDatastore{testPool: {readyEndpoint("10.0.0.1:8000", m)}}, func(o *Options) { o.Spill = dec })
		x, status := routeRequest(s, "")
		if status != 0 || !x.routed || x.spilled {
			t.Fatalf("status %d routed %v spilled %v, want routed here", status, x.routed, x.spilled)
		}
		if !x.serviceFrom.IsZero() {
			x.serviceFrom = x.serviceFrom.Add(-5 * time.Second) // it took 5 s from its endpoint on
		}
		s.finish(x)
		_, tr := dec.Explain(spill.Request{})
		return tr.ServiceTime
	}
	// New's 1 s, moved a tenth of the way to 5 s.
	if got := serviceTime(0); got < 1390*time.Millisecond || got > 1500*time.Millisecond {
		t.Errorf("a request to an endpoint with none waiting: service time %v, want about 1.4 s", got)
	}
	if got := serviceTime(3); got != time.Second {
		t.Errorf("a request to an endpoint with 3 waiting: service time %v, want New's 1 s unchanged", got)
	}
}

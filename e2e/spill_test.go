package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/spill"
)

// startThreeRegions starts a hub and three regions (spoke with EPP, gateway, two simulated
// endpoints that run one sequence at a time) on loopback blocks 127.0.40-43.
func startThreeRegions(ctx context.Context, t *testing.T) (*localfleet.Fleet, []localfleet.Region) {
	return startThreeRegionsAt(ctx, t, 40)
}

// startThreeRegionsAt is startThreeRegions on loopback blocks 127.0.block to block+3, so that
// tests running at once do not share addresses.
func startThreeRegionsAt(ctx context.Context, t *testing.T, block int) (*localfleet.Fleet, []localfleet.Region) {
	t.Helper()
	hub := fmt.Sprintf("127.0.%d.1", block)
	o := localfleet.Options{BinDir: bins(t), WorkDir: t.TempDir(), HubGRPC: hub + ":18670", HubHTTP: hub + ":18671", HubGossip: hub + ":18672",
		HubAdmin: hub + ":18673",
		LeaseTTL: 3 * time.Second, SimArgs: []string{"--max-num-seqs", "1", "--decode-latency", "20ms"},
		EPPConfig: localfleet.EPPConfig + "spill: {minDwell: 2s, freshness: 3s}\n"}
	for i, name := range []string{"us-east", "us-west", "eu-west"} {
		b := block + 1 + i
		o.Regions = append(o.Regions, localfleet.Region{Name: name, Cluster: name + "-1",
			SpokeHTTP: fmt.Sprintf("%s:%d", hub, 18681+i), EPP: fmt.Sprintf("127.0.%d.254:19002", b), Gateway: fmt.Sprintf("127.0.%d.254:18080", b),
			Gossip:    fmt.Sprintf("127.0.%d.254:17946", b),
			Endpoints: []string{fmt.Sprintf("127.0.%d.1:8000", b), fmt.Sprintf("127.0.%d.2:8000", b)}})
	}
	f, err := localfleet.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Stop() })
	if err := f.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return f, o.Regions
}

type served struct {
	status int
	by     string // the gateway's x-gateway-destination-endpoint-served
	body   string
}

func send(ctx context.Context, gateway, objective string, maxTokens int) (served, error) {
	return post(ctx, gateway, objective, fmt.Sprintf(`{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"p","max_tokens":%d}`, maxTokens))
}

// post sends a completion body through a gateway with an objective.
func post(ctx context.Context, gateway, objective, body string) (served, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+gateway+"/v1/completions", strings.NewReader(body))
	req.Header.Set("x-gateway-inference-objective", objective)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return served{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return served{status: resp.StatusCode, by: resp.Header.Get("x-gateway-destination-endpoint-served"), body: string(b)}, nil
}

// saturate keeps every endpoint of a region busy (one running, six queued each) until stop.
func saturate(ctx context.Context, r localfleet.Region) (stop func()) {
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, e := range r.Endpoints {
		for range 7 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for lctx.Err() == nil {
					req, _ := http.NewRequestWithContext(lctx, http.MethodPost, "http://"+e+"/v1/completions",
						strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"direct","max_tokens":50}`))
					if resp, err := http.DefaultClient.Do(req); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
			}()
		}
	}
	return func() { cancel(); wg.Wait() }
}

// saturateUntilSpilling saturates a region (saturate) and waits until its Critical requests are
// served by one of the others.
func saturateUntilSpilling(ctx context.Context, t *testing.T, r localfleet.Region, others ...localfleet.Region) (stop func()) {
	t.Helper()
	stop = saturate(ctx, r)
	t.Cleanup(stop) // also when the wait fails; stop may be called again
	var gateways []string
	for _, o := range others {
		gateways = append(gateways, o.Gateway)
	}
	testkit.Eventually(t, 20*time.Second, "critical spills out of the saturated region", func() error {
		pctx, c := context.WithTimeout(ctx, 2*time.Second)
		defer c()
		got, err := send(pctx, r.Gateway, "critical", 1)
		return want(got, err, 200, gateways...)
	})
	return stop
}

func inRegion(addr string, r localfleet.Region) bool {
	if addr == r.Gateway {
		return true
	}
	for _, e := range r.Endpoints {
		if addr == e {
			return true
		}
	}
	return false
}

// TestFederatedRouting runs three regions as real processes: in steady state everything stays
// local; when us-east saturates, Critical spills to another region's gateway, Standard stays and
// BestEffort is shed; a killed region stops receiving spilled requests; when the load ends,
// spilling stops.
func TestFederatedRouting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f, regions := startThreeRegions(ctx, t)
	east, west, eu := regions[0], regions[1], regions[2]

	for _, objective := range []string{"critical", "standard", "batch"} {
		got, err := send(ctx, east.Gateway, objective, 2)
		if err != nil || got.status != 200 || !inRegion(got.by, east) {
			t.Fatalf("steady state, %s: %+v %v: want served in us-east", objective, got, err)
		}
	}

	stop := saturateUntilSpilling(ctx, t, east, west, eu)
	defer stop()
	for range 5 {
		got, err := send(ctx, east.Gateway, "critical", 1)
		if err != nil || got.status != 200 || inRegion(got.by, east) {
			t.Fatalf("critical while us-east is saturated: %+v %v: want another region", got, err)
		}
	}
	if got, err := send(ctx, east.Gateway, "batch", 1); err != nil || got.status != 429 {
		t.Fatalf("besteffort while us-east is saturated: %+v %v: want 429", got, err)
	}
	sctx, sc := context.WithTimeout(ctx, 30*time.Second)
	got, err := send(sctx, east.Gateway, "standard", 1)
	sc()
	if err != nil || got.status != 200 || !inRegion(got.by, east) {
		t.Fatalf("standard while us-east is saturated: %+v %v: want served (queued) in us-east", got, err)
	}

	// Kill the region that takes the spilled requests: once the fleet knows, nothing more goes there.
	first, err := send(ctx, east.Gateway, "critical", 1)
	if err != nil {
		t.Fatal(err)
	}
	victim, survivor := west, eu
	if first.by == eu.Gateway {
		victim, survivor = eu, west
	}
	for _, p := range []*localfleet.Proc{f.Gateways[victim.Cluster], f.Spokes[victim.Cluster], f.Sims[victim.Cluster]} {
		p.Kill()
	}
	killed := time.Now()
	// Meanwhile the gateway falls back to the next target of the destination list: no failures.
	// No request may fail in the window, so the window's length is the assertion.
	for time.Since(killed) < 4*time.Second {
		got, err := send(ctx, east.Gateway, "critical", 1)
		if err != nil || got.status != 200 || got.by != survivor.Gateway {
			t.Fatalf("critical %.1fs after %s died: %+v %v: want %s", time.Since(killed).Seconds(), victim.Name, got, err, survivor.Name)
		}
	}
	testkit.Eventually(t, 5*time.Second, victim.Name+" leaves the candidates", func() error {
		d, err := spokeSpillTargets(f, east)
		if err != nil {
			return err
		}
		if strings.Contains(d, victim.Gateway) {
			return fmt.Errorf("spill targets %s", d)
		}
		return nil
	})
	t.Logf("%s left us-east's spill targets within %.1fs of being killed", victim.Name, time.Since(killed).Seconds())
	stop()
	testkit.Eventually(t, 20*time.Second, "spilling stops after the burst", func() error {
		got, err := send(ctx, east.Gateway, "critical", 1)
		return want(got, err, 200, append([]string{east.Gateway}, east.Endpoints...)...)
	})
}

// want says how a request's outcome differs from the status wanted and, when any is given, one of
// the addresses that may serve it; nil when it does not.
func want(got served, err error, status int, by ...string) error {
	if err != nil {
		return err
	}
	if got.status != status || (len(by) > 0 && !slices.Contains(by, got.by)) {
		return fmt.Errorf("HTTP %d served by %q (%s), want %d served by one of %v", got.status, got.by, got.body, status, by)
	}
	return nil
}

// spokeSpillTargets reads a region's spoke's GET /spill (HTTPS, verified with the fleet CA) and
// returns its current targets as JSON.
func spokeSpillTargets(f *localfleet.Fleet, r localfleet.Region) (string, error) {
	resp, err := f.HTTPClient().Get(f.SpokeURL(r, "/spill"))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var rep struct {
		Targets json.RawMessage `json:"targets"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return "", err
	}
	return string(rep.Targets), nil
}

// TestFederatedRoutingFailures: with the hub killed routing goes on without failures and resumes
// spilling when it returns; a pool scaled to zero fails Critical over and answers Standard with
// 503; with the whole fleet saturated nothing spills.
func TestFederatedRoutingFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f, regions := startThreeRegions(ctx, t)
	east, west, eu := regions[0], regions[1], regions[2]
	remote := func(s served) bool { return s.by == west.Gateway || s.by == eu.Gateway }
	critical := func(timeout time.Duration) (served, error) {
		c, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return send(c, east.Gateway, "critical", 1)
	}

	stopEast := saturate(ctx, east)
	testkit.Eventually(t, 20*time.Second, "us-east spills", func() error {
		got, err := critical(2 * time.Second)
		return want(got, err, 200, west.Gateway, eu.Gateway)
	})

	t.Run("hub killed: routing goes on, then spilling resumes", func(t *testing.T) {
		f.Hub.Kill()
		down := time.Now()
		// No request may fail while the hub is away: the window (twice the test's freshness bound)
		// is the assertion.
		for time.Since(down) < 6*time.Second {
			got, err := critical(30 * time.Second)
			if err != nil || got.status != 200 {
				t.Fatalf("critical %.1fs after the hub died: %+v %v", time.Since(down).Seconds(), got, err)
			}
		}
		// Remote capacity is older than its bound by now: nothing is routed on it.
		if targets, err := spokeSpillTargets(f, east); err != nil || targets != "[]" {
			t.Fatalf("spill targets with the hub down for 6s: %s %v: want none (stale)", targets, err)
		}
		if err := f.StartHub(); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 30*time.Second, "spilling resumes with the hub back", func() error {
			got, err := critical(5 * time.Second)
			return want(got, err, 200, west.Gateway, eu.Gateway)
		})
	})
	stopEast()

	t.Run("pool scaled to zero: Critical fails over, Standard gets 503", func(t *testing.T) {
		if err := f.WritePools(east, nil); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 20*time.Second, "the spoke sees its pool empty: standard gets 503", func() error {
			got, err := send(ctx, east.Gateway, "standard", 1)
			return want(got, err, 503)
		})
		for range 5 {
			got, err := critical(5 * time.Second)
			if err != nil || got.status != 200 || !remote(got) {
				t.Fatalf("critical with no local endpoint: %+v %v: want another region", got, err)
			}
		}
		if err := f.WritePools(east, east.Endpoints); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 20*time.Second, "the pool is back", func() error {
			got, err := send(ctx, east.Gateway, "standard", 1)
			return want(got, err, 200, append([]string{east.Gateway}, east.Endpoints...)...)
		})
	})

	t.Run("whole fleet saturated: nothing spills", func(t *testing.T) {
		var stops []func()
		for _, r := range regions {
			stops = append(stops, saturate(ctx, r))
		}
		defer func() {
			for _, s := range stops {
				s()
			}
		}()
		testkit.Eventually(t, 20*time.Second, "no spill target left", func() error {
			targets, err := spokeSpillTargets(f, east)
			if err != nil {
				return err
			}
			if targets != "[]" {
				return fmt.Errorf("spill targets %s", targets)
			}
			return nil
		})
		got, err := critical(60 * time.Second)
		if err != nil || got.status != 200 || !inRegion(got.by, east) {
			t.Fatalf("critical with the whole fleet saturated: %+v %v: want served (queued) in us-east", got, err)
		}
	})
}

// TestImportOnlyCluster: us-east loses its pool and keeps only the import of the fleet's: its EPP
// sends every request, whatever its priority, to an exporting cluster.
func TestImportOnlyCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, regions := startThreeRegions(ctx, t)
	east, west, eu := regions[0], regions[1], regions[2]
	if err := f.RemovePools(east); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "us-east exports nothing and forwards", func() error {
		got, err := send(ctx, east.Gateway, "batch", 1)
		return want(got, err, 200, west.Gateway, eu.Gateway)
	})
	for _, objective := range []string{"critical", "standard", "batch"} {
		got, err := send(ctx, east.Gateway, objective, 1)
		if err != nil || got.status != 200 || (got.by != west.Gateway && got.by != eu.Gateway) {
			t.Fatalf("%s through an import-only cluster: %+v %v: want served by an exporting cluster", objective, got, err)
		}
	}
	d, err := spokeSpillTargets(f, east)
	if err != nil || !strings.Contains(d, west.Cluster) || !strings.Contains(d, eu.Cluster) {
		t.Fatalf("import-only targets %s %v: want both exporting clusters", d, err)
	}
}

// TestCordonStopsSpill: while us-east is saturated and spills Critical traffic, `hubctl cordon
// region` takes a region out of us-east's spill targets (the time it took is logged), spilled
// requests go to the other region, and with every other region cordoned they stay home; uncordon
// brings the region back.
func TestCordonStopsSpill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f, regions := startThreeRegionsAt(ctx, t, 60)
	east, west, eu := regions[0], regions[1], regions[2]
	hubctl := func(args ...string) {
		t.Helper()
		out, err := exec.CommandContext(ctx, filepath.Join(bins(t), "hubctl"), append(f.HubctlArgs(), args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("hubctl %v: %v\n%s", args, err, out)
		}
	}
	targets := func(want ...string) error {
		d, err := spokeSpillTargets(f, east)
		if err != nil {
			return err
		}
		for _, r := range []localfleet.Region{west, eu} {
			if strings.Contains(d, r.Gateway) != slices.Contains(want, r.Name) {
				return fmt.Errorf("us-east's spill targets %s, want those of %v", d, want)
			}
		}
		return nil
	}

	stop := saturateUntilSpilling(ctx, t, east, west, eu)
	defer stop()
	testkit.Eventually(t, 10*time.Second, "both other regions are targets", func() error { return targets(west.Name, eu.Name) })

	start := time.Now()
	hubctl("cordon", "region", west.Name)
	testkit.Eventually(t, 10*time.Second, "us-west leaves the targets", func() error { return targets(eu.Name) })
	t.Logf("us-west left us-east's spill targets %s after hubctl cordon began", time.Since(start).Round(time.Millisecond))
	for range 5 {
		got, err := send(ctx, east.Gateway, "critical", 1)
		if err := want(got, err, 200, eu.Gateway); err != nil {
			t.Fatalf("critical with us-west cordoned: %v", err)
		}
	}
	// hubctl explain, asked of us-east's spoke through the hub, names the same destination and
	// says why us-west is none.
	explain := func() epp.Explanation {
		t.Helper()
		out, err := exec.CommandContext(ctx, filepath.Join(bins(t), "hubctl"), append(f.HubctlArgs(), "explain", east.Cluster, "--objective", "critical", "-o", "json")...).Output()
		var got struct{ Explanation epp.Explanation }
		if err != nil || json.Unmarshal(out, &got) != nil || got.Explanation.Spill == nil {
			t.Fatalf("hubctl explain %s: %v\n%s", east.Cluster, err, out)
		}
		return got.Explanation
	}
	rejected := func(e epp.Explanation, cluster string) string {
		for _, r := range e.Spill.Targets {
			if r.Cluster == cluster {
				return r.Rejected
			}
		}
		return "absent"
	}
	if e := explain(); e.Outcome != "spilled" || len(e.Destination) == 0 || e.Destination[0] != eu.Gateway || rejected(e, west.Cluster) != spill.RejectedCordoned {
		t.Fatalf("explain with us-west cordoned: outcome %s to %v, us-west %q; want spilled to %s, us-west cordoned", e.Outcome, e.Destination, rejected(e, west.Cluster), eu.Gateway)
	}

	hubctl("cordon", "cluster", eu.Cluster)
	testkit.Eventually(t, 10*time.Second, "no target left", func() error { return targets() })
	sctx, sc := context.WithTimeout(ctx, 30*time.Second)
	got, err := send(sctx, east.Gateway, "critical", 1)
	sc()
	if err := want(got, err, 200, east.Endpoints...); err != nil {
		t.Fatalf("critical with every other region cordoned: %v (want served, queued, in us-east)", err)
	}
	if e := explain(); e.Outcome != "routed" || e.Spill.Reason != string(spill.ReasonNoTarget) || rejected(e, eu.Cluster) != spill.RejectedCordoned {
		t.Fatalf("explain with every other region cordoned: outcome %s, spill %s, eu %q; want routed here, no_target, eu cordoned", e.Outcome, e.Spill.Reason, rejected(e, eu.Cluster))
	}

	hubctl("uncordon", "region", west.Name)
	testkit.Eventually(t, 10*time.Second, "us-west is a target again", func() error { return targets(west.Name) })
}

package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/loadgen"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// The three EPP replicas of us-east-1: the fleet's own spoke (replica 0, the one with the hub
// session) and two more on the static source without a hub, each with its EPP, sharing prefix
// affinity on a replica ring on the region's loopback.
var (
	replicaHTTP = []string{spokeHTTP, "127.0.0.1:8482", "127.0.0.1:8483"}
	replicaEPP  = []string{eppAddress, "127.0.0.1:9003", "127.0.0.1:9004"}
	replicaRing = []string{"127.0.0.1:7950", "127.0.0.1:7951", "127.0.0.1:7952"}
)

// replicaGatewayPort is where the gateway over the three EPP replicas listens.
const replicaGatewayPort = 8081

func ringArgs(i int) []string {
	var peers []string
	for j, a := range replicaRing {
		if j != i {
			peers = append(peers, a)
		}
	}
	return []string{"--replica-address", replicaRing[i], "--replica-peers", strings.Join(peers, ",")}
}

// TestEPPReplicaKilled is the table's "kill -9 of one of three EPP replicas under load": a
// gateway spreads ext_proc streams round-robin over three spoke replicas of one cluster that
// share prefix affinity (bin/gateway with three --epp addresses, skipping a replica whose
// connection is down, as Envoy's ext_proc cluster with health checks does). One replica is
// killed with SIGKILL under the steady priority-mix load with shared prompt prefixes. No request
// fails but those in flight at the kill (their ext_proc stream was on the killed replica, and
// Envoy does not retry an ext_proc stream: with failure_mode_allow=false the request fails),
// and the simulators' prefix-cache hit rate after the kill is within a few points of before.
func TestEPPReplicaKilled(t *testing.T) {
	// Replica 0's ring flags go to every region's spoke: in the other regions nobody answers
	// on the peers' loopback ports, and their EPP keeps its own affinity.
	f, s, ctx := scenario(t, "kill -9 of one of three EPP replicas under load", Config{SpokeArgs: ringArgs(0)})
	r := f.Regions[0]
	for i := 1; i < 3; i++ {
		name := fmt.Sprintf("%s-%c", r.Cluster, 'a'+i)
		creds, err := f.pki.issue("cluster-"+name, cluster(r.Cluster))
		if err != nil {
			t.Fatal(err)
		}
		eppCert, err := f.pki.issue("epp-"+name, infra("epp-"+r.Cluster))
		if err != nil {
			t.Fatal(err)
		}
		args := append([]string{"--region", r.Name, "--zone", r.Name + "-a", "--hub-address=", "--credentials-dir", creds,
			"--cluster-id", r.Cluster, "--pools-file", f.PoolsFile(r), "--pools-reload", "500ms",
			"--http-address", replicaHTTP[i], "--epp-address", replicaEPP[i], "--epp-config", f.eppConfig(), "--epp-pool", "default/chat",
			"--epp-cert-dir", eppCert, "--epp-client-ca-file", f.pki.CAFile(), "--gossip-key-file", f.gossipKey()}, ringArgs(i)...)
		if _, err := f.newProc("spoke-"+name, r.Node, filepath.Join(f.BinDir, "spoke"), args...); err != nil {
			t.Fatal(err)
		}
	}
	gwCert, err := f.pki.issue("gateway-replicas-"+r.Cluster, infra("gateway-"+r.Cluster))
	if err != nil {
		t.Fatal(err)
	}
	gateway := hostPort(r.IP, replicaGatewayPort)
	if _, err := f.newProc("gateway-replicas-"+r.Cluster, r.Node, filepath.Join(f.BinDir, "gateway"), "--listen", gateway,
		"--epp", strings.Join(replicaEPP, ","), "--epp-ca-file", f.pki.CAFile(),
		"--epp-cert-file", filepath.Join(gwCert, tlsconfig.CertFile), "--epp-key-file", filepath.Join(gwCert, tlsconfig.KeyFile)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 3; i++ {
		if err := poll(ctx, time.Minute, "replica "+replicaHTTP[i]+" ready", func() error {
			_, err := f.Get(ctx, r.Node, "https://"+replicaHTTP[i]+"/readyz")
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := poll(ctx, time.Minute, "the replica ring formed", func() error {
		for i, a := range replicaHTTP {
			page, err := f.Get(ctx, r.Node, "https://"+a+"/metrics")
			if err != nil {
				return err
			}
			if n, err := metricValue(string(page), "spillway_epp_affinity_replicas"); err != nil || n < 2 {
				return fmt.Errorf("replica %d: spillway_epp_affinity_replicas %v (%v), want the two others", i, n, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	warm, before, settle, after := short(10*time.Second, 20*time.Second), short(15*time.Second, 60*time.Second), 3*time.Second, short(15*time.Second, 60*time.Second)
	ctx2, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	type out struct {
		rs  []loadgen.Result
		err error
	}
	done := make(chan out, 1)
	loadStart := time.Now()
	go func() {
		rs, err := f.loadTo(ctx2, r, gateway, 8, warm+before+settle+after+5*time.Second)
		done <- out{rs, err}
	}()
	hitCounters := func() (hits, queries float64) {
		for _, ep := range Endpoints {
			h, err := f.Metric(ctx, r.Node, "http://"+ep+"/metrics", "vllm:prefix_cache_hits_total")
			if err != nil {
				t.Fatal(err)
			}
			q, err := f.Metric(ctx, r.Node, "http://"+ep+"/metrics", "vllm:prefix_cache_queries_total")
			if err != nil {
				t.Fatal(err)
			}
			hits, queries = hits+h, queries+q
		}
		return hits, queries
	}
	rate := func(h0, q0, h1, q1 float64) float64 {
		if q1 <= q0 {
			t.Fatalf("no prefix-cache queries in a window (%v → %v)", q0, q1)
		}
		return (h1 - h0) / (q1 - q0)
	}
	sleepCtx(ctx, warm)
	measured := time.Now()
	h0, q0 := hitCounters()
	sleepCtx(ctx, before)
	h1, q1 := hitCounters()
	eppRequests := func(i int) float64 {
		v, err := f.Metric(ctx, r.Node, "https://"+replicaHTTP[i]+"/metrics", "spillway_epp_requests_total")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	var servedBefore [3]float64
	for i := range servedBefore {
		servedBefore[i] = eppRequests(i)
	}
	victim := f.Proc(fmt.Sprintf("spoke-%s-b", r.Cluster))
	killStart := time.Now()
	victim.Kill()
	killDone := time.Now()
	sleepCtx(ctx, settle)
	h2, q2 := hitCounters()
	sleepCtx(ctx, after)
	h3, q3 := hitCounters()
	o := <-done
	servedAfter := []float64{eppRequests(0) - servedBefore[0], 0, eppRequests(2) - servedBefore[2]}
	if o.err != nil {
		t.Fatal(o.err)
	}

	var requests, inFlight, failedInFlight, beyond, shed int
	var examples []string
	for _, res := range o.rs {
		if res.Start.Before(measured) {
			continue // warm-up
		}
		requests++
		in := !res.Start.After(killDone) && (res.Latency == 0 || !res.Start.Add(res.Latency).Before(killStart))
		if in {
			inFlight++
		}
		switch {
		case res.OK():
		case res.Class == "BestEffort" && res.Status == 429:
			shed++ // shed by design (see FailureSummary)
		case in:
			failedInFlight++
		default:
			beyond++
			if len(examples) < 5 {
				examples = append(examples, fmt.Sprintf("%s at %s: status %d %s", res.Class, res.Start.Format("15:04:05.000"), res.Status, res.Err))
			}
		}
	}
	pre, during, post := rate(h0, q0, h1, q1), rate(h1, q1, h2, q2), rate(h2, q2, h3, q3)
	s.FailedBeyondInflight(beyond)
	s.Figures["requests"] = requests
	s.Figures["in_flight_at_kill"] = inFlight
	s.Figures["failed_in_flight_at_kill"] = failedInFlight
	s.Figures["besteffort_shed"] = shed
	s.Figures["hit_rate_before"] = round(pre)
	s.Figures["hit_rate_first_3s_after"] = round(during)
	s.Figures["hit_rate_after"] = round(post)
	s.Figures["load_s"] = round(time.Since(loadStart).Seconds())
	s.Figures["epp_requests_per_replica_before_kill"] = servedBefore
	s.Figures["epp_requests_per_replica_after_kill"] = servedAfter
	if len(examples) > 0 {
		s.Notes = append(s.Notes, examples...)
	}
	t.Logf("%d requests after the warm-up, %d in flight at the kill (%d of them failed), %d failed beyond; hit rate %.3f before, %.3f in the 3 s after, %.3f from then on; EPP requests per replica %v before the kill, %v after",
		requests, inFlight, failedInFlight, beyond, pre, during, post, servedBefore, servedAfter)
	if beyond > 0 {
		t.Errorf("%d requests failed beyond those in flight at the kill: %v", beyond, examples)
	}
	// Every stream in flight was on one of three replicas: at most about a third can fail.
	if failedInFlight > inFlight/2+1 {
		t.Errorf("%d of the %d requests in flight at the kill failed: more than the killed replica's share", failedInFlight, inFlight)
	}
	if post < pre-0.05 {
		t.Errorf("prefix-cache hit rate %.3f after the kill, %.3f before: not within 5 points", post, pre)
	}
	// The streams were spread over the three replicas before the kill, and over the two others
	// after it.
	total := servedBefore[0] + servedBefore[1] + servedBefore[2]
	for i, n := range servedBefore {
		if n < total/5 {
			t.Errorf("EPP replica %d routed %v of the %v requests before the kill: not round-robin", i, n, total)
		}
	}
	if servedAfter[0] < 20 || servedAfter[2] < 20 {
		t.Errorf("after the kill the surviving EPP replicas routed %v and %v requests", servedAfter[0], servedAfter[2])
	}
	if requests < 100 {
		t.Errorf("only %d requests measured", requests)
	}
}

// loadTo runs the suite's steady load (loadgen's priority mix and shared prompt prefixes) from
// region r's namespace against target (host:port) for d, as runLoad does for the region's own
// gateway.
func (f *Fleet) loadTo(ctx context.Context, r Region, target string, rate float64, d time.Duration) ([]loadgen.Result, error) {
	file, err := os.CreateTemp(f.WorkDir, "load-replicas-*.jsonl")
	if err != nil {
		return nil, err
	}
	file.Close()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", f.Net.NS(r.Node), filepath.Join(f.BinDir, "loadgen"),
		"--target", "http://"+target, "--rate", fmt.Sprint(rate), "--duration", d.String(), "--max-tokens", "16",
		"--class", "Critical=critical:0.2", "--class", "Standard=standard:0.5", "--class", "BestEffort=batch:0.3",
		"--results", file.Name())
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 90 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("loadgen in %s: %w\n%s", r.Name, err, out)
	}
	rf, err := os.Open(file.Name())
	if err != nil {
		return nil, err
	}
	defer rf.Close()
	var rs []loadgen.Result
	sc := bufio.NewScanner(rf)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var res loadgen.Result
		if err := json.Unmarshal(sc.Bytes(), &res); err != nil {
			return nil, fmt.Errorf("loadgen result: %w", err)
		}
		rs = append(rs, res)
	}
	return rs, sc.Err()
}

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/e2e/testkit"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// startRegion starts a one-region fleet (hub, spoke with EPP, gateway) on loopback block
// 127.0.<block>.1 with two simulator endpoints on 127.0.<block+1>.1-2 that run one sequence at a
// time, 20 ms per token. Everything stops at the end of the test. It returns the fleet, the region
// and an AdminService client of its hub (as the fleet's admin, over mutual TLS).
func startRegion(ctx context.Context, t *testing.T, block int) (*localfleet.Fleet, localfleet.Region, pb.AdminServiceClient) {
	t.Helper()
	ip := fmt.Sprintf("127.0.%d.1", block)
	o := localfleet.Options{BinDir: bins(t), WorkDir: t.TempDir(), HubGRPC: ip + ":18570", HubHTTP: ip + ":18571", HubAdmin: ip + ":18572",
		LeaseTTL: 5 * time.Second,
		SimArgs:  []string{"--max-num-seqs", "1", "--decode-latency", "20ms"}}
	r := localfleet.Region{Name: "solo", Cluster: "solo-1", SpokeHTTP: ip + ":18581", EPP: ip + ":19002", Gateway: ip + ":18080",
		Endpoints: []string{fmt.Sprintf("127.0.%d.1:8000", block+1), fmt.Sprintf("127.0.%d.2:8000", block+1)}}
	o.Regions = []localfleet.Region{r}
	f, err := localfleet.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Stop() })
	if err := f.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := f.DialAdmin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return f, r, pb.NewAdminServiceClient(conn)
}

// poolLoad returns a condition for testkit.Eventually: the capacity the region's spoke last
// reported to the hub for its pool satisfies ok. The spoke computes it from the same scrapes of
// the endpoints as its EPP routes on, so once the hub has it the EPP has seen that load.
func poolLoad(ctx context.Context, admin pb.AdminServiceClient, cluster, want string, ok func(*pb.PoolCapacity) bool) func() error {
	return func() error {
		resp, err := admin.ListPools(ctx, &pb.ListPoolsRequest{})
		if err != nil {
			return err
		}
		for _, p := range resp.GetPools() {
			for _, m := range p.GetMembers() {
				if m.GetClusterId() != cluster {
					continue
				}
				if c := m.GetCapacity().GetCapacity(); !ok(c) {
					return fmt.Errorf("%s reports %v, want %s", cluster, c, want)
				}
				return nil
			}
		}
		return fmt.Errorf("no pool of %s at the hub", cluster)
	}
}

// endpointQueues describes the load the simulators report themselves, for failure messages.
func endpointQueues(endpoints []string) string {
	var state []string
	for _, e := range endpoints {
		mr, err := http.Get("http://" + e + "/metrics")
		if err != nil {
			state = append(state, e+" "+err.Error())
			continue
		}
		page, _ := io.ReadAll(mr.Body)
		mr.Body.Close()
		for _, l := range strings.Split(string(page), "\n") {
			if strings.HasPrefix(l, "vllm:num_requests_") {
				state = append(state, e+" "+l)
			}
		}
	}
	return strings.Join(state, "\n")
}

// TestSheddingUnderSaturation drives a real fleet (simulator, spoke with EPP, gateway processes)
// into saturation: sheddable requests get 429 with Retry-After, critical ones are still routed.
func TestSheddingUnderSaturation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, r, admin := startRegion(ctx, t, 30)
	gw := "http://" + r.Gateway
	post := func(ctx context.Context, objective string, maxTokens int) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, gw+"/v1/completions",
			strings.NewReader(fmt.Sprintf(`{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"p","max_tokens":%d}`, maxTokens)))
		req.Header.Set("x-gateway-inference-objective", objective)
		return http.DefaultClient.Do(req)
	}

	// With headroom, sheddable traffic is served.
	resp, err := post(ctx, "batch", 2)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("sheddable request on an idle pool: %d", resp.StatusCode)
	}

	// Fill both endpoints directly, behind the gateway's back: one running and a queue of 6 each.
	// The EPP learns it only from the endpoints' scraped metrics.
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, e := range r.Endpoints {
		for range 7 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequestWithContext(loadCtx, http.MethodPost, "http://"+e+"/v1/completions",
					strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"direct","max_tokens":500}`))
				if resp, err := http.DefaultClient.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		}
	}
	defer func() { stopLoad(); wg.Wait() }()

	// The scrapes show the queues: the pool is saturated.
	testkit.Eventually(t, 20*time.Second, "the pool saturated", poolLoad(ctx, admin, r.Cluster, "saturated", (*pb.PoolCapacity).GetSaturated))
	// A sheddable probe is shed. One routed before the EPP saw the queues waits in one: each
	// probe is bounded, and the next one asks again.
	var shed http.Header
	var shedBody []byte
	testkit.Eventually(t, 20*time.Second, "a sheddable request shed under saturation", func() error {
		pctx, cancelProbe := context.WithTimeout(ctx, time.Second)
		defer cancelProbe()
		resp, err := post(pctx, "batch", 1)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 429 {
			return fmt.Errorf("HTTP %d %s; endpoints:\n%s", resp.StatusCode, body, endpointQueues(r.Endpoints))
		}
		shed, shedBody = resp.Header, body
		return nil
	})
	if shed.Get("Retry-After") == "" || !strings.Contains(string(shedBody), "sheddable") {
		t.Fatalf("429 without Retry-After or reason: %v %s", shed, shedBody)
	}

	// A critical request is admitted while saturated: the EPP routes it (it waits in a queue).
	before := eppRouted(t, f, r, "critical")
	probeCtx, stopProbe := context.WithCancel(ctx)
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		if resp, err := post(probeCtx, "critical", 1); err == nil {
			resp.Body.Close()
		}
	}()
	defer func() { stopProbe(); <-probed }()
	testkit.Eventually(t, 10*time.Second, "the critical probe is routed", testkit.True(func() bool { return eppRouted(t, f, r, "critical") > before }))
}

// eppRouted reads spillway_epp_requests_total{objective, result="routed"} from a region's spoke,
// over HTTPS verified with the fleet CA.
func eppRouted(t *testing.T, f *localfleet.Fleet, r localfleet.Region, objective string) float64 {
	t.Helper()
	resp, err := f.HTTPClient().Get(f.SpokeURL(r, "/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	var total float64
	for _, line := range strings.Split(string(page), "\n") {
		if strings.HasPrefix(line, "spillway_epp_requests_total{") && strings.Contains(line, `objective="`+objective+`"`) && strings.Contains(line, `result="routed"`) {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				total += v
			}
		}
	}
	return total
}

// TestRoutingFollowsRealLoad loads one real simulator directly (behind the gateway's back); the
// EPP sees its queue in the scraped metrics and routes around it.
func TestRoutingFollowsRealLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, r, admin := startRegion(ctx, t, 32)
	busy, idle := r.Endpoints[0], r.Endpoints[1]
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(loadCtx, http.MethodPost, "http://"+busy+"/v1/completions",
				strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"direct","max_tokens":300}`))
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	defer func() { stopLoad(); wg.Wait() }()
	// One of the six runs, five wait: the EPP has seen the queue once the hub has it.
	testkit.Eventually(t, 20*time.Second, "the busy endpoint's queue seen", poolLoad(ctx, admin, r.Cluster, "a queue of 5", func(c *pb.PoolCapacity) bool {
		return c.GetQueueDepth() >= 5
	}))
	served := map[string]int{}
	for i := range 20 {
		resp, err := http.Post("http://"+r.Gateway+"/v1/completions", "application/json",
			strings.NewReader(fmt.Sprintf(`{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"routed %d","max_tokens":1}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: HTTP %d", i, resp.StatusCode)
		}
		served[resp.Header.Get("x-gateway-destination-endpoint-served")]++
	}
	if served[idle] != 20 {
		t.Fatalf("served %v: every request should avoid the endpoint with a queue of 5", served)
	}
}

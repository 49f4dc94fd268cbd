package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/e2e/extproctest"
	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/epp/scheduler"
	spfleet "github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/pkg/spill"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
	"github.com/spillway-io/spillway/spoke/app"
	"github.com/spillway-io/spillway/spoke/hubclient"
)

var chatPool = spfleet.PoolRef{Namespace: "default", Name: "chat"}

// hopKeys are the fleet's hop-marker keys as the EPP holds them.
type hopKeys []spfleet.HopKey

func (k hopKeys) HopKeys() []spfleet.HopKey { return k }

// endpoints is a fixed pool, as the EPP's datastore.
type endpoints struct {
	mu  sync.Mutex
	eps []epp.Endpoint
}

func (e *endpoints) Endpoints(p spfleet.PoolRef, dst []epp.Endpoint) ([]epp.Endpoint, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p != chatPool {
		return dst, false
	}
	for _, ep := range e.eps {
		ep.ScrapedAt = time.Now()
		dst = append(dst, ep)
	}
	return dst, true
}

func (e *endpoints) setQueue(q int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range e.eps {
		e.eps[i].Metrics.WaitingQueue = q + i
	}
}

// explainingSpoke connects cluster us-west-1 to h the way spoke/app wires it: the hub client
// answers explain queries with its EPP's explanation.
func explainingSpoke(t *testing.T, h *hubtest.Hub) (*epp.Server, *spill.Decider, *endpoints) {
	t.Helper()
	settings, err := epp.ParseConfig([]byte("objectives:\n- {name: critical, priority: Critical}\n- {name: batch, priority: BestEffort}\n"))
	if err != nil {
		t.Fatal(err)
	}
	remotes := []spill.Remote{
		{ClusterID: "us-east-1", Region: "us-east", Gateway: "10.0.1.1:80", Alive: true, ReadyEndpoints: 3, QueueDepth: 1, Saturation: 0.4, RTT: 20 * time.Millisecond, Age: time.Second},
		{ClusterID: "eu-west-1", Region: "eu-west", Gateway: "10.0.2.1:80", Alive: true, ReadyEndpoints: 2, QueueDepth: 7, Saturation: 1, Saturated: true, Spilling: true, RTT: 80 * time.Millisecond, Age: time.Second},
	}
	dec, err := spill.New(spill.DefaultPolicy(), func() []spill.Remote { return remotes })
	if err != nil {
		t.Fatal(err)
	}
	ds := &endpoints{}
	for i, a := range []string{"10.0.3.10:8000", "10.0.3.11:8000", "10.0.3.12:8000"} {
		ds.eps = append(ds.eps, epp.Endpoint{Endpoint: scheduler.Endpoint{Address: a, Metrics: modelmetrics.Metrics{WaitingQueue: i, Running: 2 + i, KVCacheUsage: 0.1 * float64(i+1)}}, Ready: true})
	}
	srv, err := epp.New(epp.Options{Pool: chatPool, Settings: settings, Datastore: ds, Spill: dec, ClusterID: "us-west-1",
		HopKeys: hopKeys{{ID: "hk-1", Secret: []byte("0123456789abcdef0123456789abcdef")}}, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	dec.ObserveLocal(spill.Local{ReadyEndpoints: 3, QueueDepth: 3, Saturation: 0.3})
	client := hubclient.New(hubclient.Options{
		Cluster:    spfleet.ClusterInfo{ID: "us-west-1", Region: "us-west", GatewayAddress: "10.0.3.1:80", Version: "test"},
		HubAddress: h.Addr, TLS: h.ClientTLS(hubtest.Cluster("us-west-1")), MinBackoff: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
		// As spoke/app wires it.
		Explain: func(req *pb.ExplainRequest) ([]byte, error) { return app.Explain([]*epp.Server{srv}, req) },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = client.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testkit.Eventually(t, 5*time.Second, "us-west-1 connected", func() error {
		if !client.Connected() {
			return errors.New("not connected")
		}
		return nil
	})
	return srv, dec, ds
}

// TestExplainThroughTheHub: hubctl explain reaches the EPP of the cluster's spoke through the hub
// replica that holds its session, and what it prints is where the EPP routes the same request.
func TestExplainThroughTheHub(t *testing.T) {
	h := fleet(t)
	srv, dec, ds := explainingSpoke(t, h)
	viewer := hubtest.User("viewer")
	gw := &gateway.Client{EPP: extproctest.Serve(t, srv)}
	// explainAndRoute explains a request of objective, then sends the same through ext_proc.
	explainAndRoute := func(t *testing.T, objective string) (epp.Explanation, *gateway.Decision) {
		t.Helper()
		out, err := as(t, h, viewer, "explain", "us-west-1", "--objective", objective, "--model", "m", "--prompt", "hello", "-o", "json")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var got explainOutput
		// The test's run replaces timestamps (the spill state's since) with TIME.
		out = strings.ReplaceAll(out, `"TIME"`, `"0001-01-01T00:00:00Z"`)
		if err := json.Unmarshal([]byte(out), &got); err != nil || got.Cluster != "us-west-1" || got.Hub != "hub-test" {
			t.Fatalf("explain -o json: %v\n%s", err, out)
		}
		headers := []gateway.Header{{Key: ":method", Value: "POST"}, {Key: ":path", Value: "/v1/completions"}, {Key: ":authority", Value: "gw"},
			{Key: "content-type", Value: "application/json"}, {Key: epp.ObjectiveHeader, Value: objective}}
		call, d, err := gw.Request(context.Background(), headers, []byte(`{"model":"m","prompt":"hello"}`), nil)
		if err != nil {
			t.Fatal(err)
		}
		call.Close()
		return got.Explanation, d
	}

	// Headroom: the pick, scores and remote clusters as a table (golden), and the same destination.
	out, err := as(t, h, viewer, "explain", "us-west-1", "--objective", "critical", "--model", "m", "--prompt", "hello")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	testkit.Golden(t, filepath.Join("testdata", "explain.txt"), []byte(out))
	e, d := explainAndRoute(t, "critical")
	if e.Outcome != "routed" || !slices.Equal(e.Destination, d.Destinations) {
		t.Fatalf("explained %s to %v; routed to %v", e.Outcome, e.Destination, d.Destinations)
	}

	// Saturated: Critical spills to us-east-1 (eu-west-1 is saturated), BestEffort is shed.
	ds.setQueue(9)
	dec.ObserveLocal(spill.Local{ReadyEndpoints: 3, QueueDepth: 30, Saturation: 1, Saturated: true})
	e, d = explainAndRoute(t, "critical")
	if e.Outcome != "spilled" || d.Immediate != nil || !slices.Equal(e.Destination, d.Destinations) || e.Destination[0] != "10.0.1.1:80" ||
		e.Spill.Targets[1].Rejected != spill.RejectedSaturated {
		t.Fatalf("critical, saturated: explained %+v; routed %+v", e, d)
	}
	e, d = explainAndRoute(t, "batch")
	if e.Outcome != "shed" || d.Immediate == nil || e.Status != int(d.Immediate.Status) {
		t.Fatalf("batch, saturated: explained %+v; routed %+v", e, d)
	}

	// What cannot be explained says why. ap-south-1 registered, and holds no session.
	if _, err := h.SyncAs("ap-south-1").Register(context.Background(), &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "ap-south-1", Region: "ap-south"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"explain", "eu-west-1"}, "does not answer explain queries"},
		{[]string{"explain", "nowhere-1"}, "cluster nowhere-1"},
		{[]string{"explain", "ap-south-1"}, "unavailable: cluster ap-south-1, hub replica hub-test: the cluster's spoke holds no session on this hub replica"},
		{[]string{"explain", "us-west-1", "--pool", "default/code"}, "serve default/chat, not pool default/code"},
		{[]string{"explain", "us-west-1", "--priority", "urgent"}, `--priority "urgent"`},
	} {
		if out, err := as(t, h, viewer, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("hubctl %s: %v\n%s\nwant an error saying %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
}

// TestExplainRequestFlags: the prompt comes from --prompt-file, - reading the command's standard
// input; a priority is an integer or one of the EPP's names.
func TestExplainRequestFlags(t *testing.T) {
	f := explainFlags{promptFile: "-", priority: "besteffort", pool: "llm/chat"}
	req, err := f.request("us-east-1", true, strings.NewReader("a long system prompt"))
	if err != nil || req.GetPrompt() != "a long system prompt" || req.GetPriority() != epp.PriorityBestEffort || req.GetPool().GetName() != "chat" {
		t.Fatalf("request %v, %v", req, err)
	}
	f = explainFlags{promptFile: filepath.Join(t.TempDir(), "missing")}
	if _, err := f.request("us-east-1", false, nil); err == nil || !strings.Contains(err.Error(), "--prompt-file") {
		t.Fatalf("a missing prompt file: %v", err)
	}
}

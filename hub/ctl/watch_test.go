package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// lockedBuffer is an output a running command writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// syncAs opens a session for cluster and sends msgs after its Hello; the stream lasts the test.
func syncAs(t *testing.T, h *hubtest.Hub, info *pb.ClusterInfo, msgs ...*pb.SyncRequest) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cli := h.SyncAs(info.GetClusterId())
	if _, err := cli.Register(ctx, &pb.RegisterRequest{Cluster: info}); err != nil {
		t.Fatal(err)
	}
	st, err := cli.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello := &pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{ClusterId: info.GetClusterId(), SpokeIncarnation: "i"}}}
	for _, m := range append([]*pb.SyncRequest{hello}, msgs...) {
		if err := st.Send(m); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGetPoolsWatch: `get pools -w` prints every member first, then the rows that change as
// the hub reports them, until interrupted.
func TestGetPoolsWatch(t *testing.T) {
	h := fleet(t)
	// --timeout is far shorter than the test: a watch has none.
	out, stop := startWatch(t, h, "--timeout", "1ms", "get", "pools", "-w")

	rowOf := func(cluster string) func() error {
		return func() error {
			for _, line := range strings.Split(out.String(), "\n") {
				if f := strings.Fields(line); len(f) > 2 && f[0] == "default/chat" && f[1] == cluster {
					return nil
				}
			}
			return fmt.Errorf("no default/chat row for %s in:\n%s", cluster, out.String())
		}
	}
	testkit.Eventually(t, 10*time.Second, "the watch lists both members", func() error {
		if !strings.HasPrefix(out.String(), "POOL ") {
			return fmt.Errorf("no header first:\n%s", out.String())
		}
		if err := rowOf("us-east-1")(); err != nil {
			return err
		}
		return rowOf("eu-west-1")()
	})
	// Far longer than --timeout by now: a watch has none.
	chat := &pb.PoolRef{Namespace: "default", Name: "chat"}
	syncAs(t, h, &pb.ClusterInfo{ClusterId: "ap-south-1", Region: "ap-south", GatewayAddress: "10.0.3.1:80"},
		&pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []*pb.Export{{Pool: chat, TargetPorts: []uint32{8000}}}}}},
		&pb.SyncRequest{Msg: &pb.SyncRequest_Capacity{Capacity: &pb.CapacityReport{Pools: []*pb.PoolCapacity{{Pool: chat, ReadyEndpoints: 2, TotalEndpoints: 2, QueueDepth: 41}}}}})
	testkit.Eventually(t, 10*time.Second, "the watch prints the new member's capacity", func() error {
		for _, line := range strings.Split(out.String(), "\n") {
			if f := strings.Fields(line); len(f) > 6 && f[1] == "ap-south-1" && f[4] == "2/2" && f[5] == "41" {
				return nil
			}
		}
		return fmt.Errorf("no ap-south-1 row with 2/2 ready and queue 41 in:\n%s", out.String())
	})
	if n := strings.Count(out.String(), "POOL "); n != 1 {
		t.Errorf("%d headers, want one", n)
	}
	stop()
}

// startWatch runs hubctl with args (a watch) as the admin until stop, which interrupts it and
// fails the test unless it then ends, without error.
func startWatch(t *testing.T, h *hubtest.Hub, args ...string) (out *lockedBuffer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	out = &lockedBuffer{}
	cmd := NewCommand()
	cmd.SetOut(out)
	cmd.SetErr(out)
	cmd.SetArgs(append([]string{"--hub", h.AdminAddr, "--credentials-dir", h.CredentialsDir(hubtest.Admin())}, args...))
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	return out, func() {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("the watch ended with %v, want nil when interrupted", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the watch did not end when interrupted")
		}
	}
}

// TestGetClustersWatch: `get clusters -w` prints every cluster first, then a cluster again when
// its liveness changes (here: cordoned).
func TestGetClustersWatch(t *testing.T) {
	h := fleet(t)
	out, stop := startWatch(t, h, "get", "clusters", "-w")
	row := func(cluster, state string) func() error {
		return func() error {
			for _, line := range strings.Split(out.String(), "\n") {
				if f := strings.Fields(line); len(f) > 3 && f[0] == cluster && f[3] == state {
					return nil
				}
			}
			return fmt.Errorf("no %s row in state %s in:\n%s", cluster, state, out.String())
		}
	}
	testkit.Eventually(t, 10*time.Second, "the watch lists both clusters", func() error {
		if !strings.HasPrefix(out.String(), "CLUSTER ") {
			return fmt.Errorf("no header first:\n%s", out.String())
		}
		if err := row("us-east-1", "Alive")(); err != nil {
			return err
		}
		return row("eu-west-1", "Alive")()
	})
	if _, err := h.Admin().SetCordon(context.Background(), &pb.SetCordonRequest{ClusterId: "us-east-1", Cordoned: true}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the watch prints the cordon", row("us-east-1", "Alive,Cordoned"))
	stop()
}

// TestGetEndpointsAndImportsWatch: `get endpoints -w` prints the endpoints of the members
// whose report changes, `get imports -w` the pools whose exporting clusters change.
func TestGetEndpointsAndImportsWatch(t *testing.T) {
	h := fleet(t)
	endpoints, stopEndpoints := startWatch(t, h, "get", "endpoints", "-w")
	imports, stopImports := startWatch(t, h, "get", "imports", "-w")
	line := func(out *lockedBuffer, fields ...string) func() error {
		return func() error {
			for _, l := range strings.Split(out.String(), "\n") {
				if strings.Join(strings.Fields(l), " ") == strings.Join(fields, " ") {
					return nil
				}
			}
			return fmt.Errorf("no line %q in:\n%s", strings.Join(fields, " "), out.String())
		}
	}
	testkit.Eventually(t, 10*time.Second, "the endpoints listed", line(endpoints, "default/chat", "us-east-1", "us-east", "10.0.1.10:8000", "yes", "0", "3", "25%", "62%"))
	testkit.Eventually(t, 10*time.Second, "the import listed", line(imports, "default/chat", "eu-west-1,us-east-1"))
	chat := &pb.PoolRef{Namespace: "default", Name: "chat"}
	syncAs(t, h, &pb.ClusterInfo{ClusterId: "ap-south-1", Region: "ap-south", GatewayAddress: "10.0.3.1:80"},
		&pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []*pb.Export{{Pool: chat, TargetPorts: []uint32{8000}}}}}},
		&pb.SyncRequest{Msg: &pb.SyncRequest_Capacity{Capacity: &pb.CapacityReport{Pools: []*pb.PoolCapacity{{Pool: chat, ReadyEndpoints: 1, TotalEndpoints: 1, QueueDepth: 4,
			Endpoints: []*pb.EndpointCapacity{{Address: "10.0.3.10:8000", QueueDepth: 4, RunningRequests: 1, KvCacheUtilization: 0.5, Ready: true}}}}}}})
	testkit.Eventually(t, 10*time.Second, "the new member's endpoint", line(endpoints, "default/chat", "ap-south-1", "ap-south", "10.0.3.10:8000", "yes", "4", "1", "50%", "-"))
	testkit.Eventually(t, 10*time.Second, "the new exporter", line(imports, "default/chat", "ap-south-1,eu-west-1,us-east-1"))
	stopEndpoints()
	stopImports()
}

// TestGetPoolsPages: a list longer than a page comes page by page and prints as one; the export
// delta behind it came in two parts (1,000 upserts at most per message).
func TestGetPoolsPages(t *testing.T) {
	h := hubtest.Start(t, 10*time.Second)
	const n = 1234
	var first, second []*pb.Export
	for i := range n {
		e := &pb.Export{Pool: &pb.PoolRef{Namespace: "paged", Name: fmt.Sprintf("pool-%04d", i)}, TargetPorts: []uint32{8000}}
		if i < 1000 {
			first = append(first, e)
		} else {
			second = append(second, e)
		}
	}
	syncAs(t, h, &pb.ClusterInfo{ClusterId: "big", Region: "us-east"},
		&pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: first, More: true}}},
		&pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: second}}})
	testkit.Eventually(t, 20*time.Second, "every export stored", func() error {
		if got := len(h.Model.PoolRefs()); got != n {
			return fmt.Errorf("%d pools, want %d", got, n)
		}
		return nil
	})
	resp, err := h.Admin().ListPools(context.Background(), &pb.ListPoolsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetPools()) != 1000 || resp.GetNextPageToken() == "" {
		t.Fatalf("first page: %d pools, next %q; want 1,000 and a token", len(resp.GetPools()), resp.GetNextPageToken())
	}
	if _, err := h.Admin().ListPools(context.Background(), &pb.ListPoolsRequest{PageSize: 1001}); err == nil {
		t.Fatal("page_size 1,001 accepted")
	}
	if _, err := h.Admin().ListPools(context.Background(), &pb.ListPoolsRequest{PageToken: "!!"}); err == nil {
		t.Fatal("a page token the hub never gave accepted")
	}
	text, err := as(t, h, hubtest.Admin(), "get", "pools", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var all struct {
		Pools []struct {
			Pool struct{ Name string }
		}
		NextPageToken string
	}
	if err := json.Unmarshal([]byte(text), &all); err != nil {
		t.Fatal(err)
	}
	if len(all.Pools) != n || all.NextPageToken != "" {
		t.Fatalf("get pools -o json: %d pools, next page token %q; want %d and none", len(all.Pools), all.NextPageToken, n)
	}
	for i, p := range all.Pools {
		if want := fmt.Sprintf("pool-%04d", i); p.Pool.Name != want {
			t.Fatalf("pool %d is %s, want %s: pages out of order or repeated", i, p.Pool.Name, want)
		}
	}
}

package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/connectivity"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/e2e/testkit"
)

// namedEPP answers every request headers message by routing to its own name, so that the
// destination says which replica served the stream.
type namedEPP struct {
	extprocv3.UnimplementedExternalProcessorServer
	name string
}

func (e namedEPP) Process(s extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if req.GetRequestHeaders() == nil {
			continue
		}
		if err := s.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: gateway.DestinationHeader, RawValue: []byte(e.name)}}},
			}}},
		}}); err != nil {
			return err
		}
	}
}

// replicaSet is n EPP replicas named epp-0 ... on loopback, and the Balancer over them.
type replicaSet struct {
	servers []*grpc.Server
	b       *gateway.Balancer
	client  *gateway.Client
}

func newReplicaSet(t *testing.T, n int) *replicaSet {
	t.Helper()
	rs := &replicaSet{}
	var replicas []gateway.Replica
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer()
		extprocv3.RegisterExternalProcessorServer(gs, namedEPP{name: fmt.Sprintf("epp-%d", i)})
		done := make(chan struct{})
		go func() { defer close(done); _ = gs.Serve(l) }()
		t.Cleanup(func() { gs.Stop(); <-done })
		rs.servers = append(rs.servers, gs)
		conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		replicas = append(replicas, gateway.Replica{Address: fmt.Sprintf("epp-%d", i), Conn: conn})
	}
	b, err := gateway.NewBalancer(replicas)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close) // before the connections close: cleanups run last first
	rs.b, rs.client = b, &gateway.Client{EPP: b}
	testkit.Eventually(t, 5*time.Second, "every replica connected", func() error {
		for i, s := range b.Stats() {
			// Ready, and seen up by the balancer since (it starts up, and goes down while idle).
			if replicas[i].Conn.GetState() != connectivity.Ready || !s.Up {
				return fmt.Errorf("%s not connected", s.Address)
			}
		}
		return nil
	})
	return rs
}

// route sends n requests one after the other and counts the replicas that routed them.
func (rs *replicaSet) route(t *testing.T, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		call, d, err := rs.client.Request(ctx, []gateway.Header{{":method", "GET"}, {":path", "/"}}, nil, nil)
		if err != nil {
			cancel()
			t.Fatalf("request: %v", err)
		}
		call.Close()
		cancel()
		got[d.Destinations[0]]++
	}
	return got
}

// TestBalancerRoundRobin: streams go to the replicas in turn, evenly, and every stream is
// counted on its replica and no longer in flight once closed.
func TestBalancerRoundRobin(t *testing.T) {
	rs := newReplicaSet(t, 3)
	got := rs.route(t, 30)
	for i := range 3 {
		if n := got[fmt.Sprintf("epp-%d", i)]; n != 10 {
			t.Errorf("epp-%d routed %d of 30 streams, want 10 (round-robin): %v", i, n, got)
		}
	}
	testkit.Eventually(t, 5*time.Second, "no stream in flight", func() error {
		for _, s := range rs.b.Stats() {
			if s.Streams != 10 || s.InFlight != 0 {
				return fmt.Errorf("%+v: want 10 streams, none in flight", s)
			}
		}
		return nil
	})
}

// TestBalancerSkipsADeadReplica: once a replica's server is gone its connection is down, and
// the streams go round-robin over the others only, none failing; when every replica is down the
// streams still go somewhere (panic routing) and fail there.
func TestBalancerSkipsADeadReplica(t *testing.T) {
	rs := newReplicaSet(t, 3)
	rs.route(t, 3)
	rs.servers[1].Stop()
	testkit.Eventually(t, 5*time.Second, "epp-1 seen down", func() error {
		if s := rs.b.Stats()[1]; s.Up {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})
	got := rs.route(t, 20)
	if got["epp-1"] != 0 || got["epp-0"] != 10 || got["epp-2"] != 10 {
		t.Fatalf("with epp-1 down, 20 streams went %v; want 10 to each of epp-0 and epp-2", got)
	}
	rs.servers[0].Stop()
	rs.servers[2].Stop()
	testkit.Eventually(t, 5*time.Second, "every replica seen down", func() error {
		for _, s := range rs.b.Stats() {
			if s.Up {
				return fmt.Errorf("%s up", s.Address)
			}
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, _, err := rs.client.Request(ctx, []gateway.Header{{":method", "GET"}, {":path", "/"}}, nil, nil); err == nil {
		t.Fatal("a request routed with every EPP replica down")
	}
}

// TestBalancerStreamOnAKilledReplicaFails: a stream open on a replica that dies fails, and is
// not moved to another replica (Envoy does not retry an ext_proc stream).
func TestBalancerStreamOnAKilledReplicaFails(t *testing.T) {
	rs := newReplicaSet(t, 2)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	call, d, err := rs.client.Request(ctx, []gateway.Header{{":method", "GET"}, {":path", "/"}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	// The stream is on whichever replica the balancer picked (one may not count as up yet).
	on := slices.IndexFunc(rs.b.Stats(), func(s gateway.ReplicaStats) bool { return s.Address == d.Destinations[0] })
	if on < 0 || rs.b.Stats()[on].InFlight != 1 {
		t.Fatalf("first stream on %s, stats %+v: want it in flight on that replica", d.Destinations[0], rs.b.Stats())
	}
	rs.servers[on].Stop()
	if err := call.ResponseHeaders(200, nil, "x", true); err == nil {
		t.Fatal("the response phase of a stream on a stopped replica succeeded")
	}
}

// TestSplitAddresses: repeated and comma-separated values, in order; duplicates and none are
// errors.
func TestSplitAddresses(t *testing.T) {
	got, err := gateway.SplitAddresses([]string{"a:1,b:2", " c:3 "})
	if err != nil || fmt.Sprint(got) != "[a:1 b:2 c:3]" {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range [][]string{nil, {""}, {"a:1", "a:1"}} {
		if _, err := gateway.SplitAddresses(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

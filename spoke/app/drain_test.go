package app

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/e2e/testkit"
)

// simPage is a vLLM model server's metrics, idle.
const simPage = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 0\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 1\n# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc 0.1\n"

// drainingSpoke runs a standalone spoke whose pool's one endpoint serves metrics, with a
// plaintext EPP, and returns a gateway client of its EPP and the function that stops the spoke
// and returns how long it took to return.
func drainingSpoke(t *testing.T, drain time.Duration) (*gateway.Client, func() time.Duration) {
	t.Helper()
	sim := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, simPage)
	}))
	t.Cleanup(sim.Close)
	pools := filepath.Join(t.TempDir(), "pools.yaml")
	host, port, _ := net.SplitHostPort(sim.Listener.Addr().String())
	if err := os.WriteFile(pools, fmt.Appendf(nil, "pools:\n- {namespace: default, name: chat, targetPorts: [%s], endpoints: [%s]}\n", port, host), 0o600); err != nil {
		t.Fatal(err)
	}
	o := staticOptions(t)
	o.PoolsFile, o.EPPDrainTimeout = pools, drain
	o.Trust.EPPSecureServing, o.Trust.InsecureHTTP = false, true
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	s, err := build(cfg)
	t.Cleanup(s.close)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := s.listen()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(ls.epp.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx, ls) }()
	stopped := false
	stop := func() time.Duration {
		stopped = true
		start := time.Now()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("spoke: %v", err)
		}
		return time.Since(start)
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	return &gateway.Client{EPP: extprocv3.NewExternalProcessorClient(conn)}, stop
}

// routedCall starts a request through the EPP, once the spoke knows its pool, and returns its
// stream, open for the response.
func routedCall(t *testing.T, c *gateway.Client) *gateway.Call {
	t.Helper()
	var call *gateway.Call
	testkit.Eventually(t, 60*time.Second, "a request routed", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cl, d, err := c.Request(ctx, []gateway.Header{{Key: ":method", Value: "POST"}, {Key: ":path", Value: "/v1/completions"},
			{Key: ":authority", Value: "gw"}, {Key: "content-type", Value: "application/json"}}, []byte(`{"model":"m","prompt":"hello"}`), nil)
		if err != nil {
			cancel()
			return err
		}
		if d.Immediate != nil || len(d.Destinations) == 0 {
			cl.Close()
			cancel()
			return fmt.Errorf("answered %+v", d.Immediate)
		}
		call = cl
		t.Cleanup(cancel) // the stream lives as long as the test needs it
		return nil
	})
	return call
}

// TestEPPDrainsStreamsInFlight: a stopping spoke takes no new request but lets the one whose
// response is still streaming through its EPP finish, and stops as soon as it has.
func TestEPPDrainsStreamsInFlight(t *testing.T) {
	c, stop := drainingSpoke(t, 30*time.Second)
	call := routedCall(t, c)
	took := make(chan time.Duration, 1)
	go func() { took <- stop() }()

	// New requests are refused (the gateway sends them to another replica)...
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	for ctx.Err() == nil {
		var next *gateway.Call
		if next, _, err = c.Request(ctx, []gateway.Header{{Key: ":method", Value: "POST"}, {Key: ":path", Value: "/v1/completions"}},
			[]byte(`{"model":"m","prompt":"hello"}`), nil); err != nil {
			break
		}
		next.Close()
		time.Sleep(10 * time.Millisecond) // the stop has not begun yet
	}
	if err == nil {
		t.Fatal("a stopping spoke's EPP took new requests for 5 s")
	}
	// ...while the response in flight goes on streaming through the EPP.
	if err := call.ResponseHeaders(200, http.Header{"Content-Type": {"text/event-stream"}}, "", false); err != nil {
		t.Fatalf("the response in flight was cut: %v", err)
	}
	for i, last := range []bool{false, true} {
		chunk := fmt.Appendf(nil, "data: {\"n\":%d}\n\n", i)
		if err := call.SendResponseBody(chunk, last); err != nil {
			t.Fatal(err)
		}
		if _, _, err := call.RecvResponseBody(chunk, last); err != nil {
			t.Fatalf("response body piece %d: %v", i, err)
		}
	}
	select {
	case d := <-took:
		t.Fatalf("the spoke stopped (after %s) before the request in flight ended", d)
	case <-time.After(100 * time.Millisecond):
	}
	call.Close()
	if d := <-took; d > 15*time.Second {
		t.Errorf("the spoke took %s to stop after its last request ended, want it to stop then", d)
	}
}

// TestEPPDrainEndsAtItsTimeout: a request that outlives --epp-drain-timeout is cut there.
func TestEPPDrainEndsAtItsTimeout(t *testing.T) {
	c, stop := drainingSpoke(t, 300*time.Millisecond)
	call := routedCall(t, c)
	defer call.Close()
	if d := stop(); d < 300*time.Millisecond || d > 10*time.Second {
		t.Errorf("the spoke stopped after %s with a request in flight, want the drain timeout, 300ms", d)
	}
	if err := call.ResponseHeaders(200, nil, "", true); err == nil {
		t.Error("the request in flight still streams through a stopped EPP")
	}
}

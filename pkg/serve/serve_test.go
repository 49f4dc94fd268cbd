package serve

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestHTTPServesUntilTheContextEnds: the mux answers /healthz and /readyz (503 with the reason
// while not ready), and HTTP returns nil once ctx ends, with its goroutines gone (TestMain).
func TestHTTPServesUntilTheContextEnds(t *testing.T) {
	l := listen(t)
	ready := errors.New("informers not synced")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- HTTP(ctx, l, HTTPMux(prometheus.NewRegistry(), func() error { return ready })) }()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + l.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body != "informers not synced\n" {
		t.Errorf("/readyz = %d %q, want 503 with the reason", code, body)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("HTTP after ctx ended = %v, want nil", err)
	}
}

// TestHTTPReportsAFailedListener: a server that cannot serve ends with an error naming its address.
func TestHTTPReportsAFailedListener(t *testing.T) {
	l := listen(t)
	l.Close()
	if err := HTTP(context.Background(), l, http.NewServeMux()); err == nil {
		t.Fatal("HTTP on a closed listener returned nil")
	}
}

// TestGRPCStopsGracefully: GRPC serves until ctx ends, then returns nil with no goroutine left.
func TestGRPCStopsGracefully(t *testing.T) {
	l := listen(t)
	s := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- GRPC(ctx, l, s) }()

	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check = %v, %v", resp, err)
	}
	conn.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("GRPC after ctx ended = %v, want nil", err)
	}
	hs.Shutdown()
}

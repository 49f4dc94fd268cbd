package app

import (
	"context"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// GIEHealthService is the gRPC health service GIE's chart probes for liveness and readiness of
// a single-replica EPP.
const GIEHealthService = "inference-extension"

// probeHealth answers kubelet's gRPC probes on --health-address: liveness while the spoke runs,
// readiness (and GIE's inference-extension) once ready says so, which is when /readyz answers
// 200. Kubelet calls Check only.
type probeHealth struct {
	healthpb.UnimplementedHealthServer
	ready func() error // nil: ready
}

func (h probeHealth) Check(_ context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	serving := &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}
	switch req.GetService() {
	case "", "liveness":
		return serving, nil
	case "readiness", GIEHealthService:
		if h.ready != nil && h.ready() != nil {
			return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}, nil
		}
		return serving, nil
	default:
		return nil, status.Errorf(codes.NotFound, "unknown service %q", req.GetService())
	}
}

// newHealthServer is the plaintext gRPC server of --health-address: the health service alone.
func newHealthServer(ready func() error) *grpc.Server {
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, probeHealth{ready: ready})
	return s
}

// listenHealth opens --health-address's listener; nil when it is empty.
func listenHealth(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	return net.Listen("tcp", addr)
}

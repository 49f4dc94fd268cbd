package server

import (
	"context"
	"fmt"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The panic recovery is the outermost interceptor of both ports (SpokeServerOptions,
// AdminServerOptions): a panic in a handler, in the authorization, or in a goroutine a Sync
// stream started ends that one call with codes.Internal, is logged with its stack and counted in
// spillway_hub_grpc_handler_panics_total, and the hub goes on serving every other stream.
// docs/architecture.md says why.

func (s *Server) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, s.recovered(info.FullMethod, r)
		}
	}()
	return handler(ctx, req)
}

func (s *Server) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = s.recovered(info.FullMethod, r)
		}
	}()
	return handler(srv, ss)
}

// recovering runs fn, the work of a goroutine that a handler of method started, and returns a
// panic in it as the error the handler's call ends with.
func (s *Server) recovering(method string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = s.recovered(method, r)
		}
	}()
	return fn()
}

// recovered logs and counts a panic recovered in method, and returns what its caller gets. It is
// called from the deferred function, so the stack still shows where the panic happened.
func (s *Server) recovered(method string, r any) error {
	s.metrics.panics.WithLabelValues(method).Inc()
	s.panicLog.Error("panic in a gRPC handler recovered; the call ends with Internal",
		"method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return status.Error(codes.Internal, "internal error in the hub (a bug, logged there with its stack): retry, and report it if it persists")
}

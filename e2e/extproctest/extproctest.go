// Package extproctest serves an ext_proc server (an Endpoint Picker) over real gRPC on a loopback port
// for tests, and hands back a client connected to it. Everything stops at the end of the test.
package extproctest

import (
	"net"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/spillway-io/spillway/pkg/epp"
)

// Serve serves srv on 127.0.0.1, with the spoke's gRPC server settings, and returns a client of it.
func Serve(t testing.TB, srv extprocv3.ExternalProcessorServer) extprocv3.ExternalProcessorClient {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(epp.GRPCServerOptions(epp.DefaultStreamWorkers)...)
	extprocv3.RegisterExternalProcessorServer(gs, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(l)
	}()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		<-done
	})
	return extprocv3.NewExternalProcessorClient(conn)
}

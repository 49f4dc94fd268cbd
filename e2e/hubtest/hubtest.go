// Package hubtest runs a real hub inside a test: embedded etcd in a temporary directory, the
// registry, the fleet view and the gRPC services on a loopback port. Tests of the hub and of its
// clients use it instead of fakes.
package hubtest

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	hubetcd "github.com/spillway-io/spillway/hub/etcd"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/hub/view"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Hub is a running in-process hub.
type Hub struct {
	t    testing.TB
	o    Options
	Addr string
	// Model is the hub's fleet view, Server its gRPC services, Registry its metrics.
	Model    *view.Model
	Server   *server.Server
	Registry *prometheus.Registry
	gs       *grpc.Server
	done     chan struct{}
}

// Options change the hub a test starts. The zero value is the plain hub of Start.
type Options struct {
	// Logger receives the gRPC services' logs (discarded when nil).
	Logger *slog.Logger
	// StreamInterceptor, when set, runs inside the hub's own stream interceptors.
	StreamInterceptor grpc.StreamServerInterceptor
	// Admin, when set, wraps the AdminService implementation before it is registered.
	Admin func(*server.Server) pb.AdminServiceServer
}

// Start starts a hub whose sessions hold leases of ttl; everything stops at the end of the test.
func Start(t testing.TB, ttl time.Duration) *Hub { return StartWith(t, ttl, Options{}) }

// StartWith starts a hub as Start does, changed by o.
func StartWith(t testing.TB, ttl time.Duration, o Options) *Hub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e, err := hubetcd.StartEmbedded(ctx, t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := hubetcd.Dial([]string{e.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	store := registry.New(cli, registry.Options{LeaseTTL: ttl})
	model := view.New()
	followDone := make(chan struct{})
	go func() {
		defer close(followDone)
		_ = model.Follow(ctx, store, slog.New(slog.DiscardHandler))
	}()
	h := &Hub{t: t, o: o, Model: model, Registry: prometheus.NewRegistry()}
	h.Server = server.New(store, model, server.Options{
		HubID: "hub-test", MinReportInterval: 50 * time.Millisecond, CapacityHeartbeat: time.Second,
		ViewInterval: 20 * time.Millisecond, Registerer: h.Registry, Logger: o.Logger,
	})
	h.Serve("127.0.0.1:0")
	t.Cleanup(func() {
		h.Stop()
		cancel()
		<-followDone
		cli.Close()
		e.Close()
	})
	return h
}

// Serve serves the gRPC services on addr (after Stop, the same address brings the hub back).
func (h *Hub) Serve(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.Addr = l.Addr().String()
	opts := append(server.GRPCOptions(), h.Server.Interceptors()...)
	if h.o.StreamInterceptor != nil {
		opts = append(opts, grpc.ChainStreamInterceptor(h.o.StreamInterceptor))
	}
	h.gs = grpc.NewServer(opts...)
	pb.RegisterSyncServiceServer(h.gs, h.Server)
	var admin pb.AdminServiceServer = h.Server
	if h.o.Admin != nil {
		admin = h.o.Admin(h.Server)
	}
	pb.RegisterAdminServiceServer(h.gs, admin)
	h.done = make(chan struct{})
	go func() {
		defer close(h.done)
		_ = h.gs.Serve(l)
	}()
}

// Stop cuts every stream at once, as a network failure or a hub crash would. Idempotent.
func (h *Hub) Stop() {
	h.gs.Stop()
	<-h.done
}

// Conn returns a client connection to the hub, closed at the end of the test.
func (h *Hub) Conn(opts ...grpc.DialOption) *grpc.ClientConn {
	conn, err := grpc.NewClient(h.Addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	return conn
}

// Admin returns an AdminService client.
func (h *Hub) Admin() pb.AdminServiceClient { return pb.NewAdminServiceClient(h.Conn()) }

// Sync returns a SyncService client.
func (h *Hub) Sync() pb.SyncServiceClient { return pb.NewSyncServiceClient(h.Conn()) }

package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// TestClusterActsAsItselfOnly: with a valid certificate for cluster a, a spoke cannot register as
// b, overwrite b's gateway or open b's session; without a certificate, with one from another CA,
// an expired one, one of another trust domain or a user's, it gets nothing from the spokes' port.
// b's record and exports are unchanged by all of it, and every refusal is counted.
func TestClusterActsAsItselfOnly(t *testing.T) {
	h := startHub(t, hubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h.register(t, ctx, "a", "10.0.0.1:80")
	h.register(t, ctx, "b", "10.0.0.2:80")
	bSession := openSession(t, ctx, h.SyncAs("b"), "b")
	defer bSession.CloseSend()

	asA := h.SyncAs("a")
	_, err := asA.Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "b", Region: "r", GatewayAddress: "6.6.6.6:80"}})
	wantStatus(t, err, codes.PermissionDenied, "certificate names cluster a, request names b")

	st, err := asA.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(hello("b")); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, ended(t, st), codes.PermissionDenied, "certificate names cluster a, hello names b")

	other, err := tlsconfig.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		peer hubtest.Peer
		code codes.Code
		says []string
	}{
		{"no certificate", hubtest.Anonymous(), codes.Unauthenticated, []string{"needs a client certificate naming spiffe://spillway.test/cluster/<name>"}},
		{"another trust domain", hubtest.Cluster("b").InTrustDomain("evil.test"), codes.PermissionDenied, []string{"of trust domain evil.test", "this hub's trust domain is spillway.test"}},
		{"a user", hubtest.User("b"), codes.PermissionDenied, []string{"spiffe://spillway.test/user/b, not a cluster"}},
		// A client offered only the hub's CAs sends no certificate of another CA (crypto/tls
		// picks from Certificates by the server's acceptable CAs), so it is a client without one.
		{"another CA", hubtest.Cluster("b").IssuedBy(other), codes.Unauthenticated, []string{"needs a client certificate"}},
		// The TLS handshake refuses this: the call never reaches the hub's handlers.
		{"expired", hubtest.Cluster("b").Expired(), codes.Unavailable, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli := pb.NewSyncServiceClient(h.ConnAs(tc.peer))
			_, err := cli.Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "b", Region: "r", GatewayAddress: "6.6.6.6:80"}})
			wantStatus(t, err, tc.code, tc.says...)
			st, err := cli.Sync(ctx)
			if err == nil {
				_ = st.Send(hello("b"))
				err = ended(t, st)
			}
			wantStatus(t, err, tc.code, tc.says...)
		})
	}

	// Health needs no identity, and no AdminService is served on the spokes' port.
	if _, err := healthpb.NewHealthClient(h.Conn()).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health without a certificate: %v", err)
	}
	_, err = pb.NewAdminServiceClient(h.ConnAs(hubtest.Admin())).ListClusters(ctx, &pb.ListClustersRequest{})
	wantStatus(t, err, codes.Unimplemented)

	// b is as it was: its gateway, its live session and its export. The admin API reads the
	// view, which follows etcd's watch and may not have caught up with b's registration yet.
	testkit.Eventually(t, 10*time.Second, "b as it was", func() error {
		b, err := h.Admin().GetCluster(ctx, &pb.GetClusterRequest{ClusterId: "b"})
		if err != nil {
			return err
		}
		if got := b.GetCluster(); got.GetInfo().GetGatewayAddress() != "10.0.0.2:80" || got.GetState() != pb.ClusterState_CLUSTER_STATE_ALIVE || got.GetExports() != 1 {
			return fmt.Errorf("b after a's attempts: %v", got)
		}
		return nil
	})
	for reason, want := range map[string]float64{"cluster_mismatch": 2, "no_certificate": 4, "trust_domain": 2, "not_cluster": 2} {
		if got := promtest.Value(t, h.Registry, "spillway_hub_auth_denied_total", reason); got != want {
			t.Errorf("spillway_hub_auth_denied_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
}

// TestAdminRoles: every user of the trust domain reads; only the admin users write; clusters
// and callers without a certificate get nothing from the admin port.
func TestAdminRoles(t *testing.T) {
	h := startHub(t, hubOptions{hub: hubtest.Options{AdminUsers: []string{"alice"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	viewer, admin := h.AdminAs(hubtest.User("bob")), h.AdminAs(hubtest.User("alice"))

	who, err := viewer.WhoAmI(ctx, &pb.WhoAmIRequest{})
	if err != nil || who.GetIdentity() != "spiffe://spillway.test/user/bob" || who.GetRole() != "viewer" {
		t.Fatalf("WhoAmI of bob: %v, %v", who, err)
	}
	if who, err := admin.WhoAmI(ctx, &pb.WhoAmIRequest{}); err != nil || who.GetRole() != "admin" {
		t.Fatalf("WhoAmI of alice: %v, %v", who, err)
	}
	if _, err := viewer.ListClusters(ctx, &pb.ListClustersRequest{}); err != nil {
		t.Fatalf("ListClusters of a viewer: %v", err)
	}
	if _, err := viewer.ListJoinRequests(ctx, &pb.ListJoinRequestsRequest{}); err != nil {
		t.Fatalf("ListJoinRequests of a viewer: %v", err)
	}
	_, err = viewer.CreateToken(ctx, &pb.CreateTokenRequest{ClusterIds: []string{"a"}})
	wantStatus(t, err, codes.PermissionDenied, "user bob is a viewer; CreateToken needs the admin role")
	_, err = viewer.RevokeCluster(ctx, &pb.RevokeClusterRequest{ClusterId: "a"})
	wantStatus(t, err, codes.PermissionDenied, "RevokeCluster needs the admin role")
	_, err = viewer.RotateHopKey(ctx, &pb.RotateHopKeyRequest{})
	wantStatus(t, err, codes.PermissionDenied, "RotateHopKey needs the admin role")
	_, err = viewer.ApproveCluster(ctx, &pb.ApproveClusterRequest{ClusterId: "a"})
	wantStatus(t, err, codes.PermissionDenied, "ApproveCluster needs the admin role")
	if _, err := admin.CreateToken(ctx, &pb.CreateTokenRequest{ClusterIds: []string{"a"}}); err != nil {
		t.Fatalf("CreateToken of the admin: %v", err)
	}
	// The default admin user is no admin on a hub that names others.
	_, err = h.Admin().RotateHopKey(ctx, &pb.RotateHopKeyRequest{})
	wantStatus(t, err, codes.PermissionDenied, "user admin is a viewer")

	_, err = h.AdminAs(hubtest.Cluster("a")).ListClusters(ctx, &pb.ListClustersRequest{})
	wantStatus(t, err, codes.PermissionDenied, "not a user: cluster and hub identities have no role on the admin port")
	_, err = h.AdminAs(hubtest.User("alice").InTrustDomain("evil.test")).ListClusters(ctx, &pb.ListClustersRequest{})
	wantStatus(t, err, codes.PermissionDenied, "trust domain evil.test")
	// The admin port requires a client certificate in the handshake.
	_, err = h.AdminAs(hubtest.Anonymous()).ListClusters(ctx, &pb.ListClustersRequest{})
	wantStatus(t, err, codes.Unavailable)

	if got := promtest.Value(t, h.Registry, "spillway_hub_auth_denied_total", "role"); got != 5 {
		t.Errorf("spillway_hub_auth_denied_total{reason=role} = %v, want 5", got)
	}
}

// TestGatewayAddressIsOwn: a cluster cannot register the gateway address another registered
// cluster holds, however it spells it, so it cannot point the spill traffic of other clusters at
// someone else's gateway; the holder keeps its record and the refusal is counted.
func TestGatewayAddressIsOwn(t *testing.T) {
	h := startHub(t, hubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.register(t, ctx, "a", "10.0.0.1:80")
	for _, gw := range []string{"10.0.0.1:80", "10.0.0.1:080", "[::ffff:10.0.0.1]:80"} {
		_, err := h.SyncAs("b").Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "b", Region: "r", GatewayAddress: gw}})
		wantStatus(t, err, codes.PermissionDenied, "cluster b may not register gateway address "+gw+": cluster a has it registered")
	}
	h.register(t, ctx, "b", "10.0.0.2:80")
	_, err := h.SyncAs("b").Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "b", Region: "r", GatewayAddress: "10.0.0.1:80"}})
	wantStatus(t, err, codes.PermissionDenied, "cluster a has it registered")
	for id, want := range map[string]string{"a": "10.0.0.1:80", "b": "10.0.0.2:80"} {
		rec, err := h.Store.GetCluster(ctx, id)
		if err != nil || rec.Info.GatewayAddress != want {
			t.Fatalf("%s after b's attempts: %+v, %v; want gateway %s", id, rec, err, want)
		}
	}
	if got := promtest.Value(t, h.Registry, "spillway_hub_auth_denied_total", "gateway_taken"); got != 4 {
		t.Errorf("spillway_hub_auth_denied_total{reason=gateway_taken} = %v, want 4", got)
	}
}

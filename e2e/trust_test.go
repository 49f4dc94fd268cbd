package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
	spokekube "github.com/spillway-io/spillway/spoke/kube"
)

// victim is what a hostile cluster must not change: cluster b's record, its export and capacity as
// the hub lists them, the InferencePoolImport in member cluster c and what c's spoke knows of b
// (the gateway its spilled requests would go to).
type victim struct {
	Record      string
	Pools       string
	ImportInC   []string
	GatewayInC  string
	KubeSystemC int
}

func snapshotVictim(ctx context.Context, t *testing.T, admin pb.AdminServiceClient, c *k8sCluster) (victim, error) {
	t.Helper()
	var v victim
	clusters, err := admin.ListClusters(ctx, &pb.ListClustersRequest{})
	if err != nil {
		return v, err
	}
	for _, cl := range clusters.GetClusters() {
		if cl.GetInfo().GetClusterId() == "b" {
			v.Record = fmt.Sprintf("%s %s %s alive=%v exports=%d since=%s", cl.GetInfo().GetRegion(), cl.GetInfo().GetGatewayAddress(),
				cl.GetInfo().GetVersion(), cl.GetState() == pb.ClusterState_CLUSTER_STATE_ALIVE, cl.GetExports(), cl.GetRegisteredAt().AsTime())
		}
	}
	pools, err := admin.ListPools(ctx, &pb.ListPoolsRequest{})
	if err != nil {
		return v, err
	}
	var ps []string
	for _, p := range pools.GetPools() {
		for _, m := range p.GetMembers() {
			if m.GetClusterId() != "b" {
				continue
			}
			cp := m.GetCapacity().GetCapacity()
			ps = append(ps, fmt.Sprintf("%s/%s@%s ready=%d/%d queue=%d", p.GetPool().GetNamespace(), p.GetPool().GetName(), m.GetClusterId(),
				cp.GetReadyEndpoints(), cp.GetTotalEndpoints(), cp.GetQueueDepth()))
		}
	}
	slices.Sort(ps)
	v.Pools = strings.Join(ps, "; ")
	if v.ImportInC, err = c.exportingClusters(ctx, "chat"); err != nil {
		return v, err
	}
	for _, cl := range c.hub.View().Clusters() {
		if cl.Info.ID == "b" {
			v.GatewayInC = cl.Info.GatewayAddress
		}
	}
	sys, err := c.gie.XInferenceV1alpha1().InferencePoolImports("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return v, err
	}
	if sys != nil {
		v.KubeSystemC = len(sys.Items)
	}
	return v, nil
}

// session opens a Sync session as cluster id (after registering it) on conn.
func session(ctx context.Context, conn *grpc.ClientConn, id string) (pb.SyncService_SyncClient, error) {
	sync := pb.NewSyncServiceClient(conn)
	if _, err := sync.Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: id, Region: "attack", GatewayAddress: "evil.example:8080"}}); err != nil {
		return nil, err
	}
	return hello(ctx, sync, id)
}

func hello(ctx context.Context, sync pb.SyncServiceClient, id string) (pb.SyncService_SyncClient, error) {
	stream, err := sync.Sync(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{ClusterId: id, SpokeIncarnation: "attacker"}}}); err != nil {
		return nil, err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if resp.GetWelcome() != nil {
			return stream, nil
		}
	}
}

// ended reads a stream until the hub ends it, and returns how.
func ended(stream pb.SyncService_SyncClient) error {
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("the hub ended the stream without an error")
			}
			return err
		}
	}
}

func wantCode(err error, code codes.Code, msgPart string) error {
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msgPart) {
		return fmt.Errorf("got %v, want %s saying %q", err, code, msgPart)
	}
	return nil
}

var chatPool = &pb.PoolRef{Namespace: ns, Name: "chat"}

// TestHostileSpoke runs a real hub process, two member clusters on real API servers (b exports
// pool chat, c imports it), and a hostile cluster a with a valid certificate of its own. Every
// attack of a must get the right status and change nothing of b: its record, its export and
// capacity, the import in c and the gateway c would spill b's traffic to. Clients without a
// certificate, with an expired one, one from another CA, a revoked one, and plaintext clients,
// get nothing at all.
func TestHostileSpoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	apis := startAPIServers(t, ctx, "b", "c")
	hub := hubtest.StartProcess(t, bins(t), hubtest.ProcessOptions{Args: []string{"--max-exports-per-cluster", "2"}})
	admin := hub.Admin()
	b, c := newK8sCluster(t, "b", apis["b"]), newK8sCluster(t, "c", apis["c"])
	for _, cl := range []*k8sCluster{b, c} {
		if _, err := cl.api.Kubectl(ctx, "create", "namespace", ns); err != nil {
			t.Fatal(err)
		}
	}
	b.apply(t, ctx, poolManifest("chat", "ClusterSet"))
	b.startSpoke(t, hub, spokekube.Options{})
	c.startSpoke(t, hub, spokekube.Options{})
	chat := fleet.PoolRef{Namespace: ns, Name: "chat"}
	testkit.Eventually(t, 30*time.Second, "c imports b's pool", wantImport(ctx, c, "chat", "b"))
	b.hub.SetCapacity([]fleet.PoolCapacity{{Pool: chat, ReadyEndpoints: 2, TotalEndpoints: 3, QueueDepth: 1}})

	var before victim
	testkit.Eventually(t, 30*time.Second, "b's capacity reaches the hub and c knows b's gateway", func() error {
		v, err := snapshotVictim(ctx, t, admin, c)
		if err != nil {
			return err
		}
		if !strings.Contains(v.Pools, ns+"/chat@b ready=2/3 queue=1") || v.GatewayInC != "gateway.b.test:8080" || !strings.Contains(v.Record, "alive=true") {
			return fmt.Errorf("fleet %+v", v)
		}
		before = v
		return nil
	})
	unchanged := func(t *testing.T) {
		t.Helper()
		after, err := snapshotVictim(ctx, t, admin, c)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("b changed:\nbefore %+v\nafter  %+v", before, after)
		}
		if !b.hub.Connected() {
			t.Fatal("b's session was ended")
		}
	}

	a := hub.ConnAs(hubtest.Cluster("a"))
	attack := func(name string, fn func(t *testing.T) error) {
		t.Run(name, func(t *testing.T) {
			if err := fn(t); err != nil {
				t.Fatal(err)
			}
			unchanged(t)
		})
	}

	attack("register as b", func(*testing.T) error {
		_, err := pb.NewSyncServiceClient(a).Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "b", Region: "attack", GatewayAddress: "evil.example:8080"}})
		return wantCode(err, codes.PermissionDenied, "certificate names cluster a")
	})
	attack("register b's gateway address as its own", func(*testing.T) error {
		_, err := pb.NewSyncServiceClient(a).Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "a", Region: "attack", GatewayAddress: "Gateway.B.test:8080"}})
		return wantCode(err, codes.PermissionDenied, "cluster b has it registered")
	})
	attack("take over b's session", func(*testing.T) error {
		_, err := hello(ctx, pb.NewSyncServiceClient(a), "b")
		return wantCode(err, codes.PermissionDenied, "b")
	})
	attack("export in a denied namespace", func(*testing.T) error {
		s, err := session(ctx, a, "a")
		if err != nil {
			return err
		}
		if err := s.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 1, ReplaceAll: true,
			Upserts: []*pb.Export{{Pool: &pb.PoolRef{Namespace: "kube-system", Name: "chat"}, TargetPorts: []uint32{8000}}}}}}); err != nil {
			return err
		}
		return wantCode(ended(s), codes.PermissionDenied, "kube-system")
	})
	attack("report capacity for b's pool", func(*testing.T) error {
		s, err := session(ctx, a, "a")
		if err != nil {
			return err
		}
		if err := s.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Capacity{Capacity: &pb.CapacityReport{Pools: []*pb.PoolCapacity{
			{Pool: chatPool, ReadyEndpoints: 0, TotalEndpoints: 3, Saturated: true}}}}}); err != nil {
			return err
		}
		return wantCode(ended(s), codes.PermissionDenied, "does not export")
	})
	attack("remove b's pool from the capacity view", func(*testing.T) error {
		s, err := session(ctx, a, "a")
		if err != nil {
			return err
		}
		if err := s.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Capacity{Capacity: &pb.CapacityReport{Removed: []*pb.PoolRef{chatPool}}}}); err != nil {
			return err
		}
		// Capacity is keyed by the session's cluster: removing b's pool removes a's report of
		// it, which does not exist. The hub ends the stream cleanly when a closes it.
		if err := s.CloseSend(); err != nil {
			return err
		}
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			for err == nil {
				_, err = s.Recv()
			}
			if !errors.Is(err, io.EOF) {
				return fmt.Errorf("after removing b's capacity: %v, want the stream to end cleanly", err)
			}
		}
		return nil
	})

	// From here a holds a session exporting a pool of its own, in its own namespace.
	own := &pb.PoolRef{Namespace: "attack", Name: "own"}
	openOwn := func() (pb.SyncService_SyncClient, error) {
		s, err := session(ctx, a, "a")
		if err != nil {
			return nil, err
		}
		if err := s.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []*pb.Export{{Pool: own, TargetPorts: []uint32{8000}}}}}}); err != nil {
			return nil, err
		}
		for {
			resp, err := s.Recv()
			if err != nil {
				return nil, err
			}
			if resp.GetExportAck() != nil {
				return s, nil
			}
		}
	}
	testkit.Eventually(t, 10*time.Second, "a's own export is listed", func() error {
		if _, err := openOwn(); err != nil {
			return err
		}
		return nil
	})
	testkit.Eventually(t, 10*time.Second, "the hub lists a's pool", func() error {
		pools, err := admin.ListPools(ctx, &pb.ListPoolsRequest{})
		if err != nil {
			return err
		}
		for _, p := range pools.GetPools() {
			if p.GetPool().GetNamespace() == "attack" {
				return nil
			}
		}
		return fmt.Errorf("pools %v", pools.GetPools())
	})

	attack("replay an old export delta", func(*testing.T) error {
		s, err := openOwn()
		if err != nil {
			return err
		}
		// Seq 1 again, now removing the pool: a replay is acknowledged and changes nothing.
		if err := s.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 1, Removes: []*pb.PoolRef{own}}}}); err != nil {
			return err
		}
		for {
			resp, err := s.Recv()
			if err != nil {
				return err
			}
			if resp.GetExportAck() != nil {
				break
			}
		}
		pools, err := admin.ListPools(ctx, &pb.ListPoolsRequest{})
		if err != nil {
			return err
		}
		for _, p := range pools.GetPools() {
			if p.GetPool().GetNamespace() == "attack" {
				return nil
			}
		}
		return errors.New("a replayed delta removed a's pool")
	})
	attack("export more pools than the cap", func(*testing.T) error {
		s, err := openOwn()
		if err != nil {
			return err
		}
		var many []*pb.Export
		for i := range 3 {
			many = append(many, &pb.Export{Pool: &pb.PoolRef{Namespace: "attack", Name: fmt.Sprintf("p%d", i)}, TargetPorts: []uint32{8000}})
		}
		if err := s.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 2, Upserts: many}}}); err != nil {
			return err
		}
		return wantCode(ended(s), codes.ResourceExhausted, "")
	})
	attack("contradictory export delta", func(*testing.T) error {
		s, err := openOwn()
		if err != nil {
			return err
		}
		p := &pb.PoolRef{Namespace: "attack", Name: "both"}
		if err := s.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 2, Upserts: []*pb.Export{{Pool: p, TargetPorts: []uint32{8000}}}, Removes: []*pb.PoolRef{p}}}}); err != nil {
			return err
		}
		return wantCode(ended(s), codes.InvalidArgument, "")
	})
	attack("oversized message", func(*testing.T) error {
		s, err := openOwn()
		if err != nil {
			return err
		}
		huge := &pb.Export{Pool: &pb.PoolRef{Namespace: "attack", Name: "own"}, TargetPorts: []uint32{8000}, Labels: map[string]string{"x": strings.Repeat("x", 2<<20)}}
		if err := s.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 2, Upserts: []*pb.Export{huge}}}}); err != nil {
			return wantCode(err, codes.ResourceExhausted, "")
		}
		return wantCode(ended(s), codes.ResourceExhausted, "")
	})
	attack("flood capacity reports", func(*testing.T) error {
		s, err := openOwn()
		if err != nil {
			return err
		}
		for range 200 {
			if err := s.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Capacity{Capacity: &pb.CapacityReport{Pools: []*pb.PoolCapacity{{Pool: own, ReadyEndpoints: 1, TotalEndpoints: 1}}}}}); err != nil {
				break // the hub ended the stream: its status is what Recv returns
			}
		}
		return wantCode(ended(s), codes.ResourceExhausted, "")
	})
	attack("flood interest changes", func(*testing.T) error {
		s, err := openOwn()
		if err != nil {
			return err
		}
		for range 200 {
			if err := s.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Interest{Interest: &pb.Interest{CapacityInterest: []*pb.PoolRef{chatPool}}}}); err != nil {
				break
			}
		}
		return wantCode(ended(s), codes.ResourceExhausted, "")
	})
	attack("a cluster certificate on the admin port", func(*testing.T) error {
		_, err := hub.AdminAs(hubtest.Cluster("a")).ListClusters(ctx, &pb.ListClustersRequest{})
		return wantCode(err, codes.PermissionDenied, "")
	})

	// Clients that must get nothing at all.
	for _, tc := range []struct {
		name string
		peer hubtest.Peer
		code codes.Code
	}{
		{"no certificate", hubtest.Anonymous(), codes.Unauthenticated},
		{"an expired certificate", hubtest.Cluster("a").Expired(), codes.Unavailable},
		// Offered only the hub's CAs, the client does not even send a certificate of another CA.
		{"a certificate from another CA", hubtest.Cluster("b").IssuedBy(otherCA(t)), codes.Unauthenticated},
		{"another trust domain", hubtest.Cluster("b").InTrustDomain("elsewhere.test"), codes.PermissionDenied},
	} {
		attack("register with "+tc.name, func(*testing.T) error {
			_, err := pb.NewSyncServiceClient(hub.ConnAs(tc.peer)).Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "b", Region: "attack", GatewayAddress: "evil.example:8080"}})
			return wantCode(err, tc.code, "")
		})
	}
	for _, addr := range []string{hub.Addr, hub.AdminAddr} {
		attack("plaintext health on "+addr, func(*testing.T) error {
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			defer conn.Close()
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if _, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{}); err == nil {
				return errors.New("a plaintext client got an answer")
			}
			return nil
		})
	}

	// An auto-approving token for a, made before a is revoked: after the revocation it lets
	// nobody back in as a.
	oldToken, err := admin.CreateToken(ctx, &pb.CreateTokenRequest{ClusterIds: []string{"a"}, AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	attack("a revoked certificate", func(t *testing.T) error {
		live, err := openOwn()
		if err != nil {
			return err
		}
		if _, err := admin.RevokeCluster(ctx, &pb.RevokeClusterRequest{ClusterId: "a"}); err != nil {
			return err
		}
		if err := wantCode(ended(live), codes.PermissionDenied, "revoked"); err != nil {
			return fmt.Errorf("a's live session: %w", err)
		}
		_, err = pb.NewSyncServiceClient(a).Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "a", Region: "attack"}})
		return wantCode(err, codes.PermissionDenied, "revoked")
	})

	attack("join again with a token from before the revocation", func(*testing.T) error {
		csr, _, err := tlsconfig.NewCSR(tlsconfig.Identity{TrustDomain: hubtest.TrustDomain, Kind: tlsconfig.KindCluster, Name: "a"})
		if err != nil {
			return err
		}
		resp, err := hub.Join().Join(ctx, &pb.JoinRequest{Token: oldToken.GetToken(), CsrPem: csr})
		if err == nil {
			return fmt.Errorf("join answered %v", resp)
		}
		return wantCode(err, codes.PermissionDenied, "predates the revocation")
	})

	// A barrier: b changes its capacity, and once the hub lists the change every effect of the
	// attacks before it has reached the view too (the view applies changes in order). b's record,
	// the import in c and the gateway c knows must still be what b made them.
	t.Run("after every attack b is what b made it", func(t *testing.T) {
		b.hub.SetCapacity([]fleet.PoolCapacity{{Pool: chat, ReadyEndpoints: 3, TotalEndpoints: 3}})
		want := before
		want.Pools = ns + "/chat@b ready=3/3 queue=0"
		testkit.Eventually(t, 10*time.Second, "b's new capacity", func() error {
			v, err := snapshotVictim(ctx, t, admin, c)
			if err != nil {
				return err
			}
			if v.Pools != want.Pools {
				return fmt.Errorf("pools %s", v.Pools)
			}
			if fmt.Sprint(v) != fmt.Sprint(want) {
				t.Fatalf("b changed:\nbefore %+v\nafter  %+v", want, v)
			}
			return nil
		})
	})
}

func otherCA(t *testing.T) *tlsconfig.CA {
	t.Helper()
	ca, err := tlsconfig.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// hubctl runs the hubctl binary as the holder of creds against the hub's admin port and decodes
// its JSON output into out.
func hubctl(t *testing.T, hub *hubtest.Hub, creds string, out any, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bins(t), "hubctl"), append([]string{"--hub", hub.AdminAddr, "--credentials-dir", creds, "-o", "json"}, args...)...)
	stdout, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("hubctl %v: %v: %s", args, err, ee.Stderr)
		}
		t.Fatalf("hubctl %v: %v", args, err)
	}
	if err := json.Unmarshal(stdout, out); err != nil {
		t.Fatalf("hubctl %v -o json: %v\n%s", args, err, stdout)
	}
}

// TestJoinWithTokenAndApproval: an admin creates a bootstrap token with hubctl; a spoke process
// started with it, the hub CA's hash and an empty credentials directory asks to join and waits;
// once the admin approves, the spoke holds a certificate naming its cluster and its session is
// live; restarted without the token, it connects with that certificate alone.
func TestJoinWithTokenAndApproval(t *testing.T) {
	bin := bins(t)
	hub := hubtest.StartProcess(t, bin, hubtest.ProcessOptions{})
	admin := hub.CredentialsDir(hubtest.Admin())
	var token struct {
		Token      string `json:"token"`
		CACertHash string `json:"caCertHash"`
	}
	hubctl(t, hub, admin, &token, "tokens", "create", "--cluster", "joiner", "--ttl", "10m")
	if want := tlsconfig.SPKIHash(hub.CA.Certificate()); token.CACertHash != want {
		t.Fatalf("tokens create printed CA hash %s, want the hub CA's %s", token.CACertHash, want)
	}

	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials")
	pools := filepath.Join(dir, "pools.yaml")
	if err := os.WriteFile(pools, []byte("pools:\n- namespace: default\n  name: joined\n  export: true\n  targetPorts: [8000]\n  endpoints: [\"127.0.0.1:1\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spokeArgs := []string{"--cluster-id", "joiner", "--region", "r1", "--hub-address", hub.Addr, "--credentials-dir", creds,
		"--trust-domain", hubtest.TrustDomain, "--pools-file", pools, "--http-address", "127.0.0.1:0", "--epp-address", ""}
	spoke, err := localfleet.StartProc(dir, "spoke", filepath.Join(bin, "spoke"),
		append(spokeArgs, "--join-token", token.Token, "--hub-ca-hash", token.CACertHash)...)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			if err := spoke.Stop(10 * time.Second); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			if log, err := os.ReadFile(spoke.LogPath); err == nil {
				t.Logf("spoke log:\n%s", log)
			}
		}
	})

	type request struct {
		ClusterID string `json:"clusterId"`
		State     string `json:"state"`
	}
	testkit.Eventually(t, 30*time.Second, "the spoke's join request is pending", func() error {
		var resp struct{ Requests []request }
		hubctl(t, hub, admin, &resp, "clusters", "requests")
		if len(resp.Requests) != 1 || resp.Requests[0] != (request{"joiner", "JOIN_STATE_PENDING"}) {
			return fmt.Errorf("join requests %+v", resp.Requests)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(creds, tlsconfig.CertFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a certificate before approval: %v", err)
	}
	var approved struct{ Request request }
	hubctl(t, hub, admin, &approved, "clusters", "approve", "joiner")

	alive := func() error {
		var resp struct {
			Clusters []clusterJSON `json:"clusters"`
		}
		hubctl(t, hub, admin, &resp, "get", "clusters")
		for _, c := range resp.Clusters {
			if c.Info.ClusterID == "joiner" && c.State == "CLUSTER_STATE_ALIVE" && c.Exports == 1 {
				return nil
			}
		}
		return fmt.Errorf("clusters %+v", resp.Clusters)
	}
	testkit.Eventually(t, 30*time.Second, "the joined spoke's session is live with its export", alive)
	kp, err := tlsconfig.NewKeyPair(filepath.Join(creds, tlsconfig.CertFile), filepath.Join(creds, tlsconfig.KeyFile), tlsconfig.KeyPairOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := tlsconfig.IdentityOf(kp.Certificate().Leaf); err != nil || id.String() != "spiffe://"+hubtest.TrustDomain+"/cluster/joiner" {
		t.Fatalf("the spoke's certificate names %v, %v", id, err)
	}
	if fi, err := os.Stat(filepath.Join(creds, tlsconfig.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("tls.key: %v, mode %v", err, fi.Mode())
	}

	// Without the token, the spoke comes back with its certificate alone.
	stop()
	spoke, err = localfleet.StartProc(dir, "spoke-again", filepath.Join(bin, "spoke"), spokeArgs...)
	if err != nil {
		t.Fatal(err)
	}
	stopped = false
	testkit.Eventually(t, 30*time.Second, "the spoke reconnects without the token", func() error {
		log, err := os.ReadFile(spoke.LogPath)
		if err != nil {
			return err
		}
		if !strings.Contains(string(log), "hub session started") {
			return errors.New("the restarted spoke has no hub session yet")
		}
		return alive()
	})
}

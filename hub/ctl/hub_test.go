package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// fleet registers two clusters through the real SyncService, each with its own certificate, and
// exports one pool from both.
func fleet(t *testing.T) *hubtest.Hub {
	t.Helper()
	h := hubtest.Start(t, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// us-east-1 reports its endpoints (--report-endpoints), eu-west-1 does not.
	endpoints := [][]*pb.EndpointCapacity{{
		{Address: "10.0.1.10:8000", QueueDepth: 0, RunningRequests: 3, KvCacheUtilization: 0.25, Ready: true, GpuUtilization: proto.Float64(0.62)},
		{Address: "10.0.1.11:8000", QueueDepth: 0, RunningRequests: 5, KvCacheUtilization: 0.75, Ready: true},
		{Address: "10.0.1.12:8000", Ready: false, ScrapeError: "refused"},
	}, nil}
	scrapeFailures := []map[string]uint32{{"refused": 1}, {"timeout": 1}}
	poolLabels := []map[string]string{{"app": "chat"}, {"app": "chat", "canary": "true"}}
	gpu := []*float64{proto.Float64(0.62), nil}
	models := [][]string{{"meta-llama/Llama-3.1-8B-Instruct"}, {"llama-small", "meta-llama/Llama-3.1-8B-Instruct"}}
	for i, c := range []*pb.ClusterInfo{
		{ClusterId: "us-east-1", Region: "us-east", Zone: "us-east-1a", GatewayAddress: "10.0.1.1:80", Version: "test", Labels: map[string]string{"team": "ml", "tier": "gold"}},
		{ClusterId: "eu-west-1", Region: "eu-west", GatewayAddress: "10.0.2.1:80", Version: "test", Labels: map[string]string{"team": "ml"}},
	} {
		cli := h.SyncAs(c.GetClusterId())
		if _, err := cli.Register(ctx, &pb.RegisterRequest{Cluster: c}); err != nil {
			t.Fatal(err)
		}
		st, err := cli.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		chat := &pb.PoolRef{Namespace: "default", Name: "chat"}
		target, region := "", "" // the second cluster is spilling to the first
		if i == 1 {
			target, region = "us-east-1", "us-east"
		}
		for _, m := range []*pb.SyncRequest{
			{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{ClusterId: c.GetClusterId(), SpokeIncarnation: "i"}}},
			{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []*pb.Export{{Pool: chat, TargetPorts: []uint32{8000}, Labels: poolLabels[i]}}}}},
			{Msg: &pb.SyncRequest_Capacity{Capacity: &pb.CapacityReport{Pools: []*pb.PoolCapacity{{
				Pool: chat, ReadyEndpoints: uint32(3 - i), TotalEndpoints: 3, QueueDepth: uint32(7 * i), RunningRequests: 8,
				KvCacheUtilization: 0.5, Saturation: 0.4 + 0.6*float64(i), Saturated: i == 1, LoraAdapters: []string{"sql-lora"}, Models: models[i], GpuUtilization: gpu[i],
				Spilling: i == 1, SpillTarget: target, SpillTargetRegion: region, AdmittedTotal: uint64(100 * (i + 1)), ShedTotal: uint64(3 * i),
				SpilledTotal: uint64(9 * i), Endpoints: endpoints[i], ScrapeFailures: scrapeFailures[i],
			}}}}},
		} {
			if err := st.Send(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	testkit.Eventually(t, 5*time.Second, "fleet in the view", func() error {
		pools := h.Model.Pools()
		if len(pools) == 1 && len(pools[0].Members) == 2 && pools[0].Members[0].Capacity != nil && pools[0].Members[1].Capacity != nil {
			return nil
		}
		return fmt.Errorf("pools %+v: want one with two members and their capacity", pools)
	})
	return h
}

// as runs hubctl against h's admin port with p's credentials.
func as(t *testing.T, h *hubtest.Hub, p hubtest.Peer, args ...string) (string, error) {
	t.Helper()
	return run(t, append([]string{"--hub", h.AdminAddr, "--credentials-dir", h.CredentialsDir(p)}, args...)...)
}

func TestGetGolden(t *testing.T) {
	h := fleet(t)
	for _, what := range []string{"clusters", "pools", "models", "endpoints", "imports"} {
		for _, format := range []string{"table", "wide", "json", "yaml"} {
			t.Run(what+"-"+format, func(t *testing.T) {
				got, err := as(t, h, hubtest.User("viewer"), "get", what, "-o", format)
				if err != nil {
					t.Fatalf("%v\n%s", err, got)
				}
				testkit.Golden(t, filepath.Join("testdata", what+"."+format), []byte(got))
			})
		}
	}
	// One object by name, a region's members, no headers, a JSONPath of the JSON form.
	for name, args := range map[string][]string{
		"cluster-named":       {"get", "cluster", "us-east-1", "-o", "wide"},
		"pool-named":          {"get", "pool", "default/chat"},
		"pools-region":        {"get", "pools", "--region", "eu-west"},
		"clusters-region":     {"get", "clusters", "--region", "us-east", "--no-headers"},
		"clusters-selector":   {"get", "clusters", "-l", "team=ml,tier in (gold,silver)"},
		"pools-selector":      {"get", "pools", "-l", "canary", "-o", "wide"},
		"endpoints-selector":  {"get", "endpoints", "-l", "!canary"},
		"endpoints-named":     {"get", "endpoints", "default/chat", "--no-headers"},
		"import-named":        {"get", "import", "default/chat"},
		"model-named-region":  {"get", "model", "meta-llama/Llama-3.1-8B-Instruct", "--region", "eu-west"},
		"clusters-jsonpath":   {"get", "clusters", "-o", `jsonpath={range .clusters[*]}{.info.clusterId}{" "}{.info.version}{"\n"}{end}`},
		"pool-named-jsonpath": {"get", "pool", "default/chat", "-o", `jsonpath={.pool.members[?(@.region=="eu-west")].capacity.capacity.spillTarget}`},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := as(t, h, hubtest.User("viewer"), args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, got)
			}
			testkit.Golden(t, filepath.Join("testdata", name+".txt"), []byte(got))
		})
	}
}

// TestGetErrors: a name that is no object, a malformed pool name, a bad template each fail
// with what went wrong, and print nothing.
func TestGetErrors(t *testing.T) {
	h := fleet(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "cluster", "nowhere-1"}, "nowhere-1"},
		{[]string{"get", "pool", "default/nothing"}, "default/nothing"},
		{[]string{"get", "pool", "chat"}, `pool "chat": want NAMESPACE/NAME`},
		{[]string{"get", "import", "default/nothing"}, "no cluster exports pool default/nothing"},
		{[]string{"get", "model", "mistral"}, `model "mistral": no pool member reports serving it`},
		{[]string{"get", "model", "llama-small", "--region", "us-east"}, `model "llama-small"`},
		{[]string{"get", "clusters", "-o", "jsonpath={.clusters[}"}, "--output \"jsonpath={.clusters[}\""},
		{[]string{"get", "clusters", "-o", "xml"}, "want table, wide, json, yaml or jsonpath=TEMPLATE"},
		{[]string{"get", "pools", "-w", "default/chat"}, "give no name, no --region and no -l"},
		{[]string{"get", "clusters", "-l", "team in ("}, `-l "team in ("`},
		{[]string{"get", "imports", "-l", "app=chat"}, "imports carry no labels"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			got, err := as(t, h, hubtest.User("viewer"), tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if rest := strings.TrimSpace(strings.Replace(got, "Error: "+err.Error(), "", 1)); rest != "" {
				t.Fatalf("printed %q besides the error", rest)
			}
		})
	}
}

// TestGetHubs: the one replica of the test hub is listed with its admin address and as the
// leader, in the table and in JSON (which names the replica that answered).
func TestGetHubs(t *testing.T) {
	h := hubtest.Start(t, 10*time.Second)
	var out string
	testkit.Eventually(t, 10*time.Second, "the replica listed as the leader", func() error {
		var err error
		if out, err = as(t, h, hubtest.User("viewer"), "get", "hubs"); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || !regexp.MustCompile(`^HUB\s+ADDRESS\s+LEADER\s+INCARNATION\s+STARTED$`).MatchString(lines[0]) {
			return fmt.Errorf("table:\n%s", out)
		}
		if f := strings.Fields(lines[1]); len(f) < 5 || f[0] != h.ID || f[1] != h.AdminAddr || f[2] != "yes" || f[3] != h.Model.Incarnation() {
			return fmt.Errorf("row %q: want %s %s yes %s ...", lines[1], h.ID, h.AdminAddr, h.Model.Incarnation())
		}
		return nil
	})
	js, err := as(t, h, hubtest.User("viewer"), "get", "hubs", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, js)
	}
	// The test's runner writes TIME for timestamps: read the JSON as it is.
	var resp struct {
		Hubs []struct {
			HubID     string `json:"hubId"`
			Leader    bool   `json:"leader"`
			StartedAt string `json:"startedAt"`
		} `json:"hubs"`
		AnsweredBy string `json:"answeredBy"`
	}
	if err := json.Unmarshal([]byte(js), &resp); err != nil {
		t.Fatalf("%v\n%s", err, js)
	}
	if resp.AnsweredBy != h.ID || len(resp.Hubs) != 1 || resp.Hubs[0].HubID != h.ID || !resp.Hubs[0].Leader || resp.Hubs[0].StartedAt == "" {
		t.Fatalf("JSON: %s", js)
	}
}

// TestRoles runs every command as a viewer: reads work, and each write is refused with the role it
// needs, changing nothing.
func TestRoles(t *testing.T) {
	h := hubtest.Start(t, 10*time.Second)
	viewer := hubtest.User("alice")
	for _, args := range [][]string{{"get", "clusters"}, {"get", "pools"}, {"get", "imports"}, {"get", "hubs"}, {"clusters", "requests"}} {
		t.Run("viewer "+strings.Join(args, " "), func(t *testing.T) {
			if out, err := as(t, h, viewer, args...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
	t.Run("viewer whoami", func(t *testing.T) {
		out, err := as(t, h, viewer, "whoami")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		testkit.Golden(t, filepath.Join("testdata", "whoami-viewer.hub.table"), []byte(out))
	})
	for _, args := range [][]string{{"tokens", "create", "--cluster", "c1"}, {"clusters", "approve", "c1"}, {"clusters", "revoke", "c1"}, {"hopkey", "rotate"}} {
		t.Run("viewer "+strings.Join(args, " "), func(t *testing.T) {
			out, err := as(t, h, viewer, args...)
			want := fmt.Sprintf("%s %s needs the admin role (a user named in the hub's --admin-users); hub %s refused spiffe://%s/user/alice: user alice is a viewer",
				args[0], args[1], h.AdminAddr, hubtest.TrustDomain)
			if err == nil || !strings.Contains(out, want) {
				t.Fatalf("got %v\n%s\nwant an error containing %q", err, out, want)
			}
		})
	}
	// Nothing changed: no token or join request, and cluster c1 is not revoked.
	reqs, err := h.Admin().ListJoinRequests(context.Background(), &pb.ListJoinRequestsRequest{})
	if err != nil || len(reqs.GetRequests()) != 0 {
		t.Errorf("join requests after the viewer's attempts: %v %v", reqs, err)
	}
	if _, err := h.SyncAs("c1").Register(context.Background(), &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "c1", Region: "r", Version: "test"}}); err != nil {
		t.Errorf("c1 registers after the viewer's revoke: %v", err)
	}
}

var spokeFlags = regexp.MustCompile(`--cluster-id (\S+) --join-token (\S+) --hub-ca-hash (\S+)`)

// TestJoinThroughHubctl takes a cluster through the join flow as an admin does: a token, the
// spoke's request, its approval, a certificate that works, its revocation; and a token that
// approves by itself.
func TestJoinThroughHubctl(t *testing.T) {
	approvals := &approvalRecorder{}
	h := hubtest.StartWith(t, 10*time.Second, hubtest.Options{Admin: func(s *server.Server) pb.AdminServiceServer {
		approvals.AdminServiceServer = s
		return approvals
	}})
	admin := hubtest.Admin()
	ctx := context.Background()
	hash := tlsconfig.SPKIHash(h.CA.Certificate())

	out, err := as(t, h, admin, "whoami")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	testkit.Golden(t, filepath.Join("testdata", "whoami-admin.hub.table"), []byte(out))

	out, err = as(t, h, admin, "tokens", "create", "--cluster", "c1", "--ttl", "30m")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	m := spokeFlags.FindStringSubmatch(out)
	if m == nil || m[1] != "c1" || m[3] != hash || !strings.Contains(out, "(in 30m)") {
		t.Fatalf("tokens create printed\n%s\nwant the spoke flags for c1 with CA hash %s, expiring in 30m", out, hash)
	}
	token := m[2]

	id := tlsconfig.Identity{TrustDomain: hubtest.TrustDomain, Kind: tlsconfig.KindCluster, Name: "c1"}
	csr, key, err := tlsconfig.NewCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	join := func() *pb.JoinResponse {
		t.Helper()
		resp, err := h.Join().Join(ctx, &pb.JoinRequest{Token: token, CsrPem: csr})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if st := join().GetState(); st != pb.JoinState_JOIN_STATE_PENDING {
		t.Fatalf("join before approval: %s, want pending", st)
	}

	out, err = as(t, h, admin, "clusters", "requests", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var reqs pb.ListJoinRequestsResponse
	if err := protojson.Unmarshal([]byte(strings.ReplaceAll(out, `"TIME"`, `"2025-01-01T00:00:00Z"`)), &reqs); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r := reqs.GetRequests(); len(r) != 1 || r[0].GetClusterId() != "c1" || r[0].GetState() != pb.JoinState_JOIN_STATE_PENDING || !strings.HasPrefix(token, r[0].GetTokenId()+".") {
		t.Fatalf("requests %v: want c1 pending with token %s", r, token)
	}
	out, err = as(t, h, admin, "clusters", "requests")
	if err != nil || !regexp.MustCompile(`(?m)^c1 +Pending +`+regexp.QuoteMeta(reqs.GetRequests()[0].GetTokenId())+` +AGE +[0-9a-f]{16}… +127\.0\.0\.1:\d+$`).MatchString(out) {
		t.Fatalf("clusters requests: %v\n%s", err, out)
	}

	// An approval naming another key than the request's is refused, by hubctl for a prefix and
	// by the hub for a whole hash, and approves nothing.
	keyHash := reqs.GetRequests()[0].GetPublicKeySha256()
	other := strings.Repeat("0", 64)
	for flag, want := range map[string]string{
		"0000000000000000…": "the join request of cluster c1 holds public key sha256 " + keyHash + ", not 0000000000000000…",
		other:               "FailedPrecondition: the join request of cluster c1 holds public key sha256 " + keyHash,
	} {
		out, err = as(t, h, admin, "clusters", "approve", "c1", "--public-key-sha256", flag)
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("clusters approve --public-key-sha256 %s: %v\n%s\nwant an error containing %q", flag, err, out, want)
		}
	}
	if st := join().GetState(); st != pb.JoinState_JOIN_STATE_PENDING {
		t.Fatalf("join after the refused approvals: %s, want pending", st)
	}
	// Without the flag, hubctl approves the key the request holds, and names it to the hub.
	out, err = as(t, h, admin, "clusters", "approve", "c1")
	if err != nil || !strings.Contains(out, "cluster c1: join request approved (token "+reqs.GetRequests()[0].GetTokenId()+", public key sha256 "+keyHash) {
		t.Fatalf("clusters approve: %v\n%s", err, out)
	}
	if got := approvals.keys(); len(got) != 2 || got[0] != other || got[1] != keyHash {
		t.Fatalf("the approvals named keys %q; want %q, then the request's %q", got, other, keyHash)
	}
	resp := join()
	if resp.GetState() != pb.JoinState_JOIN_STATE_APPROVED || len(resp.GetCertificatePem()) == 0 {
		t.Fatalf("join after approval: %v", resp)
	}
	c1 := pb.NewSyncServiceClient(h.ConnAs(hubtest.KeyPair(resp.GetCertificatePem(), key)))
	register := func() error {
		_, err := c1.Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "c1", Region: "r", Version: "test"}})
		return err
	}
	if err := register(); err != nil {
		t.Fatalf("register with the certificate the join flow issued: %v", err)
	}

	out, err = as(t, h, admin, "clusters", "revoke", "c1", "--remove")
	if err != nil || !strings.Contains(out, "cluster c1 revoked at TIME: its session is ended and its certificates issued until then are refused; its record is deleted") {
		t.Fatalf("clusters revoke: %v\n%s", err, out)
	}
	if err := register(); err == nil {
		t.Fatal("the revoked certificate still registers")
	}

	out, err = as(t, h, admin, "hopkey", "rotate")
	if err != nil || !regexp.MustCompile(`^hop key \S+ signs hop markers from now on`).MatchString(out) {
		t.Fatalf("hopkey rotate: %v\n%s", err, out)
	}

	// A token that approves by itself, read as JSON.
	out, err = as(t, h, admin, "tokens", "create", "--cluster", "c2", "--auto-approve", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var tok pb.CreateTokenResponse
	if err := protojson.Unmarshal([]byte(strings.ReplaceAll(out, `"TIME"`, `"2025-01-01T00:00:00Z"`)), &tok); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if tok.GetCaCertHash() != hash {
		t.Errorf("CA hash %q, want %q", tok.GetCaCertHash(), hash)
	}
	csr2, _, err := tlsconfig.NewCSR(tlsconfig.Identity{TrustDomain: hubtest.TrustDomain, Kind: tlsconfig.KindCluster, Name: "c2"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err = h.Join().Join(ctx, &pb.JoinRequest{Token: tok.GetToken(), CsrPem: csr2})
	if err != nil || resp.GetState() != pb.JoinState_JOIN_STATE_APPROVED {
		t.Fatalf("join with an auto-approving token: %v %v", resp, err)
	}
}

// approvalRecorder is the hub's AdminService, keeping the key each ApproveCluster names.
type approvalRecorder struct {
	pb.AdminServiceServer
	mu    sync.Mutex
	named []string
}

func (a *approvalRecorder) ApproveCluster(ctx context.Context, req *pb.ApproveClusterRequest) (*pb.ApproveClusterResponse, error) {
	a.mu.Lock()
	a.named = append(a.named, req.GetPublicKeySha256())
	a.mu.Unlock()
	return a.AdminServiceServer.ApproveCluster(ctx, req)
}

func (a *approvalRecorder) keys() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.named)
}

// TestCredentialsAgainstHub checks what a user is told when the hub would not talk to it, or it
// would not trust the hub.
func TestCredentialsAgainstHub(t *testing.T) {
	h := hubtest.Start(t, 10*time.Second)
	otherCA, err := tlsconfig.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	admin := hubtest.Admin()
	adminCert, adminKey := h.Credentials(admin)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no certificate", []string{"--credentials-dir", h.CredentialsDir(hubtest.Anonymous())}, "tls.crt and tls.key missing"},
		{"expired", []string{"--credentials-dir", h.CredentialsDir(admin.Expired())}, "expired at"},
		{"a cluster's certificate", []string{"--credentials-dir", h.CredentialsDir(hubtest.Cluster("c1"))},
			"whoami needs the viewer role (any user certificate of the hub's trust domain); hub " + h.AdminAddr + " refused spiffe://" + hubtest.TrustDomain + "/cluster/c1"},
		{"another trust domain", []string{"--credentials-dir", h.CredentialsDir(admin.InTrustDomain("elsewhere.test"))},
			"whoami needs the viewer role (any user certificate of the hub's trust domain); hub " + h.AdminAddr + " refused spiffe://elsewhere.test/user/admin"},
		{"another CA's certificate", []string{"--credentials-dir", h.CredentialsDir(admin.IssuedBy(otherCA))},
			"the certificate in DIR/tls.crt is not issued by DIR/ca.crt (x509: certificate signed by unknown authority): the hub refuses client certificates its client CA did not issue"},
		{"the hub's CA unknown", []string{"--credentials-dir", writeCredentials(t, otherCA.CertPEM(), adminCert, adminKey)},
			"that " + filepath.Join("DIR", "ca.crt") + " is the hub's CA"},
		{"a server name the hub's certificate lacks", []string{"--credentials-dir", h.CredentialsDir(admin), "--tls-server-name", "hub.example"},
			`and that the hub's certificate names "hub.example" (else --tls-server-name)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, append(append([]string{"--hub", h.AdminAddr}, tc.args...), "whoami")...)
			out = strings.ReplaceAll(out, tc.args[1], "DIR")
			if err == nil || !strings.Contains(out, tc.want) {
				t.Fatalf("got %v\n%s\nwant an error containing %q", err, out, tc.want)
			}
		})
	}
	t.Run("server name given", func(t *testing.T) {
		if out, err := as(t, h, admin, "--tls-server-name", hubtest.ServerName, "whoami"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	})
}

// TestStatus: a fleet whose clusters are connected and fresh is ready; a registered cluster
// without a session is not, and status --wait returns once its spoke connects.
func TestStatus(t *testing.T) {
	h := fleet(t)
	viewer := hubtest.User("viewer")
	out, err := as(t, h, viewer, "status")
	if err != nil || !strings.Contains(out, "2 of 2 clusters connected and fresh") {
		t.Fatalf("status of a ready fleet: %v\n%s", err, out)
	}
	if out, err := as(t, h, viewer, "status", "--fresh", "1ns"); err == nil || !strings.Contains(err.Error(), "0 of 2 clusters connected and fresh; eu-west-1: capacity") {
		t.Fatalf("status with capacity older than --fresh: %v\n%s", err, out)
	}

	// ap-south-1 registers but its spoke has not opened its session yet.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cli := h.SyncAs("ap-south-1")
	if _, err := cli.Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "ap-south-1", Region: "ap-south"}}); err != nil {
		t.Fatal(err)
	}
	if out, err := as(t, h, viewer, "status"); !errors.Is(err, errNotReady) || !strings.Contains(err.Error(), "ap-south-1: no session with the hub") {
		t.Fatalf("status with a cluster not connected: %v\n%s", err, out)
	}
	if out, err := as(t, h, viewer, "status", "--wait", "--wait-timeout", "1500ms"); !errors.Is(err, errNotReady) || !strings.Contains(err.Error(), "after 1.5s") {
		t.Fatalf("status --wait running out of time: %v\n%s", err, out)
	}

	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := as(t, h, viewer, "status", "--wait", "--wait-timeout", "30s")
		done <- result{out, err}
	}()
	st, err := cli.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{ClusterId: "ap-south-1", SpokeIncarnation: "i"}}}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || !strings.Contains(r.out, "3 of 3 clusters connected and fresh") {
		t.Fatalf("status --wait after ap-south-1 connected: %v\n%s", r.err, r.out)
	}
}

// TestDescribe: describe cluster and pool show the state as golden text, then the events that
// made it, in the order this replica saw them (which the test does not fix: the registry's
// arrive through its watch, the capacity's with the reports).
// gossipMembers is a gossip member's view: the alive and the dead.
type gossipMembers struct{ alive, dead []string }

func (g gossipMembers) Dead(name string) bool { return slices.Contains(g.dead, name) }
func (g gossipMembers) Alive() []string       { return g.alive }

func TestDescribe(t *testing.T) {
	h := fleet(t)
	h.Server.SetGossip(gossipMembers{alive: []string{"hub/hub-test", "us-east-1"}, dead: []string{"eu-west-1"}})
	viewer := hubtest.User("viewer")
	for _, tc := range []struct {
		name   string
		args   []string
		events []string
	}{
		{"describe-cluster", []string{"describe", "cluster", "eu-west-1"}, []string{
			"Registered     -              registered in region eu-west",
			"Connected      -              its spoke holds a session on hub hub-test",
			"Exported       default/chat   pool default/chat exported",
			"SpillStarted   default/chat   pool default/chat spills to us-east-1 (us-east)",
			"Saturated      default/chat   pool default/chat saturated (saturation 1.00, 2 ready endpoints, queue 7)",
		}},
		{"describe-pool", []string{"describe", "pool", "default/chat"}, []string{
			"us-east-1   Exported       pool default/chat exported",
			"eu-west-1   Exported       pool default/chat exported",
			"eu-west-1   SpillStarted   pool default/chat spills to us-east-1 (us-east)",
			"eu-west-1   Saturated      pool default/chat saturated (saturation 1.00, 2 ready endpoints, queue 7)",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out string
			testkit.Eventually(t, 5*time.Second, "every event", func() error {
				var err error
				if out, err = as(t, h, viewer, tc.args...); err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				if n := strings.Count(out[strings.Index(out, "Events:"):], "\n") - 2; n != len(tc.events) {
					return fmt.Errorf("%d events, want %d:\n%s", n, len(tc.events), out)
				}
				return nil
			})
			state, events, _ := strings.Cut(out, "Events:\n")
			testkit.Golden(t, filepath.Join("testdata", tc.name+".txt"), []byte(state))
			for _, e := range tc.events {
				if !regexp.MustCompile(`(?m)^  AGE\s+` + regexp.QuoteMeta(e) + `$`).MatchString(events) {
					t.Errorf("no event %q in\n%s", e, events)
				}
			}
		})
	}
	// -o json holds every part; a name that is no cluster is an error.
	js, err := as(t, h, viewer, "describe", "cluster", "us-east-1", "-o", "json")
	var parts map[string]json.RawMessage
	if err != nil || json.Unmarshal([]byte(js), &parts) != nil || len(parts) != 5 || !strings.Contains(string(parts["events"]), `"reason": "Registered"`) {
		t.Fatalf("describe -o json: %v\n%s", err, js)
	}
	if _, err := as(t, h, viewer, "describe", "cluster", "nowhere-1"); err == nil || !strings.Contains(err.Error(), "cluster nowhere-1") {
		t.Fatalf("describe of no cluster: %v", err)
	}
}

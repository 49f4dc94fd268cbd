package ctl

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spillway-io/spillway/e2e/testkit"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// TestTrustOutputGolden renders each answer of the trust commands in every format against golden
// files; the clock is fixed, so ages and expiries are part of what is compared.
func TestTrustOutputGolden(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	const hash = "sha256:5d41402abc4b2a76b9719d911017c592ae2f5b6b8f1c0a4e3e4d7c1b9f0a6e21"
	const token = "k3x9qa.7f2d0c8e1b6a4f59"
	key := "9c1185a5c5e9fc54612808977ee8f548b2258d31c2a4e5f7a0b1c2d3e4f5a6b7"
	requests := &pb.ListJoinRequestsResponse{Requests: []*pb.JoinRequestInfo{
		{ClusterId: "us-east-1", TokenId: "k3x9qa", State: pb.JoinState_JOIN_STATE_PENDING, RequestedAt: timestamppb.New(now.Add(-90 * time.Second)), PublicKeySha256: key, PeerAddress: "10.0.1.7:51234"},
		{ClusterId: "eu-west-1", TokenId: "k3x9qa", State: pb.JoinState_JOIN_STATE_APPROVED, RequestedAt: timestamppb.New(now.Add(-2 * time.Hour)), PublicKeySha256: key, PeerAddress: "10.0.2.9:40000"},
		{ClusterId: "ap-south-1", State: pb.JoinState_JOIN_STATE_DENIED},
	}}
	for _, tc := range []struct {
		name  string
		print func(o *options, w io.Writer) error
	}{
		{"whoami", func(o *options, w io.Writer) error {
			return o.printWhoAmI(w, &pb.WhoAmIResponse{Identity: "spiffe://spillway.local/user/admin", Role: "admin"})
		}},
		{"token", func(o *options, w io.Writer) error {
			return o.printToken(w, &pb.CreateTokenResponse{Token: token, CaCertHash: hash, ExpiresAt: timestamppb.New(now.Add(time.Hour))}, []string{"eu-west-1", "us-east-1"}, false)
		}},
		{"token-auto", func(o *options, w io.Writer) error {
			return o.printToken(w, &pb.CreateTokenResponse{Token: token, CaCertHash: hash, ExpiresAt: timestamppb.New(now.Add(90 * time.Minute))}, []string{"us-east-1"}, true)
		}},
		{"requests", func(o *options, w io.Writer) error { return o.printJoinRequests(w, requests) }},
		{"approve", func(o *options, w io.Writer) error {
			r := requests.GetRequests()[0]
			return o.printApproved(w, "us-east-1", &pb.ApproveClusterResponse{Request: &pb.JoinRequestInfo{
				ClusterId: r.GetClusterId(), TokenId: r.GetTokenId(), State: pb.JoinState_JOIN_STATE_APPROVED,
				RequestedAt: r.GetRequestedAt(), PublicKeySha256: r.GetPublicKeySha256(), PeerAddress: r.GetPeerAddress(),
			}})
		}},
		{"revoke", func(o *options, w io.Writer) error {
			return o.printRevoked(w, "us-east-1", false, &pb.RevokeClusterResponse{RevokedAt: timestamppb.New(now)})
		}},
		{"revoke-remove", func(o *options, w io.Writer) error {
			return o.printRevoked(w, "us-east-1", true, &pb.RevokeClusterResponse{RevokedAt: timestamppb.New(now)})
		}},
		{"hopkey", func(o *options, w io.Writer) error {
			return o.printHopKey(w, &pb.RotateHopKeyResponse{KeyId: "hk-20250601-120000"})
		}},
	} {
		for _, format := range []string{"table", "json", "yaml"} {
			t.Run(tc.name+"-"+format, func(t *testing.T) {
				o := &options{output: format, now: func() time.Time { return now }}
				var out bytes.Buffer
				if err := tc.print(o, &out); err != nil {
					t.Fatal(err)
				}
				testkit.Golden(t, filepath.Join("testdata", tc.name+"."+format), out.Bytes())
			})
		}
	}
}

func TestDurations(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	o := &options{now: func() time.Time { return now }}
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{now.Add(time.Hour - 300*time.Millisecond), "in 1h"}, // a 1h token read a moment after it was made
		{now.Add(90 * time.Minute), "in 1h30m"},
		{now.Add(24 * time.Hour), "in 24h"},
		{now.Add(10*time.Minute + 20*time.Second), "in 10m"},
		{now.Add(45 * time.Second), "in 45s"},
		{now.Add(time.Hour + 5*time.Second), "in 1h"},
		{now, "expired"},
		{now.Add(-time.Second), "expired"},
	} {
		if got := o.until(tc.at); got != tc.want {
			t.Errorf("until(now%+v) = %q, want %q", tc.at.Sub(now), got, tc.want)
		}
	}
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{now.Add(-5 * time.Second), "5s ago"},
		{now.Add(-5 * time.Minute), "5m ago"},
		{now.Add(-50 * time.Hour), "50h ago"},
		{now.Add(time.Minute), "0s ago"}, // a clock ahead of this one
	} {
		if got := o.age(tc.at, true); got != tc.want {
			t.Errorf("age(now%+v) = %q, want %q", tc.at.Sub(now), got, tc.want)
		}
	}
	if got := o.age(time.Time{}, false); got != "never" {
		t.Errorf("age of nothing = %q, want never", got)
	}
}

// TestExplain checks the sentences the hub's status codes become, and that the status is still
// there for a caller to read.
func TestExplain(t *testing.T) {
	o := &options{hub: "127.0.0.1:8472", timeout: 3 * time.Second, credentialsDir: "creds", tlsServerName: "127.0.0.1"}
	alice := "spiffe://spillway.local/user/alice"
	for _, tc := range []struct {
		name string
		err  error
		e    explanation
		want string
	}{
		{"admin needed", status.Error(codes.PermissionDenied, "user alice is a viewer"), explanation{command: "clusters approve", role: roleAdmin, who: alice},
			"clusters approve needs the admin role (a user named in the hub's --admin-users); hub 127.0.0.1:8472 refused " + alice + ": user alice is a viewer"},
		{"viewer needed", status.Error(codes.PermissionDenied, "cluster identities have no role"), explanation{command: "get pools", role: roleViewer, who: "spiffe://spillway.local/cluster/a"},
			"get pools needs the viewer role (any user certificate of the hub's trust domain); hub 127.0.0.1:8472 refused spiffe://spillway.local/cluster/a: cluster identities have no role"},
		{"unauthenticated", status.Error(codes.Unauthenticated, "no client certificate"), explanation{command: "whoami", role: roleViewer, who: alice},
			"hub 127.0.0.1:8472 did not accept " + alice + ": no client certificate; use a certificate issued by the hub's CA (--credentials-dir)"},
		{"handshake", status.Error(codes.Unavailable, "connection error: desc = \"transport: authentication handshake failed: tls: verifying the peer's certificate: x509: certificate signed by unknown authority\""), explanation{command: "whoami", role: roleViewer, who: alice},
			"check that --hub is the hub's admin address (port 8472 by default), that creds/ca.crt is the hub's CA and that the hub's certificate names \"127.0.0.1\" (else --tls-server-name)"},
		{"refused", status.Error(codes.Unavailable, "connection error: dial tcp 127.0.0.1:8472: connect: connection refused"), explanation{command: "whoami", role: roleViewer, who: alice},
			"ask hub 127.0.0.1:8472: unavailable: connection error: dial tcp 127.0.0.1:8472: connect: connection refused"},
		{"client certificate refused", status.Error(codes.Unavailable, "connection error: desc = \"transport: remote error: tls: bad certificate\""), explanation{command: "whoami", role: roleViewer, who: alice},
			"ask hub 127.0.0.1:8472: unavailable: connection error: desc = \"transport: remote error: tls: bad certificate\"; if the hub refused the client certificate in creds/tls.crt, check that the hub's client CA issued it"},
		{"certificate of another CA", status.Error(codes.Unavailable, "write: broken pipe"), explanation{command: "whoami", role: roleViewer, who: alice, issuerNote: "the certificate in creds/tls.crt is not issued by creds/ca.crt"},
			"ask hub 127.0.0.1:8472: unavailable: write: broken pipe; the certificate in creds/tls.crt is not issued by creds/ca.crt: the hub refuses client certificates its client CA did not issue"},
		{"timeout", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), explanation{command: "whoami", role: roleViewer, who: alice},
			"ask hub 127.0.0.1:8472: no answer within --timeout 3s: context deadline exceeded"},
		{"other code", status.Error(codes.NotFound, "no join request for cluster b"), explanation{command: "clusters approve", role: roleAdmin, who: alice},
			"ask hub 127.0.0.1:8472: NotFound: no join request for cluster b"},
		{"not a status", errors.New("boom"), explanation{command: "whoami", role: roleViewer, who: alice}, "ask hub 127.0.0.1:8472: boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := o.explain(tc.err, tc.e)
			if !strings.Contains(got.Error(), tc.want) {
				t.Errorf("got  %s\nwant it to contain %s", got, tc.want)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("%v does not wrap %v", got, tc.err)
			}
			if strings.Contains(got.Error(), "rpc error") {
				t.Errorf("%s: the status is repeated raw", got)
			}
		})
	}
}

package server

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// TestUserCertificateDefaultValidity: a request without a validity gets 720h (the test hubs' CA
// lives a day, which would cut it short, so this one runs on a CA of two years).
func TestUserCertificateDefaultValidity(t *testing.T) {
	ca, err := tlsconfig.NewCA("long-lived CA", 2*MaxUserCertValidity)
	if err != nil {
		t.Fatal(err)
	}
	s := New(nil, nil, Options{TrustDomain: "spillway.test", CA: ca, CABundle: ca.CertPEM})
	admin := tlsconfig.Identity{TrustDomain: "spillway.test", Kind: tlsconfig.KindUser, Name: "admin"}
	ctx := context.WithValue(context.Background(), callerKey{}, caller{id: admin, role: RoleAdmin})
	csr, _, err := tlsconfig.NewCSR(tlsconfig.Identity{TrustDomain: "spillway.test", Kind: tlsconfig.KindUser, Name: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		validity time.Duration // 0: none given
		want     time.Duration
	}{
		{"default", 0, DefaultUserCertValidity},
		{"at most", MaxUserCertValidity, MaxUserCertValidity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &pb.IssueUserCertificateRequest{CsrPem: csr}
			if tc.validity != 0 {
				req.Validity = durationpb.New(tc.validity)
			}
			before := time.Now()
			resp, err := s.IssueUserCertificate(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(resp.GetCertificatePem())
			if block == nil {
				t.Fatal("no PEM certificate")
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if lo, hi := before.Add(tc.want).Add(-time.Second), time.Now().Add(tc.want); cert.NotAfter.Before(lo) || cert.NotAfter.After(hi) {
				t.Fatalf("NotAfter %s, want %s from now", cert.NotAfter, tc.want)
			}
		})
	}
	// Without the interceptors there is no caller: nothing is signed.
	if _, err := s.IssueUserCertificate(context.Background(), &pb.IssueUserCertificateRequest{CsrPem: csr}); err == nil {
		t.Fatal("a call without a verified caller was signed")
	}
}

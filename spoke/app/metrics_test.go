package app

import (
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	"github.com/spillway-io/spillway/spoke/hubclient"
	"github.com/spillway-io/spillway/spoke/join"
	"github.com/spillway-io/spillway/spoke/report"
)

// TestMetricNames covers every metric the spoke binary registers of its own (the EPP's are
// pkg/epp's, the certificates' expiry pkg/tlsconfig's).
func TestMetricNames(t *testing.T) {
	reg := promtest.NewRegistry()
	newMetrics(reg)
	report.New(report.Options{Registerer: reg})
	hubclient.New(hubclient.Options{Registerer: reg})
	ca, err := tlsconfig.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(tlsconfig.Identity{TrustDomain: "spillway.local", Kind: tlsconfig.KindCluster, Name: "east"}, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tlsconfig.NewStaticKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsconfig.NewStaticCAPool(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := join.NewRenewer(join.RenewerOptions{HubAddress: "hub:8470", KeyPair: kp, CAPool: pool, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	promtest.CheckGolden(t, reg, "spoke", "testdata/metrics.golden")
}

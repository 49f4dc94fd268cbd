package join

import (
	"testing"
	"time"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// FuzzCheckIssued feeds the checks of the hub's answer arbitrary certificates and bundles: they
// never panic, and accept only a certificate for the spoke's key and identity from the bundle.
func FuzzCheckIssued(f *testing.F) {
	ca, err := tlsconfig.NewCA("fuzz", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	want := clusterID("east")
	csrPEM, keyPEM, err := tlsconfig.NewCSR(want)
	if err != nil {
		f.Fatal(err)
	}
	csr, _, err := tlsconfig.ParseCSR(csrPEM)
	if err != nil {
		f.Fatal(err)
	}
	good, err := ca.Sign(csr, want, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	other, err := ca.Sign(csr, clusterID("west"), time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, ca.CertPEM())
	f.Add(other, ca.CertPEM())
	f.Add(good, good)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), []byte{})
	f.Fuzz(func(t *testing.T, certPEM, bundlePEM []byte) {
		leaf, err := checkIssued(certPEM, keyPEM, bundlePEM, want, time.Now())
		if err != nil {
			return
		}
		if id, err := tlsconfig.IdentityOf(leaf); err != nil || id != want {
			t.Fatalf("accepted a certificate naming %v (%v)", id, err)
		}
	})
}

package server

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// TestCheckValidity: a certificate is accepted from its NotBefore to its NotAfter, both
// included, and refused with Unauthenticated on either side.
func TestCheckValidity(t *testing.T) {
	from := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	to := from.Add(time.Hour)
	cert := &x509.Certificate{NotBefore: from, NotAfter: to}
	id := tlsconfig.Identity{TrustDomain: "spillway.test", Kind: tlsconfig.KindCluster, Name: "a"}
	for _, tc := range []struct {
		now  time.Time
		says string // "" for accepted
	}{
		{from.Add(-time.Second), "certificate of cluster a is valid only from 2030-01-01T00:00:00Z"},
		{from, ""},
		{to, ""},
		{to.Add(time.Nanosecond), "certificate of cluster a expired at 2030-01-01T01:00:00Z"},
	} {
		err := toStatus(checkValidity(id, cert, tc.now))
		switch {
		case tc.says == "" && err != nil:
			t.Errorf("at %s: %v, want accepted", tc.now, err)
		case tc.says != "" && (status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), tc.says)):
			t.Errorf("at %s: %v, want Unauthenticated saying %q", tc.now, err, tc.says)
		}
	}
}

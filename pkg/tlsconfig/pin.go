package tlsconfig

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// SPKIHash is "sha256:<hex>" of a certificate's DER SubjectPublicKeyInfo: what a spoke pins the
// hub's CA with before it trusts it (kubeadm's discovery-token-ca-cert-hash). It survives
// re-issuing the CA certificate with the same key.
func SPKIHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// MatchCAHash returns a pool of the one CA certificate of the PEM bundle whose SPKI hash is
// want, and an error when none has it. The bundle came over a connection that was not verified:
// only the pinned certificate is trusted, never the others beside it, which anyone could have
// added.
func MatchCAHash(bundlePEM []byte, want string) (*CAPool, error) {
	if !strings.HasPrefix(want, "sha256:") || len(want) != len("sha256:")+64 {
		return nil, fmt.Errorf("CA hash %q: want sha256:<64 hex digits>", want)
	}
	want = strings.ToLower(want)
	certs, err := parseCerts(bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	for _, c := range certs {
		if c.IsCA && SPKIHash(c) == want {
			return NewStaticCAPool(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
		}
	}
	return nil, errors.New("no CA certificate of the hub's bundle has the pinned hash: the hub is not the one the token was made for")
}

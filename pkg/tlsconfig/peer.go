package tlsconfig

import (
	"context"
	"crypto/x509"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// PeerIdentity returns the verified client certificate of a gRPC call's peer and the identity it
// carries; ok is false when the peer presented no certificate, one that the server did not verify
// (a configuration that only requests certificates), or one without an identity.
func PeerIdentity(ctx context.Context) (id Identity, cert *x509.Certificate, ok bool) {
	p, found := peer.FromContext(ctx)
	if !found {
		return Identity{}, nil, false
	}
	info, isTLS := p.AuthInfo.(credentials.TLSInfo)
	if !isTLS || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Identity{}, nil, false
	}
	cert = info.State.VerifiedChains[0][0]
	id, err := IdentityOf(cert)
	if err != nil {
		return Identity{}, cert, false
	}
	return id, cert, true
}

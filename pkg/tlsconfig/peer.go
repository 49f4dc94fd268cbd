package tlsconfig

import (
	"context"
	"crypto/x509"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// PeerIdentity returns the client certificate of a gRPC call's peer and the identity it
// carries; ok is false when the peer presented no certificate or one without an identity. The
// certificate was verified during the handshake by the VerifyConnection of ServerConfig: a
// server whose credentials come from elsewhere must not rely on this.
func PeerIdentity(ctx context.Context) (id Identity, cert *x509.Certificate, ok bool) {
	p, found := peer.FromContext(ctx)
	if !found {
		return Identity{}, nil, false
	}
	info, isTLS := p.AuthInfo.(credentials.TLSInfo)
	if !isTLS || len(info.State.PeerCertificates) == 0 {
		return Identity{}, nil, false
	}
	cert = info.State.PeerCertificates[0]
	id, err := IdentityOf(cert)
	if err != nil {
		return Identity{}, cert, false
	}
	return id, cert, true
}

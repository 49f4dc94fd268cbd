// Package join gets a spoke the certificate that names its cluster, and keeps it fresh.
//
// Joining (Join) is kubeadm's bootstrap-token flow. The spoke is given, out of band, the hub's
// address, a bootstrap token scoped to its cluster ID and the SPKI hash of the hub's CA
// (`hubctl tokens create` prints all three). It then:
//
//  1. calls JoinService.Discover over TLS without verifying the hub: the answer, the hub's CA
//     bundle, is public, and nothing secret is sent on that connection;
//  2. trusts the bundle only when one of its CA certificates has the pinned hash
//     (tlsconfig.MatchCAHash); otherwise it stops, and the token never leaves the spoke;
//  3. dials the hub again, verifying it with that bundle, creates a key, writes it to tls.key
//     (mode 0600) before the hub hears of it, makes a certificate request for
//     spiffe://<trust-domain>/cluster/<id> with it, and calls Join with the token until the
//     request is approved, backing off while it is pending (an admin approves it with
//     `hubctl clusters approve <id>`, which the spoke logs once) or the hub is unreachable. A
//     spoke restarted meanwhile asks again with the key of tls.key: the hub refuses a request
//     for another key while one is pending (the kubelet's TLS bootstrap keeps its key so). A
//     denial (which also removes the key: the hub would deny it again), or a refusal of the token
//     (PermissionDenied, Unauthenticated, InvalidArgument, FailedPrecondition), ends the flow with
//     an error saying why;
//  4. checks what the hub issued (a certificate for its own key and identity, from the bundle,
//     and a bundle that verifies the hub that sent it) and writes the credentials directory:
//     ca.crt, tls.key, the marker .spillway-joined, and tls.crt last, each by an atomic rename,
//     so that a directory holding tls.crt is complete.
//
// Renewing (Renewer) keeps a joined certificate valid: when a third of its lifetime is left it
// calls JoinService.Renew over mTLS with the current key pair (a connection per attempt, so the
// handshake presents the key pair loaded last) and a new key's CSR, checks the
// answer as Join does, and rewrites the files atomically; the spoke's reloading KeyPair and
// CAPool pick them up. Failures are retried with backoff until the certificate is renewed.
//
// Only credentials the join flow wrote are renewed: the marker file .spillway-joined says so,
// and it survives restarts, which a spoke started without --join-token still needs. Joining
// again after tls.crt was removed makes a new key: the key beside the marker is the old
// certificate's, and the marker goes until the new certificate is stored. A directory
// mounted from a cert-manager or SPIRE Secret has no marker, and whoever issued its
// certificate renews it.
package join

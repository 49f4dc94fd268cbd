// Package tlsconfig holds Spillway's transport security: who a peer is, and the TLS material a
// hub or a spoke presents and trusts.
//
// Identity comes from certificates, never from a field a client fills in. A cluster is the
// spiffe://<trust-domain>/cluster/<id> URI SAN of the certificate it completed the TLS handshake
// with, a hubctl user the spiffe://<trust-domain>/user/<name> one; IdentityOf reads it from a
// verified peer certificate and ParseIdentity is the one strict parser of those URIs.
//
// Key pairs and CA bundles are read from files and reloaded from disk, because cert-manager (or
// SPIRE, or the hub's own CA) rotates them by rewriting the files of a mounted Secret: KeyPair and
// CAPool load at construction, then their Run polls the files and swaps in what they hold now. A
// reload that fails keeps the previous material and logs a warning. ServerConfig and ClientConfig
// build tls.Configs whose certificate and trust pool are looked up at every handshake, so a
// rotation takes effect on the next connection without rebuilding anything.
//
// CA is a small certificate authority (ECDSA P-256) for the hub's join flow and the local demo
// fleet: it issues leaves carrying an Identity that serve as both server and client certificates.
package tlsconfig

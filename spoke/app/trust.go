package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
	"github.com/spillway-io/spillway/spoke/hubclient"
	"github.com/spillway-io/spillway/spoke/join"
)

// selfSignedValidity is how long the serving certificate made at start is valid, as GIE's EPP
// makes its own.
const selfSignedValidity = 365 * 24 * time.Hour

// Roles of the spoke's key pairs on spillway_tls_certificate_expiry_timestamp_seconds.
const (
	roleHubClient = "spoke-client"
	roleServing   = "spoke-serving"
)

// joinFleet joins the fleet when the spoke has a hub, no certificate in its credentials
// directory, and a join token; a spoke with a certificate never needs the token again.
func joinFleet(ctx context.Context, cfg *Config) error {
	if cfg.HubAddress == "" {
		return nil
	}
	t := cfg.Trust
	log := cfg.Logger.With("cluster", cfg.ClusterID)
	has, err := join.HasCertificate(t.CredentialsDir)
	switch {
	case err != nil:
		return fmt.Errorf("--credentials-dir %s: %w", t.CredentialsDir, err)
	case has:
		if t.JoinToken != "" || t.JoinTokenFile != "" {
			log.Info("the credentials directory holds a certificate; not joining again with the join token", "dir", t.CredentialsDir)
		}
		return nil
	case t.JoinToken == "" && t.JoinTokenFile == "":
		return fmt.Errorf("--credentials-dir %s holds no certificate (%s): start the spoke with --join-token (or --join-token-file) and --hub-ca-hash from `hubctl tokens create` to join the fleet, or mount the cluster's credentials there",
			t.CredentialsDir, tlsconfig.CertFile)
	}
	token := t.JoinToken
	if t.JoinTokenFile != "" {
		if token, err = readJoinToken(t.JoinTokenFile); err != nil {
			return err
		}
	}
	log.Info("no cluster certificate yet; joining the fleet", "hub", joinAddress(cfg.HubAddress), "dir", t.CredentialsDir)
	return join.Join(ctx, join.Options{
		HubAddress: joinAddress(cfg.HubAddress), Token: token, CAHash: t.HubCAHash,
		TrustDomain: t.TrustDomain, ClusterID: cfg.ClusterID, Dir: t.CredentialsDir, Logger: log,
	})
}

// maxJoinTokenFile bounds what --join-token-file may hold: a token is 23 bytes.
const maxJoinTokenFile = 1 << 10

// errJoinTokenFile marks a --join-token-file whose content is no token. Its messages never
// repeat the content, which may be a real secret.
var errJoinTokenFile = errors.New("not a bootstrap token")

// readJoinToken reads the bootstrap token of --join-token-file.
func readJoinToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--join-token-file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJoinTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("--join-token-file %s: %w", path, err)
	}
	token, err := parseJoinToken(data)
	if err != nil {
		return "", fmt.Errorf("--join-token-file %s: %w", path, err)
	}
	return token, nil
}

// parseJoinToken returns the token a --join-token-file holds: its content without the
// surrounding white space (a Secret written with a trailing newline), which must be one word.
func parseJoinToken(data []byte) (string, error) {
	if len(data) > maxJoinTokenFile {
		return "", fmt.Errorf("%w: larger than %d bytes", errJoinTokenFile, maxJoinTokenFile)
	}
	token := strings.TrimSpace(string(data))
	switch {
	case token == "":
		return "", fmt.Errorf("%w: the file is empty", errJoinTokenFile)
	case !utf8.ValidString(token):
		return "", fmt.Errorf("%w: the file is not UTF-8 text", errJoinTokenFile)
	case strings.ContainsFunc(token, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return "", fmt.Errorf("%w: the file holds more than one word or line; want the token (<id>.<secret>) alone", errJoinTokenFile)
	}
	return token, nil
}

// hubServerName is the name the hub's certificate is verified for: the host of --hub-address
// (an IP address is checked against the certificate's IP SANs); empty for a list of replicas,
// where the hub client verifies each replica for the host it dialed.
func hubServerName(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	return host
}

// joinAddress is the hub address the join flow and the certificate renewer dial: the first of
// --hub-address's list (each makes short calls, and retries).
func joinAddress(hub string) string {
	addrs, err := hubclient.ParseAddresses(hub)
	if err != nil || len(addrs) == 0 {
		return hub
	}
	return addrs[0]
}

// loadHubCredentials loads the cluster's key pair and the hub's CA bundle, checks that the
// certificate names this cluster, and builds the renewer of credentials the join flow wrote.
func (s *spoke) loadHubCredentials() error {
	if s.cfg.HubAddress == "" {
		return nil
	}
	dir := s.cfg.Trust.CredentialsDir
	kp, pool, err := tlsconfig.LoadDir(dir, tlsconfig.KeyPairOptions{Logger: s.log, Registerer: s.reg, Role: roleHubClient})
	if err != nil {
		return fmt.Errorf("--credentials-dir %s: %w", dir, err)
	}
	want := tlsconfig.Identity{TrustDomain: s.cfg.Trust.TrustDomain, Kind: tlsconfig.KindCluster, Name: s.cfg.ClusterID}
	got, err := tlsconfig.IdentityOf(kp.Certificate().Leaf)
	if err != nil {
		return fmt.Errorf("--credentials-dir %s: %w", dir, err)
	}
	if got != want {
		return fmt.Errorf("--credentials-dir %s: the certificate names %s, but this spoke is %s (check --cluster-id and --trust-domain)", dir, got, want)
	}
	s.hubKP, s.hubCAs = kp, pool
	if !join.Joined(dir) {
		return nil
	}
	hub := joinAddress(s.cfg.HubAddress)
	s.renewer, err = join.NewRenewer(join.RenewerOptions{HubAddress: hub, ServerName: hubServerName(hub),
		Dir: dir, KeyPair: kp, CAPool: pool, Logger: s.log, Registerer: s.reg})
	return err
}

// hubTLSFor makes the TLS of the hub client's connection to a hub replica whose certificate
// must name serverName (the host dialed): the cluster's key pair, the replica verified with the
// CA bundle.
func (s *spoke) hubTLSFor() func(serverName string) *tls.Config {
	if s.hubKP == nil {
		return nil
	}
	return func(serverName string) *tls.Config { return tlsconfig.ClientConfig(s.hubKP, s.hubCAs, serverName) }
}

// buildServing settles what the EPP and the HTTP port serve: TLS with --epp-cert-dir's key pair
// or a self-signed one, unless turned off by flag (with a warning).
func (s *spoke) buildServing() error {
	t := s.cfg.Trust
	eppTLS := s.cfg.EPP != nil && t.EPPSecureServing
	if s.cfg.EPP != nil && !t.EPPSecureServing {
		s.log.Warn("the EPP serves ext_proc over plaintext (--epp-secure-serving=false): anyone who reaches its port can read and steer requests")
	}
	if t.InsecureHTTP {
		s.log.Warn("the HTTP endpoints serve plaintext (--insecure-http)", "address", s.cfg.HTTPAddress)
	}
	if !eppTLS && t.InsecureHTTP {
		return nil
	}
	if t.EPPCertDir != "" {
		kp, err := tlsconfig.NewKeyPair(filepath.Join(t.EPPCertDir, tlsconfig.CertFile), filepath.Join(t.EPPCertDir, tlsconfig.KeyFile),
			tlsconfig.KeyPairOptions{Logger: s.log, Registerer: s.reg, Role: roleServing})
		if err != nil {
			return fmt.Errorf("--epp-cert-dir: %w", err)
		}
		s.servingKP, s.servingReloads = kp, true
	} else {
		kp, err := selfSigned(s.cfg.EPPAddress, s.cfg.HTTPAddress)
		if err != nil {
			return err
		}
		if err := kp.RegisterExpiry(s.reg, roleServing); err != nil {
			return err
		}
		s.servingKP = kp
		s.log.Info("serving a self-signed certificate made at start (mount one with --epp-cert-dir)", "notAfter", kp.NotAfter())
	}
	if eppTLS && t.EPPClientCAFile != "" {
		pool, err := tlsconfig.NewCAPool(t.EPPClientCAFile, tlsconfig.CAPoolOptions{Logger: s.log})
		if err != nil {
			return fmt.Errorf("--epp-client-ca-file: %w", err)
		}
		s.eppClientCAs = pool
	}
	return nil
}

// selfSigned makes the serving certificate of a spoke without one mounted: for localhost, the
// host name, the loopback addresses and the hosts of the addresses it serves.
func selfSigned(addrs ...string) (*tlsconfig.KeyPair, error) {
	names := []string{"localhost"}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		switch ip := net.ParseIP(host); {
		case err != nil || host == "":
		case ip == nil:
			names = append(names, host)
		case !ip.IsUnspecified():
			ips = append(ips, ip)
		}
	}
	certPEM, keyPEM, err := tlsconfig.SelfSigned(names, ips, selfSignedValidity)
	if err != nil {
		return nil, err
	}
	return tlsconfig.NewStaticKeyPair(certPEM, keyPEM)
}

// servingTLS is the TLS of a serving port: the serving key pair, and client certificates
// required from clientCAs when set. TLS 1.2 is accepted, because gateways dial the EPP as
// upstream clients, and Envoy's upstream TLS stops at 1.2 unless configured otherwise.
func (s *spoke) servingTLS(clientCAs *tlsconfig.CAPool) *tls.Config {
	cfg := tlsconfig.ServerConfig(s.servingKP, clientCAs, clientCAs != nil)
	cfg.MinVersion = tls.VersionTLS12
	return cfg
}

// eppServerOptions adds the EPP's transport credentials to its gRPC server options.
func (s *spoke) eppServerOptions(opts []grpc.ServerOption) []grpc.ServerOption {
	if s.servingKP == nil || !s.cfg.Trust.EPPSecureServing {
		return opts
	}
	return append(opts, grpc.Creds(credentials.NewTLS(s.servingTLS(s.eppClientCAs))))
}

// httpTLS is the TLS of --http-address; nil with --insecure-http.
func (s *spoke) httpTLS() *tls.Config {
	if s.cfg.Trust.InsecureHTTP || s.servingKP == nil {
		return nil
	}
	cfg := s.servingTLS(nil)
	cfg.NextProtos = []string{"h2", "http/1.1"}
	return cfg
}

// remoteGatewayTLS is the TLS of RTT probes to remote gateways; nil without
// --remote-gateway-tls. The CA file is read once: the standard verification, unlike
// tlsconfig.ClientConfig's, checks gateways addressed by IP against their IP SANs.
func remoteGatewayTLS(t TrustOptions) (*tls.Config, error) {
	if !t.RemoteGatewayTLS {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.RemoteGatewayCAFile == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(t.RemoteGatewayCAFile)
	if err != nil {
		return nil, fmt.Errorf("--remote-gateway-ca-file: %w", err)
	}
	pool, err := tlsconfig.NewStaticCAPool(data)
	if err != nil {
		return nil, fmt.Errorf("--remote-gateway-ca-file %s: %w", t.RemoteGatewayCAFile, err)
	}
	cfg.RootCAs = pool.Pool()
	return cfg, nil
}

package app

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// validOptions are options Validate accepts: the static source, a hub.
func validOptions() *Options {
	o := NewOptions()
	o.ClusterID, o.Region, o.PoolsFile = "east", "us-east", "pools.yaml"
	return o
}

func TestValidateTrustOptions(t *testing.T) {
	hash := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name   string
		change func(*Options)
		want   string // empty: valid
	}{
		{name: "the defaults with a hub", change: func(*Options) {}},
		{name: "standalone", change: func(o *Options) { o.HubAddress, o.Trust.CredentialsDir = "", "" }},
		{name: "joining", change: func(o *Options) { o.Trust.JoinToken, o.Trust.HubCAHash = "abcdef.0123456789abcdef", hash }},
		{name: "plaintext everywhere", change: func(o *Options) { o.Trust.EPPSecureServing, o.Trust.InsecureHTTP = false, true }},
		{name: "a mounted serving certificate with client certificates", change: func(o *Options) {
			o.Trust.EPPCertDir, o.Trust.EPPClientCAFile = "epp-tls", "gateways.crt"
		}},
		{name: "the serving certificate for HTTPS only", change: func(o *Options) {
			o.Trust.EPPCertDir, o.Trust.EPPSecureServing = "epp-tls", false
		}},
		{name: "remote gateways over HTTPS", change: func(o *Options) {
			o.Trust.RemoteGatewayTLS, o.Trust.RemoteGatewayCAFile = true, "gateways.crt"
		}},
		{
			name:   "no credentials directory",
			change: func(o *Options) { o.Trust.CredentialsDir = "" },
			want:   "--credentials-dir is required with --hub-address",
		},
		{
			name:   "a token without the CA hash",
			change: func(o *Options) { o.Trust.JoinToken = "abcdef.0123456789abcdef" },
			want:   "--join-token needs --hub-ca-hash",
		},
		{
			name: "a token without a hub",
			change: func(o *Options) {
				o.HubAddress, o.Trust.JoinToken, o.Trust.HubCAHash = "", "abcdef.0123456789abcdef", hash
			},
			want: "--join-token needs --hub-address",
		},
		{
			name:   "a CA hash without a token",
			change: func(o *Options) { o.Trust.HubCAHash = hash },
			want:   "--hub-ca-hash is used only with --join-token",
		},
		{
			name:   "a malformed CA hash",
			change: func(o *Options) { o.Trust.JoinToken, o.Trust.HubCAHash = "abcdef.0123456789abcdef", "sha256:abc" },
			want:   `--hub-ca-hash "sha256:abc": want sha256:<64 hex digits>`,
		},
		{
			name:   "a trust domain that is no DNS name",
			change: func(o *Options) { o.Trust.TrustDomain = "Spillway_Local" },
			want:   `--trust-domain "Spillway_Local"`,
		},
		{
			name:   "a cluster ID no certificate can name",
			change: func(o *Options) { o.ClusterID = "East.1" },
			want:   `--cluster-id "East.1": a certificate names the cluster`,
		},
		{
			name:   "client certificates on a plaintext EPP",
			change: func(o *Options) { o.Trust.EPPSecureServing, o.Trust.EPPClientCAFile = false, "gateways.crt" },
			want:   "--epp-client-ca-file needs --epp-secure-serving",
		},
		{
			name: "a serving certificate nothing serves",
			change: func(o *Options) {
				o.Trust.EPPSecureServing, o.Trust.InsecureHTTP, o.Trust.EPPCertDir = false, true, "epp-tls"
			},
			want: "--epp-cert-dir is unused",
		},
		{
			name:   "a remote gateway CA without TLS",
			change: func(o *Options) { o.Trust.RemoteGatewayCAFile = "gateways.crt" },
			want:   "--remote-gateway-ca-file needs --remote-gateway-tls",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := validOptions()
			tc.change(o)
			err := o.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// writeCredentials writes a credentials directory for identity id from ca.
func writeCredentials(t *testing.T, ca *tlsconfig.CA, id tlsconfig.Identity) string {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(id, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{tlsconfig.CAFile: ca.CertPEM(), tlsconfig.CertFile: certPEM, tlsconfig.KeyFile: keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestJoinFleetWithoutCertificateOrToken(t *testing.T) {
	cfg := &Config{Options: *validOptions(), Logger: discardLogger()}
	cfg.Trust.CredentialsDir = filepath.Join(t.TempDir(), "none")
	err := joinFleet(t.Context(), cfg)
	if err == nil || !strings.Contains(err.Error(), "holds no certificate (tls.crt): start the spoke with --join-token and --hub-ca-hash") {
		t.Fatalf("joinFleet() = %v, want an error saying how to join", err)
	}
}

func TestJoinFleetKeepsExistingCredentials(t *testing.T) {
	ca, err := tlsconfig.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Options: *validOptions(), Logger: discardLogger()}
	cfg.Trust.CredentialsDir = writeCredentials(t, ca, tlsconfig.Identity{TrustDomain: "spillway.local", Kind: tlsconfig.KindCluster, Name: "east"})
	// The hub address is unreachable: a join attempt would not return nil.
	cfg.HubAddress = "127.0.0.1:1"
	cfg.Trust.JoinToken, cfg.Trust.HubCAHash = "abcdef.0123456789abcdef", tlsconfig.SPKIHash(ca.Certificate())
	if err := joinFleet(t.Context(), cfg); err != nil {
		t.Fatalf("joinFleet() with a certificate = %v, want nil: the token is not needed again", err)
	}
}

func TestBuildRefusesCredentialsOfAnotherCluster(t *testing.T) {
	ca, err := tlsconfig.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		id   tlsconfig.Identity
		want string
	}{
		{"another cluster", tlsconfig.Identity{TrustDomain: "spillway.local", Kind: tlsconfig.KindCluster, Name: "west"},
			"the certificate names spiffe://spillway.local/cluster/west, but this spoke is spiffe://spillway.local/cluster/east"},
		{"another trust domain", tlsconfig.Identity{TrustDomain: "elsewhere.test", Kind: tlsconfig.KindCluster, Name: "east"},
			"the certificate names spiffe://elsewhere.test/cluster/east"},
		{"a user", tlsconfig.Identity{TrustDomain: "spillway.local", Kind: tlsconfig.KindUser, Name: "east"},
			"the certificate names spiffe://spillway.local/user/east"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := staticOptions(t)
			o.HubAddress, o.Trust.CredentialsDir = "127.0.0.1:1", writeCredentials(t, ca, tc.id)
			cfg, err := o.Config()
			if err != nil {
				t.Fatal(err)
			}
			s, err := build(cfg)
			s.close()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("build() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestRemoteGatewayTLS(t *testing.T) {
	ca, err := tlsconfig.NewCA("gateways", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, badFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "bad.crt")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(badFile, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err := remoteGatewayTLS(TrustOptions{}); cfg != nil || err != nil {
		t.Errorf("without --remote-gateway-tls: %v, %v; want plain HTTP probes", cfg, err)
	}
	if cfg, err := remoteGatewayTLS(TrustOptions{RemoteGatewayTLS: true}); err != nil || cfg == nil || cfg.RootCAs != nil {
		t.Errorf("--remote-gateway-tls alone: %v, %v; want TLS with the system's roots", cfg, err)
	}
	cfg, err := remoteGatewayTLS(TrustOptions{RemoteGatewayTLS: true, RemoteGatewayCAFile: caFile})
	if err != nil || cfg == nil || cfg.RootCAs == nil {
		t.Fatalf("--remote-gateway-ca-file: %v, %v; want the file's roots", cfg, err)
	}
	certPEM, _, err := ca.Issue(tlsconfig.Identity{TrustDomain: "spillway.local", Kind: tlsconfig.KindUser, Name: "gw"}, []string{"gw.example"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	gw, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Verify(x509.VerifyOptions{Roots: cfg.RootCAs, DNSName: "gw.example"}); err != nil {
		t.Errorf("the file's roots do not verify a gateway it issued: %v", err)
	}
	if _, err := remoteGatewayTLS(TrustOptions{RemoteGatewayTLS: true, RemoteGatewayCAFile: badFile}); err == nil || !strings.Contains(err.Error(), "--remote-gateway-ca-file "+badFile) {
		t.Errorf("a bad --remote-gateway-ca-file: %v, want an error naming it", err)
	}
}

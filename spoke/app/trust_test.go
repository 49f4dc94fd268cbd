package app

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

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
		{name: "joining with a token file", change: func(o *Options) { o.Trust.JoinTokenFile, o.Trust.HubCAHash = "/var/run/join/token", hash }},
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
			name: "a token and a token file",
			change: func(o *Options) {
				o.Trust.JoinToken, o.Trust.JoinTokenFile, o.Trust.HubCAHash = "abcdef.0123456789abcdef", "/var/run/join/token", hash
			},
			want: "--join-token and --join-token-file are exclusive",
		},
		{
			name:   "a token file without the CA hash",
			change: func(o *Options) { o.Trust.JoinTokenFile = "/var/run/join/token" },
			want:   "--join-token-file needs --hub-ca-hash",
		},
		{
			name: "a token file without a hub",
			change: func(o *Options) {
				o.HubAddress, o.Trust.JoinTokenFile, o.Trust.HubCAHash = "", "/var/run/join/token", hash
			},
			want: "--join-token-file needs --hub-address",
		},
		{
			name:   "a CA hash without a token",
			change: func(o *Options) { o.Trust.HubCAHash = hash },
			want:   "--hub-ca-hash is used only with --join-token or --join-token-file",
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
	if err == nil || !strings.Contains(err.Error(), "holds no certificate (tls.crt): start the spoke with --join-token (or --join-token-file) and --hub-ca-hash") {
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
	// Nor is the token file read: its Secret may be gone once the cluster joined.
	cfg.Trust.JoinToken, cfg.Trust.JoinTokenFile = "", filepath.Join(t.TempDir(), "removed")
	if err := joinFleet(t.Context(), cfg); err != nil {
		t.Fatalf("joinFleet() with a certificate and a missing token file = %v, want nil", err)
	}
}

func TestParseJoinToken(t *testing.T) {
	const token = "abcdef.0123456789abcdef"
	for _, tc := range []struct {
		name string
		data string
		want string // an error's part; empty: the token
	}{
		{"the token alone", token, ""},
		{"with a trailing newline", token + "\n", ""},
		{"with surrounding white space", " \t" + token + "\r\n\n", ""},
		{"empty", "", "the file is empty"},
		{"white space only", " \n\t\n", "the file is empty"},
		{"two lines", token + "\n" + token + "\n", "more than one word or line"},
		{"a key and value", "token: " + token, "more than one word or line"},
		{"a control character", "abcdef.\x000123456789abcdef", "more than one word or line"},
		{"not UTF-8", "abcdef.\xff0123456789abcdef", "not UTF-8 text"},
		{"too large", strings.Repeat("a", maxJoinTokenFile+1), "larger than 1024 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseJoinToken([]byte(tc.data))
			switch {
			case tc.want == "" && (err != nil || got != token):
				t.Fatalf("parseJoinToken() = %q, %v; want the token", got, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errJoinTokenFile)):
				t.Fatalf("parseJoinToken() = %q, %v; want an error containing %q", got, err, tc.want)
			case tc.want != "" && strings.Contains(err.Error(), "0123456789abcdef"):
				t.Fatalf("the error %q repeats the file's content", err)
			}
		})
	}
}

func TestReadJoinToken(t *testing.T) {
	dir := t.TempDir()
	good, empty := filepath.Join(dir, "token"), filepath.Join(dir, "empty")
	if err := os.WriteFile(good, []byte("abcdef.0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := readJoinToken(good); err != nil || got != "abcdef.0123456789abcdef" {
		t.Errorf("readJoinToken() = %q, %v; want the token", got, err)
	}
	if _, err := readJoinToken(empty); err == nil || !strings.Contains(err.Error(), "--join-token-file "+empty+": not a bootstrap token: the file is empty") {
		t.Errorf("an empty file: %v, want an error naming the flag and the file", err)
	}
	missing := filepath.Join(dir, "missing")
	if _, err := readJoinToken(missing); err == nil || !strings.Contains(err.Error(), "--join-token-file") || !strings.Contains(err.Error(), missing) {
		t.Errorf("a missing file: %v, want an error naming the flag and the file", err)
	}
}

// FuzzParseJoinToken: any content gives a token of one word, the content trimmed, or an error
// of errJoinTokenFile; none panics.
func FuzzParseJoinToken(f *testing.F) {
	for _, s := range []string{"abcdef.0123456789abcdef\n", "", " \n", "a b", "\xff", "token\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		token, err := parseJoinToken(data)
		if err != nil {
			if !errors.Is(err, errJoinTokenFile) || token != "" {
				t.Fatalf("parseJoinToken(%q) = %q, %v", data, token, err)
			}
			return
		}
		if token == "" || token != strings.TrimSpace(string(data)) || strings.ContainsFunc(token, unicode.IsSpace) || len(data) > maxJoinTokenFile {
			t.Fatalf("parseJoinToken(%q) = %q: want the content trimmed, one word", data, token)
		}
	})
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

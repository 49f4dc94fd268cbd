package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/testkit"
	hubetcd "github.com/spillway-io/spillway/hub/etcd"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// externalEtcd is a real etcd process serving clients over TLS with client certificates
// required, and the files a client needs.
type externalEtcd struct {
	endpoint                    string
	caFile, certFile, keyFile   string // the hub's: the etcd CA, a client certificate and its key
	otherCertFile, otherKeyFile string // a client certificate of another CA
}

// etcdBinary is the etcd of SPILLWAY_K8S_BIN_DIR (hack/k8s-bins.sh builds it; make test sets the
// variable). The test is skipped when the variable is unset.
func etcdBinary(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SPILLWAY_K8S_BIN_DIR")
	if dir == "" {
		t.Skip("SPILLWAY_K8S_BIN_DIR is not set: no etcd binary to run an external etcd with TLS (make test sets it; hack/k8s-bins.sh builds the binaries)")
	}
	bin := filepath.Join(dir, "etcd")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("SPILLWAY_K8S_BIN_DIR=%s: %v", dir, err)
	}
	return bin
}

// freePort returns a loopback port nothing listens on at the moment.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startExternalEtcd runs etcd with --client-cert-auth until the test ends.
func startExternalEtcd(t *testing.T, bin, dir string) *externalEtcd {
	t.Helper()
	ca, err := tlsconfig.NewCA("external etcd CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconfig.NewCA("another CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	issue := func(ca *tlsconfig.CA, name string, ips []net.IP) (certFile, keyFile string) {
		certPEM, keyPEM, err := ca.Issue(tlsconfig.Identity{TrustDomain: "etcd.test", Kind: tlsconfig.KindUser, Name: name}, []string{"localhost"}, ips, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".crt", certPEM), write(name+".key", keyPEM)
	}
	e := &externalEtcd{caFile: write("etcd-ca.crt", ca.CertPEM())}
	serverCert, serverKey := issue(ca, "etcd", []net.IP{net.IPv4(127, 0, 0, 1)})
	e.certFile, e.keyFile = issue(ca, "hub", nil)
	e.otherCertFile, e.otherKeyFile = issue(other, "stranger", nil)

	client, peer := freePort(t), freePort(t)
	e.endpoint = "https://" + client
	logFile, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin,
		"--name", "default", "--data-dir", filepath.Join(dir, "etcd-data"),
		"--listen-client-urls", e.endpoint, "--advertise-client-urls", e.endpoint,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "default=http://"+peer,
		"--cert-file", serverCert, "--key-file", serverKey, "--trusted-ca-file", e.caFile, "--client-cert-auth",
		"--log-level", "error", "--unsafe-no-fsync")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	clientTLS, err := hubetcd.ClientTLS{CACert: e.caFile, Cert: e.certFile, Key: e.keyFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := hubetcd.Dial([]string{e.endpoint}, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	testkit.Eventually(t, 30*time.Second, "the external etcd serves", func() error {
		select {
		case err := <-exited:
			exited <- err
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("etcd exited: %v\n%s", err, log)
		default:
		}
		return hubetcd.Check(context.Background(), cli, clientTLS, 2*time.Second)
	})
	return e
}

// TestExternalEtcdOverTLS: against an etcd that requires client certificates, the hub with
// --etcd-cacert, --etcd-cert and --etcd-key serves and is ready; without its client certificate,
// with one of another CA, or without the CA that verifies the server, it does not start and says
// why.
func TestExternalEtcdOverTLS(t *testing.T) {
	bin := etcdBinary(t)
	dir := t.TempDir()
	e := startExternalEtcd(t, bin, dir)
	options := func(tlsFiles hubetcd.ClientTLS) *Options {
		o := testOptions(t.TempDir())
		o.EtcdEndpoints, o.EtcdTLS = []string{e.endpoint}, tlsFiles
		return o
	}

	t.Run("with the etcd flags", func(t *testing.T) {
		o := options(hubetcd.ClientTLS{CACert: e.caFile, Cert: e.certFile, Key: e.keyFile})
		h := startHub(t, o)
		c := &http.Client{Timeout: callTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.roots(), MinVersion: tls.VersionTLS13}}}
		defer c.CloseIdleConnections()
		// Ready once the replica leads and made the fleet's first hop key.
		testkit.Eventually(t, 10*time.Second, "/readyz 200: the hub reads etcd", func() error {
			resp, err := c.Get("https://" + h.http + "/readyz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("/readyz: %s", resp.Status)
			}
			return nil
		})
		if entries := h.logs.Entries("embedded etcd started"); len(entries) != 0 {
			t.Errorf("an embedded etcd started beside the external one: %v", entries)
		}
		if _, err := os.Stat(o.DataDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the hub made %s for an etcd it does not run (%v)", o.DataDir, err)
		}
	})

	for _, tc := range []struct {
		name  string
		files hubetcd.ClientTLS
		says  string
	}{
		{"without a client certificate", hubetcd.ClientTLS{CACert: e.caFile}, "tls: certificate required"},
		{"with a client certificate of another CA", hubetcd.ClientTLS{CACert: e.caFile, Cert: e.otherCertFile, Key: e.otherKeyFile}, "tls: unknown certificate authority"},
		{"without the CA of the server", hubetcd.ClientTLS{Cert: e.certFile, Key: e.keyFile}, "certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tryStartHub(t, options(tc.files))
			if !errors.Is(err, hubetcd.ErrUnreachable) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("the hub ended with %v, want %v saying %q", err, hubetcd.ErrUnreachable, tc.says)
			}
		})
	}
}

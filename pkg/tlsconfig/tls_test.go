package tlsconfig

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

const (
	trustDomain = "spillway.test"
	hubName     = "hub.spillway.test"
)

var hubID = Identity{TrustDomain: trustDomain, Kind: KindCluster, Name: "hub"}

func newTestCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issuedFiles issues a key pair for id from ca, valid for validity, and writes it to
// dir/<name>.crt and dir/<name>.key.
func issuedFiles(t *testing.T, ca *CA, id Identity, validity time.Duration, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(id, []string{hubName}, []net.IP{net.IPv4(127, 0, 0, 1)}, validity)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writeFile(t, certFile, certPEM)
	writeFile(t, keyFile, keyPEM)
	return certFile, keyFile
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func certOf(t *testing.T, certFile string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// issuedKeyPair issues a key pair for id from ca, valid for an hour, and loads it.
func issuedKeyPair(t *testing.T, ca *CA, id Identity, dir, name string) *KeyPair {
	t.Helper()
	certFile, keyFile := issuedFiles(t, ca, id, time.Hour, dir, name)
	return newKeyPair(t, certFile, keyFile, KeyPairOptions{})
}

func newKeyPair(t *testing.T, certFile, keyFile string, opts KeyPairOptions) *KeyPair {
	t.Helper()
	kp, err := NewKeyPair(certFile, keyFile, opts)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// bundle writes the CA certificates of cas to a file in dir and returns its path.
func bundle(t *testing.T, dir string, cas ...*CA) string {
	t.Helper()
	path := filepath.Join(dir, "ca.crt")
	writeFile(t, path, bytes.Join(certPEMs(cas), nil))
	return path
}

func certPEMs(cas []*CA) [][]byte {
	var out [][]byte
	for _, ca := range cas {
		out = append(out, ca.CertPEM())
	}
	return out
}

func newCAPool(t *testing.T, file string, opts CAPoolOptions) *CAPool {
	t.Helper()
	p, err := NewCAPool(file, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// run runs r until the test ends, and waits for it to return.
func run(t *testing.T, r interface{ Run(context.Context) error }) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// result is what each side of a handshake saw.
type result struct {
	server, client       tls.ConnectionState
	serverErr, clientErr error
}

// handshake connects a client to a server over loopback TCP. The server writes one byte once
// its handshake is done and the client reads it, so that a client refused after its own
// handshake completed (TLS 1.3 verifies the client's certificate last) sees the refusal.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) result {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type side struct {
		state tls.ConnectionState
		err   error
	}
	srv := make(chan side, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			srv <- side{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		s := tls.Server(c, serverCfg)
		if err := s.Handshake(); err != nil {
			srv <- side{err: err}
			return
		}
		_, err = s.Write([]byte{1})
		srv <- side{state: s.ConnectionState(), err: err}
	}()

	var r result
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		l.Close()
		<-srv
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	cl := tls.Client(c, clientCfg)
	r.clientErr = cl.Handshake()
	if r.clientErr == nil {
		_, r.clientErr = io.ReadFull(cl, make([]byte, 1))
	}
	r.client = cl.ConnectionState()
	cl.Close()
	s := <-srv
	r.server, r.serverErr = s.state, s.err
	return r
}

// syncBuffer is an io.Writer for a slog handler that tests read while reload loops write.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

package join

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

func TestRenewAtIsAThirdBeforeExpiry(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		lifetime time.Duration
		want     time.Time
	}{
		{30 * 24 * time.Hour, start.Add(20 * 24 * time.Hour)},
		{90 * time.Second, start.Add(60 * time.Second)},
	} {
		cert := &x509.Certificate{NotBefore: start, NotAfter: start.Add(tc.lifetime)}
		if got := RenewAt(cert); !got.Equal(tc.want) {
			t.Errorf("RenewAt(lifetime %s) = %s, want %s", tc.lifetime, got, tc.want)
		}
	}
}

// joined joins h into a fresh directory with a certificate of the given validity and loads the
// directory as the spoke does.
func joined(t *testing.T, h *fakeHub, validity time.Duration) (dir string, kp *tlsconfig.KeyPair, pool *tlsconfig.CAPool) {
	t.Helper()
	h.join = func(_ int, req *pb.JoinRequest) (*pb.JoinResponse, error) { return h.approve(req, validity), nil }
	dir = t.TempDir()
	if err := Join(t.Context(), h.options(dir)); err != nil {
		t.Fatal(err)
	}
	kp, pool, err := tlsconfig.LoadDir(dir, tlsconfig.KeyPairOptions{Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return dir, kp, pool
}

// runAll runs fs until the test ends.
func runAll(t *testing.T, fs ...func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, f := range fs {
		wg.Go(func() {
			if err := f(ctx); err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func TestRenewerRewritesTheFilesBeforeExpiry(t *testing.T) {
	h := startFakeHub(t)
	// 30 s of validity after a minute of backdating: a third of the lifetime is already gone.
	dir, kp, pool := joined(t, h, 30*time.Second)
	old := kp.Certificate().Leaf
	oldKey, err := os.ReadFile(filepath.Join(dir, tlsconfig.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	var renewedFor []tlsconfig.Identity
	var mu sync.Mutex
	h.renew = func(_ int, caller tlsconfig.Identity, req *pb.RenewRequest) (*pb.RenewResponse, error) {
		mu.Lock()
		renewedFor = append(renewedFor, caller)
		mu.Unlock()
		return &pb.RenewResponse{CertificatePem: h.sign(req.GetCsrPem(), time.Hour), CaBundlePem: h.CA.CertPEM()}, nil
	}
	reg := prometheus.NewRegistry()
	r, err := NewRenewer(RenewerOptions{HubAddress: h.Addr, Dir: dir, KeyPair: kp, CAPool: pool, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, kp.Run, r.Run)

	testkit.Eventually(t, 10*time.Second, "the spoke's key pair holds a renewed certificate", testkit.True(func() bool {
		return kp.NotAfter().After(old.NotAfter.Add(30 * time.Minute))
	}))
	if time.Now().After(old.NotAfter) {
		t.Errorf("renewed at %s, after the old certificate expired (%s)", time.Now(), old.NotAfter)
	}
	leaf := readCredentials(t, dir, h.CA, clusterID("east"))
	if leaf.SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Error("tls.crt still holds the old certificate")
	}
	newKey, err := os.ReadFile(filepath.Join(dir, tlsconfig.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(newKey, oldKey) {
		t.Error("the renewal kept the old key; it must come with a new one")
	}
	// The renewal is counted once its files are written, and the key pair may load them first.
	testkit.Eventually(t, 5*time.Second, "renewals{result=renewed} = 1", testkit.True(func() bool {
		return testutil.ToFloat64(r.renewals.WithLabelValues(resultRenewed)) == 1
	}))
	mu.Lock()
	defer mu.Unlock()
	// The hub read who renews from the client certificate: the renewal went over mTLS.
	if len(renewedFor) != 1 || renewedFor[0] != clusterID("east") {
		t.Errorf("Renew called by %v, want once by %v (a renewed certificate is not due again for 40 minutes)", renewedFor, clusterID("east"))
	}
}

// TestRenewerRenewsAfterTheFirstCertificateExpired: renewals go on after the certificate the
// renewer started with expired: each dials with the key pair loaded last, since the hub refuses
// a connection's certificate once it expired.
func TestRenewerRenewsAfterTheFirstCertificateExpired(t *testing.T) {
	h := startFakeHub(t)
	// Certificates valid for 2 s after a minute of backdating: each is due for renewal at once.
	const validity = 2 * time.Second
	dir, kp, pool := joined(t, h, validity)
	first := kp.Certificate().Leaf
	h.renew = func(_ int, _ tlsconfig.Identity, req *pb.RenewRequest) (*pb.RenewResponse, error) {
		return &pb.RenewResponse{CertificatePem: h.sign(req.GetCsrPem(), validity), CaBundlePem: h.CA.CertPEM()}, nil
	}
	r, err := NewRenewer(RenewerOptions{HubAddress: h.Addr, Dir: dir, KeyPair: kp, CAPool: pool,
		MinBackoff: 200 * time.Millisecond, MaxBackoff: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, kp.Run, r.Run)
	// Renewed a second after the first certificate expired, a certificate is valid 3 s past it.
	testkit.Eventually(t, 10*time.Second, "a renewal after the first certificate expired", testkit.True(func() bool {
		return kp.NotAfter().After(first.NotAfter.Add(validity + time.Second))
	}))
}

func TestRenewerRefusesUnusableAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(h *fakeHub, req *pb.RenewRequest) *pb.RenewResponse
	}{{
		name: "a certificate for another cluster",
		answer: func(h *fakeHub, req *pb.RenewRequest) *pb.RenewResponse {
			csr, _, _ := tlsconfig.ParseCSR(req.GetCsrPem())
			cert, _ := h.CA.Sign(csr, clusterID("west"), time.Hour)
			return &pb.RenewResponse{CertificatePem: cert, CaBundlePem: h.CA.CertPEM()}
		},
	}, {
		name: "a certificate for another key",
		answer: func(h *fakeHub, _ *pb.RenewRequest) *pb.RenewResponse {
			otherCSR, _, _ := tlsconfig.NewCSR(clusterID("east"))
			return &pb.RenewResponse{CertificatePem: h.sign(otherCSR, time.Hour), CaBundlePem: h.CA.CertPEM()}
		},
	}, {
		name: "a bundle that does not verify the hub",
		answer: func(h *fakeHub, req *pb.RenewRequest) *pb.RenewResponse {
			other, _ := tlsconfig.NewCA("another CA", time.Hour)
			return &pb.RenewResponse{CertificatePem: h.sign(req.GetCsrPem(), time.Hour), CaBundlePem: other.CertPEM()}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := startFakeHub(t)
			dir, kp, pool := joined(t, h, 30*time.Second)
			before := map[string][]byte{}
			for _, f := range []string{tlsconfig.CAFile, tlsconfig.CertFile, tlsconfig.KeyFile} {
				b, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				before[f] = b
			}
			h.renew = func(_ int, _ tlsconfig.Identity, req *pb.RenewRequest) (*pb.RenewResponse, error) {
				return tc.answer(h, req), nil
			}
			r, err := NewRenewer(RenewerOptions{HubAddress: h.Addr, Dir: dir, KeyPair: kp, CAPool: pool,
				MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			runAll(t, r.Run)
			testkit.Eventually(t, 10*time.Second, "the renewer tried three times", testkit.True(func() bool {
				_, _, renews := h.calls()
				return renews >= 3
			}))
			for f, b := range before {
				now, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil || !bytes.Equal(now, b) {
					t.Errorf("%s changed after an unusable renewal (%v)", f, err)
				}
			}
			if got := testutil.ToFloat64(r.renewals.WithLabelValues(resultFailed)); got < 2 {
				t.Errorf("renewals{result=failed} = %v, want at least 2", got)
			}
		})
	}
}

func TestNewRenewerNeedsAnIdentity(t *testing.T) {
	ca, err := tlsconfig.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := tlsconfig.SelfSigned([]string{"localhost"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tlsconfig.NewStaticKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsconfig.NewStaticCAPool(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewRenewer(RenewerOptions{HubAddress: "hub:8470", KeyPair: kp, CAPool: pool}); !errors.Is(err, tlsconfig.ErrInvalidIdentity) {
		t.Errorf("NewRenewer() with a certificate naming no cluster = %v, want ErrInvalidIdentity", err)
	}
	if _, err := NewRenewer(RenewerOptions{HubAddress: "hub:8470"}); err == nil {
		t.Error("NewRenewer() without a key pair: want an error")
	}
}

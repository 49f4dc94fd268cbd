package rttprobe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/epp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a fake clock that the test server moves forward while it answers, so a probe measures
// exactly what the test chose.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// probed is one request the test gateway received.
type probed struct {
	method, probe, path string
	tls                 bool
}

// gateway is a loopback HTTP server standing in for a remote inference gateway: each request
// advances the clock by the next of delays and is recorded.
type gateway struct {
	addr string

	mu     sync.Mutex
	delays []time.Duration
	got    []probed
}

func newGateway(t *testing.T, clk *clock, delays ...time.Duration) *gateway {
	g, srv := startGateway(t, clk, false, delays...)
	g.addr = strings.TrimPrefix(srv.URL, "http://")
	return g
}

// newTLSGateway is a gateway serving HTTPS with httptest's certificate (for 127.0.0.1 and
// example.com); its pool holds the CA that verifies it.
func newTLSGateway(t *testing.T, clk *clock) (*gateway, *x509.CertPool) {
	g, srv := startGateway(t, clk, true)
	g.addr = strings.TrimPrefix(srv.URL, "https://")
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return g, pool
}

func startGateway(t *testing.T, clk *clock, tls bool, delays ...time.Duration) (*gateway, *httptest.Server) {
	g := &gateway{delays: delays}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.got = append(g.got, probed{method: r.Method, probe: r.Header.Get(epp.ProbeHeader), path: r.URL.Path, tls: r.TLS != nil})
		var d time.Duration
		if len(g.delays) > 0 {
			d, g.delays = g.delays[0], g.delays[1:]
		}
		g.mu.Unlock()
		clk.Advance(d)
		w.WriteHeader(http.StatusNoContent)
	}))
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return g, srv
}

func (g *gateway) requests() []probed {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]probed(nil), g.got...)
}

func newProber(t *testing.T, clk *clock) *Prober {
	p := New(Options{Self: "us-east-1", Now: clk.Now})
	t.Cleanup(p.client.CloseIdleConnections)
	return p
}

func TestProbeIsAHeadRequestWithTheProbeHeader(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	gw := newGateway(t, clk)
	p := newProber(t, clk)
	p.Observe(gw.addr)
	p.round(t.Context())
	got := gw.requests()
	want := []probed{{method: http.MethodHead, probe: "us-east-1", path: "/"}}
	if len(got) != 1 || got[0] != want[0] {
		t.Fatalf("gateway received %+v, want %+v", got, want)
	}
}

func TestEstimateStartsFromTheSecondSampleThenAverages(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	gw := newGateway(t, clk, 500*time.Millisecond, 20*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond)
	p := newProber(t, clk)
	for i, want := range []time.Duration{
		0,                     // asked for, not yet probed
		0,                     // the first sample paid the handshake
		20 * time.Millisecond, // the second sample is the estimate
		30 * time.Millisecond, // (20*7 + 100) / 8
		time.Duration(int64(30*time.Millisecond)*7+int64(100*time.Millisecond)) / 8,
	} {
		if got := p.Observe(gw.addr); got != want {
			t.Errorf("after %d probes: estimate %s, want %s", i, got, want)
		}
		p.round(t.Context())
	}
}

func TestUnreachableAddressKeepsItsEstimate(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	p := newProber(t, clk)
	// A listener that was closed: the connection is refused.
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	p.Observe(addr)
	p.round(t.Context())
	if got := p.Observe(addr); got != 0 {
		t.Errorf("estimate of an unreachable address = %s, want 0", got)
	}
	p.mu.Lock()
	samples := p.rtts[addr].samples
	p.mu.Unlock()
	if samples != 0 {
		t.Errorf("a failed probe counted as %d samples", samples)
	}
}

func TestAddressNotAskedForIsForgotten(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	gw := newGateway(t, clk)
	p := newProber(t, clk)
	p.Observe(gw.addr)

	clk.Advance(DefaultForget) // at the edge of the window: still wanted
	p.round(t.Context())
	if n := len(gw.requests()); n != 1 {
		t.Fatalf("within the forget window: %d probes, want 1", n)
	}

	clk.Advance(time.Nanosecond) // past it
	p.round(t.Context())
	if n := len(gw.requests()); n != 1 {
		t.Errorf("past the forget window: %d probes, want still 1", n)
	}
	p.mu.Lock()
	_, kept := p.rtts[gw.addr]
	p.mu.Unlock()
	if kept {
		t.Errorf("%s is still kept past the forget window", gw.addr)
	}
}

func TestRunProbesEveryPeriodUntilCancelled(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	gw := newGateway(t, clk)
	p := New(Options{Self: "us-east-1", Period: 10 * time.Millisecond, Now: clk.Now})
	p.Observe(gw.addr)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	testkit.Eventually(t, 5*time.Second, "an RTT estimate", testkit.True(func() bool { return len(gw.requests()) >= 2 }))
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v, want nil when the context ends", err)
	}
}

// TestTLSProbesVerifyTheGateway: with a TLS configuration the probe is an HTTPS request that
// verifies the gateway with the given roots and measures like any other; a gateway the roots do
// not verify, or one that serves plain HTTP, gives no sample.
func TestTLSProbesVerifyTheGateway(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	gw, roots := newTLSGateway(t, clk)
	gw.delays = []time.Duration{time.Millisecond, 7 * time.Millisecond}
	p := New(Options{Self: "us-east-1", Now: clk.Now, TLS: &tls.Config{RootCAs: roots}})
	t.Cleanup(p.client.CloseIdleConnections)
	p.Observe(gw.addr)
	p.round(t.Context())
	p.round(t.Context())
	want := probed{method: http.MethodHead, probe: "us-east-1", path: "/", tls: true}
	if got := gw.requests(); len(got) != 2 || got[0] != want || got[1] != want {
		t.Fatalf("gateway received %+v, want two HTTPS probes %+v", got, want)
	}
	if got := p.Observe(gw.addr); got != 7*time.Millisecond {
		t.Fatalf("estimate over HTTPS %s, want 7ms", got)
	}

	for name, o := range map[string]Options{
		"roots that do not verify the gateway":  {TLS: &tls.Config{RootCAs: x509.NewCertPool()}},
		"a name the certificate does not carry": {TLS: &tls.Config{RootCAs: roots, ServerName: "gateway.us-west-1.example"}},
	} {
		t.Run(name, func(t *testing.T) {
			o.Self, o.Now = "us-east-1", clk.Now
			p := New(o)
			t.Cleanup(p.client.CloseIdleConnections)
			before := len(gw.requests())
			p.Observe(gw.addr)
			p.round(t.Context())
			if n := len(gw.requests()); n != before {
				t.Fatalf("an unverified gateway was sent %d probes", n-before)
			}
			p.mu.Lock()
			samples := p.rtts[gw.addr].samples
			p.mu.Unlock()
			if samples != 0 {
				t.Fatalf("an unverified gateway gave %d samples", samples)
			}
		})
	}

	t.Run("a gateway serving plain HTTP", func(t *testing.T) {
		plain := newGateway(t, clk)
		p := New(Options{Self: "us-east-1", Now: clk.Now, TLS: &tls.Config{RootCAs: roots}})
		t.Cleanup(p.client.CloseIdleConnections)
		p.Observe(plain.addr)
		p.round(t.Context())
		p.mu.Lock()
		samples := p.rtts[plain.addr].samples
		p.mu.Unlock()
		if n := len(plain.requests()); n != 0 || samples != 0 {
			t.Fatalf("HTTPS probe of a plain gateway: %d requests, %d samples; want none", n, samples)
		}
	})
}

package hubclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

func TestParseAddresses(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{in: "hub:8470", want: []string{"hub:8470"}},
		{in: "a:8470,b:8470", want: []string{"a:8470", "b:8470"}},
		{in: " a:8470 , 10.0.0.2:8470,[::1]:8470 ", want: []string{"a:8470", "10.0.0.2:8470", "[::1]:8470"}},
		{in: "hub.spillway-system.svc:8470", want: []string{"hub.spillway-system.svc:8470"}},
		{in: "", err: "empty"},
		{in: "  ", err: "empty"},
		{in: "a:8470,", err: "entry 2"},
		{in: "a:8470,,b:8470", err: "entry 2"},
		{in: "hub", err: "want host:port"},
		{in: ":8470", err: "no host"},
		{in: "hub:0", err: "port"},
		{in: "hub:65536", err: "port"},
		{in: "hub:http", err: "port"},
		{in: "a:1,a:1", err: "twice"},
		{in: "http://hub:8470", err: "want host:port"},
		{in: "a b:8470", err: "not a name"},
	} {
		got, err := ParseAddresses(tc.in)
		if tc.err != "" {
			if err == nil || !errors.Is(err, ErrAddress) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseAddresses(%q) = %v, %v; want an ErrAddress mentioning %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseAddresses(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseAddresses(f *testing.F) {
	for _, s := range []string{"hub:8470", "a:1,b:2", "[::1]:8470", ",", "a:1,a:1", " x:65535 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addrs, err := ParseAddresses(s)
		if err != nil {
			return
		}
		if len(addrs) == 0 {
			t.Fatalf("ParseAddresses(%q) = no address and no error", s)
		}
		for _, a := range addrs {
			host, port, err := net.SplitHostPort(a)
			if err != nil || host == "" || port == "" {
				t.Fatalf("ParseAddresses(%q) gave %q, not host:port", s, a)
			}
		}
		// What it accepts it accepts again, written back.
		again, err := ParseAddresses(strings.Join(addrs, ","))
		if err != nil || !slices.Equal(again, addrs) {
			t.Fatalf("ParseAddresses(%q) = %v, but its join parses as %v, %v", s, addrs, again, err)
		}
	})
}

func TestAddressBookRounds(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	b := newAddressBook([]string{"a:1", "10.0.0.1:2", "c:3"}, nil, r)
	first := b.round(context.Background())
	if len(first) != 3 {
		t.Fatalf("round() = %v, want the three addresses", first)
	}
	for _, ep := range first {
		if ep.serverName != hostOf(ep.addr) {
			t.Errorf("endpoint %s is verified for %q, want its host", ep.addr, ep.serverName)
		}
	}
	if again := b.round(context.Background()); !slices.Equal(again, first) {
		t.Errorf("a second round %v, want the client's order %v again", again, first)
	}

	// One DNS name: every address it resolves to, each verified for the name.
	lookup := func(_ context.Context, host string) ([]string, error) {
		if host != "hubs.test" {
			return nil, fmt.Errorf("no such host %s", host)
		}
		return []string{"10.0.0.1", "10.0.0.2", "fd00::3"}, nil
	}
	b = newAddressBook([]string{"hubs.test:8470"}, lookup, r)
	var got []string
	for _, ep := range b.round(context.Background()) {
		got = append(got, ep.addr)
		if ep.serverName != "hubs.test" {
			t.Errorf("endpoint %s is verified for %q, want hubs.test", ep.addr, ep.serverName)
		}
	}
	slices.Sort(got)
	if want := []string{"10.0.0.1:8470", "10.0.0.2:8470", "[fd00::3]:8470"}; !slices.Equal(got, want) {
		t.Errorf("round() of a DNS name = %v, want %v", got, want)
	}
	// A name that does not resolve is dialed as it is.
	b = newAddressBook([]string{"nowhere.test:8470"}, lookup, r)
	if got := b.round(context.Background()); len(got) != 1 || got[0].addr != "nowhere.test:8470" {
		t.Errorf("round() of a name that does not resolve = %v, want the name itself", got)
	}
}

// refusedAddr returns a loopback address where nothing listens.
func refusedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// An unreachable address costs no backoff: the next one is tried at once.
func TestUnreachableAddressIsSkipped(t *testing.T) {
	h := startFakeHub(t)
	for range 3 { // either order of the two addresses comes up
		c := h.client(t, "east", "east")
		c.opts.HubAddresses = []string{refusedAddr(t), h.addr}
		c.opts.MinBackoff, c.opts.MaxBackoff = 5*time.Second, 10*time.Second
		run(t, c)
		testkit.Eventually(t, 3*time.Second, "a session on the reachable address, without a backoff of 5 s", testkit.True(c.Connected))
		if c.HubAddress() != h.addr {
			t.Errorf("HubAddress() = %s, want %s", c.HubAddress(), h.addr)
		}
	}
}

// stalledAddr returns the address of a listener that accepts connections and never answers (a
// replica whose TLS handshake does not complete, as on a link that loses every packet back),
// and how many connections it accepted so far.
func stalledAddr(t *testing.T) (string, func() int) {
	return slowAddr(t, "", 0)
}

// A connection that is not ready within ConnectTimeout is given up: the next address is tried
// then, long before the register timeout, and without a backoff.
func TestStalledConnectionIsGivenUp(t *testing.T) {
	h := startFakeHub(t)
	stalled, accepted := stalledAddr(t)
	// Each client tries the two addresses in an order of its own: go on until one has tried
	// the stalled address first (and given it up), at most 20 clients.
	for i := 0; accepted() == 0 && i < 20; i++ {
		c := h.client(t, "east", "east")
		c.opts.HubAddresses = []string{stalled, h.addr}
		c.opts.ConnectTimeout, c.opts.RegisterTimeout = time.Second, time.Minute
		c.opts.MinBackoff, c.opts.MaxBackoff = 30*time.Second, time.Minute
		run(t, c)
		testkit.Eventually(t, 5*time.Second, "a session on the answering address, after at most the 1 s connect timeout", testkit.True(c.Connected))
		if c.HubAddress() != h.addr {
			t.Errorf("HubAddress() = %s, want %s", c.HubAddress(), h.addr)
		}
	}
	if accepted() == 0 {
		t.Fatal("no client tried the stalled address")
	}
}

// slowAddr returns the address of a listener whose first connection is carried to target
// after a delay (a handshake whose packets are retransmitted for a while) and whose later
// connections never answer (every one, when target is empty), and how many connections it
// accepted so far.
func slowAddr(t *testing.T, target string, delay time.Duration) (string, func() int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	accepted := 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			accepted++
			first := accepted == 1
			mu.Unlock()
			if !first || target == "" {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(delay)
				up, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					return
				}
				mu.Lock()
				conns = append(conns, up)
				mu.Unlock()
				go func() { _, _ = io.Copy(up, c); up.Close() }()
				_, _ = io.Copy(c, up)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return accepted
	}
}

// TestSlowHandshakeIsNotGivenUp: a connection not ready within ConnectTimeout goes on while a
// new one is tried beside it, and carries the session when it gets through first. Here the
// first connection gets through after 0.7 s, every later one never: a client that gave up its
// attempt after the 0.3 s ConnectTimeout would never connect.
func TestSlowHandshakeIsNotGivenUp(t *testing.T) {
	h := startFakeHub(t)
	slow, accepted := slowAddr(t, h.addr, 700*time.Millisecond)
	c := h.client(t, "east", "east")
	c.opts.HubAddresses = []string{slow}
	c.opts.TLSServerName = hostOf(h.addr)
	c.opts.ConnectTimeout, c.opts.MinBackoff, c.opts.MaxBackoff = 300*time.Millisecond, time.Minute, time.Minute
	run(t, c)
	testkit.Eventually(t, 5*time.Second, "a session on the slow first connection", testkit.True(c.Connected))
	if n := accepted(); n < 2 {
		t.Errorf("%d connections accepted: no attempt was made beside the slow one", n)
	}
}

// A DNS name given alone stands for its addresses, each verified for the name: the fake hub's
// certificate holds hubs.spillway.test, and a name it does not hold is refused although it
// resolves to the same address.
func TestDNSNameStandsForItsAddresses(t *testing.T) {
	h := startFakeHub(t)
	_, port, _ := net.SplitHostPort(h.addr)
	var mu sync.Mutex
	lookups := 0
	lookup := func(_ context.Context, host string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		lookups++
		return []string{"127.0.0.1"}, nil
	}
	c := h.client(t, "east", "east")
	c.opts.HubAddress, c.opts.LookupHost = net.JoinHostPort(fakeHubName, port), lookup
	run(t, c)
	testkit.Eventually(t, 5*time.Second, "a session through the name", testkit.True(c.Connected))
	if want := "127.0.0.1:" + port; c.HubAddress() != want {
		t.Errorf("HubAddress() = %s, want the resolved %s", c.HubAddress(), want)
	}

	other := h.client(t, "west", "west")
	other.opts.HubAddress, other.opts.LookupHost = net.JoinHostPort("other.spillway.test", port), lookup
	run(t, other)
	testkit.Eventually(t, 10*time.Second, "three failed attempts", testkit.True(func() bool {
		return testutil.ToFloat64(other.metrics.reconnects) >= 3
	}))
	if other.Connected() {
		t.Error("a session with a replica whose certificate does not hold the name dialed")
	}
	if sessions, _, _ := h.seen(); sessions != 1 {
		t.Errorf("%d sessions, want only the first client's", sessions)
	}
}

// When a replica ends every stream at once, its clients come back spread over the backoff's
// jitter, not in the same instant, and none at once.
func TestReconnectsAreJittered(t *testing.T) {
	h := startFakeHub(t)
	const n = 12
	for i := range n {
		c := h.client(t, fmt.Sprint("c", i), fmt.Sprint("c", i))
		c.opts.MinBackoff, c.opts.MaxBackoff = 200*time.Millisecond, time.Second
		run(t, c)
	}
	testkit.Eventually(t, 10*time.Second, "every client's session", testkit.True(func() bool { s, _, _ := h.seen(); return s == n }))
	kickedAt := time.Now()
	h.kick()
	testkit.Eventually(t, 10*time.Second, "every client back", testkit.True(func() bool { s, _, _ := h.seen(); return s == 2*n }))
	h.mu.Lock()
	back := slices.Clone(h.hellosAt[n:])
	h.mu.Unlock()
	slices.SortFunc(back, time.Time.Compare)
	if first := back[0].Sub(kickedAt); first < 90*time.Millisecond {
		t.Errorf("a client came back %s after its replica ended the stream, want at least half of the 200 ms backoff", first)
	}
	// Waits are 100 to 300 ms: twelve of them within 40 ms of each other would be no jitter.
	if spread := back[n-1].Sub(back[0]); spread < 40*time.Millisecond {
		t.Errorf("the %d clients came back within %s of each other, want them spread", n, spread)
	}
}

// TestHealthySessionsResetTheBackoff: a client whose sessions each lasted HealthySession comes
// back within the first backoff step every time its replica ends them, however many times; with
// a growing backoff (×1.5 a step, jittered ±50 %) it would wait 0.85 s or more by the eighth.
func TestHealthySessionsResetTheBackoff(t *testing.T) {
	h := startFakeHub(t)
	c := h.client(t, "east", "east")
	c.opts.MinBackoff, c.opts.MaxBackoff, c.opts.HealthySession = 100*time.Millisecond, 10*time.Second, 300*time.Millisecond
	run(t, c)
	for i := range 8 {
		testkit.Eventually(t, 10*time.Second, "session", testkit.True(func() bool { s, _, _ := h.seen(); return s == i+1 }))
		// The session lives past HealthySession before its replica ends it.
		time.Sleep(400 * time.Millisecond)
		kicked := time.Now()
		h.kick()
		testkit.Eventually(t, 10*time.Second, "back", testkit.True(func() bool { s, _, _ := h.seen(); return s == i+2 }))
		if back := time.Since(kicked); back > 600*time.Millisecond {
			t.Fatalf("end %d: back after %s, want within the first backoff step (≤ 150 ms, and the handshake)", i+1, back)
		}
	}
}

// TestRetriesWhileTheLeaseLives: while the lease of its last session may live (its TTL after
// the session ended: the hub renews it every third of the TTL), a client retries at least every
// sixth of the TTL however far its backoff grew, so that a hub back in time resumes the session
// before the lease lapses. With a 1.2 s TTL: retries at most 200 ms apart (and the handshake)
// until 1 s after the end, where a backoff starting at 1 s (each step 0.5 to 1.5 times it)
// would have taken 3.5 s for three.
func TestRetriesWhileTheLeaseLives(t *testing.T) {
	h := startFakeHub(t)
	h.leaseTTL = 1200 * time.Millisecond
	c := h.client(t, "east", "east")
	c.opts.MinBackoff, c.opts.MaxBackoff, c.opts.HealthySession = time.Second, 10*time.Second, time.Hour
	run(t, c)
	testkit.Eventually(t, 10*time.Second, "session", testkit.True(func() bool { s, _, _ := h.seen(); return s == 1 }))
	h.mu.Lock()
	h.down = true
	h.mu.Unlock()
	ended := time.Now()
	h.kick()
	var retries []time.Time
	testkit.Eventually(t, 10*time.Second, "a retry a second after the end", testkit.True(func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		retries = slices.Clone(h.registersAt[1:])
		return len(retries) > 0 && retries[len(retries)-1].Sub(ended) >= time.Second
	}))
	last := ended
	for i, at := range retries {
		if gap := at.Sub(last); gap > 250*time.Millisecond {
			t.Errorf("retry %d came %s after the previous one, %s after the end, while the lease may have lived; want at most a sixth of the TTL (200 ms)",
				i+1, gap.Round(time.Millisecond), at.Sub(ended).Round(time.Millisecond))
		}
		last = at
	}
}

// TestBusyHubIsRetriedAfterItsDelay: a hub replica that refuses the session because it is
// opening as many as it allows (Unavailable with a RetryInfo of 400 ms, its turn) is tried again
// after one to 1.1 times that delay, never before it and not at the client's
// 10 ms backoff; once it takes the session, the client is connected.
func TestBusyHubIsRetriedAfterItsDelay(t *testing.T) {
	h := startFakeHub(t)
	const delay = 400 * time.Millisecond
	h.busy = delay
	c := h.client(t, "east", "east")
	c.opts.MinBackoff, c.opts.MaxBackoff = 10*time.Millisecond, 20*time.Millisecond
	run(t, c)
	var hellos []time.Time
	testkit.Eventually(t, 10*time.Second, "four attempts", testkit.True(func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		hellos = slices.Clone(h.hellosAt)
		return len(hellos) >= 4
	}))
	for i := 1; i < 4; i++ {
		// At least the delay; at most a tenth more, and the new connection's handshake (a
		// generous bound: the test machine may be busy).
		if gap := hellos[i].Sub(hellos[i-1]); gap < delay || gap > 3*delay {
			t.Errorf("attempt %d came %s after the previous one, want within 1 to 1.1 times the hub's %s", i+1, gap.Round(time.Millisecond), delay)
		}
	}
	h.mu.Lock()
	h.busy = 0
	h.mu.Unlock()
	testkit.Eventually(t, 5*time.Second, "a session once the hub takes it", testkit.True(c.Connected))
}

// A TLS configuration made without a server name (tlsconfig.ClientConfig with "", as the spoke
// gives a list of replicas) verifies each replica for the address dialed, an IP address too,
// for which the handshake sends no server name.
func TestTLSWithoutANameVerifiesTheAddressDialed(t *testing.T) {
	h := startFakeHub(t)
	kp, pool := h.keyPair(t, "east")
	c := h.client(t, "east", "east")
	c.opts.TLSFor, c.opts.TLS = nil, tlsconfig.ClientConfig(kp, pool, "")
	c.opts.HubAddresses = []string{refusedAddr(t), h.addr}
	run(t, c)
	testkit.Eventually(t, 5*time.Second, "a session verified for 127.0.0.1", testkit.True(c.Connected))
}

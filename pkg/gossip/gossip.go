// Package gossip is the fleet's liveness layer: the hub replicas and every spoke join one
// memberlist cluster (SWIM failure detection, encrypted with a shared key; plaintext only with
// --gossip-insecure, which logs a warning), so each spoke learns that a cluster died even while
// the hub is down. Members are named by cluster ID (spokes) or "hub/<replica>" (hubs).
//
// Timings are tuned for a small fleet on a fast network: a member is probed every 250 ms (in
// turn), suspected after a 150 ms probe and indirect checks fail, and declared dead after the
// suspicion timeout (SuspicionMult × max(1, log10 N) × probe interval, 0.5 s for a few members).
// A dead member is known to everyone within a second or two.
package gossip

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Options configure a member.
type Options struct {
	// Name is the member's unique name: the cluster ID of a spoke.
	Name string
	// BindAddress is host:port for gossip (UDP and TCP).
	BindAddress string
	// AdvertiseAddress is host:port other members reach; BindAddress when empty.
	AdvertiseAddress string
	// Join are members to contact at start and whenever this one is alone.
	Join []string
	// Key encrypts gossip (16, 24 or 32 bytes, AES).
	Key []byte
	// OldKeys decrypt gossip too, while a new Key is rolled out to every member.
	OldKeys [][]byte
	// Insecure allows an empty Key: gossip in plaintext, which Start logs as a warning. Anyone who
	// reaches the port can then read the members and declare a cluster dead or alive.
	Insecure bool
	Logger   *slog.Logger
}

// ReadKey reads the gossip keys from a file: one base64 key of 16, 24 or 32 bytes per line. The
// first encrypts; the others only decrypt, so that a new key can be rolled out to every member
// (first as a second line, then as the first, then alone) without a moment when two members
// cannot read each other.
func ReadKey(path string) (key []byte, old [][]byte, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, nil, fmt.Errorf("gossip key %s, line %d: %w", path, i+1, err)
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return nil, nil, fmt.Errorf("gossip key %s, line %d: %d bytes, want 16, 24 or 32", path, i+1, n)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, nil, fmt.Errorf("gossip key %s: no key in it", path)
	}
	return keys[0], keys[1:], nil
}

// Member is this process in the gossip cluster.
type Member struct {
	opts Options
	log  *slog.Logger
	ml   *memberlist.Memberlist

	mu   sync.RWMutex
	dead map[string]time.Time
	// stopped guards Leave and Shutdown; memberlist calls the event methods (which take mu)
	// while leaving, so it is not mu.
	stopped atomic.Bool
}

// Start joins the gossip cluster (contacting Join members is retried by Run).
func Start(o Options) (*Member, error) {
	if o.Name == "" {
		return nil, errors.New("gossip: a member name is required")
	}
	if len(o.Key) == 0 && !o.Insecure {
		return nil, errors.New("gossip: an encryption key is required (or Insecure, for plaintext)")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	host, port, err := splitHostPort(o.BindAddress)
	if err != nil {
		return nil, fmt.Errorf("gossip bind address: %w", err)
	}
	m := &Member{opts: o, log: o.Logger.With("component", "gossip"), dead: map[string]time.Time{}}
	c := memberlist.DefaultLANConfig()
	c.Name = o.Name
	c.BindAddr, c.BindPort = host, port
	c.AdvertiseAddr, c.AdvertisePort = host, port
	if o.AdvertiseAddress != "" {
		if c.AdvertiseAddr, c.AdvertisePort, err = splitHostPort(o.AdvertiseAddress); err != nil {
			return nil, fmt.Errorf("gossip advertise address: %w", err)
		}
	}
	if len(o.Key) > 0 {
		if c.Keyring, err = memberlist.NewKeyring(o.OldKeys, o.Key); err != nil {
			return nil, fmt.Errorf("gossip keys: %w", err)
		}
	} else {
		m.log.Warn("gossip is not encrypted (--gossip-insecure): anyone who reaches the gossip port can read the fleet's members and forge their liveness; give every member --gossip-key-file",
			"address", o.BindAddress)
	}
	Timings(c)
	c.PushPullInterval = 5 * time.Second
	c.Events = m
	c.Logger = slog.NewLogLogger(m.log.Handler(), slog.LevelDebug)
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	m.ml = ml
	return m, nil
}

// Run joins the seeds, rejoins them whenever this member is alone, and leaves at the end.
func (m *Member) Run(ctx context.Context) error {
	defer m.Close()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		if len(m.opts.Join) > 0 && m.ml.NumMembers() <= 1 {
			if n, err := m.ml.Join(m.opts.Join); err != nil {
				m.log.Debug("gossip join failed, retrying", "seeds", m.opts.Join, "err", err)
			} else {
				m.log.Info("gossip joined", "contacted", n, "members", m.ml.NumMembers())
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Close leaves the gossip cluster (telling the others at once instead of letting them suspect)
// and stops the member. Idempotent; Run closes on its way out.
func (m *Member) Close() {
	if m.stopped.CompareAndSwap(false, true) {
		_ = m.ml.Leave(time.Second)
		_ = m.ml.Shutdown()
	}
}

// Crash stops the member without leaving, as a crashed process would; for tests.
func (m *Member) Crash() {
	if m.stopped.CompareAndSwap(false, true) {
		_ = m.ml.Shutdown()
	}
}

// Dead reports whether the member named name was seen and is now dead or gone.
func (m *Member) Dead(name string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.dead[name]
	return ok
}

// Alive returns the names of the members alive now, this one included.
func (m *Member) Alive() []string {
	var out []string
	for _, n := range m.ml.Members() {
		out = append(out, n.Name)
	}
	return out
}

// NotifyJoin implements memberlist.EventDelegate.
func (m *Member) NotifyJoin(n *memberlist.Node) {
	m.mu.Lock()
	delete(m.dead, n.Name)
	m.mu.Unlock()
	m.log.Info("gossip member alive", "member", n.Name, "address", n.Address())
}

// NotifyLeave implements memberlist.EventDelegate: the member died or left.
func (m *Member) NotifyLeave(n *memberlist.Node) {
	m.mu.Lock()
	m.dead[n.Name] = time.Now()
	m.mu.Unlock()
	m.log.Warn("gossip member dead", "member", n.Name)
}

// NotifyUpdate implements memberlist.EventDelegate.
func (m *Member) NotifyUpdate(*memberlist.Node) {}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q", p)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// Timings sets the failure detector's timings on a memberlist configuration: probes every
// 250 ms with a 150 ms timeout, suspicion for two probe rounds (at most three times that
// without confirmations), gossip every 50 ms. A dead member is known within a second or two.
// The fleet gossip and the EPP replicas' ring (pkg/affinity) both use them.
func Timings(c *memberlist.Config) {
	c.ProbeInterval = 250 * time.Millisecond
	c.ProbeTimeout = 150 * time.Millisecond
	c.SuspicionMult = 2
	c.SuspicionMaxTimeoutMult = 3
	c.GossipInterval = 50 * time.Millisecond
	c.GossipToTheDeadTime = 5 * time.Second
	c.TCPTimeout = 2 * time.Second
}

// Package gossip is the fleet's liveness layer: the hub replicas and every spoke join one
// memberlist cluster (SWIM failure detection, encrypted with a shared key; plaintext only with
// --gossip-insecure, which logs a warning), so each spoke learns that a cluster died even while
// the hub is down. Members are named by cluster ID (spokes) or "hub/<replica>" (hubs).
//
// Two answers, for two uses. The verdict "dead" is SWIM's (memberlist with Lifeguard), tuned not
// to be wrong across regions: members are probed every 500 ms (in turn), suspected when neither
// the probe nor the indirect checks are answered, and declared dead only after the suspicion
// has stood for 6 s, longer in a large fleet without confirmations (see Timings).
// "Unreachable" is this member's own, for the clusters a spoke would spill to: pinged directly
// 20 times a second, unanswered for a second (see reach.go). A spoke leaves a cluster out of
// its spill targets on either.
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
	"github.com/prometheus/client_golang/prometheus"
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
	// Registerer gets the member's metrics (spillway_gossip_*); nil registers none.
	Registerer prometheus.Registerer
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

	reach *reach
	gone  prometheus.Counter

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
	m.reach = newReach(func(name string, addr net.Addr) error {
		_, err := m.ml.Ping(name, addr)
		return err
	})
	m.gone = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "spillway_gossip_members_gone_total",
		Help: "Members this one saw declared dead or leave (gossip member dead or left in the log; memberlist does not tell the two apart); a member that comes back is counted again when it goes again.",
	})
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
	c.Events = m
	c.Logger = slog.NewLogLogger(m.log.Handler(), slog.LevelDebug)
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	m.ml = ml
	if err := m.register(o.Registerer); err != nil {
		_ = ml.Shutdown()
		return nil, fmt.Errorf("gossip metrics: %w", err)
	}
	return m, nil
}

// Run joins the seeds, rejoins them whenever this member is alone, pings the members asked
// about (Unreachable), and leaves at the end.
func (m *Member) Run(ctx context.Context) error {
	defer m.Close()
	defer m.reach.wg.Wait()
	join := time.NewTicker(2 * time.Second)
	defer join.Stop()
	ping := time.NewTicker(ReachInterval)
	defer ping.Stop()
	m.rejoin()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ping.C:
			m.reach.round()
		case <-join.C:
			m.rejoin()
		}
	}
}

// rejoin contacts the seeds when this member is alone.
func (m *Member) rejoin() {
	if len(m.opts.Join) == 0 || m.ml.NumMembers() > 1 {
		return
	}
	if n, err := m.ml.Join(m.opts.Join); err != nil {
		m.log.Debug("gossip join failed, retrying", "seeds", m.opts.Join, "err", err)
	} else {
		m.log.Info("gossip joined", "contacted", n, "members", m.ml.NumMembers())
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

// Unreachable reports whether the member named name, alive or suspect by gossip, answered
// none of this member's direct pings for ReachWindow. Asking starts the pings (for a minute
// after the last ask); until they have run a window, and for a member gossip does not know,
// the answer is false: unknown is not unreachable.
func (m *Member) Unreachable(name string) bool { return m.reach.unreachable(name) }

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
	m.reach.known(n.Name, nodeAddr(n))
	m.log.Info("gossip member alive", "member", n.Name, "address", n.Address())
}

// NotifyLeave implements memberlist.EventDelegate: the member was declared dead, or left.
func (m *Member) NotifyLeave(n *memberlist.Node) {
	m.mu.Lock()
	m.dead[n.Name] = time.Now()
	m.mu.Unlock()
	m.reach.known(n.Name, nil)
	m.gone.Inc()
	m.log.Warn("gossip member dead or left", "member", n.Name)
}

// NotifyUpdate implements memberlist.EventDelegate: the member's metadata changed (an address
// change comes as a death and a join).
func (m *Member) NotifyUpdate(n *memberlist.Node) { m.reach.known(n.Name, nodeAddr(n)) }

func nodeAddr(n *memberlist.Node) net.Addr { return &net.UDPAddr{IP: n.Addr, Port: int(n.Port)} }

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

// Timings sets the fleet gossip's failure detector, for links across regions that may lose
// packets. A member is probed every 500 ms in turn; the direct probe's answer counts until the
// next (round trips up to ~450 ms), the indirect checks through three others start after
// 400 ms. A suspicion becomes a verdict after SuspicionMult × max(1, log10 N) × 500 ms (12 s
// up to 10 members) once enough other members have confirmed it, and up to three times that
// without confirmations (Lifeguard; below 24 members memberlist expects none and waits the
// 12 s). That outlasts several full state exchanges (push-pull over TCP, every 2 s), so a
// member that a lossy link made suspect hears it and refutes it before anyone declares it dead:
// at 30 % loss a member is suspected every few seconds, and 6 s still let two suspicions in ten
// minutes become verdicts. Leaving the spill targets does not wait for it (Unreachable).
// memberlist's own ping (Unreachable) waits the same 400 ms.
func Timings(c *memberlist.Config) {
	c.ProbeInterval = 500 * time.Millisecond
	c.ProbeTimeout = 400 * time.Millisecond
	c.SuspicionMult = 24
	c.SuspicionMaxTimeoutMult = 3
	c.GossipInterval = 50 * time.Millisecond
	c.GossipToTheDeadTime = 5 * time.Second
	c.TCPTimeout = 2 * time.Second
	c.PushPullInterval = 2 * time.Second
}

// LANTimings sets a failure detector for members inside one cluster's network (the EPP
// replicas' ring, pkg/affinity): probes every 250 ms with a 150 ms timeout, suspicion for two
// probe rounds (at most three times that), gossip every 50 ms. A dead member is known within a
// second or two.
func LANTimings(c *memberlist.Config) {
	c.ProbeInterval = 250 * time.Millisecond
	c.ProbeTimeout = 150 * time.Millisecond
	c.SuspicionMult = 2
	c.SuspicionMaxTimeoutMult = 3
	c.GossipInterval = 50 * time.Millisecond
	c.GossipToTheDeadTime = 5 * time.Second
	c.TCPTimeout = 2 * time.Second
}

// Package hubclient is the spoke's side of the hub's SyncService.
//
// Lifecycle: the spoke always dials the hub. Each session is Register (idempotent), then one Sync
// stream: Hello (cluster, spoke incarnation, view cursor, capacity interest) → Welcome (the last
// export delta the hub stored, report rate bounds) → the export deltas the hub is missing → from
// then on, export deltas as the local pools change, and capacity reports, interest changes and
// import reports each at most once per the Welcome's min_report_interval (the latter two carry the
// whole current state, so changes in between are coalesced into the next one), while view
// updates flow down. When the stream breaks, the client reconnects with jittered exponential
// backoff and resumes: exports from the hub's acknowledged sequence number, the view from its
// cursor. While the hub is away the spoke keeps working on its last view; nothing local waits on
// the hub.
//
// Replicas: the hub may run as several replicas sharing one etcd. The client takes their
// addresses (Options.HubAddresses; ParseAddresses parses --hub-address, a comma-separated
// list), or one DNS name (a Kubernetes Service) that stands for every address it resolves to at
// each round of attempts. Each client shuffles the list once, so the spokes given the same list
// spread over the replicas, and tries the addresses in that order: an address that does not
// answer (refused, no Welcome within RegisterTimeout) costs no backoff, the next one is tried at
// once; a connection not ready within ConnectTimeout goes on while the next address is tried
// beside it, and the first ready wins (see connect); when every one failed, or an
// established session broke, the client waits a jittered
// exponential backoff (0.5 to 1.5 times an interval doubling from MinBackoff to MaxBackoff), so
// that the spokes of a replica that died do not all come back in the same instant, and goes on
// with the next address. A session that lasted Options.HealthySession starts the backoff again
// from MinBackoff when it ends; and while the lease of the last full session may be alive in
// etcd (for its TTL after the session ended), no wait is longer than a sixth of the TTL, so
// that a hub back in time resumes the session instead of the lease lapsing (which would
// withdraw the cluster's exports everywhere until it returns). A replica busy opening other
// sessions (a mass reconnect) refuses with Unavailable and a RetryInfo: the next attempt comes
// after one to 1.1 times its delay (RetryDelay: the turn the replica gives it),
// and the backoff does not grow. The registry is shared, so the new replica's Welcome carries
// the acked_export_seq of the spoke's session lease: exports resume with the deltas after it,
// and the view resumes from its cursor or takes one snapshot.
//
// Each attempt dials one address on a gRPC connection of its own, whose TLS verifies the
// replica's certificate for the host dialed (for a DNS name, the name; Options.TLSServerName
// overrides both; Options.TLSFor makes the configuration for that name). One connection per
// address, tried in turn, rather than one connection over a manual resolver with several
// addresses: a session is one stream on one replica anyway, the client must know which replica
// it is on to move to the next when it breaks, and gRPC takes the TLS server name from the
// target's authority, shared by every address of a resolver (per-address names would need a
// credentials wrapper keyed by address attributes); and a connection per session is already
// needed so that each handshake presents the key pair loaded last.
//
// Observer sessions: a spoke replica that does not hold its cluster's Kubernetes Lease runs
// observer sessions (Options.Observer, SetObserver): Hello{observer: true} with its capacity
// interest, no Register, and nothing sent after the Hello (the hub answers any other message
// with FAILED_PRECONDITION), so it receives the fleet view and the hop keys only. An interest
// change ends the observer session and opens one with a new Hello, at most once per
// min_report_interval. SetObserver switches at once: it ends the current session and opens one
// in the new mode on the same replica, without backoff; the view is kept and resumes from its
// cursor, and what the spoke set meanwhile (exports, capacity, interest, import states) is sent
// when a full session starts.
//
// View safety: the view (View) removes nothing because of an update the hub marked incomplete,
// and holds a mass withdrawal of imports for a damping period; see View.
//
// Trust: the session runs over TLS (Options.TLS, tlsconfig.ClientConfig with the cluster's key
// pair and the hub's CA bundle); the hub reads the cluster from the client certificate and says
// which cluster it read in the Welcome. A TLS connection keeps the certificate of its handshake,
// and the hub ends a stream when that certificate expires, so each session dials a connection of
// its own (closed when the session ends), whose handshake presents the key pair loaded last; and
// when the certificate the key pair presents changes (renewed, or rewritten by cert-manager), the
// session ends and the client reconnects at once with the new one. A Welcome naming another cluster than Options.Cluster.ID
// ends Run with ErrWrongCluster: the credentials belong to another cluster, and retrying cannot
// help. After the Welcome, and whenever they change, the hub sends the fleet's hop-marker keys,
// which HopKeys returns to the EPP. Capacity is reported only for pools the cluster exports: the
// hub refuses reports for others.
//
// Export policy: the hub ends a stream that exports a pool in a namespace it denies (or outside
// the ones it allows) or more pools than its per-cluster cap, and announces these rules in the
// Welcome. The client applies the last announced policy to what SetExports gives it and leaves
// out what the hub would refuse (beyond the cap, the pools after the first max_exports in
// namespace/name order), so that an operator's mistake costs that pool its export, not the
// cluster its session; nor is the capacity of a left-out pool reported. RefusedExports says
// which pools are left out and why (the Kubernetes controller writes it into their Exported
// condition), and each is logged once as a warning. When a Welcome brings another policy than
// the last one, the whole export set is resent (replace_all), since deltas recorded under the old
// policy may break the new one.
package hubclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/spillway-io/spillway/pkg/budget"
	"github.com/spillway-io/spillway/pkg/cli"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Options configure a Client.
type Options struct {
	// Cluster is what the spoke registers.
	Cluster fleet.ClusterInfo
	// HubAddresses are the hub replicas' gRPC host:port addresses (ParseAddresses parses
	// --hub-address); a list of one DNS name stands for every address it resolves to. When
	// empty, HubAddress is parsed as such a list.
	HubAddresses []string
	// HubAddress is the hub's gRPC host:port, or a comma-separated list of them; used when
	// HubAddresses is empty.
	HubAddress string
	// TLSFor makes the TLS configuration of a connection to a replica whose certificate must
	// name serverName: tlsconfig.ClientConfig with the cluster's key pair, the hub's CA bundle
	// and that name. It wins over TLS, whose ServerName the client sets to the name dialed; a
	// TLS made by tlsconfig.ClientConfig with a fixed name keeps verifying that name (give it
	// "" for a list of replicas, or use TLSFor).
	TLSFor func(serverName string) *tls.Config
	// TLSServerName, when set, is the name every replica's certificate is verified for; empty
	// means the host of the address dialed (for a DNS name that resolves to several addresses,
	// the name).
	TLSServerName string
	// LookupHost resolves a DNS name given alone as the hub address; nil means
	// net.DefaultResolver.LookupHost.
	LookupHost func(ctx context.Context, host string) ([]string, error)
	// Observer starts the client in observer mode (SetObserver switches): its sessions receive
	// the fleet view and the hop keys and send nothing else.
	Observer bool
	// TLS secures the connection to the hub: the cluster's key pair and the hub's CA bundle,
	// as tlsconfig.ClientConfig makes them. Required unless DialOptions carry the transport
	// credentials. The client looks at the certificate its GetClientCertificate returns (a
	// reloading tlsconfig.KeyPair's, loaded last) every CertificateCheckInterval, and starts a
	// new session when it changes.
	TLS *tls.Config
	// CertificateCheckInterval is how often a session looks for a new client certificate; zero
	// means a second.
	CertificateCheckInterval time.Duration
	// DialOptions are added to the client's own when it dials the hub.
	DialOptions []grpc.DialOption
	// MinBackoff and MaxBackoff bound the wait between reconnects (200 ms and 10 s when zero).
	MinBackoff, MaxBackoff time.Duration
	// HealthySession is how long an established session must have lasted for its end (its
	// replica died, say) to start the backoff again from MinBackoff; 10 s when zero. Sessions
	// that keep ending sooner grow the backoff.
	HealthySession time.Duration
	// ConnectTimeout is how long the connection to a replica (TCP and TLS) may take to be ready
	// before the next address (or the same, on a new connection) is tried beside it; 4 s when
	// zero. The first attempt goes on: up to three run at once, each for up to three
	// ConnectTimeouts, and the first ready carries the session. On a link that loses a third of
	// its packets a handshake often takes seconds (a SYN is sent again after 1, 3 and 7 s): one
	// given up and started again from its first SYN, twice, outlasted a session lease in the
	// fault suite.
	ConnectTimeout time.Duration
	// RegisterTimeout bounds how long a replica may take to answer Register and to welcome the
	// session, once connected, before the next address is tried; 10 s when zero.
	RegisterTimeout time.Duration
	// Explain, when set, answers the hub's explain queries (hubctl explain) with the JSON of an
	// explanation; the Hello of a full session then offers them. It runs on the session's
	// receive loop: it must be quick.
	Explain func(*pb.ExplainRequest) ([]byte, error)
	// Budgets, when set, is the spoke's ledger of the fleet's token budgets: the client gives
	// it the hub's declarations and grants and reports its usage every budget_report_interval
	// of the Welcome. A hub that announces no interval declares no budgets: the ledger is
	// emptied.
	Budgets Budgets
	// Logger receives the client's logs, with a component attribute added; it carries the
	// cluster already (the spoke's does), so the client adds none. Nil discards them.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Budgets is the spoke's ledger of token budgets (budget.Ledger).
type Budgets interface {
	SetBudgets(budget.Set)
	Grant([]budget.Grant)
	Report() []budget.Usage
}

// Client keeps a session with the hub.
type Client struct {
	opts        Options
	log         *slog.Logger
	incarnation string
	view        *View
	metrics     *metrics

	mu sync.Mutex
	// wanted is what SetExports was given last; exports logs what is sent: wanted under policy,
	// the export policy of the last Welcome (the zero policy, which refuses nothing, before the
	// first). refused is what policy leaves out, and refusedChanged is closed when it changes.
	wanted         []fleet.Export
	policy         fleet.ExportPolicy
	refused        map[fleet.PoolRef]fleet.ExportRefusal
	refusedChanged chan struct{}
	exports        *exportLog
	// exportsKnown is set by the first SetExports: until then the client sends nothing of the
	// exports (an empty set would withdraw every export the hub holds for the cluster).
	exportsKnown bool
	capacity     map[fleet.PoolRef]fleet.PoolCapacity
	interest     []fleet.PoolRef
	// importStates is what the spoke reports of its InferencePoolImports; importsRev counts
	// its changes so each session sends the current one once and then every change.
	importStates []fleet.PoolImportStatus
	importsRev   uint64
	connected    bool
	wake         chan struct{}
	// observer is the mode of the sessions; endSession ends the current one (nil between
	// sessions), and modeChanged wakes the run loop from its backoff.
	observer    bool
	endSession  context.CancelCauseFunc
	modeChanged chan struct{}
	// hubAddr is the address of the current (or last) session.
	hubAddr string
	// leaseTTL is the session lease TTL of the last Welcome.
	leaseTTL time.Duration
	// leaseAlive is until when the lease of the last full session may live (Run's alone).
	leaseAlive time.Time

	hopKeys atomic.Pointer[[]fleet.HopKey]
}

// New returns a client; Run connects it.
func New(opts Options) *Client {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 200 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = 10 * time.Second
	}
	if opts.HealthySession <= 0 {
		opts.HealthySession = 10 * time.Second
	}
	if opts.CertificateCheckInterval <= 0 {
		opts.CertificateCheckInterval = time.Second
	}
	if opts.RegisterTimeout <= 0 {
		opts.RegisterTimeout = 10 * time.Second
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 4 * time.Second
	}
	if opts.LookupHost == nil {
		opts.LookupHost = net.DefaultResolver.LookupHost
	}
	log := opts.Logger.With("component", "hub-client")
	m := newMetrics(opts.Registerer)
	if opts.Observer {
		m.observer.Set(1)
	}
	return &Client{
		opts:           opts,
		log:            log,
		incarnation:    strconv.FormatUint(rand.Uint64(), 36),
		view:           newView(log, m),
		metrics:        m,
		observer:       opts.Observer,
		modeChanged:    make(chan struct{}, 1),
		exports:        newExportLog(),
		refused:        map[fleet.PoolRef]fleet.ExportRefusal{},
		refusedChanged: make(chan struct{}),
		capacity:       map[fleet.PoolRef]fleet.PoolCapacity{},
		wake:           make(chan struct{}, 1),
	}
}

// HopKeys returns the fleet's hop-marker keys as the hub sent them last, the signing one first;
// none before the first session. They are kept across sessions. The slice must not be modified.
func (c *Client) HopKeys() []fleet.HopKey {
	if k := c.hopKeys.Load(); k != nil {
		return *k
	}
	return nil
}

// View returns the fleet view; it is kept across sessions.
func (c *Client) View() *View { return c.view }

// SetObserver switches the client between observer sessions (true: the fleet view and the hop
// keys only; nothing sent after the Hello, no session lease, nothing taken over) and full
// sessions (exports, capacity, interest and import reports). A change ends the current session
// at once and opens one in the new mode, on the same hub address, without waiting; the view is
// kept and resumes from its cursor. What SetExports, SetCapacity, SetInterest and
// SetImportStatus are given in observer mode is kept and sent when a full session starts.
func (c *Client) SetObserver(observer bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.observer == observer {
		return
	}
	c.observer = observer
	if observer {
		c.metrics.observer.Set(1)
	} else {
		c.metrics.observer.Set(0)
	}
	c.log.Info("hub session mode changed; starting a new session", "observer", observer)
	if c.endSession != nil {
		c.endSession(errModeChanged)
	}
	select {
	case c.modeChanged <- struct{}{}:
	default:
	}
}

// Observer reports whether the client runs observer sessions.
func (c *Client) Observer() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.observer
}

// HubAddress returns the address of the hub replica of the current session (of the last one
// between sessions; empty before the first).
func (c *Client) HubAddress() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hubAddr
}

// Connected reports whether a session is up.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// SetExports sets the pools the cluster exports. Those the hub's export policy would refuse are
// left out (see RefusedExports).
func (c *Client) SetExports(exports []fleet.Export) {
	c.mu.Lock()
	c.wanted = slices.Clone(exports)
	c.exportsKnown = true
	c.applyPolicy()
	c.mu.Unlock()
	c.poke()
}

// RefusedExports returns the pools of the last SetExports that the client leaves out because the
// export policy of the hub's last Welcome refuses them, with why; none before the first Welcome.
// The map is the caller's.
func (c *Client) RefusedExports() map[fleet.PoolRef]fleet.ExportRefusal {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.refused)
}

// RefusedChanged returns a channel closed at the next change of RefusedExports.
func (c *Client) RefusedChanged() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refusedChanged
}

// applyPolicy makes the wanted exports that the policy lets through the exported set, and
// records what it leaves out. c.mu is held.
func (c *Client) applyPolicy() {
	kept, refused := c.policy.Apply(c.wanted)
	c.exports.set(kept)
	if maps.Equal(refused, c.refused) {
		return
	}
	for p, r := range refused {
		if old, ok := c.refused[p]; !ok || old != r {
			c.log.Warn("export left out: the hub's export policy refuses it", "pool", p.String(), "rule", r.Rule, "reason", r.Message)
		}
	}
	for p := range c.refused {
		if _, ok := refused[p]; !ok && slices.ContainsFunc(kept, func(e fleet.Export) bool { return e.Pool == p }) {
			c.log.Info("export no longer left out: the hub's export policy allows it", "pool", p.String())
		}
	}
	c.refused = refused
	c.metrics.setLeftOut(refused)
	close(c.refusedChanged)
	c.refusedChanged = make(chan struct{})
}

// adoptPolicy applies the export policy a Welcome announced. Deltas recorded under another
// policy may break this one (a pool in a namespace now denied, more pools than the cap allows),
// so when the policy changed they are forgotten: the session resends the whole set.
func (c *Client) adoptPolicy(p fleet.ExportPolicy) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p.Equal(c.policy) {
		return
	}
	c.policy = p
	c.applyPolicy()
	c.exports.forget()
}

// SetCapacity sets the latest capacity of every local pool; pools missing from caps are reported
// removed.
func (c *Client) SetCapacity(caps []fleet.PoolCapacity) {
	m := make(map[fleet.PoolRef]fleet.PoolCapacity, len(caps))
	for _, p := range caps {
		m[p.Pool] = p
	}
	c.mu.Lock()
	c.capacity = m
	c.mu.Unlock()
}

// SetInterest sets the pools whose remote capacity the spoke wants. The hub hears of a change
// at most once per min_report_interval, with the interest set last.
func (c *Client) SetInterest(pools []fleet.PoolRef) {
	pools = slices.Clone(pools)
	slices.SortFunc(pools, fleet.PoolRef.Compare)
	c.mu.Lock()
	same := slices.Equal(pools, c.interest)
	c.interest = pools
	c.mu.Unlock()
	if !same {
		c.poke()
	}
}

// SetImportStatus sets what the spoke reports of its InferencePoolImports, one entry per pool.
// The hub hears of a change at most once per min_report_interval, with the states set last.
func (c *Client) SetImportStatus(states []fleet.PoolImportStatus) {
	states = slices.Clone(states)
	slices.SortFunc(states, func(a, b fleet.PoolImportStatus) int { return a.Pool.Compare(b.Pool) })
	c.mu.Lock()
	same := c.importsRev > 0 && slices.Equal(states, c.importStates)
	if !same {
		c.importStates = states
		c.importsRev++
	}
	c.mu.Unlock()
	if !same {
		c.poke()
	}
}

func (c *Client) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// addresses returns the hub addresses of the options.
func (c *Client) addresses() ([]string, error) {
	if len(c.opts.HubAddresses) > 0 {
		for _, a := range c.opts.HubAddresses {
			if err := cli.CheckHostPort(a); err != nil {
				return nil, fmt.Errorf("%w: %q: %w", ErrAddress, a, err)
			}
		}
		return c.opts.HubAddresses, nil
	}
	return ParseAddresses(c.opts.HubAddress)
}

// Run keeps a session with the hub until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	defer c.view.stop()
	if c.opts.TLS == nil && c.opts.TLSFor == nil && len(c.opts.DialOptions) == 0 {
		return ErrNoTLS
	}
	addrs, err := c.addresses()
	if err != nil {
		return err
	}
	dial := slices.Clone(c.opts.DialOptions)
	dial = append(dial,
		// The timeout is also the connection's TCP_USER_TIMEOUT: 10 s rides out the
		// retransmissions of a lossy link (the hub's side matches: server.GRPCOptions).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
	)
	book := newAddressBook(addrs, c.opts.LookupHost, rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = c.opts.MinBackoff, c.opts.MaxBackoff
	bo.RandomizationFactor = 0.5 // each wait is 0.5 to 1.5 times the current interval
	var round []endpoint
	pos := 0
	for ctx.Err() == nil {
		if pos >= len(round) {
			round, pos = book.round(ctx), 0
		}
		conn, i, tried, err := c.connect(ctx, round, pos, dial)
		if err != nil && ctx.Err() == nil && !errors.Is(err, errConnectTimeout) {
			return err // a malformed address or dial option: no attempt can succeed
		}
		started := time.Now()
		full := !c.Observer()
		established := false
		ep := round[(pos+tried-1)%len(round)]
		// The next attempt goes to the next address (this replica may be gone), or, when
		// every address of the round was tried, to the next round after a backoff.
		next := len(round)
		if err == nil {
			if full {
				// Register first, hedged on a second connection when the answer is slow.
				conn, i, err = c.register(ctx, conn, i, round, dial)
			}
			ep = round[i]
			if err == nil {
				established, err = c.session(ctx, pb.NewSyncServiceClient(conn), ep.addr, full)
			}
			conn.Close()
			if established || tried < len(round) {
				next = i + 1
			}
		}
		pos = next
		c.setConnected(false)
		if established && full {
			// The hub renews the lease every third of its TTL: two thirds of it are left at
			// least, and the whole of it at most. Retrying fast until the latter costs a few
			// attempts more, and saves the exports when the hub takes its time to come back.
			c.mu.Lock()
			ttl := c.leaseTTL
			c.mu.Unlock()
			c.leaseAlive = time.Now().Add(ttl)
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrWrongCluster) {
			c.log.Error("the hub names this spoke another cluster; stopping the hub session", "err", err)
			return err
		}
		c.metrics.reconnects.Inc()
		switch {
		case errors.Is(err, errCertificateChanged):
			c.log.Info("the client certificate changed; reconnecting to the hub with it", "hub", ep.addr)
			continue
		case errors.Is(err, errModeChanged), errors.Is(err, errInterestChanged):
			continue // the same replica, at once
		}
		if !established && pos < len(round) {
			c.log.Warn("hub replica unreachable; trying the next address", "hub", ep.addr, "err", err, "next", round[pos].addr)
			continue
		}
		if established && time.Since(started) > c.opts.HealthySession {
			// The session was healthy: the replica, not this spoke, is what ended it. Start
			// the backoff again from the bottom, so that a failover costs a fraction of a
			// second whatever happened before.
			bo.Reset()
		}
		var wait time.Duration
		if d := RetryDelay(err); d > 0 {
			// The replica is up but busy opening other sessions (a mass reconnect), and says
			// when to come back: its turn, after the spokes waiting and refused before this one.
			// Then, up to a tenth later (never before: the replica spaced the turns already).
			// The backoff, which is for failures, stays where it was.
			wait = time.Duration(float64(d) * (1 + rand.Float64()/10))
		} else {
			// Jittered: the spokes of a replica that died do not all come back in the same
			// instant.
			wait = bo.NextBackOff()
			if time.Now().Before(c.leaseAlive) {
				// The session's lease may still be alive: a hub back before it lapses resumes
				// the session (the exports stay, nothing is resent), so retry at least every
				// sixth of the TTL (jittered) rather than wait out a backoff that grew while
				// the hub was down.
				c.mu.Lock()
				ttl := c.leaseTTL
				c.mu.Unlock()
				wait = min(wait, time.Duration(float64(ttl/6)*(0.5+rand.Float64()/2)))
			}
		}
		if code := status.Code(err); code == codes.PermissionDenied || code == codes.Unauthenticated {
			// Worth retrying: the credentials reload when their files change, and a revoked
			// cluster may be let back in.
			c.log.Error("the hub refused the spoke's certificate or request; retrying", "hub", ep.addr, "err", err, "retry", wait)
		} else {
			c.log.Warn("hub session ended, reconnecting", "hub", ep.addr, "err", err, "retry", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-c.modeChanged:
			t.Stop()
		case <-t.C:
		}
	}
	return nil
}

func (c *Client) setConnected(v bool) {
	c.mu.Lock()
	c.connected = v
	c.mu.Unlock()
	if v {
		c.metrics.connected.Set(1)
	} else {
		c.metrics.connected.Set(0)
	}
}

var (
	// errConnectTimeout means a connection was not ready within the attempt's connect timeout.
	errConnectTimeout = errors.New("connect")
	// ErrProtocol means the hub answered out of protocol.
	ErrProtocol = errors.New("hub broke the sync protocol")
	// ErrWrongCluster means the hub read another cluster from the spoke's certificate than the
	// one it is configured as.
	ErrWrongCluster = errors.New("the hub's session is for another cluster")
	// ErrNoTLS means Options has neither TLS, TLSFor nor transport credentials in DialOptions.
	ErrNoTLS = errors.New("hub client: no TLS configuration for the connection to the hub")
	// errCertificateChanged ends a session whose connection presents a certificate the key pair
	// no longer holds.
	errCertificateChanged = errors.New("the client certificate changed")
	// errModeChanged ends a session whose mode (observer or full) SetObserver changed.
	errModeChanged = errors.New("the session mode changed")
	// errInterestChanged ends an observer session whose interest changed: an observer sends
	// nothing after its Hello, so a new Hello carries the new interest.
	errInterestChanged = errors.New("the capacity interest changed")
)

// presented returns the DER of the certificate Options.TLS presents now: its
// GetClientCertificate's (a reloading key pair's, loaded last); nil when it has none, or no
// GetClientCertificate (fixed certificates never change).
func (c *Client) presented() []byte {
	cfg := c.opts.TLS
	if c.opts.TLSFor != nil {
		cfg = c.opts.TLSFor(c.opts.TLSServerName)
	}
	if cfg == nil || cfg.GetClientCertificate == nil {
		return nil
	}
	cert, err := cfg.GetClientCertificate(&tls.CertificateRequestInfo{Version: tls.VersionTLS13})
	if err != nil || cert == nil || len(cert.Certificate) == 0 {
		return nil
	}
	return cert.Certificate[0]
}

// watchCertificate cancels the session with errCertificateChanged once the certificate
// presented is no longer cert, until ctx ends.
func (c *Client) watchCertificate(ctx context.Context, cert []byte, cancel context.CancelCauseFunc) {
	t := time.NewTicker(c.opts.CertificateCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := c.presented(); now != nil && !bytes.Equal(now, cert) {
			cancel(errCertificateChanged)
			return
		}
	}
}

// session holds one session on a connection of its own; it ends with errCertificateChanged
// when the client certificate changes, errModeChanged when SetObserver changes the mode.
func (c *Client) session(ctx context.Context, cli pb.SyncServiceClient, addr string, registered bool) (established bool, err error) {
	sctx, cancel := context.WithCancelCause(ctx)
	watched := make(chan struct{})
	c.mu.Lock()
	observer := c.observer
	c.endSession = cancel
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.endSession = nil
		c.mu.Unlock()
		cancel(nil)
		<-watched
	}()
	cert := c.presented()
	go func() {
		defer close(watched)
		if cert != nil {
			c.watchCertificate(sctx, cert, cancel)
		}
	}()
	established, err = c.sync(sctx, cli, addr, observer, registered)
	if cause := context.Cause(sctx); errors.Is(cause, errCertificateChanged) || errors.Is(cause, errModeChanged) {
		return established, cause
	}
	return established, err
}

func (c *Client) sync(ctx context.Context, cli pb.SyncServiceClient, addr string, observer, registered bool) (bool, error) {
	// Register writes the cluster's record (unless register did); an observer writes nothing.
	rctx, cancel := context.WithTimeout(ctx, c.opts.RegisterTimeout)
	defer cancel()
	if !observer && !registered {
		if _, err := cli.Register(rctx, &pb.RegisterRequest{Cluster: fleetpb.ClusterInfo(c.opts.Cluster)}); err != nil {
			return false, fmt.Errorf("register: %w", err)
		}
	}
	sctx, scancel := context.WithCancelCause(ctx)
	defer scancel(nil)
	stream, err := cli.Sync(sctx)
	if err != nil {
		return false, fmt.Errorf("open sync stream: %w", err)
	}
	c.mu.Lock()
	interest := slices.Clone(c.interest)
	c.mu.Unlock()
	hello := &pb.Hello{ClusterId: c.opts.Cluster.ID, SpokeIncarnation: c.incarnation, ViewCursor: c.view.cursor(), Observer: observer,
		Explains: !observer && c.opts.Explain != nil}
	// An interest too large for one message: the Hello carries its first part, and Interest
	// messages the rest once the Welcome came (the hub reads nothing more before it welcomes,
	// and a replica that never does must not hold the spoke in a blocked send).
	interestParts := fleetpb.SplitInterest(interestMessage(interest), fleetpb.SpokePartBytes)
	hello.CapacityInterest, hello.InterestFollows = interestParts[0].GetCapacityInterest(), len(interestParts) > 1
	if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: hello}}); err != nil {
		return false, fmt.Errorf("send hello: %w", err)
	}
	// The Welcome comes within the register timeout, or the next replica is tried.
	errNoWelcome := fmt.Errorf("no welcome within %s", c.opts.RegisterTimeout)
	welcomed := make(chan struct{})
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		select {
		case <-welcomed:
		case <-rctx.Done():
			scancel(errNoWelcome)
		}
	}()
	first, err := stream.Recv()
	close(welcomed)
	<-waited
	if err != nil {
		if cause := context.Cause(sctx); errors.Is(cause, errNoWelcome) && ctx.Err() == nil {
			return false, cause
		}
		return false, fmt.Errorf("await welcome: %w", err)
	}
	w := first.GetWelcome()
	if w == nil {
		return false, fmt.Errorf("%w: first message is not a welcome", ErrProtocol)
	}
	if id := w.GetClusterId(); id != "" && id != c.opts.Cluster.ID {
		return false, fmt.Errorf("%w: the hub read cluster %q from the spoke's certificate, the spoke is configured as %q (check --cluster-id and the certificate in --credentials-dir)",
			ErrWrongCluster, id, c.opts.Cluster.ID)
	}
	for _, part := range interestParts[1:] {
		if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Interest{Interest: part}}); err != nil {
			return false, fmt.Errorf("send interest: %w", err)
		}
	}
	c.adoptPolicy(fleetpb.ExportPolicyFrom(w))
	c.view.setDamping(w.GetLeaseTtl().AsDuration())
	c.mu.Lock()
	c.leaseTTL = w.GetLeaseTtl().AsDuration()
	c.mu.Unlock()
	c.mu.Lock()
	if c.hubAddr != "" && c.hubAddr != addr {
		c.metrics.failovers.Inc()
	}
	c.hubAddr = addr
	c.mu.Unlock()
	c.setConnected(true)
	c.log.Info("hub session started", "hub", w.GetHubId(), "address", addr, "observer", observer,
		"ackedExportSeq", w.GetAckedExportSeq(), "viewResumed", w.GetViewResumed())

	done := make(chan struct{})
	answers := make(chan *pb.ExplainAnswer, explainAnswers)
	go func() {
		defer close(done)
		scancel(c.recvLoop(stream, answers))
	}()
	if observer {
		err = c.observe(sctx, stream, w, interest)
	} else {
		err = c.sendLoop(sctx, stream, w, interest, answers)
	}
	scancel(err)
	<-done
	if cause := context.Cause(sctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return true, cause
	}
	return true, err
}

// observe is an observer session's side of the stream: it sends its budget reports only (the
// hub ends the stream with FAILED_PRECONDITION at anything else): this replica's EPP enforces
// budgets too. When the interest changes it ends the session with errInterestChanged, so that
// a new Hello carries it, at most once per min_report_interval.
func (c *Client) observe(ctx context.Context, stream pb.SyncService_SyncClient, w *pb.Welcome, interest []fleet.PoolRef) error {
	interval := max(w.GetMinReportInterval().AsDuration(), 50*time.Millisecond)
	opened := time.Now()
	held := time.NewTimer(time.Hour)
	defer held.Stop()
	budgetTick, stopBudgets, err := c.startBudgets(stream, w)
	if err != nil {
		return err
	}
	defer stopBudgets()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-budgetTick:
			if err := c.sendBudgets(stream); err != nil {
				return err
			}
			continue
		case <-c.wake:
		case <-held.C:
		}
		c.mu.Lock()
		changed := !slices.Equal(c.interest, interest)
		c.mu.Unlock()
		if !changed {
			continue
		}
		if wait := interval - time.Since(opened); wait > 0 {
			held.Reset(wait)
			continue
		}
		return errInterestChanged
	}
}

// startBudgets sends the ledger's first report of a session at once (a hub replica that just
// took the session learns the spoke's accounts before it grants anything) and returns a ticker
// of the Welcome's budget_report_interval for the next, when the client keeps a ledger. A hub
// that announces no interval declares no budgets: the ledger is emptied.
func (c *Client) startBudgets(stream pb.SyncService_SyncClient, w *pb.Welcome) (<-chan time.Time, func(), error) {
	if c.opts.Budgets == nil {
		return nil, func() {}, nil
	}
	bi := w.GetBudgetReportInterval().AsDuration()
	if bi <= 0 {
		c.opts.Budgets.SetBudgets(budget.Set{})
		return nil, func() {}, nil
	}
	if err := c.sendBudgets(stream); err != nil {
		return nil, func() {}, err
	}
	t := time.NewTicker(bi)
	return t.C, t.Stop, nil
}

// sendBudgets sends the ledger's usage.
func (c *Client) sendBudgets(stream pb.SyncService_SyncClient) error {
	r := &pb.BudgetReport{Budgets: fleetpb.BudgetUsages(c.opts.Budgets.Report())}
	if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Budgets{Budgets: r}}); err != nil {
		return fmt.Errorf("send budget report: %w", err)
	}
	return nil
}

// explainAnswers bounds the explain answers waiting for the send loop: the hub sends at most a
// few queries at once; an answer that finds the queue full is dropped (the hub times out).
const explainAnswers = 8

// maxExplanationBytes is the largest explanation the hub takes.
const maxExplanationBytes = 1 << 20

func (c *Client) recvLoop(stream pb.SyncService_SyncClient, answers chan<- *pb.ExplainAnswer) error {
	// parts holds the parts of a view update received so far: nothing of it is applied before
	// its last part (docs/sync-protocol.md, "Parts"), so a stream that breaks half-way changes
	// nothing and the update comes again from the same cursor.
	var parts *pb.ViewUpdate
	for {
		m, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		switch msg := m.GetMsg().(type) {
		case *pb.SyncResponse_View:
			u := msg.View
			if parts != nil {
				if !proto.Equal(parts.GetCursor(), u.GetCursor()) || parts.GetSnapshot() != u.GetSnapshot() {
					return fmt.Errorf("%w: a view update part of cursor %v in the middle of the parts of %v", ErrProtocol, u.GetCursor(), parts.GetCursor())
				}
				proto.Merge(parts, u)
				u = parts
			}
			if msg.View.GetMore() {
				parts = u
				continue
			}
			parts, u.More = nil, false
			c.view.apply(u)
			kind := "delta"
			if u.GetSnapshot() {
				kind = "snapshot"
			}
			c.metrics.viewUpdates.WithLabelValues(kind).Inc()
		case *pb.SyncResponse_ExportAck:
			c.metrics.exportAcks.Inc()
		case *pb.SyncResponse_HopKeys:
			keys := fleetpb.HopKeysFrom(msg.HopKeys)
			for _, k := range keys {
				if k.ID == "" || len(k.Secret) == 0 {
					return fmt.Errorf("%w: a hop key without an ID or a secret", ErrProtocol)
				}
			}
			c.hopKeys.Store(&keys)
			c.metrics.hopKeyUpdates.Inc()
		case *pb.SyncResponse_Budgets:
			if c.opts.Budgets == nil {
				continue
			}
			if d := msg.Budgets.GetDefinitions(); d != nil {
				set, err := fleetpb.BudgetSetFrom(d)
				if err != nil {
					return fmt.Errorf("%w: budgets: %w", ErrProtocol, err)
				}
				c.opts.Budgets.SetBudgets(set)
			}
			c.opts.Budgets.Grant(fleetpb.BudgetGrantsFrom(msg.Budgets.GetGrants()))
		case *pb.SyncResponse_Explain:
			select {
			case answers <- c.explain(msg.Explain):
			default:
				c.log.Warn("explain query dropped: too many unanswered", "id", msg.Explain.GetId())
			}
		default:
			return fmt.Errorf("%w: unexpected %T", ErrProtocol, msg)
		}
	}
}

// explain answers one of the hub's explain queries.
func (c *Client) explain(q *pb.ExplainQuery) *pb.ExplainAnswer {
	a := &pb.ExplainAnswer{Id: q.GetId()}
	if c.opts.Explain == nil {
		a.Error = "this spoke does not explain requests"
		return a
	}
	b, err := c.opts.Explain(q.GetRequest())
	switch {
	case err != nil:
		a.Error = err.Error()
	case len(b) > maxExplanationBytes:
		a.Error = fmt.Sprintf("the explanation is %d bytes, more than the hub takes (%d)", len(b), maxExplanationBytes)
	default:
		a.Explanation = b
	}
	return a
}

func (c *Client) sendLoop(ctx context.Context, stream pb.SyncService_SyncClient, w *pb.Welcome, interest []fleet.PoolRef, answers <-chan *pb.ExplainAnswer) error {
	interval := max(w.GetMinReportInterval().AsDuration(), 50*time.Millisecond)
	heartbeat := max(w.GetCapacityHeartbeat().AsDuration(), interval)
	// Until the source has told the cluster's exports (a spoke that just started, its caches
	// not synced yet), none are sent: a replace_all of the empty set would withdraw every
	// export the hub holds for the cluster, and importers everywhere would drop it.
	c.mu.Lock()
	resumed := c.exportsKnown
	var pending []*pb.ExportDelta
	if resumed {
		pending = c.exports.since(w.GetAckedExportSeq())
	}
	sent := c.exports.seq
	c.mu.Unlock()
	if err := sendExports(stream, pending); err != nil {
		return err
	}
	// Interest changes and import reports carry the whole current state, and the hub ends a
	// stream that sends either faster than one per interval (after a burst): each is sent at
	// once when it changes and its last one is an interval old, else when the interval has
	// passed, with the state of then. A controller that reconciles often costs no session.
	var importsSent uint64
	var importsAt, interestAt time.Time
	lastSent := map[fleet.PoolRef]fleet.PoolCapacity{}
	lastAt := map[fleet.PoolRef]time.Time{}
	var lastReport time.Time
	tick := time.NewTicker(interval)
	defer tick.Stop()
	held := time.NewTimer(interval)
	defer held.Stop()
	budgetTick, stopBudgets, err := c.startBudgets(stream, w)
	if err != nil {
		return err
	}
	defer stopBudgets()
	for {
		now := time.Now()
		c.mu.Lock()
		var deltas []*pb.ExportDelta
		switch {
		case resumed:
			deltas = c.exports.after(sent)
		case c.exportsKnown:
			deltas, resumed = c.exports.since(w.GetAckedExportSeq()), true
		}
		sent = c.exports.seq
		caps := exportedOnly(c.capacity, c.exports.current)
		var imports *pb.ImportReport
		importsHeld := false
		if c.importsRev != importsSent {
			if importsHeld = now.Sub(importsAt) < interval; !importsHeld {
				imports, importsSent = fleetpb.PoolImportStatuses(c.importStates), c.importsRev
			}
		}
		var newInterest *pb.Interest
		interestHeld := false
		if !slices.Equal(c.interest, interest) {
			if interestHeld = now.Sub(interestAt) < interval; !interestHeld {
				interest = c.interest
				newInterest = interestMessage(interest)
			}
		}
		c.mu.Unlock()
		if imports != nil {
			for _, part := range fleetpb.SplitImportReport(imports, fleetpb.SpokePartBytes) {
				if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Imports{Imports: part}}); err != nil {
					return fmt.Errorf("send imports: %w", err)
				}
			}
			importsAt = now
		}
		if err := sendExports(stream, deltas); err != nil {
			return err
		}
		if newInterest != nil {
			for _, part := range fleetpb.SplitInterest(newInterest, fleetpb.SpokePartBytes) {
				if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Interest{Interest: part}}); err != nil {
					return fmt.Errorf("send interest: %w", err)
				}
			}
			interestAt = now
		}
		// Woken early (exports, interest or imports changed), capacity waits: the hub refuses
		// reports closer together than the interval it announced.
		if now.Sub(lastReport) >= interval {
			if report := capacityReport(caps, lastSent, lastAt, heartbeat, now); report != nil {
				for _, part := range fleetpb.SplitCapacity(report, fleetpb.SpokePartBytes) {
					if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Capacity{Capacity: part}}); err != nil {
						return fmt.Errorf("send capacity: %w", err)
					}
				}
				lastReport = now
			}
		}
		// A held change is sent when its interval has passed, not at the next tick.
		var release <-chan time.Time
		if importsHeld || interestHeld {
			due := interval
			if importsHeld {
				due = min(due, interval-now.Sub(importsAt))
			}
			if interestHeld {
				due = min(due, interval-now.Sub(interestAt))
			}
			held.Reset(due)
			release = held.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-c.wake:
		case <-release:
		case a := <-answers:
			if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_ExplainAnswer{ExplainAnswer: a}}); err != nil {
				return fmt.Errorf("send explain answer: %w", err)
			}
		case <-budgetTick:
			if err := c.sendBudgets(stream); err != nil {
				return err
			}
		}
	}
}

// sendExports sends export deltas, each in parts when it is too large for one message.
func sendExports(stream pb.SyncService_SyncClient, deltas []*pb.ExportDelta) error {
	for _, d := range deltas {
		for _, part := range fleetpb.SplitExports(d, fleetpb.SpokePartBytes) {
			if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: part}}); err != nil {
				return fmt.Errorf("send exports: %w", err)
			}
		}
	}
	return nil
}

func interestMessage(pools []fleet.PoolRef) *pb.Interest {
	m := &pb.Interest{CapacityInterest: make([]*pb.PoolRef, 0, len(pools))}
	for _, p := range pools {
		m.CapacityInterest = append(m.CapacityInterest, fleetpb.PoolRef(p))
	}
	return m
}

// capacityReport returns what to report of caps, nil for nothing: the pools whose load changed
// or whose last report is a heartbeat old, and the pools gone since the last report. It
// records what it reports in lastSent and lastAt.
func capacityReport(caps, lastSent map[fleet.PoolRef]fleet.PoolCapacity, lastAt map[fleet.PoolRef]time.Time,
	heartbeat time.Duration, now time.Time) *pb.CapacityReport {
	report := &pb.CapacityReport{}
	for p, cp := range caps {
		if last, ok := lastSent[p]; ok && last.SameLoad(cp) && now.Sub(lastAt[p]) < heartbeat {
			continue
		}
		report.Pools = append(report.Pools, fleetpb.Capacity(cp))
		lastSent[p], lastAt[p] = cp, now
	}
	for p := range lastSent {
		if _, ok := caps[p]; !ok {
			report.Removed = append(report.Removed, fleetpb.PoolRef(p))
			delete(lastSent, p)
			delete(lastAt, p)
		}
	}
	if len(report.Pools) == 0 && len(report.Removed) == 0 {
		return nil
	}
	return report
}

// exportedOnly returns the capacity of the pools the cluster exports: the hub refuses reports
// for others. It returns caps itself when every pool of it is exported.
func exportedOnly(caps map[fleet.PoolRef]fleet.PoolCapacity, exported map[fleet.PoolRef]fleet.Export) map[fleet.PoolRef]fleet.PoolCapacity {
	all := true
	for p := range caps {
		if _, ok := exported[p]; !ok {
			all = false
			break
		}
	}
	if all {
		return caps
	}
	out := make(map[fleet.PoolRef]fleet.PoolCapacity, len(exported))
	for p, cp := range caps {
		if _, ok := exported[p]; ok {
			out[p] = cp
		}
	}
	return out
}

// RetryDelay returns the delay of the RetryInfo in err's status (a hub replica busy opening
// sessions sets it), or zero.
func RetryDelay(err error) time.Duration {
	st, ok := status.FromError(err)
	if !ok {
		return 0
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

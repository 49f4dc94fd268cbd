// Package affinity shares the EPP's prefix-affinity index between the replicas of one cluster's
// spoke, so that a prompt's prefix finds the endpoint that holds it in KV-cache whichever replica
// the gateway's load balancing picked.
//
// Every replica keeps the whole index (pkg/epp/prefix). The block hashes its own picks record
// (prefix.Observer: the blocks new to an endpoint, and those not told for a while) go into a
// bounded queue; FlushInterval (5 ms) after the first hash entered an empty queue, a Replicator
// cuts what is queued into messages of at most MaxMessageBytes and sends each to every other
// replica as a memberlist best-effort (UDP) message; a receiver adds them to its index with
// prefix.Indexer.AddReplicated, which replicates nothing further. The replicas form their own
// memberlist ring on --replica-address, apart from the fleet's gossip: its own port, a label
// naming the cluster (a member of another ring, or of the fleet's gossip, cannot join it), the
// fleet's gossip key for encryption. A replica that joins receives a snapshot of the index from
// the replica it contacted (memberlist's join push-pull), then every later insert; a dead one
// leaves the ring within a second or two and is sent nothing more.
//
// Losing a message loses hints, not correctness: a request whose prefix was missed is scored
// without it, as on a single replica that never saw that prefix. Under overload the queue drops
// its oldest hashes first (spillway_epp_affinity_dropped_blocks_total{reason="queue_full"}).
// docs/epp.md compares this with consistent hashing of prefixes to replicas and with
// independent replicas.
package affinity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/pkg/epp/prefix"
	"github.com/spillway-io/spillway/pkg/gossip"
)

// Index is what a Replicator needs of the prefix index: replicated adds for what it receives,
// a snapshot for a replica that joins. *prefix.Indexer implements it.
type Index interface {
	AddReplicated(endpoint string, hashes []uint64)
	Snapshot(maxBlocks int) []prefix.Held
}

// Options configure a Replicator. Zero values take the defaults named.
type Options struct {
	// Cluster is the cluster ID. The ring's memberlist label is "spillway-affinity/<cluster>":
	// members with another label (another cluster's replicas, the fleet's gossip) cannot join.
	Cluster string
	// Name is this replica's unique name in the ring; "<hostname>/<advertised address>" when empty.
	Name string
	// BindAddress is host:port of the ring (UDP and TCP); port 0 picks a free one.
	BindAddress string
	// AdvertiseAddress is host:port the other replicas reach; BindAddress when empty.
	AdvertiseAddress string
	// Peers are the other replicas: host:port each, or one DNS name (a headless Service) that
	// resolves to all of them. They are resolved again every RejoinInterval, and the addresses
	// not in the ring are joined.
	Peers []string
	// Key encrypts the ring (16, 24 or 32 bytes, AES); OldKeys decrypt too (a key rollout).
	Key     []byte
	OldKeys [][]byte
	// Insecure allows an empty Key: the ring in plaintext, with a warning at start. Anyone who
	// reaches the port can then read the prompts' block hashes and steer affinity.
	Insecure bool
	// Index is the local prefix index that received inserts go to.
	Index Index
	// Accept, when set, is asked about every endpoint a received insert names; an endpoint it
	// refuses is dropped (counted as unknown_endpoint), so that inserts for endpoints this
	// replica does not serve (gone, or not yet seen) cannot grow its index.
	Accept func(endpoint string) bool
	// FlushInterval is how long inserts are gathered, from the first one queued, before they are
	// sent; 5 ms when zero.
	FlushInterval time.Duration
	// QueueBlocks bounds the block hashes waiting to be sent; the oldest are dropped beyond it.
	// 65,536 when zero (1.5 MiB).
	QueueBlocks int
	// MaxMessageBytes bounds one message (a UDP packet, before memberlist's header and
	// encryption); 1,200 when zero, inside memberlist's 1,400-byte packets.
	MaxMessageBytes int
	// MaxMessagesPerFlush bounds the messages each replica is sent per flush, so a burst
	// cannot take the CPU; 64 when zero (about 9,600 hashes per flush).
	MaxMessagesPerFlush int
	// SnapshotBlocks bounds the index snapshot a joining replica receives; 262,144 when zero
	// (2 MiB). Negative: no snapshot.
	SnapshotBlocks int
	// RejoinInterval is how often Peers are resolved and joined; 2 s when zero.
	RejoinInterval time.Duration
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
}

// Validate names every problem.
func (o *Options) Validate() error {
	var errs []error
	if o.Cluster == "" {
		errs = append(errs, errors.New("a cluster ID is required"))
	}
	if o.Index == nil {
		errs = append(errs, errors.New("an index is required"))
	}
	if _, _, err := net.SplitHostPort(o.BindAddress); err != nil {
		errs = append(errs, fmt.Errorf("bind address %q: want host:port", o.BindAddress))
	}
	if o.AdvertiseAddress != "" {
		if _, _, err := net.SplitHostPort(o.AdvertiseAddress); err != nil {
			errs = append(errs, fmt.Errorf("advertise address %q: want host:port", o.AdvertiseAddress))
		}
	}
	for _, p := range o.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			errs = append(errs, fmt.Errorf("peer %q: want host:port", p))
		}
	}
	if len(o.Key) == 0 && !o.Insecure {
		errs = append(errs, errors.New("an encryption key is required (or Insecure, for plaintext)"))
	}
	return errors.Join(errs...)
}

func (o *Options) complete() {
	if o.FlushInterval <= 0 {
		o.FlushInterval = 5 * time.Millisecond
	}
	if o.QueueBlocks <= 0 {
		o.QueueBlocks = 1 << 16
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 1200
	}
	o.MaxMessageBytes = max(o.MaxMessageBytes, 64+maxEndpointLen)
	if o.MaxMessagesPerFlush <= 0 {
		o.MaxMessagesPerFlush = 64
	}
	if o.SnapshotBlocks == 0 {
		o.SnapshotBlocks = 1 << 18
	}
	if o.RejoinInterval <= 0 {
		o.RejoinInterval = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Replicator is this replica's member of the ring. It implements prefix.Observer: set it as
// the local index's observer once New returned.
type Replicator struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	ml      *memberlist.Memberlist
	queue   *queue
	// members counts the replicas alive in the ring, this one included: with no other, local
	// inserts are not queued.
	members atomic.Int32
	// wake tells the sender that the queue is no longer empty.
	wake chan struct{}

	recvMu sync.Mutex
	recv   []uint64          // decode buffer
	names  map[string]string // interned endpoint names of received inserts

	stopped atomic.Bool
}

// New binds the ring's port and starts the member; Run joins the peers and sends.
func New(o Options) (*Replicator, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("prefix-affinity replication: %w", err)
	}
	o.complete()
	r := &Replicator{opts: o, log: o.Logger.With("component", "affinity"), metrics: newMetrics(o.Registerer),
		queue: newQueue(o.QueueBlocks), wake: make(chan struct{}, 1), names: map[string]string{}}
	c := memberlist.DefaultLANConfig()
	var err error
	if c.BindAddr, c.BindPort, err = splitHostPort(o.BindAddress); err != nil {
		return nil, fmt.Errorf("replica ring bind address: %w", err)
	}
	c.AdvertisePort = c.BindPort
	if ip := net.ParseIP(c.BindAddr); ip == nil || !ip.IsUnspecified() {
		c.AdvertiseAddr = c.BindAddr // else memberlist advertises the host's private address
	}
	if o.AdvertiseAddress != "" {
		if c.AdvertiseAddr, c.AdvertisePort, err = splitHostPort(o.AdvertiseAddress); err != nil {
			return nil, fmt.Errorf("replica ring advertise address: %w", err)
		}
	}
	if o.Name == "" {
		host, _ := os.Hostname()
		adv := o.AdvertiseAddress
		if adv == "" {
			adv = o.BindAddress
		}
		o.Name = host + "/" + adv
		r.opts.Name = o.Name
	}
	c.Name = o.Name
	c.Label = "spillway-affinity/" + o.Cluster
	if len(o.Key) > 0 {
		if c.Keyring, err = memberlist.NewKeyring(o.OldKeys, o.Key); err != nil {
			return nil, fmt.Errorf("replica ring keys: %w", err)
		}
	} else {
		r.log.Warn("the EPP replica ring is not encrypted (--replica-insecure): anyone who reaches its port can read the prompts' block hashes and steer prefix affinity; give every replica --gossip-key-file",
			"address", o.BindAddress)
	}
	// The replicas share a network: a dead one leaves the ring within a second or two.
	gossip.LANTimings(c)
	c.PushPullInterval = 15 * time.Second
	// Block hashes do not compress: memberlist would try every message in vain.
	c.EnableCompression = false
	c.Delegate = delegate{r}
	c.Events = events{r}
	c.Logger = slog.NewLogLogger(r.log.Handler(), slog.LevelDebug)
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("replica ring: %w", err)
	}
	r.ml = ml
	return r, nil
}

// Address is host:port the ring is reached at (the advertised address, with the port bound).
func (r *Replicator) Address() string { return r.ml.LocalNode().Address() }

// Replicas returns the names of the replicas alive in the ring, this one included, sorted.
func (r *Replicator) Replicas() []string {
	var out []string
	for _, n := range r.ml.Members() {
		out = append(out, n.Name)
	}
	slices.Sort(out)
	return out
}

// Added implements prefix.Observer: it queues a local pick's hashes for the other replicas. It
// allocates nothing and takes one short lock.
func (r *Replicator) Added(endpoint string, hashes []uint64) {
	if r.members.Load() < 2 || endpoint == "" || len(endpoint) > maxEndpointLen {
		return
	}
	dropped, wasEmpty := r.queue.push(endpoint, hashes)
	if dropped > 0 {
		r.metrics.queueFull.Add(float64(dropped))
	}
	if wasEmpty {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// Run joins the peers (again whenever one is missing), sends queued inserts, and leaves the ring
// when ctx ends.
func (r *Replicator) Run(ctx context.Context) error {
	defer r.Close()
	var wg sync.WaitGroup
	wg.Go(func() { r.sendLoop(ctx) })
	defer wg.Wait()
	tick := time.NewTicker(r.opts.RejoinInterval)
	defer tick.Stop()
	for {
		r.rejoin(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Close leaves the ring (telling the others at once) and stops the member. Idempotent; Run
// closes on its way out.
func (r *Replicator) Close() {
	if r.stopped.CompareAndSwap(false, true) {
		_ = r.ml.Leave(time.Second)
		_ = r.ml.Shutdown()
	}
}

// flushBlocks is how many queued hashes one flush takes at most.
func (r *Replicator) flushBlocks() int {
	return r.opts.MaxMessagesPerFlush * (r.opts.MaxMessageBytes / 8)
}

// crash stops the member without leaving, as a killed process would; for tests.
func (r *Replicator) crash() {
	if r.stopped.CompareAndSwap(false, true) {
		_ = r.ml.Shutdown()
	}
}

// rejoin resolves the peers and joins those that are not members.
func (r *Replicator) rejoin(ctx context.Context) {
	if len(r.opts.Peers) == 0 {
		return
	}
	known := map[string]bool{r.Address(): true}
	for _, n := range r.ml.Members() {
		known[n.Address()] = true
	}
	var missing []string
	for _, p := range r.opts.Peers {
		host, port, _ := net.SplitHostPort(p)
		ips := []string{host}
		if net.ParseIP(host) == nil {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			addrs, err := net.DefaultResolver.LookupHost(rctx, host)
			cancel()
			if err != nil {
				r.log.Debug("replica peers not resolved, retrying", "peer", p, "err", err)
				continue
			}
			ips = addrs
		}
		for _, ip := range ips {
			if a := net.JoinHostPort(ip, port); !known[a] && !slices.Contains(missing, a) {
				missing = append(missing, a)
			}
		}
	}
	if len(missing) == 0 || ctx.Err() != nil {
		return
	}
	if n, err := r.ml.Join(missing); err != nil && n == 0 {
		r.log.Debug("replica ring join failed, retrying", "peers", missing, "err", err)
	} else {
		r.log.Info("replica ring joined", "contacted", n, "replicas", r.ml.NumMembers())
	}
}

// sendLoop waits for the queue to fill, gathers for FlushInterval, and sends; with more queued
// than one flush takes, it flushes again every FlushInterval until the queue is empty. An idle
// replica's sender sleeps.
func (r *Replicator) sendLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	buf := make([]record, r.flushBlocks())
	p := &packer{max: r.opts.MaxMessageBytes}
	var peers []memberlist.Address
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
		for {
			timer.Reset(r.opts.FlushInterval)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			n := r.queue.pop(buf)
			peers = r.peerAddresses(peers[:0])
			r.flush(buf[:n], p, peers)
			clear(buf[:n]) // drop the endpoint strings
			if n < len(buf) {
				break
			}
		}
	}
}

// flush sends records to peers in messages, at most MaxMessagesPerFlush to each.
func (r *Replicator) flush(recs []record, p *packer, peers []memberlist.Address) {
	if len(recs) == 0 || len(peers) == 0 {
		return
	}
	p.reset()
	msgs, i := 0, 0
	for i < len(recs) && msgs < r.opts.MaxMessagesPerFlush {
		if p.add(recs[i].endpoint, recs[i].hash) {
			i++
			continue
		}
		r.send(peers, p.msg)
		msgs++
		p.reset()
	}
	if !p.empty() && msgs < r.opts.MaxMessagesPerFlush {
		r.send(peers, p.msg)
	}
	r.metrics.sent.Add(float64(i))
	if i < len(recs) { // what did not fit in this flush's messages
		r.metrics.queueFull.Add(float64(len(recs) - i))
	}
}

func (r *Replicator) send(peers []memberlist.Address, msg []byte) {
	for _, a := range peers {
		if err := r.ml.SendToAddress(a, msg); err != nil {
			r.log.Debug("prefix-affinity message not sent", "replica", a.Name, "err", err)
			continue
		}
		r.metrics.messages.Inc()
	}
}

func (r *Replicator) peerAddresses(dst []memberlist.Address) []memberlist.Address {
	self := r.ml.LocalNode().Name
	for _, n := range r.ml.Members() {
		if n.Name != self {
			dst = append(dst, memberlist.Address{Addr: n.Address(), Name: n.Name})
		}
	}
	return dst
}

// apply adds a received message's inserts to the local index.
func (r *Replicator) apply(msg []byte, snapshot bool) {
	r.recvMu.Lock()
	defer r.recvMu.Unlock()
	err := decode(msg, &r.recv, func(g group) {
		ep, ok := r.names[string(g.endpoint)]
		if !ok {
			if len(r.names) >= 4096 { // bounded: endpoints come and go
				clear(r.names)
			}
			ep = string(g.endpoint)
			r.names[ep] = ep
		}
		if r.opts.Accept != nil && !r.opts.Accept(ep) {
			r.metrics.unknownEndpoint.Add(float64(len(g.hashes)))
			return
		}
		r.opts.Index.AddReplicated(ep, g.hashes)
		if snapshot {
			r.metrics.snapshot.Add(float64(len(g.hashes)))
		} else {
			r.metrics.received.Add(float64(len(g.hashes)))
		}
	})
	if err != nil {
		r.metrics.malformed.Inc()
		r.log.Debug("prefix-affinity message ignored", "err", err)
	}
}

// snapshot encodes the local index for a replica that joins, in one message.
func (r *Replicator) snapshot() []byte {
	if r.opts.SnapshotBlocks < 0 {
		return nil
	}
	p := &packer{max: math.MaxInt32} // bounded by SnapshotBlocks
	p.reset()
	for _, h := range r.opts.Index.Snapshot(r.opts.SnapshotBlocks) {
		if h.Endpoint == "" || len(h.Endpoint) > maxEndpointLen {
			continue
		}
		for _, x := range h.Hashes {
			p.add(h.Endpoint, x)
		}
	}
	if p.empty() {
		return nil
	}
	return p.msg
}

// delegate is the Replicator's memberlist.Delegate: user messages are inserts, the local state
// exchanged when a replica joins is the index snapshot.
type delegate struct{ r *Replicator }

func (delegate) NodeMeta(int) []byte             { return nil }
func (d delegate) NotifyMsg(b []byte)            { d.r.apply(b, false) }
func (delegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d delegate) LocalState(join bool) []byte {
	if !join {
		return nil
	}
	return d.r.snapshot()
}
func (d delegate) MergeRemoteState(b []byte, join bool) {
	if join && len(b) > 0 {
		d.r.apply(b, true)
	}
}

// events is the Replicator's memberlist.EventDelegate: the count of replicas.
type events struct{ r *Replicator }

// NotifyJoin is called for every member that becomes alive, this one first (during Create),
// and NotifyLeave for every member that dies or leaves.
func (e events) NotifyJoin(n *memberlist.Node) {
	e.r.metrics.replicas.Set(float64(e.r.members.Add(1)))
	e.r.log.Info("EPP replica joined the ring", "replica", n.Name, "address", n.Address())
}

func (e events) NotifyLeave(n *memberlist.Node) {
	e.r.metrics.replicas.Set(float64(e.r.members.Add(-1)))
	e.r.log.Info("EPP replica left the ring", "replica", n.Name)
}

func (events) NotifyUpdate(*memberlist.Node) {}

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

package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// Replica is one EPP replica the Balancer spreads ext_proc streams over.
type Replica struct {
	// Address names the replica in logs and counters.
	Address string
	// Conn is the replica's client connection; the Balancer watches its state.
	Conn *grpc.ClientConn
}

// Balancer is an ext_proc client over several EPP replicas, as Envoy's ext_proc cluster with
// several hosts is: each stream (one per HTTP request) goes to the next replica round-robin,
// skipping a replica whose connection is down. A replica is down from the moment its
// connection leaves READY (the connection broke) or fails to connect (TRANSIENT_FAILURE) until
// it is READY again, which is what Envoy's health checks and outlier detection conclude, only
// sooner. When every replica is down the streams go round-robin over all of them (Envoy's
// panic routing). A stream that fails is not retried on another replica: Envoy does not retry
// an ext_proc stream, and with failure_mode_allow=false the request fails.
type Balancer struct {
	replicas []*replica
	next     atomic.Uint64
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

type replica struct {
	Replica
	client   extprocv3.ExternalProcessorClient
	up       atomic.Bool
	inFlight atomic.Int64
	streams  atomic.Int64
}

// NewBalancer watches the replicas' connections until Close. It does not close them.
func NewBalancer(replicas []Replica) (*Balancer, error) {
	if len(replicas) == 0 {
		return nil, errors.New("no EPP replica")
	}
	ctx, stop := context.WithCancel(context.Background())
	b := &Balancer{stop: stop}
	for _, r := range replicas {
		if r.Conn == nil {
			stop()
			return nil, fmt.Errorf("EPP replica %q: no connection", r.Address)
		}
		rp := &replica{Replica: r, client: extprocv3.NewExternalProcessorClient(r.Conn)}
		rp.up.Store(true) // not known to be down until its connection says so
		b.replicas = append(b.replicas, rp)
		b.wg.Add(1)
		go func() { defer b.wg.Done(); rp.watch(ctx) }()
	}
	return b, nil
}

// watch follows the replica's connection state, keeping it connected (an idle connection is
// asked to connect, as health checks keep Envoy's connections open).
func (r *replica) watch(ctx context.Context) {
	state := r.Conn.GetState()
	for {
		switch state {
		case connectivity.Ready:
			r.up.Store(true)
		case connectivity.Idle:
			r.up.Store(false)
			r.Conn.Connect()
		case connectivity.TransientFailure, connectivity.Shutdown:
			r.up.Store(false)
		case connectivity.Connecting:
			// unchanged: up on the first connection, down while reconnecting after a loss
		}
		if state == connectivity.Shutdown || !r.Conn.WaitForStateChange(ctx, state) {
			return
		}
		state = r.Conn.GetState()
	}
}

// Process opens an ext_proc stream on the next replica that is up.
func (b *Balancer) Process(ctx context.Context, opts ...grpc.CallOption) (extprocv3.ExternalProcessor_ProcessClient, error) {
	r := b.pick()
	stream, err := r.client.Process(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("EPP replica %s: %w", r.Address, err)
	}
	r.streams.Add(1)
	r.inFlight.Add(1)
	// The stream lives until its context ends: Call.Close cancels it.
	context.AfterFunc(ctx, func() { r.inFlight.Add(-1) })
	return stream, nil
}

func (b *Balancer) pick() *replica {
	n := uint64(len(b.replicas))
	var first *replica
	for range n {
		r := b.replicas[(b.next.Add(1)-1)%n]
		if r.up.Load() {
			return r
		}
		if first == nil {
			first = r
		}
	}
	return first // every replica is down: panic routing
}

// ReplicaStats are one replica's figures.
type ReplicaStats struct {
	Address string
	Up      bool
	// Streams is the number of ext_proc streams opened on the replica; InFlight the ones not
	// closed yet.
	Streams, InFlight int64
}

// Stats returns every replica's figures, in the order given to NewBalancer.
func (b *Balancer) Stats() []ReplicaStats {
	out := make([]ReplicaStats, len(b.replicas))
	for i, r := range b.replicas {
		out[i] = ReplicaStats{Address: r.Address, Up: r.up.Load(), Streams: r.streams.Load(), InFlight: r.inFlight.Load()}
	}
	return out
}

// Close stops watching the connections.
func (b *Balancer) Close() {
	b.stop()
	b.wg.Wait()
}

// SplitAddresses returns the EPP addresses of repeated and comma-separated flag values, in
// order, without duplicates.
func SplitAddresses(values []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, v := range values {
		for _, a := range strings.Split(v, ",") {
			a = strings.TrimSpace(a)
			if a == "" {
				continue
			}
			if seen[a] {
				return nil, fmt.Errorf("EPP address %q given twice", a)
			}
			seen[a] = true
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no EPP address")
	}
	return out, nil
}

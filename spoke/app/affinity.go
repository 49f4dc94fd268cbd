package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/spillway-io/spillway/pkg/affinity"
	"github.com/spillway-io/spillway/pkg/gossip"
)

// AffinityOptions share the EPP's prefix-affinity index with the cluster's other spoke replicas,
// so that a prompt's prefix finds its endpoint whichever replica the gateway picked (pkg/affinity,
// docs/epp.md). The replicas form a memberlist ring of their own, encrypted with the fleet's
// gossip key (--gossip-key-file).
type AffinityOptions struct {
	// Address is host:port of the replica ring, UDP and TCP; empty: no sharing.
	Address string
	// Advertise is host:port the other replicas reach this one at; Address when empty (with an
	// unspecified host, the host's private address).
	Advertise string
	// Peers are the other replicas: host:port each, or the DNS name and port of a headless
	// Service selecting them all, resolved again every 2 s.
	Peers []string
	// Insecure allows the ring in plaintext when there is no --gossip-key-file.
	Insecure bool
}

// AddFlags binds the options to flags.
func (o *AffinityOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Address, "replica-address", o.Address, "host:port of the ring the cluster's spoke replicas share prefix affinity on, UDP and TCP (empty: this replica's EPP keeps its own)")
	fs.StringVar(&o.Advertise, "replica-advertise-address", o.Advertise, "host:port the other replicas reach this one at (default: --replica-address, or the host's private address when its host is unspecified)")
	fs.StringSliceVar(&o.Peers, "replica-peers", o.Peers, "the cluster's other spoke replicas: host:port list, or the DNS name:port of a headless Service selecting them (resolved again every 2 s)")
	fs.BoolVar(&o.Insecure, "replica-insecure", o.Insecure, "allow the replica ring without --gossip-key-file, in plaintext: anyone who reaches the port can read the prompts' block hashes and steer affinity (not for production; logs a warning)")
}

// Validate checks the options.
func (o *AffinityOptions) Validate() error {
	if o.Address == "" {
		if o.Advertise != "" || len(o.Peers) > 0 {
			return errors.New("--replica-advertise-address and --replica-peers need --replica-address")
		}
		return nil
	}
	var errs []error
	for name, a := range map[string]string{"--replica-address": o.Address, "--replica-advertise-address": o.Advertise} {
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", name, a))
		}
	}
	for _, p := range o.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			errs = append(errs, fmt.Errorf("--replica-peers %q: want host:port (or a Service's DNS name:port)", p))
		}
	}
	return errors.Join(errs...)
}

// buildAffinity checks the replication of the EPP's prefix-affinity index, when configured. The
// replicator itself is made by runAffinity, inside the run group that owns its goroutines, so
// nothing of it outlives a spoke that fails to start.
func (s *spoke) buildAffinity() error {
	o, on, err := s.affinityOptions()
	if !on || err != nil {
		return err
	}
	return o.Validate()
}

// affinityOptions are the replicator's options; on is false without --replica-address.
func (s *spoke) affinityOptions() (o affinity.Options, on bool, err error) {
	a := s.cfg.Affinity
	if a.Address == "" {
		return o, false, nil
	}
	if s.primary == nil {
		return o, true, errors.New("--replica-address needs --epp-address: the ring shares the EPP's prefix affinity")
	}
	var key []byte
	var old [][]byte
	switch {
	case s.cfg.Gossip.KeyFile != "":
		if key, old, err = gossip.ReadKey(s.cfg.Gossip.KeyFile); err != nil {
			return o, true, fmt.Errorf("--replica-address encrypts with --gossip-key-file: %w", err)
		}
	case !a.Insecure:
		return o, true, errors.New("--replica-address needs --gossip-key-file (the replica ring is encrypted with the fleet's gossip key), or --replica-insecure for plaintext")
	}
	return affinity.Options{
		Cluster: s.cfg.ClusterID, BindAddress: a.Address, AdvertiseAddress: a.Advertise, Peers: a.Peers,
		Key: key, OldKeys: old, Insecure: a.Insecure, Index: s.primary.picker.Scheduler().Prefix(), Accept: s.servesEndpoint,
		Logger: s.log, Registerer: s.reg,
	}, true, nil
}

// affinityStartWait bounds how long the replica waits for its pools before it joins the ring.
const affinityStartWait = 30 * time.Second

// runAffinity adds the replication to the spoke's run group: it binds the ring's port, makes
// the replicator observe the EPP's index and, once the spoke knows its pools' endpoints (or
// after affinityStartWait), joins the ring, so that the index snapshot it receives on joining
// is not refused as naming endpoints it does not serve.
func (s *spoke) runAffinity(ctx context.Context, g *errgroup.Group) {
	o, on, err := s.affinityOptions()
	if !on {
		return
	}
	g.Go(func() error {
		if err != nil {
			return err
		}
		r, err := affinity.New(o)
		if err != nil {
			return err
		}
		ix := s.primary.picker.Scheduler().Prefix()
		ix.SetObserver(r)
		defer ix.SetObserver(nil)
		wait, cancel := context.WithTimeout(ctx, affinityStartWait)
		tick := time.NewTicker(50 * time.Millisecond)
		for !s.knowsEndpoints() && wait.Err() == nil {
			select {
			case <-wait.Done():
			case <-tick.C:
			}
		}
		tick.Stop()
		cancel()
		return r.Run(ctx)
	})
}

// servesEndpoint reports whether an endpoint is in one of the spoke's pools: the replica
// applies other replicas' inserts only for those.
func (s *spoke) servesEndpoint(addr string) bool {
	s.ds.mu.RLock()
	defer s.ds.mu.RUnlock()
	_, ok := s.ds.since[addr]
	return ok
}

// knowsEndpoints reports whether the spoke's pools have an endpoint yet.
func (s *spoke) knowsEndpoints() bool {
	s.ds.mu.RLock()
	defer s.ds.mu.RUnlock()
	return len(s.ds.since) > 0
}

package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
)

// Flags are the gossip settings the hub and the spoke share on their command lines.
type Flags struct {
	Address   string
	Advertise string
	Join      []string
	KeyFile   string
	// Insecure allows gossip without a key: plaintext, with a warning at start.
	Insecure bool
}

// AddFlags binds the flags.
func (f *Flags) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.Address, "gossip-address", f.Address, "host:port for liveness gossip, UDP and TCP (empty: no gossip)")
	fs.StringVar(&f.Advertise, "gossip-advertise-address", f.Advertise, "host:port other members reach this one at (default: --gossip-address)")
	fs.StringSliceVar(&f.Join, "gossip-join", f.Join, "gossip members to join, host:port (the hubs' gossip addresses)")
	fs.StringVar(&f.KeyFile, "gossip-key-file", f.KeyFile, "file of base64 gossip encryption keys (16, 24 or 32 bytes), one per line, shared by the fleet: the first encrypts, the others only decrypt (to roll out a new key)")
	fs.BoolVar(&f.Insecure, "gossip-insecure", f.Insecure, "allow gossip without --gossip-key-file, in plaintext: anyone who reaches the port can read and forge liveness (not for production; logs a warning)")
}

// Validate names every problem.
func (f *Flags) Validate() error {
	if f.Address == "" {
		return nil
	}
	var errs []error
	for name, a := range map[string]string{"--gossip-address": f.Address, "--gossip-advertise-address": f.Advertise} {
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", name, a))
		}
	}
	if f.KeyFile == "" && !f.Insecure {
		errs = append(errs, errors.New("--gossip-key-file is required with --gossip-address (gossip is encrypted unless --gossip-insecure is given, which is not for production)"))
	}
	return errors.Join(errs...)
}

// Start starts a member named name, its metrics in reg (nil: none), or returns nil when gossip
// is off.
func (f *Flags) Start(name string, log *slog.Logger, reg prometheus.Registerer) (*Member, error) {
	if f.Address == "" {
		return nil, nil
	}
	var key []byte
	var old [][]byte
	if f.KeyFile != "" {
		var err error
		if key, old, err = ReadKey(f.KeyFile); err != nil {
			return nil, err
		}
	}
	return Start(Options{Name: name, BindAddress: f.Address, AdvertiseAddress: f.Advertise, Join: f.Join, Key: key, OldKeys: old,
		Insecure: f.Insecure, Logger: log, Registerer: reg})
}

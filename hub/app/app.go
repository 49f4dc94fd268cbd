// Package app wires the hub binary: flags (Options), their defaults and checks (Complete,
// Validate), and the run group that owns every goroutine: etcd (embedded or external), the fleet
// view that follows the registry, the gRPC services and the HTTP endpoints for metrics and health.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	hubetcd "github.com/spillway-io/spillway/hub/etcd"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/gossip"
	"github.com/spillway-io/spillway/pkg/logging"
	"github.com/spillway-io/spillway/pkg/serve"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Options are what the operator sets on the command line.
type Options struct {
	GRPCAddress       string
	HTTPAddress       string
	EtcdEndpoints     []string
	DataDir           string
	EmbeddedEtcdAddr  string
	EtcdPrefix        string
	HubID             string
	LeaseTTL          time.Duration
	MinReportInterval time.Duration
	CapacityHeartbeat time.Duration
	ViewInterval      time.Duration
	Gossip            gossip.Flags
	Log               logging.Options
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		GRPCAddress:       ":8470",
		HTTPAddress:       ":8471",
		DataDir:           "hub-data",
		EmbeddedEtcdAddr:  "127.0.0.1:0",
		EtcdPrefix:        registry.DefaultPrefix,
		LeaseTTL:          15 * time.Second,
		MinReportInterval: 500 * time.Millisecond,
		CapacityHeartbeat: time.Second,
		ViewInterval:      200 * time.Millisecond,
		Log:               logging.Options{Level: "info", Format: "text"},
	}
}

// AddFlags binds the options to flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.GRPCAddress, "grpc-address", o.GRPCAddress, "host:port of the gRPC services (spoke sync, admin)")
	fs.StringVar(&o.HTTPAddress, "http-address", o.HTTPAddress, "host:port of /metrics, /healthz and /readyz")
	fs.StringSliceVar(&o.EtcdEndpoints, "etcd-endpoints", o.EtcdEndpoints, "external etcd client URLs; empty starts an embedded etcd in --data-dir")
	fs.StringVar(&o.DataDir, "data-dir", o.DataDir, "directory of the embedded etcd's data")
	fs.StringVar(&o.EmbeddedEtcdAddr, "embedded-etcd-address", o.EmbeddedEtcdAddr, "host:port the embedded etcd serves clients on (port 0 picks one)")
	fs.StringVar(&o.EtcdPrefix, "etcd-prefix", o.EtcdPrefix, "key prefix of the fleet registry in etcd")
	o.Gossip.AddFlags(fs)
	fs.StringVar(&o.HubID, "hub-id", o.HubID, "name of this hub replica (default: the host name)")
	fs.DurationVar(&o.LeaseTTL, "lease-ttl", o.LeaseTTL, "how long a cluster's exports outlive its spoke's session (at least 2s)")
	fs.DurationVar(&o.MinReportInterval, "min-report-interval", o.MinReportInterval, "fastest a spoke may report a pool's capacity")
	fs.DurationVar(&o.CapacityHeartbeat, "capacity-heartbeat", o.CapacityHeartbeat, "how often a spoke resends unchanged capacity")
	fs.DurationVar(&o.ViewInterval, "view-interval", o.ViewInterval, "fastest the hub sends fleet view updates on one stream")
	fs.StringVar(&o.Log.Level, "log-level", o.Log.Level, "debug, info, warn or error")
	fs.StringVar(&o.Log.Format, "log-format", o.Log.Format, "text or json")
}

// Complete fills in derived defaults.
func (o *Options) Complete() error {
	if o.HubID == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("--hub-id not set and no host name: %w", err)
		}
		o.HubID = h
	}
	if !strings.HasSuffix(o.EtcdPrefix, "/") {
		o.EtcdPrefix += "/"
	}
	return nil
}

// Validate checks the options and names every problem.
func (o *Options) Validate() error {
	var errs []error
	for name, addr := range map[string]string{"--grpc-address": o.GRPCAddress, "--http-address": o.HTTPAddress} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", name, addr))
		}
	}
	if len(o.EtcdEndpoints) == 0 && o.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must be set when --etcd-endpoints is empty"))
	}
	if o.LeaseTTL < 2*time.Second {
		errs = append(errs, fmt.Errorf("--lease-ttl %s: at least 2s (etcd's minimum lease)", o.LeaseTTL))
	}
	if o.MinReportInterval <= 0 || o.CapacityHeartbeat < o.MinReportInterval {
		errs = append(errs, fmt.Errorf("--min-report-interval %s and --capacity-heartbeat %s: want 0 < interval <= heartbeat", o.MinReportInterval, o.CapacityHeartbeat))
	}
	if o.ViewInterval < 0 {
		errs = append(errs, fmt.Errorf("--view-interval %s: must not be negative", o.ViewInterval))
	}
	errs = append(errs, o.Log.Validate(), o.Gossip.Validate())
	return errors.Join(errs...)
}

// Config is the completed, validated configuration.
type Config struct {
	Options
	Logger *slog.Logger
}

// Config returns the configuration the hub runs with.
func (o *Options) Config() (*Config, error) {
	if err := o.Complete(); err != nil {
		return nil, err
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	log, err := logging.New(o.Log, os.Stderr)
	if err != nil {
		return nil, err
	}
	return &Config{Options: *o, Logger: log.With("hub", o.HubID)}, nil
}

// NewCommand returns the hub's root command.
func NewCommand() *cobra.Command {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:          "hub",
		Short:        "Spillway hub: the fleet registry, import computation and fleet view for every spoke",
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.Config()
			if err != nil {
				return err
			}
			return Run(cmd.Context(), cfg)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// Run runs the hub until ctx ends or a component fails.
func Run(ctx context.Context, cfg *Config) error {
	log := cfg.Logger
	endpoints := cfg.EtcdEndpoints
	var etcdErr <-chan error // a fatal error of the embedded etcd; nil (never ready) for an external one
	var etcdTLS *tls.Config
	if len(endpoints) == 0 {
		emb, err := hubetcd.StartEmbedded(ctx, hubetcd.EmbeddedOptions{Dir: cfg.DataDir, ListenAddress: cfg.EmbeddedEtcdAddr})
		if err != nil {
			return err
		}
		defer emb.Close()
		endpoints, etcdTLS = []string{emb.Endpoint}, emb.ClientTLS
		etcdErr = emb.Err()
		log.Info("embedded etcd started", "dataDir", cfg.DataDir, "endpoint", emb.Endpoint)
	}
	cli, err := hubetcd.Dial(endpoints, etcdTLS)
	if err != nil {
		return err
	}
	defer cli.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	store := registry.New(cli, registry.Options{Prefix: cfg.EtcdPrefix, LeaseTTL: cfg.LeaseTTL})
	model := view.New()
	srv := server.New(store, model, server.Options{
		HubID:             cfg.HubID,
		MinReportInterval: cfg.MinReportInterval,
		CapacityHeartbeat: cfg.CapacityHeartbeat,
		ViewInterval:      cfg.ViewInterval,
		Logger:            log,
		Registerer:        reg,
	})

	grpcL, err := net.Listen("tcp", cfg.GRPCAddress)
	if err != nil {
		return fmt.Errorf("listen --grpc-address: %w", err)
	}
	httpL, err := net.Listen("tcp", cfg.HTTPAddress)
	if err != nil {
		grpcL.Close()
		return fmt.Errorf("listen --http-address: %w", err)
	}
	gs := grpc.NewServer(append(server.GRPCOptions(), srv.Interceptors()...)...)
	pb.RegisterSyncServiceServer(gs, srv)
	pb.RegisterAdminServiceServer(gs, srv)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)

	ready := func() error {
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := cli.Get(c, "health", clientv3.WithCountOnly()); err != nil {
			return fmt.Errorf("etcd unreachable: %w", err)
		}
		return nil
	}

	member, err := cfg.Gossip.Start("hub/"+cfg.HubID, log)
	if err != nil {
		grpcL.Close()
		httpL.Close()
		return err
	}
	if member != nil {
		defer member.Close()
	}
	log.Info("hub started", "grpc", grpcL.Addr().String(), "http", httpL.Addr().String(), "gossip", cfg.Gossip.Address)
	g, gctx := errgroup.WithContext(ctx)
	if member != nil {
		g.Go(func() error { return member.Run(gctx) })
	}
	g.Go(func() error { return model.Follow(gctx, store, log.With("component", "view")) })
	g.Go(func() error { return serve.GRPC(gctx, grpcL, gs) })
	g.Go(func() error { return serve.HTTP(gctx, httpL, serve.HTTPMux(reg, ready)) })
	g.Go(func() error {
		select {
		case <-gctx.Done():
		case err := <-etcdErr:
			hs.Shutdown()
			return fmt.Errorf("embedded etcd: %w", err)
		}
		hs.Shutdown()
		return nil
	})
	err = g.Wait()
	log.Info("hub stopped")
	return err
}

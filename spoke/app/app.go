// Package app wires the spoke binary: flags (Options), their defaults and checks (Complete,
// Validate), the configuration they produce (Config), and Run, whose run group owns every
// goroutine: the pool source, the metrics scraper, the hub client, the capacity report loop
// (spoke/report), the RTT prober (spoke/rttprobe), gossip, the Endpoint Picker's gRPC service
// and the HTTP endpoints (with /spill, spoke/spillstatus). It holds wiring only.
package app

import (
	"context"

	"github.com/spf13/cobra"
)

// Version is the spoke's version, reported to the hub.
var Version = "dev"

// NewCommand returns the spoke's root command.
func NewCommand() *cobra.Command {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:          "spoke",
		Short:        "Spillway spoke: exports this cluster's pools to the hub and keeps its fleet view",
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

// Run runs the spoke until ctx ends or a component fails. With the Kubernetes source it first
// reads the cluster's identity from its ClusterProperty objects.
func Run(ctx context.Context, cfg *Config) error {
	cfg, err := identify(ctx, cfg)
	if err != nil {
		return err
	}
	s, err := build(cfg)
	defer s.close()
	if err != nil {
		return err
	}
	httpL, eppL, err := s.listen()
	if err != nil {
		return err
	}
	s.log.Info("spoke started", "region", cfg.Region, "hub", cfg.HubAddress, "http", httpL.Addr().String(), "epp", cfg.EPPAddress, "eppPool", cfg.EPPPoolRef.String())
	err = s.run(ctx, httpL, eppL)
	s.log.Info("spoke stopped")
	return err
}

// Package app wires the spoke binary: flags (Options), their defaults and checks (Complete,
// Validate), the configuration they produce (Config), and Run, whose run group owns every
// goroutine: the pool source, the metrics scraper, the hub client, the capacity report loop
// (spoke/report), the RTT prober (spoke/rttprobe), gossip, the Endpoint Picker's gRPC service
// and the HTTP endpoints (with /spill, spoke/spillstatus), the reloading TLS files and the
// renewer of a joined certificate (spoke/join). It holds wiring only.
//
// Transport security (docs/security.md): the hub session is mTLS with the cluster's
// certificate from --credentials-dir, which the join flow writes when it is empty and
// --join-token (or --join-token-file) is given; the EPP's ext_proc and the HTTP endpoints serve TLS with
// --epp-cert-dir's certificate, or a self-signed one made at start, unless
// --epp-secure-serving=false or --insecure-http say otherwise, each with a warning.
package app

import (
	"context"
	"errors"

	"github.com/spf13/cobra"

	"github.com/spillway-io/spillway/pkg/buildinfo"
	"github.com/spillway-io/spillway/pkg/cli"
)

// Version is the spoke's build in a word, reported to the hub (buildinfo.Info.Short).
var Version = buildinfo.Get().Short()

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
	cmd.AddCommand(cli.VersionCommand())
	return cmd
}

// Run runs the spoke until ctx ends or a component fails. With the Kubernetes source it first
// reads the cluster's identity from its ClusterProperty objects; with a hub and no cluster
// certificate yet, it joins the fleet with --join-token or --join-token-file (spoke/join) before
// anything starts.
func Run(ctx context.Context, cfg *Config) error {
	cfg, err := identify(ctx, cfg)
	if err != nil {
		return err
	}
	if err := joinFleet(ctx, cfg); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil // stopped while waiting for approval: a clean stop, not a failure
		}
		return err
	}
	s, err := build(cfg)
	defer s.close()
	if err != nil {
		return err
	}
	ls, err := s.listen()
	if err != nil {
		return err
	}
	eppAddr, healthAddr := cfg.EPPAddress, ""
	if ls.epp != nil {
		eppAddr = ls.epp.Addr().String()
	}
	if ls.health != nil {
		healthAddr = ls.health.Addr().String()
	}
	s.log.Info("spoke started", "region", cfg.Region, "hub", cfg.HubAddress, "http", ls.http.Addr().String(), "httpTLS", !cfg.Trust.InsecureHTTP,
		"epp", eppAddr, "eppTLS", cfg.Trust.EPPSecureServing, "eppPool", cfg.EPPPoolRef.String(), "health", healthAddr)
	err = s.run(ctx, ls)
	s.log.Info("spoke stopped")
	return err
}

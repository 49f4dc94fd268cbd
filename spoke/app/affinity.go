package app

import (
	"context"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
)

// AffinityOptions share the EPP's prefix-affinity index with the cluster's other spoke replicas,
// so that a prompt's prefix finds its endpoint whichever replica the gateway picked.
type AffinityOptions struct{}

// AddFlags binds the options to flags.
func (o *AffinityOptions) AddFlags(*pflag.FlagSet) {}

// Validate checks the options.
func (o *AffinityOptions) Validate() error { return nil }

// buildAffinity builds the replication of the EPP's prefix-affinity index, when configured.
func (s *spoke) buildAffinity() error { return nil }

// runAffinity adds the replication's goroutines to the spoke's run group.
func (s *spoke) runAffinity(context.Context, *errgroup.Group) {}

package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/logging"
	"github.com/spillway-io/spillway/spoke/kube"
	"github.com/spillway-io/spillway/spoke/source"
)

// identityTimeout bounds the read of the cluster's ClusterProperty objects.
const identityTimeout = 30 * time.Second

// Config is the completed, validated configuration. With the Kubernetes source the cluster's
// identity is settled by Run, which reads the cluster's ClusterProperty objects.
type Config struct {
	Options
	// Logger is the spoke's logger; Run adds the cluster attribute.
	Logger *slog.Logger
	// Source is the static file source; nil with the Kubernetes source, which Run builds on
	// KubeConfig because it needs the hub client.
	Source     source.Source
	KubeConfig *rest.Config
	// EPP is the Endpoint Picker's configuration; nil when --epp-address is empty.
	EPP *epp.Settings
	// EPPPoolRef is the pool the EPP serves; zero with --epp-service (every pool naming it).
	EPPPoolRef fleet.PoolRef
}

// Config returns the configuration the spoke runs with. It reads the files the options name
// (the pools file, the EPP configuration, the kubeconfig) and nothing else.
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
	cfg := &Config{Options: *o, Logger: log}
	var pools []source.Pool
	if o.PoolsFile != "" {
		src, err := source.NewStatic(o.PoolsFile, o.PoolsReload, log.With("component", "static-source", "cluster", o.ClusterID))
		if err != nil {
			return nil, err
		}
		cfg.Source, pools = src, src.Pools()
	} else if cfg.KubeConfig, err = kube.RESTConfig(o.Kubeconfig); err != nil {
		return nil, err
	}
	if o.EPPAddress == "" {
		return cfg, nil
	}
	settings, err := readEPPConfig(o.EPPConfig)
	if err == nil {
		err = o.readGIEConfig(&settings)
	}
	if err == nil {
		err = cfg.completeEPP(settings, pools)
	}
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// readEPPConfig reads the EPP's configuration file; no file means the defaults.
func readEPPConfig(path string) (epp.Settings, error) {
	if path == "" {
		return epp.DefaultSettings(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return epp.Settings{}, fmt.Errorf("--epp-config: %w", err)
	}
	settings, err := epp.ParseConfig(data)
	if err != nil {
		return epp.Settings{}, fmt.Errorf("--epp-config %s: %w", path, err)
	}
	return settings, nil
}

// readGIEConfig takes the scorer weights of GIE's EndpointPickerConfig (--config-file or
// --config-text, GIE's EPP flags) into settings; --epp-config may not set them too.
func (o *Options) readGIEConfig(settings *epp.Settings) error {
	flag, data := "--config-text", []byte(o.GIEConfigText)
	if o.GIEConfigFile != "" {
		flag = "--config-file " + o.GIEConfigFile
		var err error
		if data, err = os.ReadFile(o.GIEConfigFile); err != nil {
			return fmt.Errorf("--config-file: %w", err)
		}
	} else if o.GIEConfigText == "" {
		return nil
	}
	if settings.WeightsSet {
		return fmt.Errorf("%s and --epp-config both set the scorers: keep one", flag)
	}
	w, err := epp.ParseGIEConfig(data)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	settings.Weights, settings.WeightsSet = w, true
	return nil
}

// completeEPP settles the EPP's configuration: one saturation definition for admission and
// capacity reports (the EPP configuration's when it sets one, else the flags'), and the pool the
// EPP serves (--epp-pool, else the source's first pool).
func (c *Config) completeEPP(settings epp.Settings, pools []source.Pool) error {
	if settings.ThresholdsSet {
		c.Thresholds = settings.Thresholds
	} else {
		settings.Thresholds = c.Thresholds
	}
	c.EPP = &settings
	if c.EPPService != "" {
		return nil // the pools naming the Service, as they come
	}
	if ns, name, ok := strings.Cut(c.EPPPool, "/"); ok {
		c.EPPPoolRef = fleet.PoolRef{Namespace: ns, Name: name}
	} else if len(pools) > 0 {
		c.EPPPoolRef = pools[0].Ref
	} else {
		return errors.New("--epp-pool is not set and the source has no pool")
	}
	return nil
}

// identify returns a copy of cfg with the cluster's identity settled. With the Kubernetes
// source, the ClusterProperty objects of KEP-2149 name the cluster and its ClusterSet.
func identify(ctx context.Context, cfg *Config) (*Config, error) {
	c := *cfg
	if c.KubeConfig == nil {
		return &c, nil
	}
	ctx, cancel := context.WithTimeout(ctx, identityTimeout)
	defer cancel()
	id, err := kube.ReadIdentity(ctx, c.KubeConfig)
	if err != nil {
		return nil, err
	}
	if err := c.adopt(id); err != nil {
		return nil, err
	}
	return &c, nil
}

// adopt takes the cluster ID and ClusterSet of the cluster's ClusterProperty objects: the flags
// are the fallback and must agree with them.
func (o *Options) adopt(id kube.Identity) error {
	for _, f := range []struct {
		flag, property string
		value          *string
		found          string
	}{
		{"--cluster-id", kube.PropertyClusterID, &o.ClusterID, id.ClusterID},
		{"--cluster-set", kube.PropertyClusterSet, &o.ClusterSet, id.ClusterSet},
	} {
		switch {
		case f.found == "":
		case *f.value == "":
			*f.value = f.found
		case *f.value != f.found:
			return fmt.Errorf("%s %q disagrees with the ClusterProperty %s (%q)", f.flag, *f.value, f.property, f.found)
		}
	}
	if o.ClusterID == "" {
		return fmt.Errorf("no cluster ID: create the ClusterProperty %s or set --cluster-id", kube.PropertyClusterID)
	}
	return nil
}

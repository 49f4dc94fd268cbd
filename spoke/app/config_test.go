package app

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/spillway-io/spillway/pkg/capacity"
	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/spoke/kube"
	"github.com/spillway-io/spillway/spoke/source"
)

func TestCompleteTurnsSpillOffWithoutHubOrEPP(t *testing.T) {
	for _, tc := range []struct {
		name      string
		hub, epp  string
		spill     bool
		wantSpill bool
	}{
		{"hub and EPP", "hub:8470", ":9002", true, true},
		{"spill off by flag", "hub:8470", ":9002", false, false},
		{"standalone", "", ":9002", true, false},
		{"no EPP", "hub:8470", "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOptions()
			o.HubAddress, o.EPPAddress, o.Spill = tc.hub, tc.epp, tc.spill
			if err := o.Complete(); err != nil {
				t.Fatal(err)
			}
			if o.Spill != tc.wantSpill {
				t.Errorf("Spill = %v, want %v", o.Spill, tc.wantSpill)
			}
		})
	}
}

func TestCompleteEPP(t *testing.T) {
	flagThresholds := capacity.Thresholds{QueueDepth: 7, KVCacheUtilization: 0.5, Staleness: time.Second}
	fileThresholds := capacity.Thresholds{QueueDepth: 3, KVCacheUtilization: 0.9, Staleness: 300 * time.Millisecond}
	chat, batch := fleet.PoolRef{Namespace: "default", Name: "chat"}, fleet.PoolRef{Namespace: "batch", Name: "summarise"}
	for _, tc := range []struct {
		name           string
		eppPool        string
		thresholdsSet  bool
		pools          []source.Pool
		wantPool       fleet.PoolRef
		wantThresholds capacity.Thresholds
		wantErr        string
	}{{
		name: "flags' thresholds and the first pool", pools: []source.Pool{{Ref: batch}, {Ref: chat}},
		wantPool: batch, wantThresholds: flagThresholds,
	}, {
		name: "the EPP configuration's thresholds win", thresholdsSet: true, pools: []source.Pool{{Ref: chat}},
		wantPool: chat, wantThresholds: fileThresholds,
	}, {
		name: "--epp-pool names an imported pool", eppPool: "inference/imported", pools: []source.Pool{{Ref: chat}},
		wantPool: fleet.PoolRef{Namespace: "inference", Name: "imported"}, wantThresholds: flagThresholds,
	}, {
		name: "--epp-pool with the Kubernetes source (no pools yet)", eppPool: "default/chat",
		wantPool: chat, wantThresholds: flagThresholds,
	}, {
		name: "no pool to serve", wantErr: "--epp-pool is not set and the source has no pool",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{Options: *NewOptions()}
			c.Thresholds, c.EPPPool = flagThresholds, tc.eppPool
			settings := epp.DefaultSettings()
			if tc.thresholdsSet {
				settings.Thresholds, settings.ThresholdsSet = fileThresholds, true
			}
			err := c.completeEPP(settings, tc.pools)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("completeEPP() = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.EPPPoolRef != tc.wantPool {
				t.Errorf("EPP pool %s, want %s", c.EPPPoolRef, tc.wantPool)
			}
			// One saturation definition for admission and capacity reports.
			if c.Thresholds != tc.wantThresholds || c.EPP.Thresholds != tc.wantThresholds {
				t.Errorf("thresholds: reports %+v, EPP %+v; want both %+v", c.Thresholds, c.EPP.Thresholds, tc.wantThresholds)
			}
		})
	}
}

func TestReadEPPConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	valid := write("epp.yaml", "fallbacks: 1\nsaturation:\n  queueDepth: 3\n")
	invalid := write("bad.yaml", "fallbacks: 99\n")
	for _, tc := range []struct {
		name          string
		path          string
		wantFallbacks int
		wantErr       string
	}{
		{name: "no file: the defaults", wantFallbacks: epp.DefaultSettings().Fallbacks},
		{name: "a file", path: valid, wantFallbacks: 1},
		{name: "missing file", path: filepath.Join(dir, "missing.yaml"), wantErr: "--epp-config: "},
		{name: "invalid file", path: invalid, wantErr: "--epp-config " + invalid + ": "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := readEPPConfig(tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("readEPPConfig() = %v, want an error starting %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Fallbacks != tc.wantFallbacks {
				t.Errorf("fallbacks %d, want %d", s.Fallbacks, tc.wantFallbacks)
			}
		})
	}
}

func TestAdoptIdentity(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		flagID, flagSet        string
		id                     kube.Identity
		wantID, wantSet, wantE string
	}{{
		name: "the properties fill empty flags", id: kube.Identity{ClusterID: "us-east-1", ClusterSet: "prod"},
		wantID: "us-east-1", wantSet: "prod",
	}, {
		name: "flags that agree", flagID: "us-east-1", flagSet: "prod", id: kube.Identity{ClusterID: "us-east-1", ClusterSet: "prod"},
		wantID: "us-east-1", wantSet: "prod",
	}, {
		name: "no properties: the flags", flagID: "us-east-1",
		wantID: "us-east-1",
	}, {
		name: "--cluster-id disagrees", flagID: "us-west-1", id: kube.Identity{ClusterID: "us-east-1"},
		wantE: `--cluster-id "us-west-1" disagrees with the ClusterProperty ` + kube.PropertyClusterID + ` ("us-east-1")`,
	}, {
		name: "--cluster-set disagrees", flagSet: "dev", id: kube.Identity{ClusterID: "us-east-1", ClusterSet: "prod"},
		wantE: `--cluster-set "dev" disagrees with the ClusterProperty ` + kube.PropertyClusterSet + ` ("prod")`,
	}, {
		name: "no cluster ID anywhere", id: kube.Identity{ClusterSet: "prod"},
		wantE: "no cluster ID: create the ClusterProperty " + kube.PropertyClusterID + " or set --cluster-id",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOptions()
			o.ClusterID, o.ClusterSet = tc.flagID, tc.flagSet
			err := o.adopt(tc.id)
			if tc.wantE != "" {
				if err == nil || err.Error() != tc.wantE {
					t.Fatalf("adopt() = %v, want %q", err, tc.wantE)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.ClusterID != tc.wantID || o.ClusterSet != tc.wantSet {
				t.Errorf("cluster %q in set %q, want %q in %q", o.ClusterID, o.ClusterSet, tc.wantID, tc.wantSet)
			}
		})
	}
}

func TestConfigStaticSource(t *testing.T) {
	pools := filepath.Join(t.TempDir(), "pools.yaml")
	data := "pools:\n- {namespace: default, name: chat, export: true, targetPorts: [8000], endpoints: [127.0.1.1]}\n" +
		"- {namespace: batch, name: summarise, targetPorts: [8000], endpoints: [127.0.1.2]}\n"
	if err := os.WriteFile(pools, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	o := NewOptions()
	o.ClusterID, o.Region, o.PoolsFile, o.HubAddress = "us-east-1", "us-east", pools, ""
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source == nil || cfg.KubeConfig != nil {
		t.Errorf("Config() with --pools-file: source %v, kubeconfig %v; want the static source only", cfg.Source, cfg.KubeConfig)
	}
	if want := (fleet.PoolRef{Namespace: "batch", Name: "summarise"}); cfg.EPP == nil || cfg.EPPPoolRef != want {
		t.Errorf("EPP pool %s, want the first pool %s", cfg.EPPPoolRef, want)
	}
	if cfg.Spill {
		t.Error("Spill is on without a hub")
	}
}

// TestConfigReadsNoClusterProperty: with the Kubernetes source, Config reads the kubeconfig
// file and asks the API server nothing; Run reads the identity with its own context.
func TestConfigReadsNoClusterProperty(t *testing.T) {
	srv := httptest.NewServer(nil)
	server := srv.URL
	srv.Close() // nothing answers there
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	data := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: " + server + "}\n" +
		"contexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\nusers:\n- name: u\n  user: {token: t}\n"
	if err := os.WriteFile(kubeconfig, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	o := NewOptions()
	o.Region, o.Kubeconfig, o.EPPPool = "us-east", kubeconfig, "default/chat"
	cfg, err := o.Config()
	if err != nil {
		t.Fatalf("Config() = %v: it must not reach the API server", err)
	}
	if cfg.KubeConfig == nil || cfg.KubeConfig.Host != server || cfg.ClusterID != "" {
		t.Fatalf("Config(): kubeconfig %+v, cluster %q; want the file's server and no cluster ID yet", cfg.KubeConfig, cfg.ClusterID)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := identify(ctx, cfg); err == nil {
		t.Error("identify() with the API server unreachable: want an error")
	}
}

func TestIdentifyStaticSourceKeepsTheFlags(t *testing.T) {
	cfg := &Config{Options: *NewOptions()}
	cfg.ClusterID, cfg.ClusterSet = "us-east-1", "prod"
	got, err := identify(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got == cfg || got.ClusterID != "us-east-1" || got.ClusterSet != "prod" {
		t.Errorf("identify() = %p %q %q, want a copy of %p with the flags' identity", got, got.ClusterID, got.ClusterSet, cfg)
	}
}

// TestClusterLabelsFlag: --cluster-labels takes Kubernetes labels, and a bad one is named.
func TestClusterLabelsFlag(t *testing.T) {
	parse := func(value string) (*Options, error) {
		o := NewOptions()
		fs := pflag.NewFlagSet("spoke", pflag.ContinueOnError)
		o.AddFlags(fs)
		if err := fs.Parse([]string{"--region=us-east", "--epp-pool=default/chat", "--cluster-labels=" + value}); err != nil {
			return nil, err
		}
		return o, errors.Join(o.identityErrors()...)
	}
	o, err := parse("team=ml,spillway.io/tier=gold")
	if err != nil || len(o.ClusterLabels) != 2 || o.ClusterLabels["spillway.io/tier"] != "gold" {
		t.Fatalf("good labels: %v, %v", o.ClusterLabels, err)
	}
	for value, want := range map[string]string{
		"Bad Key=x":    `key "Bad Key"`,
		"team=not ok!": `value of "team"`,
	} {
		if _, err := parse(value); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--cluster-labels=%s: %v, want an error naming %s", value, err, want)
		}
	}
}

// TestGIEFlags: GIE's EPP flags name the pool and give the scorers, as a GIE install passes them
// to the image it runs; what conflicts or is not implemented is refused, naming it.
func TestGIEFlags(t *testing.T) {
	parse := func(args ...string) (*Options, error) {
		o := NewOptions()
		fs := pflag.NewFlagSet("spoke", pflag.ContinueOnError)
		o.AddFlags(fs)
		if err := fs.Parse(append([]string{"--region=us-east"}, args...)); err != nil {
			return nil, err
		}
		if err := o.Complete(); err != nil {
			return nil, err
		}
		return o, errors.Join(o.identityErrors()...)
	}
	gie := "../../pkg/epp/testdata/gie-v1.5.0-default-plugins.yaml"
	o, err := parse("--pool-name=chat", "--pool-namespace=llm", "--pool-group=inference.networking.k8s.io", "--config-file="+gie)
	if err != nil || o.EPPPool != "llm/chat" {
		t.Fatalf("GIE's flags: pool %q, %v", o.EPPPool, err)
	}
	settings := epp.DefaultSettings()
	if err := o.readGIEConfig(&settings); err != nil || settings.Weights["prefix-cache-scorer"] != 3 || len(settings.Weights) != 3 {
		t.Fatalf("weights from GIE's default configuration: %v, %v", settings.Weights, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--pool-name=chat", "--epp-pool=llm/code"}, "--pool-name names default/chat, --epp-pool llm/code"},
		{[]string{"--epp-pool=llm/chat", "--pool-group=inference.networking.x-k8s.io"}, `--pool-group "inference.networking.x-k8s.io"`},
		{[]string{"--epp-pool=llm/chat", "--config-file=" + gie, "--config-text=x"}, "give one"},
	} {
		if _, err := parse(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
	o, _ = parse("--epp-pool=llm/chat", "--config-text=apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins: [{type: prefill-filter}]\nschedulingProfiles: [{name: d, plugins: []}]\n")
	settings = epp.DefaultSettings()
	if err := o.readGIEConfig(&settings); err == nil || !strings.Contains(err.Error(), "prefill-filter") {
		t.Errorf("an unknown plugin: %v", err)
	}
	settings, err = epp.ParseConfig([]byte("scorers: {queue-scorer: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	o, _ = parse("--epp-pool=llm/chat", "--config-file="+gie)
	if err := o.readGIEConfig(&settings); err == nil || !strings.Contains(err.Error(), "both set the scorers") {
		t.Errorf("scorers in both files: %v", err)
	}
}

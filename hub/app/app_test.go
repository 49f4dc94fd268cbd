package app

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hubetcd "github.com/spillway-io/spillway/hub/etcd"
)

// volume fakes the size of the data directory's volume.
func volume(bytes int64) func(string) (int64, error) {
	return func(string) (int64, error) { return bytes, nil }
}

// validOptions are the defaults on a 100 GiB volume, completed.
func validOptions(t *testing.T) *Options {
	t.Helper()
	o := NewOptions()
	o.volumeBytes = volume(100 << 30)
	o.HubID = "hub-test"
	if err := o.Complete(); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	return o
}

func TestValidateNamesEveryProblem(t *testing.T) {
	o := validOptions(t)
	o.GRPCAddress = "8470"
	o.LeaseTTL = time.Second
	o.CapacityHeartbeat = time.Millisecond
	o.Log.Level = "loud"
	o.DataDir = ""
	o.TrustDomain = "Not A Domain"
	o.MaxClusters = 0
	err := o.Validate()
	for _, want := range []string{"--grpc-address", "--lease-ttl", "--capacity-heartbeat", "--log-level", "--data-dir", "--trust-domain", "--max-clusters"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
}

// TestValidate: each bad setting is refused with an error that names the flag and says what
// to do; each good one is accepted.
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(o *Options)
		says   string // empty: valid
	}{
		{"defaults", func(*Options) {}, ""},
		{"admin port taken by the spokes' port", func(o *Options) { o.AdminAddress = o.GRPCAddress }, "--admin-address \":8470\": --grpc-address has it already"},
		{"http port taken by the admin port", func(o *Options) { o.HTTPAddress = ":8472" }, "--http-address \":8472\": --admin-address has it already"},
		{"ports 0 are never shared", func(o *Options) {
			o.GRPCAddress, o.AdminAddress, o.HTTPAddress = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		}, ""},
		{"admin address without port", func(o *Options) { o.AdminAddress = "localhost" }, "--admin-address \"localhost\": want host:port"},

		{"serving certificate without key", func(o *Options) { o.TLSCertFile = "hub.crt" }, "--tls-cert-file and --tls-key-file go together"},
		{"serving key without certificate", func(o *Options) { o.TLSKeyFile = "hub.key" }, "--tls-cert-file and --tls-key-file go together"},
		{"serving certificate from files", func(o *Options) { o.TLSCertFile, o.TLSKeyFile = "hub.crt", "hub.key" }, ""},
		{"CA key without certificate", func(o *Options) { o.CAKeyFile = "ca.key" }, "--ca-key-file needs --ca-cert-file"},
		{"CA certificate without key or serving certificate", func(o *Options) { o.CACertFile = "ca.crt" }, "--ca-cert-file without --ca-key-file cannot issue the hub's serving certificate"},
		{"CA certificate without key, serving certificate given", func(o *Options) {
			o.CACertFile, o.TLSCertFile, o.TLSKeyFile = "ca.crt", "hub.crt", "hub.key"
		}, ""},
		{"external CA", func(o *Options) { o.CACertFile, o.CAKeyFile = "ca.crt", "ca.key" }, ""},
		{"no CA at all", func(o *Options) { o.PKIDir = "" }, "--pki-dir must be set when --ca-cert-file is not"},
		{"external CA without pki dir", func(o *Options) { o.PKIDir, o.CACertFile, o.CAKeyFile = "", "ca.crt", "ca.key" }, ""},
		{"SANs", func(o *Options) { o.TLSSANs = []string{"hub.example.com", "10.0.0.1", "::2"} }, ""},
		{"bad SAN", func(o *Options) { o.TLSSANs = []string{"hub_1"} }, "--tls-san \"hub_1\": want an IP address or a DNS name"},
		{"SANs with a mounted certificate", func(o *Options) {
			o.TLSCertFile, o.TLSKeyFile, o.TLSSANs = "hub.crt", "hub.key", []string{"hub.example.com"}
		}, "--tls-san names the certificate the hub issues itself"},

		{"trust domain with a scheme", func(o *Options) { o.TrustDomain = "spiffe://x" }, "--trust-domain \"spiffe://x\""},
		{"no admin", func(o *Options) { o.AdminUsers = nil }, "--admin-users: at least one user"},
		{"bad admin name", func(o *Options) { o.AdminUsers = []string{"admin", "Alice Smith"} }, "--admin-users \"Alice Smith\""},
		{"cluster certificates too short", func(o *Options) { o.ClusterCertValidity = time.Second }, "--cluster-cert-validity 1s: at least 1m"},

		{"no exports", func(o *Options) { o.MaxExportsPerCluster = 0 }, "--max-exports-per-cluster 0: at least 1"},
		{"no streams", func(o *Options) { o.MaxConcurrentStreams = 0 }, "--max-concurrent-streams 0: at least 1"},
		{"bad namespace", func(o *Options) { o.AllowedExportNamespaces = []string{"Team_A"} }, "--allowed-export-namespaces \"Team_A\""},
		{"namespace allowed and denied", func(o *Options) { o.AllowedExportNamespaces = []string{"inference", "kube-system"} }, "both name \"kube-system\""},
		{"nothing denied", func(o *Options) { o.DeniedExportNamespaces = nil }, ""},

		{"external etcd over TLS", func(o *Options) {
			o.EtcdEndpoints, o.EtcdQuotaBytes = []string{"https://etcd-0:2379", "https://etcd-1:2379"}, 0
			o.EtcdTLS = hubetcd.ClientTLS{CACert: "ca.crt", Cert: "hub.crt", Key: "hub.key"}
		}, ""},
		{"external etcd in plaintext", func(o *Options) { o.EtcdEndpoints, o.EtcdQuotaBytes = []string{"http://etcd-0:2379"}, 0 }, "--etcd-endpoints \"http://etcd-0:2379\": plaintext; use https://"},
		{"external etcd without scheme", func(o *Options) { o.EtcdEndpoints, o.EtcdQuotaBytes = []string{"etcd-0:2379"}, 0 }, "want https://host:port"},
		{"external etcd with a path", func(o *Options) { o.EtcdEndpoints, o.EtcdQuotaBytes = []string{"https://etcd-0:2379/v3"}, 0 }, "want https://host:port"},
		{"etcd client certificate without key", func(o *Options) {
			o.EtcdEndpoints, o.EtcdQuotaBytes, o.EtcdTLS.Cert = []string{"https://etcd-0:2379"}, 0, "hub.crt"
		}, "--etcd-cert and --etcd-key go together"},
		{"etcd TLS files with the embedded etcd", func(o *Options) { o.EtcdTLS.CACert = "ca.crt" }, "--etcd-cacert, --etcd-cert and --etcd-key are for an external etcd"},
		{"quota with an external etcd", func(o *Options) { o.EtcdEndpoints = []string{"https://etcd-0:2379"} }, "--etcd-quota-bytes is for the embedded etcd"},
		{"embedded etcd off loopback", func(o *Options) { o.EmbeddedEtcdAddr = "0.0.0.0:2379" }, "--embedded-etcd-address \"0.0.0.0:2379\": want a loopback address"},
		{"embedded etcd on localhost", func(o *Options) { o.EmbeddedEtcdAddr = "localhost:2379" }, ""},
		{"embedded etcd on IPv6 loopback", func(o *Options) { o.EmbeddedEtcdAddr = "[::1]:0" }, ""},
		{"quota larger than the volume", func(o *Options) { o.EtcdQuotaBytes = 100<<30 + 1 }, "--etcd-quota-bytes 107374182401: larger than the volume holding --data-dir"},
		{"quota the whole volume", func(o *Options) { o.EtcdQuotaBytes = 100 << 30 }, ""},
		{"quota tiny", func(o *Options) { o.EtcdQuotaBytes = 1 << 20 }, "--etcd-quota-bytes 1048576: at least 67108864"},

		{"leader lease too short", func(o *Options) { o.LeaderLeaseTTL = 500 * time.Millisecond }, "--leader-lease-ttl 500ms: at least 1s"},
		{"peer certificate without key", func(o *Options) { o.PeerCertFile = "peer.crt" }, "--peer-cert-file and --peer-key-file go together"},
		{"peer certificate from files", func(o *Options) { o.PeerCertFile, o.PeerKeyFile = "peer.crt", "peer.key" }, ""},
		{"advertise address", func(o *Options) { o.AdvertiseAddress = "hub-0.hub.spillway-system.svc:8472" }, ""},
		{"advertise address without port", func(o *Options) { o.AdvertiseAddress = "hub-0" }, "--advertise-address \"hub-0\": want host:port"},
		{"advertise address with port 0", func(o *Options) { o.AdvertiseAddress = "hub-0:0" }, "--advertise-address \"hub-0:0\""},

		{"budgets from the cluster", func(o *Options) { o.BudgetsFromCluster, o.BudgetsNamespace = true, "llm-budgets" }, ""},
		{"budgets from the cluster with a kubeconfig", func(o *Options) {
			o.BudgetsFromCluster, o.BudgetsNamespace, o.Kubeconfig = true, "spillway-system", "hub.kubeconfig"
		}, ""},
		{"budgets from a file and from the cluster", func(o *Options) {
			o.BudgetsFromCluster, o.BudgetsNamespace, o.BudgetsFile = true, "spillway-system", "budgets.yaml"
		}, "--budgets-file and --budgets-from-cluster both declare the budgets: give one"},
		{"budgets namespace not a DNS label", func(o *Options) { o.BudgetsFromCluster, o.BudgetsNamespace = true, "Spillway_System" }, "--budgets-namespace \"Spillway_System\": a namespace name is a DNS label"},
		{"budgets from the cluster with a bad tenant header", func(o *Options) {
			o.BudgetsFromCluster, o.BudgetsNamespace, o.TenantHeader = true, "spillway-system", "X-Tenant"
		}, "--tenant-header: invalid budget: tenantHeader \"X-Tenant\" is not a lower-case HTTP header name"},
		{"budgets namespace without the cluster", func(o *Options) { o.BudgetsNamespace = "spillway-system" }, "--budgets-namespace and --kubeconfig are for --budgets-from-cluster"},
		{"kubeconfig without the cluster", func(o *Options) { o.Kubeconfig = "hub.kubeconfig" }, "--budgets-namespace and --kubeconfig are for --budgets-from-cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := validOptions(t)
			tc.change(o)
			err := o.Validate()
			switch {
			case tc.says == "" && err != nil:
				t.Fatalf("Validate() = %v, want no error", err)
			case tc.says != "" && (err == nil || !strings.Contains(err.Error(), tc.says)):
				t.Fatalf("Validate() = %v, want an error saying %q", err, tc.says)
			}
		})
	}
}

// TestCompleteQuota: the default quota is 80% of the data directory's volume, at most 2 GiB; a
// quota given is kept; an external etcd gets none.
func TestCompleteQuota(t *testing.T) {
	for _, tc := range []struct {
		name      string
		volume    int64
		quota     int64
		endpoints []string
		want      int64
	}{
		{"small volume", 1 << 30, 0, nil, 1 << 30 / 5 * 4},
		{"large volume", 500 << 30, 0, nil, 2 << 30},
		{"given", 500 << 30, 4 << 30, nil, 4 << 30},
		{"external etcd", 500 << 30, 0, []string{"https://etcd:2379"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOptions()
			o.HubID, o.volumeBytes, o.EtcdQuotaBytes, o.EtcdEndpoints = "h", volume(tc.volume), tc.quota, tc.endpoints
			if err := o.Complete(); err != nil {
				t.Fatal(err)
			}
			if o.EtcdQuotaBytes != tc.want {
				t.Errorf("EtcdQuotaBytes = %d, want %d", o.EtcdQuotaBytes, tc.want)
			}
		})
	}
}

// TestCompleteBudgetsNamespace: with --budgets-from-cluster the TokenBudgets' namespace is the
// flag's, else the Pod's ($POD_NAMESPACE, which deploy/hub sets), else spillway-system; without
// it, none.
func TestCompleteBudgetsNamespace(t *testing.T) {
	for _, tc := range []struct {
		name        string
		fromCluster bool
		flag, pod   string
		want        string
	}{
		{"flag", true, "llm-budgets", "other", "llm-budgets"},
		{"the Pod's", true, "", "hub-ns", "hub-ns"},
		{"default", true, "", "", DefaultBudgetsNamespace},
		{"not from the cluster", false, "", "hub-ns", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("POD_NAMESPACE", tc.pod)
			o := NewOptions()
			o.HubID, o.volumeBytes, o.BudgetsFromCluster, o.BudgetsNamespace = "h", volume(100<<30), tc.fromCluster, tc.flag
			if err := o.Complete(); err != nil {
				t.Fatal(err)
			}
			if o.BudgetsNamespace != tc.want {
				t.Errorf("BudgetsNamespace = %q, want %q", o.BudgetsNamespace, tc.want)
			}
			if err := o.Validate(); err != nil {
				t.Errorf("Validate() = %v", err)
			}
		})
	}
}

// TestConfigReadsTheKubeconfig: with --budgets-from-cluster, Config loads the kubeconfig, and a
// missing one stops the hub before it starts anything.
func TestConfigReadsTheKubeconfig(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: hub, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: hub}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	o := testOptions(dir)
	o.BudgetsFromCluster, o.Kubeconfig = true, kubeconfig
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KubeConfig == nil || cfg.KubeConfig.Host != "https://127.0.0.1:6443" || cfg.BudgetsNamespace == "" {
		t.Errorf("KubeConfig %+v, namespace %q", cfg.KubeConfig, cfg.BudgetsNamespace)
	}
	o = testOptions(dir)
	o.BudgetsFromCluster, o.Kubeconfig = true, filepath.Join(dir, "missing")
	if _, err := o.Config(); err == nil || !strings.Contains(err.Error(), "--budgets-from-cluster: kubernetes client configuration") {
		t.Errorf("Config() with a missing kubeconfig = %v", err)
	}
}

// TestQuotaOfTheRealVolume: without a fake, the volume is the one holding --data-dir (made or
// not), and a quota larger than it is refused by Config.
func TestQuotaOfTheRealVolume(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not-made-yet")
	vol, err := hubetcd.VolumeBytes(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	o := NewOptions()
	o.HubID, o.DataDir = "h", dir
	if err := o.Complete(); err != nil {
		t.Fatal(err)
	}
	if want := min(2<<30, vol/5*4); o.EtcdQuotaBytes != want {
		t.Errorf("default quota %d on a volume of %d bytes, want %d", o.EtcdQuotaBytes, vol, want)
	}
	o = NewOptions()
	o.HubID, o.DataDir, o.EtcdQuotaBytes = "h", dir, vol+1
	if _, err := o.Config(); err == nil || !strings.Contains(err.Error(), "larger than the volume") {
		t.Errorf("Config() with a quota larger than the volume = %v, want a refusal", err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("a refused Config made %s", dir)
	}
}

// TestFlags: every flag of the contract exists with its default.
func TestFlags(t *testing.T) {
	cmd := NewCommand()
	for flag, want := range map[string]string{
		"grpc-address": ":8470", "admin-address": ":8472", "http-address": ":8471", "insecure-http": "false",
		"pki-dir": "hub-pki", "ca-cert-file": "", "ca-key-file": "", "tls-cert-file": "", "tls-key-file": "",
		"tls-san": "[]", "client-ca-file": "", "trust-domain": "spillway.local", "admin-users": "[admin]",
		"cluster-cert-validity": "720h0m0s", "etcd-cacert": "", "etcd-cert": "", "etcd-key": "", "etcd-quota-bytes": "0",
		"max-clusters": "10000", "max-exports-per-cluster": "1000", "max-concurrent-streams": "100",
		"max-session-opens": "32", "session-open-wait": "3s",
		"allowed-export-namespaces": "[]", "denied-export-namespaces": "[kube-system,kube-public,kube-node-lease]",
		"leader-lease-ttl": "3s", "advertise-address": "", "peer-cert-file": "", "peer-key-file": "",
		"budgets-file": "", "budgets-from-cluster": "false", "budgets-namespace": "", "kubeconfig": "",
		"tenant-header": "x-spillway-tenant", "budget-report-interval": "1s",
	} {
		f := cmd.Flags().Lookup(flag)
		if f == nil {
			t.Errorf("no --%s", flag)
			continue
		}
		if f.DefValue != want {
			t.Errorf("--%s defaults to %q, want %q", flag, f.DefValue, want)
		}
	}
}

// TestAdvertiseAddress: --advertise-address wins; else --admin-address's host with the port
// listened on, the host name for an unspecified host.
func TestAdvertiseAddress(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	listened := &net.TCPAddr{IP: net.IPv4zero, Port: 41234}
	for _, tc := range []struct{ admin, advertise, want string }{
		{":8472", "", net.JoinHostPort(host, "41234")},
		{"0.0.0.0:0", "", net.JoinHostPort(host, "41234")},
		{"127.0.0.1:0", "", "127.0.0.1:41234"},
		{"hub-0.example:8472", "", "hub-0.example:41234"},
		{":8472", "hub-0.hubs:8472", "hub-0.hubs:8472"},
	} {
		cfg := &Config{Options: Options{AdminAddress: tc.admin, AdvertiseAddress: tc.advertise}}
		got, err := advertiseAddress(cfg, listened)
		if err != nil || got != tc.want {
			t.Errorf("admin %q, advertise %q: %q, %v; want %q", tc.admin, tc.advertise, got, err, tc.want)
		}
	}
}

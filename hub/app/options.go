package app

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"

	hubetcd "github.com/spillway-io/spillway/hub/etcd"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/replica"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/pkg/budget"
	"github.com/spillway-io/spillway/pkg/gossip"
	"github.com/spillway-io/spillway/pkg/logging"
)

// Options are what the operator sets on the command line.
type Options struct {
	// GRPCAddress is the spokes' port: SyncService, JoinService and health over TLS.
	GRPCAddress string
	// AdminAddress is the admin port: AdminService and health over mutual TLS.
	AdminAddress string
	// HTTPAddress serves /metrics, /healthz and /readyz, over HTTPS unless InsecureHTTP.
	HTTPAddress  string
	InsecureHTTP bool

	// EtcdEndpoints are an external etcd's client URLs; empty starts the embedded etcd.
	EtcdEndpoints []string
	// EtcdTLS is the hub's TLS to an external etcd.
	EtcdTLS hubetcd.ClientTLS
	// EtcdQuotaBytes is the embedded etcd's backend quota; zero: Complete sets the default,
	// the smaller of 2 GiB and 80% of the volume holding DataDir.
	EtcdQuotaBytes   int64
	DataDir          string
	EmbeddedEtcdAddr string
	EtcdPrefix       string

	// PKIDir holds the hub's CA (ca.crt, ca.key), made at the first start unless CACertFile is
	// set, and hubctl's admin credentials (hubctl/).
	PKIDir string
	// CACertFile and CAKeyFile are an existing CA to sign with, instead of PKIDir's. The
	// certificate file may be a bundle whose first certificate is the signing CA's; the whole
	// file is what spokes are given to trust. Without a key the join flow is off.
	CACertFile, CAKeyFile string
	// TLSCertFile and TLSKeyFile are the hub's serving certificate, reloaded on change; empty:
	// the hub's CA issues one at each start for the loopback names, the host name and TLSSANs.
	TLSCertFile, TLSKeyFile string
	TLSSANs                 []string
	// ClientCAFile verifies client certificates (reloaded on change); empty: the hub's CA.
	ClientCAFile string

	TrustDomain         string
	AdminUsers          []string
	ClusterCertValidity time.Duration

	MaxClusters             int
	MaxExportsPerCluster    int
	MaxConcurrentStreams    uint32
	MaxSessionOpens         int
	SessionOpenWait         time.Duration
	AllowedExportNamespaces []string
	DeniedExportNamespaces  []string

	HubID string
	// LeaderLeaseTTL is the TTL of the replica's election session: leadership moves within
	// about this long after the leader dies.
	LeaderLeaseTTL time.Duration
	// AdvertiseAddress is where the other replicas reach this one's admin port (host:port);
	// empty: the host of AdminAddress (the host name when that is unspecified) and the port
	// the admin port listens on.
	AdvertiseAddress string
	// PeerCertFile and PeerKeyFile are this replica's client certificate for the other replicas
	// (spiffe://<td>/hub/<hub-id>), reloaded on change; empty: issued by the hub's CA at start.
	PeerCertFile, PeerKeyFile string
	LeaseTTL                  time.Duration
	MinReportInterval         time.Duration
	CapacityHeartbeat         time.Duration
	ViewInterval              time.Duration
	// BudgetsFile holds the fleet's TokenBudgets (docs/budgets.md), read again when it changes;
	// TenantHeader names the header the gateway sets to the authenticated tenant.
	BudgetsFile  string
	TenantHeader string
	// BudgetsFromCluster reads the TokenBudgets from BudgetsNamespace of the hub's own
	// Kubernetes cluster instead of BudgetsFile, following every change (hub/kube). Kubeconfig
	// reaches that cluster: empty means $KUBECONFIG, else the Pod's service account.
	// BudgetsNamespace, when empty, is $POD_NAMESPACE, else DefaultBudgetsNamespace (Complete).
	BudgetsFromCluster   bool
	BudgetsNamespace     string
	Kubeconfig           string
	BudgetReportInterval time.Duration
	Gossip               gossip.Flags
	Log                  logging.Options
	// EnablePprof serves Go's profiles at /debug/pprof/ on HTTPAddress.
	EnablePprof bool

	// volumeBytes sizes the volume holding a path; nil means hubetcd.VolumeBytes. Tests set it.
	volumeBytes func(path string) (int64, error)
}

// DefaultBudgetsNamespace holds the TokenBudgets when neither --budgets-namespace nor
// $POD_NAMESPACE names a namespace: the namespace deploy/hub installs the hub in.
const DefaultBudgetsNamespace = "spillway-system"

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		GRPCAddress:            ":8470",
		AdminAddress:           ":8472",
		HTTPAddress:            ":8471",
		DataDir:                "hub-data",
		EmbeddedEtcdAddr:       "127.0.0.1:0",
		EtcdPrefix:             registry.DefaultPrefix,
		PKIDir:                 "hub-pki",
		TrustDomain:            "spillway.local",
		AdminUsers:             []string{"admin"},
		ClusterCertValidity:    720 * time.Hour,
		MaxClusters:            10000,
		MaxExportsPerCluster:   1000,
		MaxConcurrentStreams:   100,
		MaxSessionOpens:        server.DefaultMaxSessionOpens,
		SessionOpenWait:        server.DefaultSessionOpenWait,
		DeniedExportNamespaces: []string{"kube-system", "kube-public", "kube-node-lease"},
		LeaseTTL:               15 * time.Second,
		LeaderLeaseTTL:         replica.DefaultLeaseTTL,
		MinReportInterval:      500 * time.Millisecond,
		CapacityHeartbeat:      time.Second,
		ViewInterval:           200 * time.Millisecond,
		TenantHeader:           budget.DefaultTenantHeader,
		BudgetReportInterval:   time.Second,
		Log:                    logging.Options{Level: "info", Format: "text"},
	}
}

// AddFlags binds the options to flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.GRPCAddress, "grpc-address", o.GRPCAddress, "host:port of the spokes' port (Sync, Join, health; TLS, a client certificate verified when presented)")
	fs.StringVar(&o.AdminAddress, "admin-address", o.AdminAddress, "host:port of the admin port (AdminService for hubctl, health; mutual TLS)")
	fs.StringVar(&o.HTTPAddress, "http-address", o.HTTPAddress, "host:port of /metrics, /healthz and /readyz (HTTPS with the serving certificate)")
	fs.BoolVar(&o.InsecureHTTP, "insecure-http", o.InsecureHTTP, "serve --http-address in plaintext (logs a warning)")

	fs.StringSliceVar(&o.EtcdEndpoints, "etcd-endpoints", o.EtcdEndpoints, "external etcd client URLs (https://host:port); empty starts an embedded etcd in --data-dir")
	fs.StringVar(&o.EtcdTLS.CACert, "etcd-cacert", o.EtcdTLS.CACert, "CA bundle that verifies the external etcd's servers (default: the system's roots)")
	fs.StringVar(&o.EtcdTLS.Cert, "etcd-cert", o.EtcdTLS.Cert, "client certificate presented to the external etcd (read again at each connection)")
	fs.StringVar(&o.EtcdTLS.Key, "etcd-key", o.EtcdTLS.Key, "key of --etcd-cert")
	fs.Int64Var(&o.EtcdQuotaBytes, "etcd-quota-bytes", o.EtcdQuotaBytes, "embedded etcd's backend quota (default: the smaller of 2 GiB and 80% of --data-dir's volume; at most the volume)")
	fs.StringVar(&o.DataDir, "data-dir", o.DataDir, "directory of the embedded etcd's data (and of its TLS files, made at each start, under tls/)")
	fs.StringVar(&o.EmbeddedEtcdAddr, "embedded-etcd-address", o.EmbeddedEtcdAddr, "loopback host:port the embedded etcd serves clients on, over mutual TLS (port 0 picks one)")
	fs.StringVar(&o.EtcdPrefix, "etcd-prefix", o.EtcdPrefix, "key prefix of the fleet registry in etcd")

	fs.StringVar(&o.PKIDir, "pki-dir", o.PKIDir, "directory of the hub's CA (ca.crt, ca.key; made at the first start unless --ca-cert-file is set) and hubctl's admin credentials (hubctl/)")
	fs.StringVar(&o.CACertFile, "ca-cert-file", o.CACertFile, "an existing CA certificate (or bundle, the signing CA first) to use instead of --pki-dir's")
	fs.StringVar(&o.CAKeyFile, "ca-key-file", o.CAKeyFile, "key of --ca-cert-file; without it the join flow is off")
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", o.TLSCertFile, "the hub's serving certificate, reloaded on change (default: issued by the hub's CA at each start)")
	fs.StringVar(&o.TLSKeyFile, "tls-key-file", o.TLSKeyFile, "key of --tls-cert-file")
	fs.StringSliceVar(&o.TLSSANs, "tls-san", o.TLSSANs, "extra DNS name or IP address of the serving certificate the hub issues itself (repeatable)")
	fs.StringVar(&o.ClientCAFile, "client-ca-file", o.ClientCAFile, "CA bundle that verifies client certificates, reloaded on change (default: the hub's CA certificate)")

	fs.StringVar(&o.TrustDomain, "trust-domain", o.TrustDomain, "SPIFFE trust domain of the fleet's identities (spiffe://<domain>/cluster/<id>, spiffe://<domain>/user/<name>)")
	fs.StringSliceVar(&o.AdminUsers, "admin-users", o.AdminUsers, "users with the admin role on the admin port (every other user of the trust domain is a viewer); hubctl's credentials in --pki-dir are issued for the first")
	fs.DurationVar(&o.ClusterCertValidity, "cluster-cert-validity", o.ClusterCertValidity, "validity of the cluster certificates the hub signs (join and renewal)")

	fs.IntVar(&o.MaxClusters, "max-clusters", o.MaxClusters, "most clusters the hub registers")
	fs.IntVar(&o.MaxExportsPerCluster, "max-exports-per-cluster", o.MaxExportsPerCluster, "most pools one cluster may export")
	fs.Uint32Var(&o.MaxConcurrentStreams, "max-concurrent-streams", o.MaxConcurrentStreams, "most concurrent gRPC streams per connection")
	fs.IntVar(&o.MaxSessionOpens, "max-session-opens", o.MaxSessionOpens, "most spoke sessions the replica opens at once (registry requests and the first snapshot); the others wait")
	fs.DurationVar(&o.SessionOpenWait, "session-open-wait", o.SessionOpenWait, "how long a spoke session waits to be opened before the replica refuses it (Unavailable, retry after as long)")
	fs.StringSliceVar(&o.AllowedExportNamespaces, "allowed-export-namespaces", o.AllowedExportNamespaces, "namespaces clusters may export pools from (empty: every namespace not denied)")
	fs.StringSliceVar(&o.DeniedExportNamespaces, "denied-export-namespaces", o.DeniedExportNamespaces, "namespaces clusters may never export pools from")

	o.Gossip.AddFlags(fs)
	fs.StringVar(&o.HubID, "hub-id", o.HubID, "name of this hub replica, a DNS label unique among the replicas (default: the host name)")
	fs.DurationVar(&o.LeaderLeaseTTL, "leader-lease-ttl", o.LeaderLeaseTTL, "TTL of the replica's election session (whole seconds): the work that must happen once moves to another replica within about this long after the leader dies")
	fs.StringVar(&o.AdvertiseAddress, "advertise-address", o.AdvertiseAddress, "host:port where the other hub replicas reach this one's admin port (default: --admin-address's host, or the host name, and its port)")
	fs.StringVar(&o.PeerCertFile, "peer-cert-file", o.PeerCertFile, "this replica's client certificate for the other replicas, naming spiffe://<trust-domain>/hub/<hub-id>, reloaded on change (default: issued by the hub's CA at each start; needed with --ca-cert-file and no --ca-key-file)")
	fs.StringVar(&o.PeerKeyFile, "peer-key-file", o.PeerKeyFile, "key of --peer-cert-file")
	fs.DurationVar(&o.LeaseTTL, "lease-ttl", o.LeaseTTL, "how long a cluster's exports outlive its spoke's session (at least 2s)")
	fs.DurationVar(&o.MinReportInterval, "min-report-interval", o.MinReportInterval, "fastest a spoke may report a pool's capacity")
	fs.DurationVar(&o.CapacityHeartbeat, "capacity-heartbeat", o.CapacityHeartbeat, "how often a spoke resends unchanged capacity")
	fs.DurationVar(&o.ViewInterval, "view-interval", o.ViewInterval, "fastest the hub sends fleet view updates on one stream")
	fs.StringVar(&o.BudgetsFile, "budgets-file", o.BudgetsFile, "file of TokenBudget objects (YAML documents, as kubectl applies them) the fleet enforces; read again when it changes (docs/budgets.md)")
	fs.BoolVar(&o.BudgetsFromCluster, "budgets-from-cluster", o.BudgetsFromCluster, "read the TokenBudgets from the hub's own Kubernetes cluster, in --budgets-namespace, and follow every change; instead of --budgets-file (docs/budgets.md)")
	fs.StringVar(&o.BudgetsNamespace, "budgets-namespace", o.BudgetsNamespace, "namespace of the TokenBudgets with --budgets-from-cluster (default: $POD_NAMESPACE, else "+DefaultBudgetsNamespace+")")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig of the hub's own cluster, for --budgets-from-cluster (default: $KUBECONFIG, else the Pod's service account)")
	fs.StringVar(&o.TenantHeader, "tenant-header", o.TenantHeader, "request header, set by the gateway after authentication, that names the tenant budgets select")
	fs.DurationVar(&o.BudgetReportInterval, "budget-report-interval", o.BudgetReportInterval, "how often spokes report their budgets' usage and receive their ceilings (the overshoot bound grows with it, docs/budgets.md)")
	fs.BoolVar(&o.EnablePprof, "enable-pprof", o.EnablePprof, "serve Go profiles at /debug/pprof/ on --http-address")
	fs.StringVar(&o.Log.Level, "log-level", o.Log.Level, "debug, info, warn or error")
	fs.StringVar(&o.Log.Format, "log-format", o.Log.Format, "text or json")
}

// embedded reports whether the hub starts its own etcd.
func (o *Options) embedded() bool { return len(o.EtcdEndpoints) == 0 }

func (o *Options) volumeOf(path string) (int64, error) {
	if o.volumeBytes != nil {
		return o.volumeBytes(path)
	}
	return hubetcd.VolumeBytes(path)
}

// Complete fills in derived defaults: the hub ID, the prefix's final slash, the embedded
// etcd's quota from the size of the volume holding the data directory, and the TokenBudgets'
// namespace.
func (o *Options) Complete() error {
	if o.BudgetsFromCluster && o.BudgetsNamespace == "" {
		o.BudgetsNamespace = cmp.Or(os.Getenv("POD_NAMESPACE"), DefaultBudgetsNamespace)
	}
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
	if o.embedded() && o.EtcdQuotaBytes == 0 && o.DataDir != "" {
		vol, err := o.volumeOf(o.DataDir)
		if err != nil {
			return fmt.Errorf("--etcd-quota-bytes not set: %w", err)
		}
		o.EtcdQuotaBytes = hubetcd.DefaultQuotaBytes(vol)
	}
	return nil
}

// Validate checks the options and names every problem.
func (o *Options) Validate() error {
	errs := o.validateAddresses()
	errs = append(errs, o.validateEtcd()...)
	errs = append(errs, o.validatePKI()...)
	errs = append(errs, o.validateIdentities()...)
	errs = append(errs, o.validateLimits()...)
	if o.LeaderLeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("--leader-lease-ttl %s: at least 1s", o.LeaderLeaseTTL))
	}
	if (o.PeerCertFile == "") != (o.PeerKeyFile == "") {
		errs = append(errs, errors.New("--peer-cert-file and --peer-key-file go together: give both or neither"))
	}
	if o.AdvertiseAddress != "" {
		if host, port, err := net.SplitHostPort(o.AdvertiseAddress); err != nil || host == "" || port == "" || port == "0" {
			errs = append(errs, fmt.Errorf("--advertise-address %q: want host:port with a host and a port other replicas can dial", o.AdvertiseAddress))
		}
	}
	if o.LeaseTTL < 2*time.Second {
		errs = append(errs, fmt.Errorf("--lease-ttl %s: at least 2s (etcd's minimum lease)", o.LeaseTTL))
	}
	if o.MinReportInterval <= 0 || o.CapacityHeartbeat < o.MinReportInterval {
		errs = append(errs, fmt.Errorf("--min-report-interval %s and --capacity-heartbeat %s: want 0 < interval <= heartbeat", o.MinReportInterval, o.CapacityHeartbeat))
	}
	if o.BudgetReportInterval < 100*time.Millisecond || o.BudgetReportInterval > time.Minute {
		errs = append(errs, fmt.Errorf("--budget-report-interval %s: from 100ms to 1m", o.BudgetReportInterval))
	}
	errs = append(errs, o.validateBudgets()...)
	if o.ViewInterval < 0 {
		errs = append(errs, fmt.Errorf("--view-interval %s: must not be negative", o.ViewInterval))
	}
	errs = append(errs, o.Log.Validate(), o.Gossip.Validate())
	return errors.Join(errs...)
}

func (o *Options) validateBudgets() []error {
	var errs []error
	switch {
	case o.BudgetsFile != "" && o.BudgetsFromCluster:
		errs = append(errs, errors.New("--budgets-file and --budgets-from-cluster both declare the budgets: give one"))
	case o.BudgetsFile != "":
		if _, err := readBudgets(o.BudgetsFile, o.TenantHeader); err != nil {
			errs = append(errs, fmt.Errorf("--budgets-file: %w", err))
		}
	case o.BudgetsFromCluster:
		if err := (budget.Set{TenantHeader: o.TenantHeader}).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--tenant-header: %w", err))
		}
		if msgs := validation.IsDNS1123Label(o.BudgetsNamespace); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--budgets-namespace %q: a namespace name is a DNS label: %s", o.BudgetsNamespace, strings.Join(msgs, "; ")))
		}
	}
	if !o.BudgetsFromCluster && (o.BudgetsNamespace != "" || o.Kubeconfig != "") {
		errs = append(errs, errors.New("--budgets-namespace and --kubeconfig are for --budgets-from-cluster: the hub reads nothing else from Kubernetes"))
	}
	return errs
}

func (o *Options) validateAddresses() []error {
	var errs []error
	ports := map[string]string{} // a fixed port → the flag that took it
	for _, a := range []struct{ flag, addr string }{
		{"--grpc-address", o.GRPCAddress}, {"--admin-address", o.AdminAddress}, {"--http-address", o.HTTPAddress},
	} {
		host, port, err := net.SplitHostPort(a.addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", a.flag, a.addr))
			continue
		}
		if port == "0" {
			continue
		}
		key := host + ":" + port
		if other, ok := ports[key]; ok {
			errs = append(errs, fmt.Errorf("%s %q: %s has it already; each port serves one thing", a.flag, a.addr, other))
		}
		ports[key] = a.flag
	}
	return errs
}

func (o *Options) validateEtcd() []error {
	var errs []error
	if err := o.EtcdTLS.Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.embedded() {
		if o.DataDir == "" {
			errs = append(errs, errors.New("--data-dir must be set when --etcd-endpoints is empty"))
		}
		if !o.EtcdTLS.Empty() {
			errs = append(errs, errors.New("--etcd-cacert, --etcd-cert and --etcd-key are for an external etcd (--etcd-endpoints): the embedded etcd makes its own certificates"))
		}
		if host, _, err := net.SplitHostPort(o.EmbeddedEtcdAddr); err != nil {
			errs = append(errs, fmt.Errorf("--embedded-etcd-address %q: want host:port", o.EmbeddedEtcdAddr))
		} else if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			errs = append(errs, fmt.Errorf("--embedded-etcd-address %q: want a loopback address (only the hub talks to its embedded etcd)", o.EmbeddedEtcdAddr))
		}
		errs = append(errs, o.validateQuota()...)
		return errs
	}
	if o.EtcdQuotaBytes != 0 {
		errs = append(errs, errors.New("--etcd-quota-bytes is for the embedded etcd: set an external etcd's quota on its servers (--quota-backend-bytes)"))
	}
	for _, ep := range o.EtcdEndpoints {
		u, err := url.Parse(ep)
		switch {
		case err != nil || u.Host == "" || u.Path != "" && u.Path != "/":
			errs = append(errs, fmt.Errorf("--etcd-endpoints %q: want https://host:port", ep))
		case u.Scheme == "http":
			errs = append(errs, fmt.Errorf("--etcd-endpoints %q: plaintext; use https:// (with --etcd-cacert, --etcd-cert and --etcd-key as the etcd cluster needs)", ep))
		case u.Scheme != "https":
			errs = append(errs, fmt.Errorf("--etcd-endpoints %q: want https://host:port", ep))
		}
	}
	return errs
}

func (o *Options) validateQuota() []error {
	q := o.EtcdQuotaBytes
	switch {
	case q == 0:
		return nil // Complete has not run; it sets the default
	case q < hubetcd.MinQuotaBytes:
		return []error{fmt.Errorf("--etcd-quota-bytes %d: at least %d (64 MiB), or etcd raises its no-space alarm almost at once", q, hubetcd.MinQuotaBytes)}
	case o.DataDir == "":
		return nil
	}
	vol, err := o.volumeOf(o.DataDir)
	if err != nil {
		return []error{fmt.Errorf("--etcd-quota-bytes %d: %w", q, err)}
	}
	if q > vol {
		return []error{fmt.Errorf("--etcd-quota-bytes %d: larger than the volume holding --data-dir %s (%d bytes); etcd would fill it before its quota stops writes", q, o.DataDir, vol)}
	}
	return nil
}

func (o *Options) validatePKI() []error {
	var errs []error
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file go together: give both or neither"))
	}
	if o.CAKeyFile != "" && o.CACertFile == "" {
		errs = append(errs, errors.New("--ca-key-file needs --ca-cert-file"))
	}
	if o.CACertFile != "" && o.CAKeyFile == "" && o.TLSCertFile == "" {
		errs = append(errs, errors.New("--ca-cert-file without --ca-key-file cannot issue the hub's serving certificate: give --tls-cert-file and --tls-key-file, or the CA's key"))
	}
	if o.CACertFile == "" && o.PKIDir == "" {
		errs = append(errs, errors.New("--pki-dir must be set when --ca-cert-file is not"))
	}
	for _, san := range o.TLSSANs {
		if net.ParseIP(san) != nil {
			continue
		}
		if msgs := validation.IsDNS1123Subdomain(san); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--tls-san %q: want an IP address or a DNS name: %s", san, strings.Join(msgs, "; ")))
		}
	}
	if o.TLSCertFile != "" && len(o.TLSSANs) > 0 {
		errs = append(errs, errors.New("--tls-san names the certificate the hub issues itself: with --tls-cert-file, put the names in that certificate"))
	}
	return errs
}

func (o *Options) validateIdentities() []error {
	var errs []error
	if msgs := validation.IsDNS1123Subdomain(o.TrustDomain); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--trust-domain %q: want a DNS name such as spillway.example.com: %s", o.TrustDomain, strings.Join(msgs, "; ")))
	}
	if len(o.AdminUsers) == 0 {
		errs = append(errs, errors.New("--admin-users: at least one user, or no one can approve a join or revoke a cluster"))
	}
	for _, u := range o.AdminUsers {
		if msgs := validation.IsDNS1123Label(u); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--admin-users %q: a user name is a DNS label: %s", u, strings.Join(msgs, "; ")))
		}
	}
	if o.ClusterCertValidity < time.Minute {
		errs = append(errs, fmt.Errorf("--cluster-cert-validity %s: at least 1m", o.ClusterCertValidity))
	}
	return errs
}

func (o *Options) validateLimits() []error {
	var errs []error
	if o.MaxClusters < 1 {
		errs = append(errs, fmt.Errorf("--max-clusters %d: at least 1", o.MaxClusters))
	}
	if o.MaxExportsPerCluster < 1 {
		errs = append(errs, fmt.Errorf("--max-exports-per-cluster %d: at least 1", o.MaxExportsPerCluster))
	}
	if o.MaxConcurrentStreams < 1 {
		errs = append(errs, fmt.Errorf("--max-concurrent-streams %d: at least 1", o.MaxConcurrentStreams))
	}
	if o.MaxSessionOpens < 1 {
		errs = append(errs, fmt.Errorf("--max-session-opens %d: at least 1", o.MaxSessionOpens))
	}
	if o.SessionOpenWait < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("--session-open-wait %s: at least 10ms", o.SessionOpenWait))
	}
	for _, l := range []struct {
		flag string
		nss  []string
	}{{"--allowed-export-namespaces", o.AllowedExportNamespaces}, {"--denied-export-namespaces", o.DeniedExportNamespaces}} {
		for _, ns := range l.nss {
			if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
				errs = append(errs, fmt.Errorf("%s %q: a namespace name is a DNS label: %s", l.flag, ns, strings.Join(msgs, "; ")))
			}
		}
	}
	for _, ns := range o.AllowedExportNamespaces {
		if slices.Contains(o.DeniedExportNamespaces, ns) {
			errs = append(errs, fmt.Errorf("--allowed-export-namespaces and --denied-export-namespaces both name %q", ns))
		}
	}
	return errs
}

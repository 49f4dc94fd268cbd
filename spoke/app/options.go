package app

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/spillway-io/spillway/pkg/capacity"
	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/gossip"
	"github.com/spillway-io/spillway/pkg/logging"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/spoke/hubclient"
	"github.com/spillway-io/spillway/spoke/kube"
)

// Options are what the operator sets on the command line.
type Options struct {
	ClusterID  string
	Region     string
	Zone       string
	ClusterSet string
	// GIE's EPP flags, for a GIE install that swaps its EPP image for the spoke's: the pool
	// (--pool-name, --pool-namespace, --pool-group: --epp-pool) and the EndpointPickerConfig
	// (--config-file or --config-text: the scorers and weights).
	PoolName, PoolNamespace, PoolGroup string
	GIEConfigFile, GIEConfigText       string
	// GIE are GIE's other flags (gie.go).
	GIE GIEOptions
	// HealthAddress serves plaintext gRPC health for kubelet's probes; empty: none.
	HealthAddress string
	// MetricsPath is the model servers' metrics page path; /metrics when empty.
	MetricsPath string
	// DefaultEngine is the engine of Pods without the engine-type label (GIE's metric flags);
	// vLLM when empty.
	DefaultEngine modelmetrics.Engine
	// ClusterLabels are the cluster's labels in the fleet, for selecting clusters.
	ClusterLabels  map[string]string
	GatewayAddress string
	HubAddress     string
	PoolsFile      string
	PoolsReload    time.Duration
	// Kubernetes source (used when PoolsFile is empty).
	Kubeconfig       string
	ControllerName   string
	CreateNamespaces bool
	GatewayService   string
	// RemoteGateways override where remote clusters' gateways are reached (cluster ID → host:port).
	RemoteGateways map[string]string
	HTTPAddress    string
	ScrapeInterval time.Duration
	// ScrapeAllFamilies reads whole pages (modelmetrics.ScraperOptions.AllFamilies).
	ScrapeAllFamilies bool
	// DCGMExporters are NVIDIA DCGM exporters (host:port) read for GPU utilisation, every
	// DCGMInterval.
	DCGMExporters  []string
	DCGMInterval   time.Duration
	CapacityPeriod time.Duration
	Thresholds     capacity.Thresholds
	EPPAddress     string
	EPPPool        string
	EPPService     string
	PrefixSketch   bool
	EPPConfig      string
	// EPPStreamWorkers is how many goroutines serve ext_proc streams (0: one new per stream).
	EPPStreamWorkers int
	// EPPDrainTimeout is how long a stopping spoke lets the ext_proc streams in flight finish
	// (a stream lasts as long as its request, the streamed response included) before it cuts
	// them; it takes no new stream meanwhile.
	EPPDrainTimeout time.Duration
	EnablePprof     bool
	// Spill enables federated routing in the EPP. It needs a hub and an EPP: Complete turns it
	// off without either.
	Spill bool
	// ReportEndpoints adds per-endpoint load to capacity reports, for remote clusters whose
	// spill policy uses Endpoint Mode (flat networks).
	ReportEndpoints bool
	Trust           TrustOptions
	// LeaderElection elects, among the cluster's spoke replicas, the one that writes.
	LeaderElection LeaderElectionOptions
	Gossip         gossip.Flags
	Tracing        TracingOptions
	Affinity       AffinityOptions
	Log            logging.Options
}

// LeaderElectionOptions elect, among the spoke replicas of a cluster, the one that runs the full
// hub session (exports, capacity and import reports) and every Kubernetes write (imports,
// namespaces, Exported conditions, SpillPolicy status, the ServiceExport, events), on the
// coordination.k8s.io Lease spillway-spoke-<cluster-id>. Every replica watches the cluster,
// scrapes the endpoints, serves its EPP, decides spills, gossips, and keeps the fleet view with
// an observer session (docs/availability.md, "Spoke replicas").
type LeaderElectionOptions struct {
	// Enabled elects the writer; on by default with the Kubernetes source. Complete turns it
	// off with --pools-file: the static source runs one replica, which does everything.
	Enabled bool
	// Namespace of the Lease; when empty, $POD_NAMESPACE, else spillway-system.
	Namespace string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's leader election timings
	// (kube-controller-manager's defaults, 15 s, 10 s and 2 s): a leader that dies is replaced
	// at most LeaseDuration + RetryPeriod later; one that stops releases the Lease at once.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
}

// AddFlags binds the options to flags, with kube-controller-manager's names.
func (l *LeaderElectionOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&l.Enabled, "leader-elect", l.Enabled, "elect one of the cluster's spoke replicas, on the Lease spillway-spoke-<cluster-id>, to run the hub session and every Kubernetes write; the others serve their EPP and keep the fleet view (off with --pools-file)")
	fs.StringVar(&l.Namespace, "leader-elect-namespace", l.Namespace, "namespace of the leader election Lease (default: $POD_NAMESPACE, else $NAMESPACE, else "+kube.DefaultLeaseNamespace+")")
	fs.DurationVar(&l.LeaseDuration, "leader-elect-lease-duration", l.LeaseDuration, "how long the other replicas wait, after the leader's last renewal, before taking the Lease")
	fs.DurationVar(&l.RenewDeadline, "leader-elect-renew-deadline", l.RenewDeadline, "how long the leader tries to renew the Lease before it stops leading (and writing)")
	fs.DurationVar(&l.RetryPeriod, "leader-elect-retry-period", l.RetryPeriod, "how often the leader renews the Lease and the others try to take it")
}

// complete settles the Lease's namespace.
func (l *LeaderElectionOptions) complete() {
	if l.Namespace == "" {
		l.Namespace = cmp.Or(os.Getenv("POD_NAMESPACE"), os.Getenv("NAMESPACE")) // NAMESPACE: GIE's chart
	}
	if l.Namespace == "" {
		l.Namespace = kube.DefaultLeaseNamespace
	}
}

// errors checks the options when the election is on.
func (l *LeaderElectionOptions) errors() []error {
	if !l.Enabled {
		return nil
	}
	var errs []error
	if err := kube.ValidateElection(l.LeaseDuration, l.RenewDeadline, l.RetryPeriod); err != nil {
		errs = append(errs, err)
	}
	if l.Namespace != "" {
		if errs2 := validation.IsDNS1123Label(l.Namespace); len(errs2) > 0 {
			errs = append(errs, fmt.Errorf("--leader-elect-namespace %q: %s", l.Namespace, strings.Join(errs2, "; ")))
		}
	}
	return errs
}

// TrustOptions are the spoke's transport security: its cluster credentials and how it joins,
// the EPP's and the HTTP port's serving, and TLS to remote gateways.
type TrustOptions struct {
	// CredentialsDir holds ca.crt (the hub's CA bundle), tls.crt and tls.key (the cluster's
	// certificate, spiffe://<TrustDomain>/cluster/<id>), reloaded when they change.
	CredentialsDir string
	// JoinToken (or JoinTokenFile, a file holding it) and HubCAHash join the fleet when
	// CredentialsDir holds no certificate. The file is read only then, and keeps the token out of
	// the process list.
	JoinToken     string
	JoinTokenFile string
	HubCAHash     string
	// TrustDomain is the fleet's SPIFFE trust domain.
	TrustDomain string
	// EPPSecureServing serves ext_proc over TLS; false serves plaintext (with a warning).
	EPPSecureServing bool
	// EPPCertDir holds the EPP's serving tls.crt and tls.key, reloaded; empty: a self-signed
	// certificate made at start. The HTTP port serves the same certificate.
	EPPCertDir string
	// EPPClientCAFile, when set, makes the EPP require gateway client certificates from it.
	EPPClientCAFile string
	// InsecureHTTP serves /metrics, /healthz, /readyz and /spill over plaintext (with a warning).
	InsecureHTTP bool
	// RemoteGatewayTLS probes remote gateways over HTTPS, verified with RemoteGatewayCAFile
	// (empty: the system's roots).
	RemoteGatewayTLS    bool
	RemoteGatewayCAFile string
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		HubAddress:       "127.0.0.1:8470",
		PoolsReload:      2 * time.Second,
		ControllerName:   kube.DefaultControllerName,
		Spill:            true,
		HTTPAddress:      ":8481",
		ScrapeInterval:   50 * time.Millisecond,
		CapacityPeriod:   100 * time.Millisecond,
		Thresholds:       capacity.DefaultThresholds(),
		EPPAddress:       ":9002",
		PrefixSketch:     true,
		EPPStreamWorkers: epp.DefaultStreamWorkers,
		EPPDrainTimeout:  30 * time.Second,
		Tracing:          TracingOptions{SampleRatio: 1},
		Trust: TrustOptions{
			CredentialsDir:   "spoke-credentials",
			TrustDomain:      "spillway.local",
			EPPSecureServing: true,
		},
		LeaderElection: LeaderElectionOptions{
			Enabled:       true,
			LeaseDuration: kube.DefaultLeaseDuration,
			RenewDeadline: kube.DefaultRenewDeadline,
			RetryPeriod:   kube.DefaultRetryPeriod,
		},
		Log: logging.Options{Level: "info", Format: "text"},
	}
}

// AddFlags binds the options to flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.ClusterID, "cluster-id", o.ClusterID, "this cluster's ID in the ClusterSet (default: the ClusterProperty cluster.clusterset.k8s.io)")
	fs.StringVar(&o.Region, "region", o.Region, "this cluster's region (required)")
	fs.StringVar(&o.Zone, "zone", o.Zone, "this cluster's zone")
	fs.StringToStringVar(&o.ClusterLabels, "cluster-labels", o.ClusterLabels, "labels of this cluster in the fleet (key=value,...; Kubernetes label syntax, at most 64), which hubctl get clusters -l selects on")
	fs.StringVar(&o.ClusterSet, "cluster-set", o.ClusterSet, "the ClusterSet this cluster belongs to (default: the ClusterProperty clusterset.k8s.io)")
	fs.StringVar(&o.GatewayAddress, "gateway-address", o.GatewayAddress, "host:port where other clusters reach this cluster's inference gateway")
	fs.StringVar(&o.HubAddress, "hub-address", o.HubAddress, "host:port of the hub's gRPC address, or of each hub replica separated by commas, or one DNS name that resolves to every replica (a Service's); each session picks a reachable one in a random order (empty: standalone, no hub)")
	fs.StringVar(&o.PoolsFile, "pools-file", o.PoolsFile, "YAML file listing the cluster's pools and endpoints (the static source; empty: watch Kubernetes)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig of the cluster (default: $KUBECONFIG, else the in-cluster service account)")
	fs.StringVar(&o.ControllerName, "controller-name", o.ControllerName, "name written into InferencePoolImport and InferencePool status")
	fs.BoolVar(&o.CreateNamespaces, "create-namespaces", o.CreateNamespaces, "create a missing namespace for an InferencePoolImport (otherwise report NamespaceNotFound)")
	fs.StringToStringVar(&o.RemoteGateways, "remote-gateway", o.RemoteGateways, "cluster-id=host:port: reach that cluster's gateway at this address instead of the one it registered (a proxy, a private link); repeatable")
	fs.StringVar(&o.GatewayService, "gateway-service", o.GatewayService, "namespace/name of the inference gateway Service to export with an MCS-API ServiceExport")
	fs.DurationVar(&o.PoolsReload, "pools-reload", o.PoolsReload, "how often to check --pools-file for changes (0: never)")
	fs.StringVar(&o.HTTPAddress, "http-address", o.HTTPAddress, "host:port of /metrics, /healthz and /readyz")
	fs.DurationVar(&o.ScrapeInterval, "scrape-interval", o.ScrapeInterval, "how often each endpoint's /metrics is read")
	fs.StringSliceVar(&o.DCGMExporters, "dcgm-exporters", o.DCGMExporters, "NVIDIA DCGM exporters to read GPU utilisation from, host:port list (plain HTTP, as the GPU Operator serves them); a name is resolved every round and each of its addresses read, so a headless Service of the exporters' DaemonSet names them all. Their Kubernetes mode attributes GPUs to Pods, which the endpoints' capacity, hubctl and the gpu-utilization-scorer use")
	fs.DurationVar(&o.DCGMInterval, "dcgm-interval", 5*time.Second, "time between two reads of the DCGM exporters")
	fs.BoolVar(&o.ScrapeAllFamilies, "scrape-all-families", o.ScrapeAllFamilies, "read model servers' whole metrics pages; by default vLLM and SGLang servers are asked (name[] query parameters, which their prometheus_client pages honour) for the families routing reads only")
	fs.DurationVar(&o.CapacityPeriod, "capacity-period", o.CapacityPeriod, "how often pool capacity is recomputed for the hub")
	fs.IntVar(&o.Thresholds.QueueDepth, "saturation-queue-depth", o.Thresholds.QueueDepth, "waiting queue at which an endpoint has no headroom")
	fs.Float64Var(&o.Thresholds.KVCacheUtilization, "saturation-kv-cache", o.Thresholds.KVCacheUtilization, "KV-cache use (0..1) at which an endpoint has no headroom")
	fs.DurationVar(&o.Thresholds.Staleness, "metrics-staleness", o.Thresholds.Staleness, "age at which an endpoint's metrics count as stale (saturated)")
	fs.StringVar(&o.EPPAddress, "epp-address", o.EPPAddress, "host:port of the Endpoint Picker's ext_proc gRPC service (empty: no EPP)")
	fs.StringVar(&o.EPPPool, "epp-pool", o.EPPPool, "namespace/name of the local pool the EPP serves (default: the first pool of the source)")
	fs.BoolVar(&o.PrefixSketch, "prefix-sketch", o.PrefixSketch, "send, with each EPP pool's capacity, a sketch of the prompt prefixes its endpoints hold (4 KiB, at most every 5 s), so that other clusters spill requests where their prefix is cached (false: they rank this cluster as holding none)")
	fs.StringVar(&o.EPPService, "epp-service", o.EPPService, "serve the EPP of every InferencePool whose spec.endpointPickerRef names this Service, each on its endpointPickerRef port (on --epp-address's host), as pools come and go (Kubernetes source; instead of --epp-pool)")
	fs.StringVar(&o.EPPConfig, "epp-config", o.EPPConfig, "YAML file of the EPP's scorers, objectives and model routing (see docs/epp.md)")
	fs.StringVar(&o.PoolName, "pool-name", o.PoolName, "GIE's flag: name of the InferencePool the EPP serves (with --pool-namespace, instead of --epp-pool)")
	fs.StringVar(&o.PoolNamespace, "pool-namespace", o.PoolNamespace, "GIE's flag: namespace of --pool-name (default: $POD_NAMESPACE, else default)")
	fs.StringVar(&o.PoolGroup, "pool-group", o.PoolGroup, "GIE's flag: API group of the pool; only inference.networking.k8s.io")
	fs.StringVar(&o.GIEConfigFile, "config-file", o.GIEConfigFile, "GIE's flag: an EndpointPickerConfig file whose scheduling profile's scorers and weights the EPP takes (docs/epp.md)")
	fs.StringVar(&o.GIEConfigText, "config-text", o.GIEConfigText, "GIE's flag: the EndpointPickerConfig as text, instead of --config-file")
	fs.IntVar(&o.EPPStreamWorkers, "epp-stream-workers", o.EPPStreamWorkers, "goroutines kept to serve ext_proc streams, so that a request neither starts one nor grows its stack (0: a new goroutine per stream)")
	fs.DurationVar(&o.EPPDrainTimeout, "epp-drain-timeout", o.EPPDrainTimeout, "how long a stopping spoke lets the requests in flight through its EPP finish (their responses stream through it) before it cuts them; keep it below the Pod's terminationGracePeriodSeconds")
	fs.BoolVar(&o.Spill, "spill", o.Spill, "send eligible requests to other clusters when the local pool is saturated or empty (federated routing; needs --hub-address)")
	fs.BoolVar(&o.ReportEndpoints, "report-endpoints", o.ReportEndpoints, "send per-endpoint load with capacity reports, for remote clusters that spill in Endpoint Mode (flat networks)")
	o.Trust.AddFlags(fs)
	o.Tracing.AddFlags(fs)
	o.LeaderElection.AddFlags(fs)
	o.Gossip.AddFlags(fs)
	o.Affinity.AddFlags(fs)
	fs.BoolVar(&o.EnablePprof, "enable-pprof", o.EnablePprof, "serve Go profiles at /debug/pprof/ on --http-address")
	fs.StringVar(&o.Log.Level, "log-level", o.Log.Level, "debug, info, warn or error")
	fs.StringVar(&o.Log.Format, "log-format", o.Log.Format, "text or json")
	o.GIE.AddFlags(fs, o)
}

// Complete fills in the defaults that follow from the other options, without I/O: spilling
// needs a hub to learn remote capacity from and an EPP to send requests away. The defaults that
// follow from files (the EPP pool, the EPP configuration's thresholds) are settled by Config,
// and the cluster's identity from its ClusterProperty objects by Run.
func (o *Options) Complete() error {
	o.GIE.complete(o)
	if o.PoolName != "" && o.EPPPool == "" {
		o.EPPPool = o.giePool()
	}
	if o.HubAddress == "" || o.EPPAddress == "" {
		o.Spill = false
	}
	if o.PoolsFile != "" {
		o.LeaderElection.Enabled = false // the static source runs one replica
	}
	o.LeaderElection.complete()
	return nil
}

// giePool is the namespace/name GIE's --pool-name and --pool-namespace give (the namespace
// defaulting to $NAMESPACE, as GIE's EPP does, then $POD_NAMESPACE, else default).
func (o *Options) giePool() string {
	return cmp.Or(o.PoolNamespace, os.Getenv("NAMESPACE"), os.Getenv("POD_NAMESPACE"), "default") + "/" + o.PoolName
}

// Validate checks the options and names every problem.
func (o *Options) Validate() error {
	var errs []error
	errs = append(errs, o.identityErrors()...)
	errs = append(errs, o.addressErrors()...)
	errs = append(errs, o.loadErrors()...)
	errs = append(errs, o.trustErrors()...)
	errs = append(errs, o.LeaderElection.errors()...)
	errs = append(errs, o.Tracing.errors()...)
	errs = append(errs, o.GIE.errors(o)...)
	errs = append(errs, o.Log.Validate(), o.Gossip.Validate(), o.Affinity.Validate())
	return errors.Join(errs...)
}

// identityErrors checks what names the cluster, its pools and its gateways.
func (o *Options) identityErrors() []error {
	var errs []error
	if o.ClusterID == "" && o.PoolsFile != "" {
		errs = append(errs, errors.New("--cluster-id is required with --pools-file"))
	}
	if o.Region == "" {
		errs = append(errs, errors.New("--region is required"))
	}
	if len(o.ClusterLabels) > 64 {
		errs = append(errs, fmt.Errorf("--cluster-labels: %d labels, at most 64", len(o.ClusterLabels)))
	}
	for _, k := range slices.Sorted(maps.Keys(o.ClusterLabels)) {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--cluster-labels: key %q: %s", k, strings.Join(msgs, "; ")))
		}
		if msgs := validation.IsValidLabelValue(o.ClusterLabels[k]); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--cluster-labels: value of %q: %s", k, strings.Join(msgs, "; ")))
		}
	}
	if o.PoolName != "" && o.EPPPool != o.giePool() {
		errs = append(errs, fmt.Errorf("--pool-name names %s, --epp-pool %s: give one", o.giePool(), o.EPPPool))
	}
	if o.PoolGroup != "" && o.PoolGroup != "inference.networking.k8s.io" {
		errs = append(errs, fmt.Errorf("--pool-group %q: the EPP serves InferencePools of inference.networking.k8s.io (v1)", o.PoolGroup))
	}
	if o.GIEConfigFile != "" && o.GIEConfigText != "" {
		errs = append(errs, errors.New("--config-file and --config-text: give one"))
	}
	if o.PoolsFile == "" && o.EPPAddress != "" && o.EPPPool == "" && o.EPPService == "" {
		errs = append(errs, errors.New("--epp-pool or --epp-service is required with the Kubernetes source (or set --epp-address to empty)"))
	}
	if o.EPPService != "" {
		switch {
		case o.PoolsFile != "":
			errs = append(errs, errors.New("--epp-service needs the Kubernetes source (InferencePools name their EPP), not --pools-file"))
		case o.EPPPool != "":
			errs = append(errs, errors.New("--epp-service serves every pool naming it; --epp-pool (or --pool-name) one: give one"))
		case o.EPPAddress == "":
			errs = append(errs, errors.New("--epp-service needs --epp-address (its host is where the pools' ports listen)"))
		case len(validation.IsDNS1035Label(o.EPPService)) > 0:
			errs = append(errs, fmt.Errorf("--epp-service %q: want a Service name", o.EPPService))
		}
		if o.Affinity.Address != "" {
			errs = append(errs, errors.New("--epp-service: the replicas' prefix affinity serves one pool; use --epp-pool with it"))
		}
	}
	for id, addr := range o.RemoteGateways {
		if _, _, err := net.SplitHostPort(addr); err != nil || id == "" {
			errs = append(errs, fmt.Errorf("--remote-gateway %s=%s: want cluster-id=host:port", id, addr))
		}
	}
	if o.GatewayService != "" {
		if ns, name, ok := strings.Cut(o.GatewayService, "/"); !ok || ns == "" || name == "" {
			errs = append(errs, fmt.Errorf("--gateway-service %q: want namespace/name", o.GatewayService))
		}
	}
	if o.ControllerName == "" || !strings.Contains(o.ControllerName, "/") {
		errs = append(errs, fmt.Errorf("--controller-name %q: want domain/path", o.ControllerName))
	}
	return errs
}

// addressErrors checks the addresses the spoke listens on and dials, and the EPP's settings.
func (o *Options) addressErrors() []error {
	var errs []error
	if _, _, err := net.SplitHostPort(o.HTTPAddress); err != nil {
		errs = append(errs, fmt.Errorf("--http-address %q: want host:port", o.HTTPAddress))
	}
	if o.HubAddress != "" {
		if _, err := hubclient.ParseAddresses(o.HubAddress); err != nil {
			errs = append(errs, fmt.Errorf("--hub-address: %w", err))
		}
	}
	if o.EPPAddress != "" {
		if _, _, err := net.SplitHostPort(o.EPPAddress); err != nil {
			errs = append(errs, fmt.Errorf("--epp-address %q: want host:port", o.EPPAddress))
		}
	}
	if o.EPPDrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("--epp-drain-timeout %s: want 0 or more", o.EPPDrainTimeout))
	}
	if o.EPPStreamWorkers < 0 || o.EPPStreamWorkers > 1<<16 {
		errs = append(errs, fmt.Errorf("--epp-stream-workers %d: want 0..65536", o.EPPStreamWorkers))
	}
	if o.EPPPool != "" {
		if ns, name, ok := strings.Cut(o.EPPPool, "/"); !ok || ns == "" || name == "" {
			errs = append(errs, fmt.Errorf("--epp-pool %q: want namespace/name", o.EPPPool))
		}
	}
	if o.GatewayAddress != "" {
		if _, _, err := net.SplitHostPort(o.GatewayAddress); err != nil {
			errs = append(errs, fmt.Errorf("--gateway-address %q: want host:port", o.GatewayAddress))
		}
	}
	return errs
}

// loadErrors checks the periods and the saturation thresholds.
func (o *Options) loadErrors() []error {
	var errs []error
	if o.ScrapeInterval <= 0 || o.CapacityPeriod <= 0 {
		errs = append(errs, errors.New("--scrape-interval and --capacity-period must be positive"))
	}
	if o.Thresholds.Staleness < o.ScrapeInterval {
		errs = append(errs, fmt.Errorf("--metrics-staleness %s is shorter than --scrape-interval %s: every endpoint would look stale", o.Thresholds.Staleness, o.ScrapeInterval))
	}
	for _, ex := range o.DCGMExporters {
		if host, port, err := net.SplitHostPort(ex); err != nil || host == "" || port == "" {
			errs = append(errs, fmt.Errorf("--dcgm-exporters %q: want host:port", ex))
		}
	}
	if len(o.DCGMExporters) > 0 && o.DCGMInterval <= 0 {
		errs = append(errs, errors.New("--dcgm-interval must be positive"))
	}
	if o.Thresholds.QueueDepth < 1 || !(o.Thresholds.KVCacheUtilization > 0 && o.Thresholds.KVCacheUtilization <= 1) {
		errs = append(errs, errors.New("--saturation-queue-depth must be at least 1 and --saturation-kv-cache in (0, 1]"))
	}
	return errs
}

// AddFlags binds the trust options to flags.
func (t *TrustOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&t.CredentialsDir, "credentials-dir", t.CredentialsDir, "directory of the cluster's credentials for the hub: ca.crt (the hub's CA bundle), tls.crt and tls.key (the cluster's certificate); reloaded on change. Written by the join flow, or mounted from a cert-manager or SPIRE Secret")
	fs.StringVar(&t.JoinToken, "join-token", t.JoinToken, "bootstrap token from `hubctl tokens create`: when --credentials-dir holds no certificate, join the fleet with it first (needs --hub-ca-hash)")
	fs.StringVar(&t.JoinTokenFile, "join-token-file", t.JoinTokenFile, "file holding the bootstrap token (a mounted Secret), read only when joining: as --join-token, without the token in the process list; exclusive with --join-token")
	fs.StringVar(&t.HubCAHash, "hub-ca-hash", t.HubCAHash, "sha256:<hex> of the hub's CA public key, printed by `hubctl tokens create`: the join flow trusts only a hub whose CA has it")
	fs.StringVar(&t.TrustDomain, "trust-domain", t.TrustDomain, "the fleet's SPIFFE trust domain: the cluster's certificate names spiffe://<trust-domain>/cluster/<cluster-id>")
	fs.BoolVar(&t.EPPSecureServing, "epp-secure-serving", t.EPPSecureServing, "serve the EPP's ext_proc over TLS (false: plaintext, which logs a warning)")
	fs.StringVar(&t.EPPCertDir, "epp-cert-dir", t.EPPCertDir, "directory of the EPP's serving tls.crt and tls.key, reloaded on change, also served on --http-address (empty: a self-signed certificate made at start)")
	fs.StringVar(&t.EPPClientCAFile, "epp-client-ca-file", t.EPPClientCAFile, "CA bundle of the gateways' client certificates: when set, the EPP requires one (reloaded on change)")
	fs.BoolVar(&t.InsecureHTTP, "insecure-http", t.InsecureHTTP, "serve --http-address over plaintext instead of HTTPS (logs a warning)")
	fs.BoolVar(&t.RemoteGatewayTLS, "remote-gateway-tls", t.RemoteGatewayTLS, "probe remote gateways over HTTPS")
	fs.StringVar(&t.RemoteGatewayCAFile, "remote-gateway-ca-file", t.RemoteGatewayCAFile, "CA bundle that verifies remote gateways with --remote-gateway-tls (empty: the system's roots)")
}

// trustErrors checks the credentials, the join flags and the serving flags.
func (o *Options) trustErrors() []error {
	t := &o.Trust
	var errs []error
	if errs2 := validation.IsDNS1123Subdomain(t.TrustDomain); len(errs2) > 0 {
		errs = append(errs, fmt.Errorf("--trust-domain %q: %s", t.TrustDomain, strings.Join(errs2, "; ")))
	}
	if o.HubAddress != "" {
		if t.CredentialsDir == "" {
			errs = append(errs, errors.New("--credentials-dir is required with --hub-address: the spoke authenticates to the hub with the cluster's certificate"))
		}
		if o.ClusterID != "" {
			if errs2 := validation.IsDNS1123Label(o.ClusterID); len(errs2) > 0 {
				errs = append(errs, fmt.Errorf("--cluster-id %q: a certificate names the cluster, so the ID must be a DNS-1123 label: %s", o.ClusterID, strings.Join(errs2, "; ")))
			}
		}
	}
	joining, flag := t.JoinToken != "" || t.JoinTokenFile != "", "--join-token"
	if t.JoinTokenFile != "" {
		flag = "--join-token-file"
	}
	switch {
	case t.JoinToken != "" && t.JoinTokenFile != "":
		errs = append(errs, errors.New("--join-token and --join-token-file are exclusive: give the token one way (the file keeps it out of the process list)"))
	case joining && o.HubAddress == "":
		errs = append(errs, fmt.Errorf("%s needs --hub-address", flag))
	case joining && t.HubCAHash == "":
		errs = append(errs, fmt.Errorf("%s needs --hub-ca-hash: the spoke sends the token only to the hub whose CA has that hash", flag))
	case !joining && t.HubCAHash != "":
		errs = append(errs, errors.New("--hub-ca-hash is used only with --join-token or --join-token-file"))
	}
	if t.HubCAHash != "" && !caHash.MatchString(t.HubCAHash) {
		errs = append(errs, fmt.Errorf("--hub-ca-hash %q: want sha256:<64 hex digits>", t.HubCAHash))
	}
	if t.EPPClientCAFile != "" && !t.EPPSecureServing {
		errs = append(errs, errors.New("--epp-client-ca-file needs --epp-secure-serving: a plaintext EPP cannot ask for client certificates"))
	}
	if t.EPPCertDir != "" && t.InsecureHTTP && (o.EPPAddress == "" || !t.EPPSecureServing) {
		errs = append(errs, errors.New("--epp-cert-dir is unused: neither the EPP nor --http-address serves TLS"))
	}
	if t.RemoteGatewayCAFile != "" && !t.RemoteGatewayTLS {
		errs = append(errs, errors.New("--remote-gateway-ca-file needs --remote-gateway-tls"))
	}
	return errs
}

// caHash is what --hub-ca-hash looks like (tlsconfig.SPKIHash).
var caHash = regexp.MustCompile(`^sha256:[0-9a-fA-F]{64}$`)

package server

import "github.com/prometheus/client_golang/prometheus"

const (
	labelKind    = "kind"
	labelCode    = "code"
	labelMethod  = "method"
	labelLimit   = "limit"
	labelReason  = "reason"
	labelOutcome = "outcome"
)

// Values of the limit label of spillway_hub_limit_exceeded_total: the registry's limits, the
// report rate, and the protocol's caps on the entries of one message.
const (
	limitClusters          = "clusters"            // registry.LimitClusters
	limitExportsPerCluster = "exports_per_cluster" // registry.LimitExportsPerCluster
	limitReportRate        = "report_rate"         // capacity reports
	limitInterestRate      = "interest_rate"       // capacity interest changes
	limitImportReportRate  = "import_report_rate"  // import reports
	limitExportsPerDelta   = "exports_per_delta"
	limitPoolsPerReport    = "pools_per_report"
	limitEndpointsPerPool  = "endpoints_per_pool"
	limitPoolsPerImports   = "pools_per_import_report"
	limitPoolsPerInterest  = "pools_per_interest"
	limitEntriesPerExport  = "entries_per_export" // labels or target ports of one export
	limitAdaptersPerPool   = "lora_adapters_per_pool"
	limitSessionOpens      = "session_opens" // no slot to open a session within the wait (admit.go)
)

var limits = []string{
	limitClusters, limitExportsPerCluster, limitReportRate, limitInterestRate, limitImportReportRate, limitExportsPerDelta, limitPoolsPerReport,
	limitEndpointsPerPool, limitPoolsPerImports, limitPoolsPerInterest, limitEntriesPerExport, limitAdaptersPerPool, limitSessionOpens,
}

// Values of the reason label of spillway_hub_auth_denied_total.
const (
	reasonNoCertificate   = "no_certificate"   // a call that needs an identity came without a client certificate
	reasonNoIdentity      = "no_identity"      // the certificate carries no spiffe identity
	reasonTrustDomain     = "trust_domain"     // an identity of another trust domain
	reasonNotCluster      = "not_cluster"      // a user identity on the spokes' port
	reasonNotUser         = "not_user"         // a cluster or hub identity calling AdminService
	reasonNotHub          = "not_hub"          // another identity calling PeerService
	reasonRevoked         = "revoked"          // a certificate of a revoked cluster
	reasonExpired         = "expired"          // a call or session whose certificate expired (on a connection made before)
	reasonNotYetValid     = "not_yet_valid"    // a call whose certificate is not valid yet (clock skew)
	reasonClusterMismatch = "cluster_mismatch" // a message naming another cluster than the certificate
	reasonGatewayTaken    = "gateway_taken"    // a registration of a gateway address another cluster holds
	reasonRole            = "role"             // a viewer calling an admin method
	reasonNotExported     = "not_exported"     // capacity for a pool the cluster does not export
	reasonNamespace       = "namespace"        // an export in a namespace the hub does not allow
	reasonToken           = "token"            // a join with an unknown, expired or wrong token
	reasonTokenScope      = "token_scope"      // a join for a cluster its token does not name
	reasonTokenRevoked    = "token_revoked"    // a join with a token created before the cluster's revocation
	reasonCSRIdentity     = "csr_identity"     // a CSR for an identity the hub does not sign
	reasonMethod          = "method"           // a method not served on that port
)

var reasons = []string{
	reasonNoCertificate, reasonNoIdentity, reasonTrustDomain, reasonNotCluster, reasonNotUser, reasonNotHub, reasonRevoked,
	reasonExpired, reasonNotYetValid, reasonClusterMismatch, reasonGatewayTaken, reasonRole, reasonNotExported, reasonNamespace, reasonToken,
	reasonTokenScope, reasonTokenRevoked, reasonCSRIdentity, reasonMethod,
}

// Values of the kind label of spillway_hub_certificates_issued_total.
const (
	kindJoin  = "join"  // a cluster's certificate, at the approval of its join request
	kindRenew = "renew" // a cluster's certificate, renewed with the one it holds
	kindUser  = "user"  // a user's certificate, by an admin (IssueUserCertificate)
)

// Values of the outcome label of spillway_hub_join_requests_total.
const (
	outcomePending  = "pending"  // a new join request was recorded
	outcomeApproved = "approved" // a join request was approved and its certificate issued
	outcomeRefused  = "refused"  // a join was refused (token, CSR, scope, a conflicting pending request)
)

type metrics struct {
	sessions     prometheus.Gauge
	opening      prometheus.Gauge
	opensWaiting prometheus.Gauge
	openSeconds  prometheus.Histogram
	observers    prometheus.Gauge
	peerStreams  prometheus.Gauge
	peerMessages *prometheus.CounterVec
	received     *prometheus.CounterVec
	viewUpdates  *prometheus.CounterVec
	streamsEnded *prometheus.CounterVec
	panics       *prometheus.CounterVec
	limited      *prometheus.CounterVec
	denied       *prometheus.CounterVec
	joins        *prometheus.CounterVec
	certificates *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_hub_sync_sessions",
			Help: "Spoke sync streams open on this hub replica.",
		}),
		opening: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_hub_sync_sessions_opening",
			Help: "Spoke sessions this hub replica is opening (from the Hello to the first view update), at most --max-session-opens.",
		}),
		opensWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_hub_sync_sessions_waiting",
			Help: "Spoke sessions waiting for a slot to open; one that waits --session-open-wait is refused (Unavailable, limit session_opens).",
		}),
		openSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "spillway_hub_sync_session_open_duration_seconds",
			Help:    "How long spoke sessions held their admission slot: from the slot to the first view update sent (the registry's requests and the snapshot), or to the end of a session that failed before.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
		observers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_hub_sync_observers",
			Help: "Observer sync streams (fleet view and hop keys only) open on this hub replica.",
		}),
		peerStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_hub_peer_streams",
			Help: "Streams of reports this hub replica receives from other replicas (PeerService.Reports), one per replica it reaches.",
		}),
		peerMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_hub_peer_messages_received_total",
			Help: "Batches of reports received from other hub replicas, by kind (snapshot, delta).",
		}, []string{labelKind}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_hub_sync_messages_received_total",
			Help: "Messages received on spoke sync streams, by kind (hello, exports, capacity, interest, imports).",
		}, []string{labelKind}),
		viewUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_hub_view_updates_sent_total",
			Help: "Fleet view updates sent to spokes and watchers, by kind (snapshot, delta).",
		}, []string{labelKind}),
		streamsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_hub_sync_streams_ended_total",
			Help: "Spoke sync streams that ended, by gRPC status code (OK for a spoke that closed its side).",
		}, []string{labelCode}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_hub_grpc_handler_panics_total",
			Help: "Panics recovered in gRPC handlers (and the goroutines of a Sync stream), by full method name; each ended its call with Internal. Any is a bug: the log has its stack.",
		}, []string{labelMethod}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_hub_limit_exceeded_total",
			Help: "Requests refused because they passed a limit of the hub, by limit: clusters and exports_per_cluster (ResourceExhausted), report_rate, interest_rate and import_report_rate (the stream ends with ResourceExhausted), session_opens (no slot to open a session: Unavailable with a retry delay), or a cap on the entries of one message (InvalidArgument).",
		}, []string{labelLimit}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_hub_auth_denied_total",
			Help: "Calls and messages refused with Unauthenticated or PermissionDenied, by reason.",
		}, []string{labelReason}),
		joins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_hub_join_requests_total",
			Help: "Join requests, by outcome: pending (a new request recorded), approved (its certificate issued, by an admin or a token that approves automatically), refused.",
		}, []string{labelOutcome}),
		certificates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_hub_certificates_issued_total",
			Help: "Certificates the hub's CA issued, by kind: join and renew (clusters), user (IssueUserCertificate).",
		}, []string{labelKind}),
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.opening, m.opensWaiting, m.openSeconds, m.observers, m.peerStreams, m.peerMessages, m.received, m.viewUpdates, m.streamsEnded, m.panics, m.limited, m.denied, m.joins, m.certificates)
	}
	for _, k := range []string{"hello", "exports", "capacity", "interest", "imports"} {
		m.received.WithLabelValues(k)
	}
	for _, k := range []string{"snapshot", "delta"} {
		m.viewUpdates.WithLabelValues(k)
		m.peerMessages.WithLabelValues(k)
	}
	for _, l := range limits {
		m.limited.WithLabelValues(l)
	}
	for _, r := range reasons {
		m.denied.WithLabelValues(r)
	}
	for _, o := range []string{outcomePending, outcomeApproved, outcomeRefused} {
		m.joins.WithLabelValues(o)
	}
	for _, k := range []string{kindJoin, kindRenew, kindUser} {
		m.certificates.WithLabelValues(k)
	}
	return m
}

package server

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Limits of the sync protocol, documented in proto/spillway/v1.
const (
	MaxMessageBytes     = 1 << 20
	maxExportsPerDelta  = 1000
	maxPoolsPerReport   = 1000
	maxInterest         = 10000
	maxReasonLen        = 64
	maxMessageLen       = 1024
	maxLabels           = 64
	maxLabelKeyBytes    = 317
	maxLabelValueBytes  = 63
	maxTargetPorts      = 8
	maxLoRAAdapters     = 256
	maxPoolModels       = 64    // capacity.MaxPoolModels
	maxSketchBytes      = 16384 // prefix.MaxSketchBytes
	maxEndpointsPerPool = 1000
	// maxScrapeFailureKinds and maxFailureKind bound a pool's scrape failures by kind.
	maxScrapeFailureKinds = 8
	maxFailureKind        = 32
	maxShortString        = 64
)

// ErrInvalidArgument marks a request that breaks the API's rules.
var ErrInvalidArgument = errors.New("invalid argument")

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, args...), ErrInvalidArgument)
}

// tooManyError is an ErrInvalidArgument of a cap on the entries of one message; the hub counts
// it in spillway_hub_limit_exceeded_total under limit.
type tooManyError struct {
	field, what string
	n, max      int
	limit       string
}

func (e *tooManyError) Error() string {
	return fmt.Sprintf("%s: %d %s, at most %d allowed: %v", e.field, e.n, e.what, e.max, ErrInvalidArgument)
}

func (e *tooManyError) Unwrap() error { return ErrInvalidArgument }

func tooMany(limit, field string, n, max int, what string) error {
	return &tooManyError{field: field, what: what, n: n, max: max, limit: limit}
}

func poolKey(p *pb.PoolRef) string { return p.GetNamespace() + "/" + p.GetName() }

// checkName checks that v is a DNS-1123 label (label) or subdomain of at most max bytes; the
// length is checked first, so that an overlong value is not echoed back.
func checkName(field, v string, max int, label bool) error {
	switch {
	case v == "":
		return invalid(field, "must not be empty")
	case len(v) > max:
		return invalid(field, "%d bytes, at most %d allowed", len(v), max)
	}
	if isDNS1123(v, label) {
		return nil // the common case, without the regular expression (a Hello names thousands)
	}
	check := validation.IsDNS1123Subdomain
	if label {
		check = validation.IsDNS1123Label
	}
	if msgs := check(v); len(msgs) > 0 {
		return invalid(field, "%q: %s", v, strings.Join(msgs, "; "))
	}
	return nil
}

// isDNS1123 reports whether v is a DNS-1123 label (label) or subdomain as
// k8s.io/apimachinery's validation has it: labels of lower-case letters, digits and '-' that
// start and end with a letter or digit, at most 63 bytes for a label, and for a subdomain
// labels joined by '.', at most 253 bytes in all. FuzzIsDNS1123 holds it to apimachinery's answer.
func isDNS1123(v string, label bool) bool {
	if v == "" || (label && len(v) > validation.DNS1123LabelMaxLength) || len(v) > validation.DNS1123SubdomainMaxLength {
		return false
	}
	start := true // at the start of a label
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			start = false
		case c == '-':
			if start || i == len(v)-1 || v[i+1] == '.' {
				return false
			}
		case c == '.' && !label:
			if start || i == len(v)-1 {
				return false
			}
			start = true
		default:
			return false
		}
	}
	return true
}

// checkKeyHash checks that v is a public key's SHA-256 as the hub lists it: 64 lower-case hex
// digits.
func checkKeyHash(field, v string) error {
	if len(v) != 64 {
		return invalid(field, "%d characters, want the 64 hex digits of a SHA-256 (hubctl clusters requests -o json)", len(v))
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return invalid(field, "%q is not lower-case hex", v)
		}
	}
	return nil
}

func checkLen(field, v string, max int) error {
	if len(v) > max {
		return invalid(field, "%d bytes, at most %d allowed", len(v), max)
	}
	return nil
}

// ValidateClusterInfo checks a registration.
func ValidateClusterInfo(c *pb.ClusterInfo) error {
	if c == nil {
		return invalid("cluster", "is required")
	}
	var errs []error
	errs = append(errs, checkName("cluster.cluster_id", c.GetClusterId(), 253, false))
	errs = append(errs, checkName("cluster.region", c.GetRegion(), 63, true))
	if c.GetZone() != "" {
		errs = append(errs, checkName("cluster.zone", c.GetZone(), 63, true))
	}
	if gw := c.GetGatewayAddress(); gw != "" {
		if len(gw) > 255 {
			errs = append(errs, invalid("cluster.gateway_address", "%d bytes, at most 255 allowed", len(gw)))
		} else if host, port, err := net.SplitHostPort(gw); err != nil || host == "" {
			errs = append(errs, invalid("cluster.gateway_address", "%q is not host:port", gw))
		} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			errs = append(errs, invalid("cluster.gateway_address", "port %q out of range 1..65535", port))
		}
	}
	errs = append(errs, checkLen("cluster.version", c.GetVersion(), maxShortString))
	if c.GetClusterSet() != "" {
		errs = append(errs, checkName("cluster.cluster_set", c.GetClusterSet(), 253, false))
	}
	if n := len(c.GetLabels()); n > maxLabels {
		errs = append(errs, invalid("cluster.labels", "%d labels, at most %d", n, maxLabels))
	} else {
		for _, k := range slices.Sorted(maps.Keys(c.GetLabels())) {
			if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
				errs = append(errs, invalid("cluster.labels", "key %q: %s", k, strings.Join(msgs, "; ")))
			}
			if msgs := validation.IsValidLabelValue(c.GetLabels()[k]); len(msgs) > 0 {
				errs = append(errs, invalid("cluster.labels", "value of %q: %s", k, strings.Join(msgs, "; ")))
			}
		}
	}
	return errors.Join(errs...)
}

func validatePoolRef(field string, p *pb.PoolRef) error {
	if p == nil {
		return invalid(field, "is required")
	}
	return errors.Join(
		checkName(field+".namespace", p.GetNamespace(), 63, true),
		checkName(field+".name", p.GetName(), 253, false),
	)
}

// ValidateHello checks the first message of a sync stream.
func ValidateHello(h *pb.Hello) error {
	if h == nil {
		return invalid("hello", "the first message of a sync stream must be a hello")
	}
	errs := []error{
		checkName("hello.cluster_id", h.GetClusterId(), 253, false),
		checkLen("hello.spoke_incarnation", h.GetSpokeIncarnation(), maxShortString),
		checkLen("hello.view_cursor.hub_incarnation", h.GetViewCursor().GetHubIncarnation(), maxShortString),
	}
	if h.GetSpokeIncarnation() == "" {
		errs = append(errs, invalid("hello.spoke_incarnation", "must not be empty"))
	}
	errs = append(errs, validateInterest("hello.capacity_interest", h.GetCapacityInterest()))
	return errors.Join(errs...)
}

func validateInterest(field string, pools []*pb.PoolRef) error {
	if len(pools) > maxInterest {
		return tooMany(limitPoolsPerInterest, field, len(pools), maxInterest, "pools")
	}
	for i, p := range pools {
		if err := validatePoolRef(fmt.Sprintf("%s[%d]", field, i), p); err != nil {
			return err
		}
	}
	return nil
}

// ValidateImportReport checks a spoke's report of its InferencePoolImports.
func ValidateImportReport(r *pb.ImportReport) error {
	if n := len(r.GetPools()); n > maxInterest {
		return tooMany(limitPoolsPerImports, "imports.pools", n, maxInterest, "pools")
	}
	seen := make(map[string]bool, len(r.GetPools()))
	for i, p := range r.GetPools() {
		f := fmt.Sprintf("imports.pools[%d]", i)
		if err := validatePoolRef(f+".pool", p.GetPool()); err != nil {
			return err
		}
		key := poolKey(p.GetPool())
		if seen[key] {
			return invalid(f+".pool", "%s listed twice", key)
		}
		seen[key] = true
		if len(p.GetReason()) > maxReasonLen {
			return invalid(f+".reason", "%d bytes, at most %d allowed", len(p.GetReason()), maxReasonLen)
		}
		if p.GetImported() && p.GetReason() != "" {
			return invalid(f+".reason", "must be empty when imported")
		}
		if len(p.GetMessage()) > maxMessageLen {
			return invalid(f+".message", "%d bytes, at most %d allowed", len(p.GetMessage()), maxMessageLen)
		}
	}
	return nil
}

// ValidateExportDelta checks an export delta: besides each export's fields, no pool is listed
// twice, in upserts, in removes or in both.
func ValidateExportDelta(d *pb.ExportDelta) error {
	if d.GetSeq() == 0 {
		return invalid("exports.seq", "must be at least 1")
	}
	if n := len(d.GetUpserts()); n > maxExportsPerDelta {
		return tooMany(limitExportsPerDelta, "exports.upserts", n, maxExportsPerDelta, "exports")
	}
	if n := len(d.GetRemoves()); n > maxExportsPerDelta {
		return tooMany(limitExportsPerDelta, "exports.removes", n, maxExportsPerDelta, "pools")
	}
	upserted := make(map[string]bool, len(d.GetUpserts()))
	for i, e := range d.GetUpserts() {
		f := fmt.Sprintf("exports.upserts[%d]", i)
		if err := validatePoolRef(f+".pool", e.GetPool()); err != nil {
			return err
		}
		k := poolKey(e.GetPool())
		if upserted[k] {
			return invalid(f+".pool", "%s listed twice", k)
		}
		upserted[k] = true
		if n := len(e.GetTargetPorts()); n > maxTargetPorts {
			return tooMany(limitEntriesPerExport, f+".target_ports", n, maxTargetPorts, "ports")
		}
		if n := len(e.GetTargetPorts()); n < 1 {
			return invalid(f+".target_ports", "%d ports, 1..%d allowed", n, maxTargetPorts)
		}
		for _, p := range e.GetTargetPorts() {
			if p < 1 || p > 65535 {
				return invalid(f+".target_ports", "port %d out of range 1..65535", p)
			}
		}
		if n := len(e.GetLabels()); n > maxLabels {
			return tooMany(limitEntriesPerExport, f+".labels", n, maxLabels, "labels")
		}
		for k, v := range e.GetLabels() {
			if k == "" || len(k) > maxLabelKeyBytes || len(v) > maxLabelValueBytes {
				return invalid(f+".labels", "label %q: key 1..%d bytes, value at most %d", k, maxLabelKeyBytes, maxLabelValueBytes)
			}
		}
	}
	removed := make(map[string]bool, len(d.GetRemoves()))
	for i, p := range d.GetRemoves() {
		f := fmt.Sprintf("exports.removes[%d]", i)
		if err := validatePoolRef(f, p); err != nil {
			return err
		}
		switch k := poolKey(p); {
		case upserted[k]:
			return invalid(f, "%s is also in upserts", k)
		case removed[k]:
			return invalid(f, "%s listed twice", k)
		default:
			removed[k] = true
		}
	}
	return nil
}

// ValidateCapacityReport checks a capacity report: besides each pool's fields, no pool is
// listed twice, in pools, in removed or in both.
func ValidateCapacityReport(r *pb.CapacityReport) error {
	if n := len(r.GetPools()); n > maxPoolsPerReport {
		return tooMany(limitPoolsPerReport, "capacity.pools", n, maxPoolsPerReport, "pools")
	}
	if n := len(r.GetRemoved()); n > maxPoolsPerReport {
		return tooMany(limitPoolsPerReport, "capacity.removed", n, maxPoolsPerReport, "pools")
	}
	reported := make(map[string]bool, len(r.GetPools()))
	for i, c := range r.GetPools() {
		f := fmt.Sprintf("capacity.pools[%d]", i)
		if err := validatePoolRef(f+".pool", c.GetPool()); err != nil {
			return err
		}
		k := poolKey(c.GetPool())
		if reported[k] {
			return invalid(f+".pool", "%s listed twice", k)
		}
		reported[k] = true
		if c.GetReadyEndpoints() > c.GetTotalEndpoints() {
			return invalid(f, "ready_endpoints %d exceeds total_endpoints %d", c.GetReadyEndpoints(), c.GetTotalEndpoints())
		}
		if u := c.GetKvCacheUtilization(); !(u >= 0 && u <= 1) {
			return invalid(f+".kv_cache_utilization", "%v outside 0..1", u)
		}
		if s := c.GetSaturation(); !(s >= 0 && s <= 1) {
			return invalid(f+".saturation", "%v outside 0..1", s)
		}
		if n := len(c.GetLoraAdapters()); n > maxLoRAAdapters {
			return tooMany(limitAdaptersPerPool, f+".lora_adapters", n, maxLoRAAdapters, "adapters")
		}
		for _, a := range c.GetLoraAdapters() {
			if a == "" || len(a) > 253 {
				return invalid(f+".lora_adapters", "adapter name must be 1..253 bytes")
			}
		}
		if n := len(c.GetModels()); n > maxPoolModels {
			return invalid(f+".models", "%d models, at most %d", n, maxPoolModels)
		}
		for _, m := range c.GetModels() {
			if m == "" || len(m) > 253 {
				return invalid(f+".models", "model name must be 1..253 bytes")
			}
		}
		if c.GpuUtilization != nil && !(c.GetGpuUtilization() >= 0 && c.GetGpuUtilization() <= 1) {
			return invalid(f+".gpu_utilization", "%v outside 0..1", c.GetGpuUtilization())
		}
		for _, e := range c.GetEndpoints() {
			if e.GpuUtilization != nil && !(e.GetGpuUtilization() >= 0 && e.GetGpuUtilization() <= 1) {
				return invalid(f+".endpoints.gpu_utilization", "%v outside 0..1", e.GetGpuUtilization())
			}
		}
		if sk := c.GetPrefixSketch(); sk != nil {
			n := len(sk.GetBloom())
			if n == 0 || n > maxSketchBytes || n&(n-1) != 0 || sk.GetHashFunctions() < 1 || sk.GetHashFunctions() > 32 ||
				sk.GetSample() < 1 || sk.GetSample() > 1024 || sk.GetSample()&(sk.GetSample()-1) != 0 || sk.GetBlockBytes() < 1 || sk.GetBlockBytes() > 1<<16 {
				return invalid(f+".prefix_sketch", "want a power-of-two filter of at most %d bytes, 1..32 hash functions, a power-of-two sample up to 1024 and a block size of 1..65536 bytes", maxSketchBytes)
			}
		}
		if len(c.GetSpillTarget()) > 253 || len(c.GetSpillTargetRegion()) > 63 {
			return invalid(f+".spill_target", "cluster ID at most 253 bytes, region at most 63")
		}
		if n := len(c.GetScrapeFailures()); n > maxScrapeFailureKinds {
			return invalid(f+".scrape_failures", "%d kinds of failure, at most %d", n, maxScrapeFailureKinds)
		}
		for kind, n := range c.GetScrapeFailures() {
			if kind == "" || len(kind) > maxFailureKind {
				return invalid(f+".scrape_failures", "kind %q must be 1..%d bytes", kind, maxFailureKind)
			}
			if n > c.GetTotalEndpoints() {
				return invalid(f+".scrape_failures", "%d endpoints failed %s, more than the pool's %d", n, kind, c.GetTotalEndpoints())
			}
		}
		if n := len(c.GetEndpoints()); n > maxEndpointsPerPool {
			return tooMany(limitEndpointsPerPool, f+".endpoints", n, maxEndpointsPerPool, "endpoints")
		}
		for j, e := range c.GetEndpoints() {
			if err := checkLen(fmt.Sprintf("%s.endpoints[%d].address", f, j), e.GetAddress(), maxShortString); err != nil {
				return err
			}
			if u := e.GetKvCacheUtilization(); !(u >= 0 && u <= 1) {
				return invalid(fmt.Sprintf("%s.endpoints[%d].kv_cache_utilization", f, j), "%v outside 0..1", u)
			}
			if err := checkLen(fmt.Sprintf("%s.endpoints[%d].scrape_error", f, j), e.GetScrapeError(), maxFailureKind); err != nil {
				return err
			}
		}
	}
	removed := make(map[string]bool, len(r.GetRemoved()))
	for i, p := range r.GetRemoved() {
		f := fmt.Sprintf("capacity.removed[%d]", i)
		if err := validatePoolRef(f, p); err != nil {
			return err
		}
		switch k := poolKey(p); {
		case reported[k]:
			return invalid(f, "%s is also in pools", k)
		case removed[k]:
			return invalid(f, "%s listed twice", k)
		default:
			removed[k] = true
		}
	}
	return nil
}

// maxPeerEntries bounds the entries of each list of a batch of a peer replica's reports: a
// snapshot holds every report of the replica's spokes.
const maxPeerEntries = 1_000_000

// ValidateReports checks a batch of a peer replica's reports (PeerService.Reports) before it is
// merged: the sender's ID and incarnation, each capacity report as a spoke's is checked, with
// its cluster and a non-negative age, each import report, and the clusters named. A replica is
// trusted by its certificate, yet a bug in one must not corrupt every other replica's view.
func ValidateReports(m *pb.ReportsResponse) error {
	errs := []error{
		checkName("hub_id", m.GetHubId(), 63, true),
		checkLen("hub_incarnation", m.GetHubIncarnation(), maxShortString),
	}
	if m.GetHubIncarnation() == "" {
		errs = append(errs, invalid("hub_incarnation", "must not be empty"))
	}
	for _, l := range []struct {
		field string
		n     int
	}{{"capacity", len(m.GetCapacity())}, {"capacity_removed", len(m.GetCapacityRemoved())}, {"imports", len(m.GetImports())}, {"sessions_ended", len(m.GetSessionsEnded())}, {"budgets", len(m.GetBudgets())}} {
		if l.n > maxPeerEntries {
			return invalid(l.field, "%d entries, at most %d allowed", l.n, maxPeerEntries)
		}
	}
	for i, c := range m.GetCapacity() {
		f := fmt.Sprintf("capacity[%d]", i)
		if err := checkName(f+".cluster_id", c.GetClusterId(), 253, false); err != nil {
			errs = append(errs, err)
			continue
		}
		if c.GetCapacity() == nil {
			errs = append(errs, invalid(f+".capacity", "missing"))
			continue
		}
		if err := ValidateCapacityReport(&pb.CapacityReport{Pools: []*pb.PoolCapacity{c.GetCapacity()}}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
		}
		if age := c.GetAge(); age != nil && (age.CheckValid() != nil || age.AsDuration() < 0) {
			errs = append(errs, invalid(f+".age", "%v: want a valid, non-negative duration", age.AsDuration()))
		}
	}
	for i, k := range m.GetCapacityRemoved() {
		f := fmt.Sprintf("capacity_removed[%d]", i)
		errs = append(errs, checkName(f+".cluster_id", k.GetClusterId(), 253, false), validatePoolRef(f+".pool", k.GetPool()))
	}
	clusters := make(map[string]bool, len(m.GetImports()))
	for i, r := range m.GetImports() {
		f := fmt.Sprintf("imports[%d]", i)
		if err := checkName(f+".cluster_id", r.GetClusterId(), 253, false); err != nil {
			errs = append(errs, err)
			continue
		}
		if clusters[r.GetClusterId()] {
			errs = append(errs, invalid(f+".cluster_id", "%s listed twice", r.GetClusterId()))
		}
		clusters[r.GetClusterId()] = true
		if err := ValidateImportReport(&pb.ImportReport{Pools: r.GetPools()}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
		}
	}
	for i, c := range m.GetSessionsEnded() {
		errs = append(errs, checkName(fmt.Sprintf("sessions_ended[%d]", i), c, 253, false))
	}
	return errors.Join(errs...)
}

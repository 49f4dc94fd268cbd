package tlsconfig

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// labelRole is the constant label of spillway_tls_certificate_expiry_timestamp_seconds: what the
// key pair is for, such as "hub-server" or "spoke-client".
const labelRole = "role"

// newExpiryGauge reports notAfter as seconds since the Unix epoch, read at every scrape so that
// it follows reloads. Role is a constant label so that several key pairs of one process can
// register on one registry.
func newExpiryGauge(role string, notAfter func() time.Time) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "spillway_tls_certificate_expiry_timestamp_seconds",
		Help:        "When the certificate currently loaded stops being valid (its NotAfter), in seconds since the Unix epoch, by role.",
		ConstLabels: prometheus.Labels{labelRole: role},
	}, func() float64 { return float64(notAfter().Unix()) })
}

package modelmetrics

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a scrape fails, the reason label of spillway_spoke_scrape_failures_total and
// Sample.Reason.
const (
	ReasonRefused    = "refused"     // nothing listens at the endpoint
	ReasonTimeout    = "timeout"     // no whole page within the scrape timeout
	ReasonHTTPStatus = "http_status" // an answer other than 200
	ReasonTooLarge   = "too_large"   // a page over 8 MiB
	ReasonUnparsable = "unparsable"  // a page the engine's parser cannot read, or without the metrics routing needs
	ReasonConnection = "connection"  // the connection failed otherwise (reset, closed, unreachable)
	ReasonConfig     = "config"      // the endpoint cannot be scraped as configured (unknown engine, bad path)
)

// httpStatusError is an answer other than 200.
type httpStatusError struct{ code int }

func (e *httpStatusError) Error() string { return "HTTP " + strconv.Itoa(e.code) }

// errTooLarge is a page over maxPageBytes.
var errTooLarge = errors.New("page larger than 8 MiB")

// fetchReason names why fetching a page failed.
func fetchReason(err error) string {
	var status *httpStatusError
	var ne net.Error
	switch {
	case errors.As(err, &status):
		return ReasonHTTPStatus
	case errors.Is(err, errTooLarge):
		return ReasonTooLarge
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonRefused
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return ReasonTimeout
	default:
		return ReasonConnection
	}
}

// failureLogEvery bounds how often one endpoint logs that its scrapes fail: an endpoint that
// flaps logs once in this long, with the count of the episodes it did not log.
const failureLogEvery = time.Minute

// health follows one endpoint's scrapes for the failure metric and the logs: a line when its
// scrapes start failing (at most one a minute) and one when they recover, if the failure was
// logged. Each endpoint's loop owns its own.
type health struct {
	addr    string
	log     *slog.Logger
	metrics *scrapeMetrics

	failingSince time.Time
	logged       bool // the current failure was logged
	lastLog      time.Time
	unlogged     int // failures not logged since the last line
}

func (h *health) failed(now time.Time, reason string, err error) {
	h.metrics.failures.WithLabelValues(reason).Inc()
	if !h.failingSince.IsZero() {
		return
	}
	h.failingSince = now
	if !h.lastLog.IsZero() && now.Sub(h.lastLog) < failureLogEvery {
		h.unlogged++
		return
	}
	h.log.Warn("model server scrapes failing; its metrics go stale", "endpoint", h.addr, "reason", reason, "err", err, "unloggedFailures", h.unlogged)
	h.logged, h.lastLog, h.unlogged = true, now, 0
}

func (h *health) succeeded(now time.Time) {
	if h.failingSince.IsZero() {
		return
	}
	if h.logged {
		h.log.Info("model server scrapes recovered", "endpoint", h.addr, "failedFor", now.Sub(h.failingSince).Round(time.Millisecond))
	}
	h.failingSince, h.logged = time.Time{}, false
}

// scrapeMetrics are a Scraper's metrics.
type scrapeMetrics struct {
	failures *prometheus.CounterVec
}

func newScrapeMetrics(reg prometheus.Registerer) *scrapeMetrics {
	m := &scrapeMetrics{
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_spoke_scrape_failures_total",
			Help: "Failed scrapes of model servers' /metrics pages, by reason: refused, timeout, http_status, too_large, unparsable, connection, config.",
		}, []string{"reason"}),
	}
	for _, r := range []string{ReasonRefused, ReasonTimeout, ReasonHTTPStatus, ReasonTooLarge, ReasonUnparsable, ReasonConnection, ReasonConfig} {
		m.failures.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.failures)
	}
	return m
}

package join

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// recheck bounds how long the renewer sleeps before it looks at the key pair again, so that a
// certificate replaced on disk is noticed.
const recheck = time.Minute

// RenewerOptions configure a Renewer.
type RenewerOptions struct {
	// HubAddress is the host:port of the hub's spokes' port; ServerName as in Options.
	HubAddress string
	ServerName string
	// Dir is the credentials directory KeyPair and CAPool were loaded from; renewals rewrite it.
	Dir string
	// KeyPair is the spoke's current cluster key pair (tlsconfig.LoadDir), which Renew is called
	// with and which reloads the rewritten files; CAPool verifies the hub.
	KeyPair *tlsconfig.KeyPair
	CAPool  *tlsconfig.CAPool
	// MinBackoff and MaxBackoff bound the wait between failed attempts; zero means 1 s and 1 min.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives renewals and failures; nil discards them.
	Logger *slog.Logger
	// Registerer, when set, gets spillway_spoke_certificate_renewals_total.
	Registerer prometheus.Registerer
}

// Renewer renews the cluster certificate of a joined credentials directory before it expires.
type Renewer struct {
	o        RenewerOptions
	id       tlsconfig.Identity
	log      *slog.Logger
	renewals *prometheus.CounterVec
}

// Result label values of spillway_spoke_certificate_renewals_total.
const (
	resultRenewed = "renewed"
	resultFailed  = "failed"
)

// NewRenewer returns a renewer of the key pair's identity; Run renews.
func NewRenewer(o RenewerOptions) (*Renewer, error) {
	if o.KeyPair == nil || o.CAPool == nil {
		return nil, errors.New("certificate renewer: a key pair and a CA pool are required")
	}
	if _, _, err := net.SplitHostPort(o.HubAddress); err != nil {
		return nil, fmt.Errorf("certificate renewer: hub address %q: want host:port", o.HubAddress)
	}
	id, err := tlsconfig.IdentityOf(o.KeyPair.Certificate().Leaf)
	if err != nil {
		return nil, fmt.Errorf("certificate renewer: %w", err)
	}
	if o.ServerName == "" {
		o.ServerName, _, _ = net.SplitHostPort(o.HubAddress)
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(time.Minute, o.MinBackoff)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Renewer{o: o, id: id, log: o.Logger.With("component", "cert-renewer", "identity", id.String()),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_spoke_certificate_renewals_total",
			Help: "Renewals of the cluster certificate the spoke got by joining, by result (renewed, failed).",
		}, []string{"result"})}
	for _, res := range []string{resultRenewed, resultFailed} {
		r.renewals.WithLabelValues(res)
	}
	if o.Registerer != nil {
		if err := o.Registerer.Register(r.renewals); err != nil {
			return nil, fmt.Errorf("certificate renewer: %w", err)
		}
	}
	return r, nil
}

// RenewAt is when a certificate is renewed: when a third of its lifetime is left.
func RenewAt(cert *x509.Certificate) time.Time {
	return cert.NotAfter.Add(-cert.NotAfter.Sub(cert.NotBefore) / 3)
}

// Run renews the certificate whenever a third of its lifetime is left, until ctx ends; it then
// returns nil. A failed renewal is retried with backoff, and logged.
func (r *Renewer) Run(ctx context.Context) error {
	var written *x509.Certificate // the last certificate written, until the key pair has reloaded it
	var renewed time.Time         // when; renewals are at least MinBackoff apart, however short-lived the certificates
	for {
		current := r.o.KeyPair.Certificate().Leaf
		if written != nil && written.NotAfter.After(current.NotAfter) {
			current = written
		}
		if wait := max(time.Until(RenewAt(current)), time.Until(renewed.Add(r.o.MinBackoff))); wait > 0 {
			t := time.NewTimer(min(wait, recheck))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		r.log.Info("renewing the cluster certificate", "notAfter", current.NotAfter)
		bo := backoff.NewExponentialBackOff()
		bo.InitialInterval, bo.MaxInterval = r.o.MinBackoff, r.o.MaxBackoff
		leaf, err := backoff.Retry(ctx, func() (*x509.Certificate, error) { return r.renew(ctx) },
			backoff.WithBackOff(bo), backoff.WithMaxElapsedTime(0),
			backoff.WithNotify(func(err error, wait time.Duration) {
				r.renewals.WithLabelValues(resultFailed).Inc()
				if time.Now().After(current.NotAfter) {
					r.log.Error("cluster certificate expired and could not be renewed; retrying (if the hub refuses it, join again: remove tls.crt and start with a new --join-token)",
						"err", err, "retry", wait, "notAfter", current.NotAfter)
					return
				}
				r.log.Warn("cluster certificate renewal failed; retrying", "err", err, "retry", wait, "notAfter", current.NotAfter)
			}))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("certificate renewer: %w", err)
		}
		written, renewed = leaf, time.Now()
		r.renewals.WithLabelValues(resultRenewed).Inc()
		r.log.Info("cluster certificate renewed", "notAfter", leaf.NotAfter)
	}
}

// renew asks the hub for a certificate for a new key, checks it and rewrites the files. Each
// attempt dials a connection of its own, whose handshake presents the key pair loaded last: a
// connection keeps the certificate of its handshake, which the hub refuses once it expired.
func (r *Renewer) renew(ctx context.Context) (*x509.Certificate, error) {
	csrPEM, keyPEM, err := tlsconfig.NewCSR(r.id)
	if err != nil {
		return nil, backoff.Permanent(err)
	}
	conn, err := grpc.NewClient(r.o.HubAddress, grpc.WithTransportCredentials(
		credentials.NewTLS(tlsconfig.ClientConfig(r.o.KeyPair, r.o.CAPool, r.o.ServerName))))
	if err != nil {
		return nil, backoff.Permanent(fmt.Errorf("hub address %q: %w", r.o.HubAddress, err))
	}
	defer conn.Close()
	cli := pb.NewJoinServiceClient(conn)
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var p peer.Peer
	resp, err := cli.Renew(cctx, &pb.RenewRequest{CsrPem: csrPEM}, grpc.Peer(&p))
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	caPEM := resp.GetCaBundlePem()
	if len(caPEM) == 0 {
		if caPEM, err = readBundle(r.o.Dir); err != nil {
			return nil, err
		}
	} else if err := checkBundle(caPEM, &p, r.o.ServerName); err != nil {
		return nil, err
	}
	leaf, err := checkIssued(resp.GetCertificatePem(), keyPEM, caPEM, r.id, time.Now())
	if err != nil {
		return nil, err
	}
	if err := writeCredentials(r.o.Dir, caPEM, resp.GetCertificatePem(), keyPEM); err != nil {
		return nil, err
	}
	return leaf, nil
}

// Package etcd connects the hub to its etcd: an external cluster given by endpoints, or an embedded
// single-member etcd in a data directory, the default for a hub that runs alone.
//
// Every connection is TLS. The embedded etcd serves its client and peer ports on loopback only,
// with mutual TLS from a throwaway CA made at each start (EmbeddedTLS): nothing but the hub that
// started it holds a client certificate it accepts. An external etcd is reached as etcdctl reaches
// it, with a CA bundle, a client certificate and its key (ClientTLS); the files are read by etcd's
// own transport.TLSInfo, which reads the key pair again at each connection, so a rotated client
// certificate is used without a restart.
package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// readyTimeout bounds the start of the embedded etcd.
const readyTimeout = 60 * time.Second

// EmbeddedOptions configure StartEmbedded.
type EmbeddedOptions struct {
	// Dir is the data directory; the member's data goes to Dir/member and its TLS files to
	// Dir/tls.
	Dir string
	// ListenAddress is the client host:port, on a loopback address; port 0 picks a free one.
	// The peer port is bound to the same host, on a free port.
	ListenAddress string
	// QuotaBytes is the backend quota (etcd's --quota-backend-bytes); zero means etcd's default.
	QuotaBytes int64
}

// Embedded is a running embedded etcd.
type Embedded struct {
	etcd      *embed.Etcd
	closeOnce sync.Once
	// Endpoint is the https URL of the client port, on loopback.
	Endpoint string
	// ClientTLS is the hub's client configuration for Endpoint: it presents the client
	// certificate of this start's throwaway CA and trusts that CA alone.
	ClientTLS *tls.Config
}

// StartEmbedded starts a single-member etcd storing its data in opts.Dir, serving clients and
// peers over mutual TLS on loopback, and waits until it is ready.
func StartEmbedded(ctx context.Context, opts EmbeddedOptions) (*Embedded, error) {
	host, _, err := net.SplitHostPort(opts.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd listen address %q: %w", opts.ListenAddress, err)
	}
	if !isLoopback(host) {
		return nil, fmt.Errorf("embedded etcd listen address %q: want a loopback address", opts.ListenAddress)
	}
	files, err := writeEmbeddedTLS(opts.Dir)
	if err != nil {
		return nil, err
	}
	clientTLS, err := files.clientInfo().ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("embedded etcd client TLS: %w", err)
	}

	cfg := embed.NewConfig()
	cfg.Name = "spillway-hub"
	cfg.Dir = opts.Dir
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cu := url.URL{Scheme: "https", Host: opts.ListenAddress}
	pu := url.URL{Scheme: "https", Host: net.JoinHostPort(host, "0")}
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{cu}
	cfg.ListenPeerUrls = []url.URL{pu}
	cfg.AdvertisePeerUrls = []url.URL{pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.ClientTLSInfo = files.serverInfo()
	cfg.PeerTLSInfo = files.serverInfo()
	cfg.TlsMinVersion = "TLS1.3"
	cfg.QuotaBackendBytes = opts.QuotaBytes
	// The hub's data is small; compact the history hourly.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", opts.Dir, err)
	}
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed: %w", err)
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s not ready after %s", opts.Dir, readyTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return &Embedded{
		etcd:      e,
		Endpoint:  "https://" + e.Clients[0].Addr().String(),
		ClientTLS: clientTLS,
	}, nil
}

// isLoopback reports whether host is "localhost" or a loopback IP address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Err reports a fatal error of the running server.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the server; later calls do nothing.
func (e *Embedded) Close() { e.closeOnce.Do(e.etcd.Close) }

// Client returns a client of the embedded etcd, presenting this start's client certificate.
func (e *Embedded) Client() (*clientv3.Client, error) {
	return Dial([]string{e.Endpoint}, e.ClientTLS)
}

// Dial returns a client of the given endpoints. tlsCfg is used for https endpoints (nil: the
// system's roots and no client certificate); http endpoints are plaintext, which Validate of the
// hub's options refuses together with TLS flags.
func Dial(endpoints []string, tlsCfg *tls.Config) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		TLS:                  tlsCfg,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", endpoints, err)
	}
	return cli, nil
}

// ErrUnreachable is wrapped by Check's error.
var ErrUnreachable = errors.New("etcd unreachable")

// probeTimeout bounds the diagnosis of an endpoint Check could not use.
const probeTimeout = 3 * time.Second

// Check reads one key within timeout, so that a hub that cannot use its etcd (a wrong address,
// a certificate the server refuses, a server it cannot verify) fails at start with the reason
// rather than at the first registration. tlsCfg is the one cli was made with.
//
// The client waits for a connection until its deadline and then says only that; on failure
// each endpoint is called once more, on a connection of its own that fails fast, and the
// connection's error (the TLS handshake's, typically) is part of the error returned.
func Check(ctx context.Context, cli *clientv3.Client, tlsCfg *tls.Config, timeout time.Duration) error {
	getCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := cli.Get(getCtx, "health", clientv3.WithCountOnly())
	if err == nil {
		return nil
	}
	reasons := []error{fmt.Errorf("%w at %v: %w", ErrUnreachable, cli.Endpoints(), err)}
	for _, ep := range cli.Endpoints() {
		if perr := probe(ctx, ep, tlsCfg); perr != nil {
			reasons = append(reasons, fmt.Errorf("%s: %w", ep, perr))
		}
	}
	return errors.Join(reasons...)
}

// probe reaches one endpoint once as the etcd client would (TLS for https, or for an endpoint
// without scheme when tlsCfg is set; plaintext for http) and returns what went wrong, or nil when
// nothing did at the transport level.
func probe(ctx context.Context, endpoint string, tlsCfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	host, useTLS := endpoint, tlsCfg != nil
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" {
		host, useTLS = u.Host, u.Scheme == "https"
	}
	if useTLS {
		return probeTLS(ctx, host, tlsCfg)
	}
	conn, err := grpc.NewClient("passthrough:///"+host, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(false))
	if err != nil && strings.Contains(err.Error(), "server preface") {
		return fmt.Errorf("%w (the server closed a plaintext connection: if it serves TLS, use an https:// endpoint and --etcd-cacert)", err)
	}
	return err
}

// probeTLS completes a TLS handshake with host and waits a moment for the server's verdict on the
// client's certificate, which TLS 1.3 sends after the client's side of the handshake is done.
func probeTLS(ctx context.Context, host string, tlsCfg *tls.Config) error {
	cfg := &tls.Config{}
	if tlsCfg != nil {
		cfg = tlsCfg.Clone()
	}
	if cfg.ServerName == "" {
		if h, _, err := net.SplitHostPort(host); err == nil {
			cfg.ServerName = h
		}
	}
	d := tls.Dialer{Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return nil // the server is waiting for the client's first request: it accepted the handshake
		}
		return fmt.Errorf("TLS handshake: %w", err)
	}
	return nil
}

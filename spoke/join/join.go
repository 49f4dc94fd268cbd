package join

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// callTimeout bounds one call to the hub.
const callTimeout = 10 * time.Second

// Options configure Join.
type Options struct {
	// HubAddress is the host:port of the hub's spokes' port.
	HubAddress string
	// ServerName is the name the hub's certificate is verified for; empty means the host of
	// HubAddress (an IP address is checked against the certificate's IP SANs).
	ServerName string
	// Token is the bootstrap token, "<id>.<secret>". It is sent only to a hub verified with a
	// CA bundle matching CAHash, and never logged.
	Token string
	// CAHash pins the hub's CA: "sha256:<hex>" of one of its CA certificates' public key.
	CAHash string
	// TrustDomain and ClusterID make the identity asked for,
	// spiffe://<TrustDomain>/cluster/<ClusterID>.
	TrustDomain string
	ClusterID   string
	// Dir is the credentials directory written on approval (created when missing).
	Dir string
	// MinBackoff and MaxBackoff bound the wait between attempts while the hub is unreachable
	// or the request pending; zero means 1 s and 10 s.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives progress, with component and hub attributes added; it carries the cluster
	// already (the spoke's does), so Join adds none. Nil discards it.
	Logger *slog.Logger
}

func (o *Options) complete() {
	if o.ServerName == "" {
		if host, _, err := net.SplitHostPort(o.HubAddress); err == nil {
			o.ServerName = host
		}
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(10*time.Second, o.MinBackoff)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

func (o *Options) validate() (tlsconfig.Identity, error) {
	var errs []error
	if _, _, err := net.SplitHostPort(o.HubAddress); err != nil {
		errs = append(errs, fmt.Errorf("hub address %q: want host:port", o.HubAddress))
	}
	if o.Token == "" {
		errs = append(errs, errors.New("a join token is required"))
	}
	if !strings.HasPrefix(o.CAHash, "sha256:") {
		errs = append(errs, fmt.Errorf("CA hash %q: want sha256:<hex>, as `hubctl tokens create` prints it", o.CAHash))
	}
	if o.Dir == "" {
		errs = append(errs, errors.New("a credentials directory is required"))
	}
	id := tlsconfig.Identity{TrustDomain: o.TrustDomain, Kind: tlsconfig.KindCluster, Name: o.ClusterID}
	if _, err := tlsconfig.ParseIdentity(id.String()); err != nil {
		errs = append(errs, fmt.Errorf("cluster identity: %w", err))
	}
	return id, errors.Join(errs...)
}

// Join gets the cluster's certificate from the hub by the bootstrap-token flow (see the package
// comment) and writes it with its key and the hub's CA bundle into o.Dir. It returns once the
// files are written, or with an error when the hub cannot be trusted, the request is denied or
// refused, the answer is unusable, or ctx ends.
func Join(ctx context.Context, o Options) error {
	o.complete()
	id, err := o.validate()
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	log := o.Logger.With("component", "join", "hub", o.HubAddress)
	pool, err := discover(ctx, &o, log)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	csrPEM, keyPEM, err := joinKey(o.Dir, id, log)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	conn, err := grpc.NewClient(o.HubAddress,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.ClientConfig(nil, pool, o.ServerName))))
	if err != nil {
		return fmt.Errorf("join: hub address %q: %w", o.HubAddress, err)
	}
	defer conn.Close()
	resp, p, err := request(ctx, &o, log, pb.NewJoinServiceClient(conn), &pb.JoinRequest{Token: o.Token, CsrPem: csrPEM})
	if errors.Is(err, ErrDenied) {
		// The hub keeps answering a denied key with the denial: the next join makes a new one.
		if rerr := removeJoinKey(o.Dir); rerr != nil {
			log.Warn("could not remove the denied join key", "err", rerr)
		}
	}
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	if got := resp.GetClusterId(); got != "" && got != o.ClusterID {
		return fmt.Errorf("join: %w: approved for cluster %q, the spoke asked for %q", ErrBadResponse, got, o.ClusterID)
	}
	// The bundle of the approval came over the connection verified with the pinned CA; the one
	// of Discover did not, and is never stored.
	caPEM := resp.GetCaBundlePem()
	if len(caPEM) == 0 {
		return fmt.Errorf("join: %w: the approval carries no CA bundle", ErrBadResponse)
	}
	if _, err := tlsconfig.MatchCAHash(caPEM, o.CAHash); err != nil {
		return fmt.Errorf("join: %w: the CA bundle of the approval no longer holds the pinned CA: %w", ErrBadResponse, err)
	}
	if err := checkBundle(caPEM, p, o.ServerName); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	leaf, err := checkIssued(resp.GetCertificatePem(), keyPEM, caPEM, id, time.Now())
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	if err := writeCredentials(o.Dir, caPEM, resp.GetCertificatePem(), keyPEM); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	log.Info("joined the fleet: cluster certificate stored", "identity", id.String(), "dir", o.Dir, "notAfter", leaf.NotAfter)
	return nil
}

// discover fetches the hub's CA bundle over an unverified connection and trusts it only when it
// matches the pinned hash. Transient failures (the hub not up yet) are retried.
func discover(ctx context.Context, o *Options, log *slog.Logger) (*tlsconfig.CAPool, error) {
	// The one unverified connection: Discover sends nothing and returns public data, which is
	// checked against the pin before anything else happens.
	insecureTLS := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} //nolint:gosec // see above
	conn, err := grpc.NewClient(o.HubAddress, grpc.WithTransportCredentials(credentials.NewTLS(insecureTLS)))
	if err != nil {
		return nil, fmt.Errorf("hub address %q: %w", o.HubAddress, err)
	}
	defer conn.Close()
	cli := pb.NewJoinServiceClient(conn)
	resp, err := backoff.Retry(ctx, func() (*pb.DiscoverResponse, error) {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		resp, err := cli.Discover(cctx, &pb.DiscoverRequest{})
		if err != nil {
			return nil, classify("discover", err)
		}
		return resp, nil
	}, retryOptions(o, func(err error, wait time.Duration) {
		log.Warn("hub discovery failed; retrying", "err", err, "retry", wait)
	})...)
	if err != nil {
		return nil, err
	}
	if td := resp.GetTrustDomain(); td != "" && td != o.TrustDomain {
		return nil, fmt.Errorf("%w: the hub's is %q, --trust-domain is %q", ErrTrustDomain, td, o.TrustDomain)
	}
	pool, err := tlsconfig.MatchCAHash(resp.GetCaBundlePem(), o.CAHash)
	if err != nil {
		return nil, fmt.Errorf("%w (the token was not sent): %w", ErrCAHashMismatch, err)
	}
	return pool, nil
}

// errPending makes the retry loop ask again while the request awaits approval.
var errPending = errors.New("the join request awaits approval")

// request calls Join until the request is approved, and returns the approval with the peer
// that answered it.
func request(ctx context.Context, o *Options, log *slog.Logger, cli pb.JoinServiceClient, req *pb.JoinRequest) (*pb.JoinResponse, *peer.Peer, error) {
	var p peer.Peer
	awaiting := false
	resp, err := backoff.Retry(ctx, func() (*pb.JoinResponse, error) {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		resp, err := cli.Join(cctx, req, grpc.Peer(&p))
		if err != nil {
			return nil, classify("join", err)
		}
		switch resp.GetState() {
		case pb.JoinState_JOIN_STATE_APPROVED:
			return resp, nil
		case pb.JoinState_JOIN_STATE_PENDING:
			if !awaiting {
				awaiting = true
				log.Info("join request sent; awaiting approval on the hub",
					"approve", "hubctl clusters approve "+o.ClusterID, "message", resp.GetMessage())
			}
			return nil, errPending
		case pb.JoinState_JOIN_STATE_DENIED:
			return nil, backoff.Permanent(fmt.Errorf("%w: %s", ErrDenied, orDefault(resp.GetMessage(), "no reason given")))
		}
		return nil, backoff.Permanent(fmt.Errorf("%w: join state %s", ErrBadResponse, resp.GetState()))
	}, retryOptions(o, func(err error, wait time.Duration) {
		if !errors.Is(err, errPending) {
			log.Warn("join request failed; retrying", "err", err, "retry", wait)
		}
	})...)
	if err != nil {
		return nil, nil, err
	}
	return resp, &p, nil
}

// classify makes a gRPC error permanent when asking again cannot help: the hub refused the
// token or the request, or does not serve the join flow.
func classify(call string, err error) error {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument, codes.FailedPrecondition,
		codes.NotFound, codes.Unimplemented, codes.AlreadyExists:
		return backoff.Permanent(fmt.Errorf("%w: %s: %s: %s", ErrRefused, call, st.Code(), st.Message()))
	}
	return fmt.Errorf("%s: %w", call, err)
}

func retryOptions(o *Options, notify backoff.Notify) []backoff.RetryOption {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = o.MinBackoff, o.MaxBackoff
	return []backoff.RetryOption{backoff.WithBackOff(bo), backoff.WithMaxElapsedTime(0), backoff.WithNotify(notify)}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

package hubclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"

	"github.com/spillway-io/spillway/pkg/fleetpb"
	"github.com/spillway-io/spillway/pkg/thinstream"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// maxAttempts is how many connection attempts a client makes at once.
const maxAttempts = 3

// newConn returns a connection (not yet connecting) to the replica at ep.
func (c *Client) newConn(ep endpoint, dial []grpc.DialOption) (*grpc.ClientConn, error) {
	name := ep.serverName
	if c.opts.TLSServerName != "" {
		name = c.opts.TLSServerName
	}
	var cfg *tls.Config
	switch {
	case c.opts.TLSFor != nil:
		cfg = c.opts.TLSFor(name)
	case c.opts.TLS != nil:
		cfg = c.opts.TLS.Clone()
		cfg.ServerName = name
		// A VerifyConnection made without a name (tlsconfig.ClientConfig's with "") verifies
		// for the SNI the handshake sent, and none is sent for an IP address: it is told the
		// name dialed.
		if verify := cfg.VerifyConnection; verify != nil {
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if cs.ServerName == "" {
					cs.ServerName = name
				}
				return verify(cs)
			}
		}
	}
	if cfg != nil {
		dial = append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, dial...)
	}
	// A connection per session: its handshake presents the key pair loaded last, and verifies
	// this replica's certificate for the name of this address. The session is a thin stream
	// (pkg/thinstream); DialOptions may dial otherwise.
	dial = append(thinstream.DialOptions(ep.addr), dial...)
	conn, err := grpc.NewClient(ep.addr, dial...)
	if err != nil {
		return nil, fmt.Errorf("hub address %q: %w", ep.addr, err)
	}
	return conn, nil
}

// attempt is one connection being made.
type attempt struct {
	i    int // in the round
	conn *grpc.ClientConn
	err  error // when it ended: nil when ready or failed at once, errConnectTimeout else
}

// connect makes connections to the endpoints of round, from pos on and around, and returns the
// first that is ready and its index in the round. The attempts overlap: while the newest has not
// connected within ConnectTimeout, the next starts beside it, at most maxAttempts at once, and
// each may go on for maxAttempts × ConnectTimeout. An attempt that fails at once (refused,
// reset, a bad handshake) starts the next at once when none other runs. On a link that loses a
// third of its packets, a handshake is often still retransmitting when a fresh one would have
// been quicker, and often about to finish: both run, and the first to finish wins. A replica
// that does not answer costs one ConnectTimeout. At most max(maxAttempts, len(round)) attempts
// are made; when all failed, connect returns the connection of the last that failed at once
// (a session on it fails at once and says why), or errConnectTimeout when every one ran out.
// tried is how many attempts it started.
func (c *Client) connect(ctx context.Context, round []endpoint, pos int, dial []grpc.DialOption) (conn *grpc.ClientConn, i, tried int, err error) {
	limit := max(maxAttempts, len(round))
	ended := make(chan *attempt, limit)
	actx, cancel := context.WithCancel(ctx)
	var running []*attempt
	var failed *attempt // the last attempt that failed at once
	var winner *grpc.ClientConn
	defer func() {
		cancel()
		for _, a := range running {
			a.conn.Close()
		}
		if failed != nil && failed.conn != winner {
			failed.conn.Close()
		}
	}()
	started := 0
	start := func() error {
		a := &attempt{i: (pos + started) % len(round)}
		started++
		conn, err := c.newConn(round[a.i], dial)
		if err != nil {
			return err
		}
		a.conn = conn
		running = append(running, a)
		go func() {
			a.err = connected(actx, conn, maxAttempts*c.opts.ConnectTimeout)
			ended <- a
		}()
		return nil
	}
	if err := start(); err != nil {
		return nil, 0, started, err
	}
	hedge := time.NewTimer(c.opts.ConnectTimeout)
	defer hedge.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, 0, started, ctx.Err()
		case <-hedge.C:
			if started < limit && len(running) < maxAttempts {
				if err := start(); err != nil {
					return nil, 0, started, err
				}
			}
			hedge.Reset(c.opts.ConnectTimeout)
		case a := <-ended:
			for j, r := range running {
				if r == a {
					running = append(running[:j], running[j+1:]...)
					break
				}
			}
			if a.err == nil && a.conn.GetState() == connectivity.Ready {
				winner = a.conn
				return a.conn, a.i, started, nil
			}
			if a.err == nil {
				if failed != nil {
					failed.conn.Close()
				}
				failed = a
			} else {
				a.conn.Close()
				c.log.Warn("hub replica not connected within the attempt's time", "hub", round[a.i].addr, "err", a.err)
			}
			if len(running) > 0 {
				continue
			}
			if started < limit {
				if err := start(); err != nil {
					return nil, 0, started, err
				}
				hedge.Reset(c.opts.ConnectTimeout)
				continue
			}
			if failed != nil {
				winner = failed.conn
				return failed.conn, failed.i, started, nil
			}
			return nil, 0, started, a.err
		}
	}
}

// connected waits, for at most timeout, until conn is ready or its connection attempt failed
// (refused, reset, a bad handshake: Register then fails at once and says why); a connection
// still being made after timeout is an error.
func connected(ctx context.Context, conn *grpc.ClientConn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn.Connect()
	for {
		st := conn.GetState()
		switch st {
		case connectivity.Ready, connectivity.TransientFailure, connectivity.Shutdown:
			return nil
		case connectivity.Idle:
			conn.Connect() // went idle again (a GOAWAY right after the handshake): reconnect
		}
		if !conn.WaitForStateChange(ctx, st) {
			return fmt.Errorf("%w: not ready within %s (%s)", errConnectTimeout, timeout, st)
		}
	}
}

// registered is one Register call's outcome on a connection.
type registered struct {
	conn *grpc.ClientConn
	i    int // in the round
	err  error
}

// register calls Register on conn (the connection to round[i]) and returns the connection that
// answered first, and its index in the round. Register is idempotent, so when conn has not
// answered within ConnectTimeout a second connection is made (connect, from the same replica on)
// and Register called on it too: on a lossy link a young connection waits out TCP's initial
// retransmission timeout, doubled at each loss, and a fresh one often answers first (a Register
// answered 10 s late, then a new connection that took 15 s, outlasted a session lease in the
// fault suite). The other connection is closed. When every call failed, register returns conn
// (the caller closes it) and the last error.
func (c *Client) register(ctx context.Context, conn *grpc.ClientConn, i int, round []endpoint, dial []grpc.DialOption) (*grpc.ClientConn, int, error) {
	rctx, cancel := context.WithTimeout(ctx, c.opts.RegisterTimeout)
	defer cancel()
	req := &pb.RegisterRequest{Cluster: fleetpb.ClusterInfo(c.opts.Cluster)}
	done := make(chan registered, 2)
	call := func(conn *grpc.ClientConn, i int) {
		_, err := pb.NewSyncServiceClient(conn).Register(rctx, req)
		if err != nil {
			err = fmt.Errorf("register: %w", err)
		}
		done <- registered{conn: conn, i: i, err: err}
	}
	// closeOther closes a connection register made, not the caller's.
	closeOther := func(o *grpc.ClientConn) {
		if o != nil && o != conn {
			o.Close()
		}
	}
	go call(conn, i)
	running := 1
	hedge := time.NewTimer(c.opts.ConnectTimeout)
	defer hedge.Stop()
	var last error
	for running > 0 {
		select {
		case <-hedge.C:
			running++
			go func() {
				second, j, _, err := c.connect(rctx, round, i, dial)
				if err != nil {
					done <- registered{err: err}
					return
				}
				call(second, j)
			}()
		case r := <-done:
			running--
			if r.err == nil {
				cancel() // the other call ends
				for ; running > 0; running-- {
					closeOther((<-done).conn)
				}
				if r.conn != conn {
					conn.Close()
				}
				return r.conn, r.i, nil
			}
			last = r.err
			closeOther(r.conn)
			hedge.Stop()
		}
	}
	return conn, i, last
}

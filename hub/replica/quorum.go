package replica

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrQuorumLost is what Probe reports while etcd answers no linearizable read: the members the
// replica reaches have no leader (quorum lost), or it reaches none.
var ErrQuorumLost = errors.New("etcd quorum lost or etcd unreachable")

// Probe reads etcd (a linearizable read, which needs a quorum) every interval, each read bounded
// by timeout, and calls report with nil when the read succeeded or an error wrapping
// ErrQuorumLost when it failed, until ctx ends. report is called at every probe.
//
// A watch alone does not tell: with every member gone the client keeps retrying and the watch
// just stays quiet, as it would on a quiet fleet.
func Probe(ctx context.Context, cli *clientv3.Client, key string, interval, timeout time.Duration, report func(error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		_, err := cli.Get(rctx, key, clientv3.WithCountOnly())
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrQuorumLost, err)
		}
		report(err)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

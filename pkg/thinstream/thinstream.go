// Package thinstream tunes the TCP sockets of Spillway's long-lived, thin streams: a spoke's hub
// session (a capacity report a second one way, view updates the other), the hub replicas' peer
// streams. A thin stream has a packet or two in flight; when one is lost, no later segment
// triggers a fast retransmit, so TCP waits for its retransmission timeout, and doubles it at
// each loss of the same segment: at 30 % loss a report is held up for 3 s once in a hundred
// losses, and the capacity behind it goes stale. With TCP_THIN_LINEAR_TIMEOUTS (Linux), a
// stream with fewer than four packets in flight retransmits at a steady timeout for its first
// six tries, so the same four losses hold it up for under a second. Bulk streams are unchanged:
// the kernel applies it only while the stream is thin.
//
// On other systems the options are not set.
package thinstream

import (
	"context"
	"net"
	"syscall"
)

// Listen is net.Listen("tcp", address) whose accepted connections are thin streams.
func Listen(address string) (net.Listener, error) {
	lc := net.ListenConfig{Control: control}
	return lc.Listen(context.Background(), "tcp", address)
}

// Dial dials address (host:port) over TCP as a thin stream; its signature is the one
// grpc.WithContextDialer takes.
func Dial(ctx context.Context, address string) (net.Conn, error) {
	d := net.Dialer{Control: control}
	return d.DialContext(ctx, "tcp", address)
}

// control sets the options on a socket before it connects or listens; an accepted socket
// inherits them from its listener.
func control(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = set(int(fd)) }); err != nil {
		return err
	}
	return serr
}

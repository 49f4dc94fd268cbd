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
// The option is a tuning: where the kernel refuses it (or on systems other than Linux) the
// socket is used as it is. A connection that goes through an HTTPS proxy from the environment
// is gRPC's to dial (DialOptions leaves it alone).
package thinstream

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"syscall"

	"google.golang.org/grpc"
)

// Listen is net.Listen("tcp", address) whose accepted connections are thin streams. It listens
// with plain TCP, not Multipath TCP (Go's default for listeners where the kernel has it), whose
// sockets take none of TCP's per-connection options.
func Listen(address string) (net.Listener, error) {
	lc := net.ListenConfig{Control: control}
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), "tcp", address)
}

// Dial dials address (host:port) over TCP as a thin stream; its signature is the one
// grpc.WithContextDialer takes.
func Dial(ctx context.Context, address string) (net.Conn, error) {
	d := net.Dialer{Control: control}
	return d.DialContext(ctx, "tcp", address)
}

// DialOptions returns the gRPC dial options that make a connection to target (host:port) a thin
// stream: none when an HTTPS proxy from the environment (HTTPS_PROXY, NO_PROXY) applies to
// target, since gRPC dials through the proxy only with its own dialer.
func DialOptions(target string) []grpc.DialOption {
	proxy, err := http.ProxyFromEnvironment(&http.Request{URL: &url.URL{Scheme: "https", Host: target}})
	if err != nil || proxy != nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithContextDialer(Dial)}
}

// control sets the options on a socket before it connects or listens (an accepted socket
// inherits them from its listener). A refused option leaves the socket as it is.
func control(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) { _ = set(int(fd)) })
}

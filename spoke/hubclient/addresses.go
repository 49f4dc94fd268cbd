package hubclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"

	"github.com/spillway-io/spillway/pkg/cli"
)

// ErrAddress means a hub address list is malformed.
var ErrAddress = errors.New("bad hub address")

// ParseAddresses parses a comma-separated list of hub addresses (host:port each, as
// --hub-address takes them): every entry is a host (a DNS name or an IP address, IPv6 in
// brackets) and a port from 1 to 65535, spaces around entries are ignored, and an address may
// not repeat. A list of one DNS name stands for every address the name resolves to (a
// Kubernetes Service's).
func ParseAddresses(s string) ([]string, error) {
	out, err := cli.ParseHostPorts(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAddress, err)
	}
	return out, nil
}

// endpoint is one hub replica to dial: its address, and the name its certificate must hold.
type endpoint struct {
	addr       string
	serverName string
}

// hostOf returns the host of a host:port address.
func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// addressBook is the hub addresses of a client, in the client's own random order, so that the
// spokes given one list spread over the replicas.
type addressBook struct {
	addrs  []string
	lookup func(ctx context.Context, host string) ([]string, error)
	rand   *rand.Rand
}

func newAddressBook(addrs []string, lookup func(ctx context.Context, host string) ([]string, error), r *rand.Rand) *addressBook {
	addrs = slices.Clone(addrs)
	r.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	return &addressBook{addrs: addrs, lookup: lookup, rand: r}
}

// round returns the endpoints to try, in order. The addresses of a list come in the book's
// order; a single DNS name stands for every address it resolves to now, in a new random order
// each round, each verified for the name. When the name does not resolve, the name itself is
// dialed (gRPC resolves it again and reports why it fails).
func (b *addressBook) round(ctx context.Context) []endpoint {
	if len(b.addrs) == 1 && b.lookup != nil {
		host, port, err := net.SplitHostPort(b.addrs[0])
		if err == nil && net.ParseIP(host) == nil {
			ips, err := b.lookup(ctx, host)
			if err == nil && len(ips) > 0 {
				out := make([]endpoint, 0, len(ips))
				for _, ip := range ips {
					out = append(out, endpoint{addr: net.JoinHostPort(ip, port), serverName: host})
				}
				b.rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
				return out
			}
		}
	}
	out := make([]endpoint, 0, len(b.addrs))
	for _, a := range b.addrs {
		out = append(out, endpoint{addr: a, serverName: hostOf(a)})
	}
	return out
}

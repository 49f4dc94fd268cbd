package ctl

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"

	"github.com/spillway-io/spillway/pkg/cli"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// parseHubs parses --hub: a comma-separated list of host:port admin addresses of hub replicas
// (spaces around entries ignored, no address twice), by the rules of cli.ParseHostPorts.
func parseHubs(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("--hub is empty: give the host:port of the hub's admin address (several, comma-separated, for replicas)")
	}
	out, err := cli.ParseHostPorts(s)
	if err != nil {
		return nil, fmt.Errorf("--hub %q: %w", s, err)
	}
	return out, nil
}

// hubOrder returns the hubs in a random order, so that operators' commands spread over the
// replicas.
func hubOrder(hubs []string, r *rand.Rand) []string {
	hubs = slices.Clone(hubs)
	r.Shuffle(len(hubs), func(i, j int) { hubs[i], hubs[j] = hubs[j], hubs[i] })
	return hubs
}

// serverNameFor is the name the certificate of the hub at addr is verified for: --tls-server-name
// when given, else the host of addr.
func (o *options) serverNameFor(addr string) string {
	if o.tlsServerName != "" {
		return o.tlsServerName
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// tryNext reports whether a call that failed with err may be asked of the next replica: the
// hub did not answer (unreachable, not ready, no answer in time), as opposed to answering no;
// and the call printed nothing yet.
func tryNext(err error) bool {
	var printed *printedError
	if errors.As(err, &printed) {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// printedError is the error of a call that had printed part of its answer (a watch): asking
// another replica would print it again.
type printedError struct{ err error }

func (e *printedError) Error() string { return e.err.Error() }
func (e *printedError) Unwrap() error { return e.err }

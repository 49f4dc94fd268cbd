package ctl

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// parseHubs parses --hub: a comma-separated list of host:port admin addresses of hub replicas
// (spaces around entries ignored, no address twice). hubctl cannot import the spoke's parser
// (spoke/hubclient.ParseAddresses), so it keeps the same rules here.
func parseHubs(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("--hub is empty: give the host:port of the hub's admin address (several, comma-separated, for replicas)")
	}
	var out []string
	for i, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if err := checkHub(a); err != nil {
			return nil, fmt.Errorf("--hub %q: entry %d %q: %w", s, i+1, a, err)
		}
		if slices.Contains(out, a) {
			return nil, fmt.Errorf("--hub %q: %q appears twice", s, a)
		}
		out = append(out, a)
	}
	return out, nil
}

func checkHub(a string) error {
	if a == "" {
		return errors.New("empty (a comma too many?)")
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return errors.New("want host:port")
	}
	if host == "" {
		return errors.New("no host")
	}
	if strings.ContainsAny(host, " \t/\\@?#") {
		return errors.New("the host is not a name or an IP address")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return errors.New("the port is not a number from 1 to 65535")
	}
	return nil
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
// hub did not answer (unreachable, not ready, no answer in time), as opposed to answering no.
func tryNext(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

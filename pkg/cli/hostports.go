package cli

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// ParseHostPorts parses a comma-separated list of host:port addresses, as --hub-address (the
// spoke) and --hub (hubctl) take the replicas of a hub: every entry is a host (a DNS name or an
// IP address, IPv6 in brackets) and a port from 1 to 65535, spaces around entries are ignored,
// and an address may not repeat.
func ParseHostPorts(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty; want host:port[,host:port...]")
	}
	var out []string
	for i, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if err := CheckHostPort(a); err != nil {
			return nil, fmt.Errorf("entry %d %q: %w", i+1, a, err)
		}
		if slices.Contains(out, a) {
			return nil, fmt.Errorf("%q appears twice", a)
		}
		out = append(out, a)
	}
	return out, nil
}

// CheckHostPort checks one host:port address of such a list.
func CheckHostPort(a string) error {
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

package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// Subnet is the test network. Before a namespace exists, a blackhole route for it is put in the
// root namespace, so that no packet addressed to it can leave the machine whatever else the host
// routes; the namespaces reach each other only through their veths into one bridge namespace.
const Subnet = "10.79.0.0/16"

// Node is one network namespace of the test network, with one address on Subnet.
type Node struct {
	// Name is the namespace's suffix: the namespace is <prefix>-<Name>.
	Name string
	// IP is its address on eth0 (10.79.x.y).
	IP string
}

// Network is the namespaces a test created: one per Node, each with a veth into a bridge in a
// core namespace, and an nftables table "faults" whose input and output chains the fault
// helpers fill and Heal empties.
type Network struct {
	Prefix string
	nodes  map[string]Node
	made   []string // namespaces created, for Close
	routed bool
}

// NewNetwork adds the blackhole route, then creates the namespaces. On error, what was created
// is removed.
func NewNetwork(ctx context.Context, prefix string, nodes []Node) (n *Network, err error) {
	n = &Network{Prefix: prefix, nodes: map[string]Node{}}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := run(ctx, nil, "ip", "route", "replace", "blackhole", Subnet); err != nil {
		return nil, err
	}
	n.routed = true
	core := prefix + "-core"
	if err := n.addNS(ctx, core); err != nil {
		return nil, err
	}
	if err := run(ctx, nil, "ip", "-n", core, "link", "add", "br0", "type", "bridge"); err != nil {
		return nil, err
	}
	if err := run(ctx, nil, "ip", "-n", core, "link", "set", "br0", "up"); err != nil {
		return nil, err
	}
	for i, nd := range nodes {
		ns := n.NS(nd.Name)
		if err := n.addNS(ctx, ns); err != nil {
			return nil, err
		}
		// Interface names are at most 15 bytes; they are renamed once inside the namespaces.
		a, b := fmt.Sprintf("fx%da%d", os.Getpid(), i), fmt.Sprintf("fx%db%d", os.Getpid(), i)
		steps := [][]string{
			{"ip", "link", "add", a, "type", "veth", "peer", "name", b},
			{"ip", "link", "set", a, "netns", ns},
			{"ip", "link", "set", b, "netns", core},
			{"ip", "-n", ns, "link", "set", a, "name", "eth0"},
			{"ip", "-n", ns, "addr", "add", nd.IP + "/16", "dev", "eth0"},
			{"ip", "-n", ns, "link", "set", "eth0", "up"},
			{"ip", "-n", core, "link", "set", b, "master", "br0"},
			{"ip", "-n", core, "link", "set", b, "up"},
		}
		for _, s := range steps {
			if err := run(ctx, nil, s[0], s[1:]...); err != nil {
				return nil, err
			}
		}
		if err := n.nft(ctx, nd.Name, "add table inet faults\n"+
			"add chain inet faults input { type filter hook input priority 0; }\n"+
			"add chain inet faults output { type filter hook output priority 0; }\n"); err != nil {
			return nil, err
		}
		n.nodes[nd.Name] = nd
	}
	return n, nil
}

func (n *Network) addNS(ctx context.Context, ns string) error {
	if err := run(ctx, nil, "ip", "netns", "add", ns); err != nil {
		return err
	}
	n.made = append(n.made, ns)
	return run(ctx, nil, "ip", "-n", ns, "link", "set", "lo", "up")
}

// NS is the name of a node's namespace.
func (n *Network) NS(node string) string { return n.Prefix + "-" + node }

// IP is a node's address.
func (n *Network) IP(node string) string { return n.nodes[node].IP }

// Close removes the namespaces (their veths go with them) and then the blackhole route.
// Processes still running in them must have been stopped first.
func (n *Network) Close() {
	for i := len(n.made) - 1; i >= 0; i-- {
		_ = run(context.Background(), nil, "ip", "netns", "del", n.made[i])
	}
	n.made = nil
	if n.routed {
		_ = run(context.Background(), nil, "ip", "route", "del", "blackhole", Subnet)
		n.routed = false
	}
}

// Direction is which way a partition drops packets, seen from the node it is applied on.
type Direction int

const (
	// Both drops packets from and to the peers.
	Both Direction = iota
	// Inbound drops only packets from the peers: the node still sends.
	Inbound
	// Outbound drops only packets to the peers: the node still receives.
	Outbound
)

// Partition cuts node off from the peers' addresses in the given direction (nftables drop rules
// in the node's namespace) until Heal.
func (n *Network) Partition(ctx context.Context, node string, peers []string, d Direction) error {
	if len(peers) == 0 {
		return errors.New("faults: partition from no peer")
	}
	set := "{ " + strings.Join(peers, ", ") + " }"
	var b strings.Builder
	if d == Both || d == Inbound {
		fmt.Fprintf(&b, "add rule inet faults input iifname \"eth0\" ip saddr %s drop\n", set)
	}
	if d == Both || d == Outbound {
		fmt.Fprintf(&b, "add rule inet faults output oifname \"eth0\" ip daddr %s drop\n", set)
	}
	return n.nft(ctx, node, b.String())
}

// Loss drops percent of the packets node receives on eth0 that match (an nftables match
// expression such as `ip saddr 10.79.0.0/24`; empty for every packet), chosen at random
// (numgen random) independently per packet, until Heal. Packets from or to one of the exempt
// TCP/UDP ports pass untouched (accepted ahead of the loss rule).
func (n *Network) Loss(ctx context.Context, node string, percent int, match string, exempt ...int) error {
	if percent <= 0 || percent > 100 {
		return fmt.Errorf("faults: loss of %d%%: want 1 to 100", percent)
	}
	var b strings.Builder
	for _, p := range exempt {
		fmt.Fprintf(&b, "add rule inet faults input iifname \"eth0\" meta l4proto { tcp, udp } th dport %d accept\n", p)
		fmt.Fprintf(&b, "add rule inet faults input iifname \"eth0\" meta l4proto { tcp, udp } th sport %d accept\n", p)
	}
	fmt.Fprintf(&b, "add rule inet faults input iifname \"eth0\" %s numgen random mod 100 < %d drop\n", match, percent)
	return n.nft(ctx, node, b.String())
}

// Throttle drops the packets node sends on eth0 that match once they exceed kbytes kilobytes
// a second (an nftables limit: TCP slows down to about that rate), until Heal.
func (n *Network) Throttle(ctx context.Context, node, match string, kbytes int) error {
	return n.nft(ctx, node, fmt.Sprintf("add rule inet faults output oifname \"eth0\" %s limit rate over %d kbytes/second drop\n", match, kbytes))
}

// Heal removes every fault rule of node.
func (n *Network) Heal(ctx context.Context, node string) error {
	return n.nft(ctx, node, "flush chain inet faults input\nflush chain inet faults output\n")
}

// Rules returns node's fault rules as nft lists them, with their packet counters.
func (n *Network) Rules(ctx context.Context, node string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", n.NS(node), "nft", "list", "table", "inet", "faults").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("nft list in %s: %w: %s", node, err, out)
	}
	return string(out), nil
}

func (n *Network) nft(ctx context.Context, node, script string) error {
	return run(ctx, strings.NewReader(script), "ip", "netns", "exec", n.NS(node), "nft", "-f", "-")
}

// run runs a command and returns its output with its error.
func run(ctx context.Context, stdin *strings.Reader, bin string, args ...string) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// inNS runs f on an OS thread that has joined the namespace ns, and returns its result. The
// thread is locked to the goroutine throughout and goes back to the test's namespace before it
// is unlocked; if it cannot, the goroutine exits locked and the runtime ends the thread, so
// nothing else ever runs in the namespace. (Ending threads is the exception, not the rule: a
// process started with Pdeathsig from a thread that ends is killed with it.) Sockets f creates
// stay in ns.
func inNS[T any](ns string, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		var zero T
		orig, err := syscall.Open("/proc/thread-self/ns/net", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{zero, fmt.Errorf("this thread's namespace: %w", err)}
			return
		}
		defer syscall.Close(orig)
		fd, err := syscall.Open("/var/run/netns/"+ns, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{zero, fmt.Errorf("namespace %s: %w", ns, err)}
			return
		}
		defer syscall.Close(fd)
		if err := setns(fd); err != nil {
			runtime.UnlockOSThread()
			ch <- result{zero, fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		v, err := f()
		ch <- result{v, err}
		if setns(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	r := <-ch
	return r.v, r.err
}

func setns(fd int) error {
	if _, _, errno := syscall.RawSyscall(sysSetns, uintptr(fd), syscall.CLONE_NEWNET, 0); errno != 0 {
		return errno
	}
	return nil
}

// Dialer returns a dial function whose connections are made from inside node's namespace.
func (n *Network) Dialer(node string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	ns := n.NS(node)
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return inNS(ns, func() (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		})
	}
}

// ListenPacket opens a UDP socket inside node's namespace.
func (n *Network) ListenPacket(node, addr string) (net.PacketConn, error) {
	return inNS(n.NS(node), func() (net.PacketConn, error) { return net.ListenPacket("udp", addr) })
}

// hostPort joins an IP and a port.
func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

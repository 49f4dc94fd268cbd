// Package etcdcluster runs a real etcd cluster of N member processes for tests: the etcd binary
// of $SPILLWAY_K8S_BIN_DIR (what hack/k8s-bins.sh prints), every member on loopback with ports
// chosen free, and TLS everywhere as in production: members verify each other's certificates on
// the peer port, and clients must present a certificate on the client port. A test CA made for
// the cluster issues the members' certificates and one client certificate, whose files are what a
// hub takes as --etcd-cacert, --etcd-cert and --etcd-key (HubArgs).
//
// Members can be killed (SIGKILL, as a crash) and restarted on the same ports and data, which is
// what the hub's availability tests and the fault suite do to lose a member or the quorum.
package etcdcluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// BinDirEnv names the environment variable of the directory holding the etcd binary.
const BinDirEnv = "SPILLWAY_K8S_BIN_DIR"

// trustDomain names the identities of the test CA's certificates; they matter to no one but etcd.
const trustDomain = "etcd.spillway.test"

// startAttempts bounds the starts of a cluster whose ports were taken between their choice and
// their use.
const startAttempts = 3

// readyTimeout bounds the wait for a started or restarted member.
const readyTimeout = 60 * time.Second

// Options configure StartContext.
type Options struct {
	// Members is the number of members (3 when zero).
	Members int
	// Bin is the etcd binary; empty: $SPILLWAY_K8S_BIN_DIR/etcd.
	Bin string
	// Dir holds the members' data, TLS files and logs; it must exist.
	Dir string
	// Fsync keeps etcd's fsyncs; by default they are off (--unsafe-no-fsync), which loses
	// nothing a test needs (a killed process's writes are in the page cache) and spares the disk.
	Fsync bool
}

// Cluster is a running etcd cluster.
type Cluster struct {
	opts  Options
	files clientFiles

	mu      sync.Mutex
	members []*member
}

// clientFiles are the client's TLS files.
type clientFiles struct {
	ca, cert, key string
}

type member struct {
	name               string
	clientURL, peerURL string
	dir                string
	args               []string
	proc               *localfleet.Proc
}

// Start starts a cluster of n members for the test, in a temporary directory, and stops it at
// the test's end. It skips the test when no etcd binary is configured.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	bin := os.Getenv(BinDirEnv)
	if bin == "" {
		t.Skipf("%s is not set: run with %s=$(bash hack/k8s-bins.sh)", BinDirEnv, BinDirEnv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*readyTimeout)
	defer cancel()
	c, err := StartContext(ctx, Options{Members: n, Dir: t.TempDir(), Bin: filepath.Join(bin, "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i := range c.Size() {
				if log, err := os.ReadFile(c.LogPath(i)); err == nil {
					t.Logf("etcd member %d log (tail):\n%s", i, tail(log, 3000))
				}
			}
		}
		c.Stop()
	})
	return c
}

// StartContext starts a cluster and waits until every member serves clients.
func StartContext(ctx context.Context, o Options) (*Cluster, error) {
	if o.Members == 0 {
		o.Members = 3
	}
	if o.Members < 1 {
		return nil, fmt.Errorf("etcdcluster: %d members: want at least 1", o.Members)
	}
	if o.Bin == "" {
		dir := os.Getenv(BinDirEnv)
		if dir == "" {
			return nil, fmt.Errorf("etcdcluster: no etcd binary: set Options.Bin or %s", BinDirEnv)
		}
		o.Bin = filepath.Join(dir, "etcd")
	}
	if o.Dir == "" {
		return nil, errors.New("etcdcluster: Options.Dir must be set")
	}
	c := &Cluster{opts: o}
	if err := c.writeTLS(); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		err := c.start(ctx)
		if err == nil {
			return c, nil
		}
		c.Stop()
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			return nil, err
		}
	}
}

var errAddrInUse = errors.New("address already in use")

func (c *Cluster) tlsDir() string { return filepath.Join(c.opts.Dir, "tls") }

// writeTLS makes the test CA, one certificate per member (server and client use, for the client
// and the peer port) and the client's certificate.
func (c *Cluster) writeTLS() error {
	dir := c.tlsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := tlsconfig.NewCA("etcdcluster test CA", 24*time.Hour)
	if err != nil {
		return err
	}
	write := func(name string, data []byte) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, data, 0o600)
	}
	if c.files.ca, err = write("ca.crt", ca.CertPEM()); err != nil {
		return err
	}
	for i := range c.opts.Members {
		name := memberName(i)
		cert, key, err := ca.Issue(tlsconfig.Identity{TrustDomain: trustDomain, Kind: tlsconfig.KindCluster, Name: name},
			[]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 24*time.Hour)
		if err != nil {
			return err
		}
		if _, err := write(name+".crt", cert); err != nil {
			return err
		}
		if _, err := write(name+".key", key); err != nil {
			return err
		}
	}
	cert, key, err := ca.Issue(tlsconfig.Identity{TrustDomain: trustDomain, Kind: tlsconfig.KindUser, Name: "client"}, nil, nil, 24*time.Hour)
	if err != nil {
		return err
	}
	if c.files.cert, err = write("client.crt", cert); err != nil {
		return err
	}
	c.files.key, err = write("client.key", key)
	return err
}

func memberName(i int) string { return "m" + strconv.Itoa(i) }

// start starts every member on new free ports and waits until each serves clients.
func (c *Cluster) start(ctx context.Context) error {
	n := c.opts.Members
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.members = make([]*member, n)
	var initial []string
	for i := range n {
		m := &member{
			name:      memberName(i),
			clientURL: "https://127.0.0.1:" + strconv.Itoa(ports[2*i]),
			peerURL:   "https://127.0.0.1:" + strconv.Itoa(ports[2*i+1]),
			dir:       filepath.Join(c.opts.Dir, memberName(i)),
		}
		c.members[i] = m
		initial = append(initial, m.name+"="+m.peerURL)
	}
	for _, m := range c.members {
		if err := os.RemoveAll(m.dir); err != nil {
			c.mu.Unlock()
			return err
		}
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			c.mu.Unlock()
			return err
		}
		cert, key := filepath.Join(c.tlsDir(), m.name+".crt"), filepath.Join(c.tlsDir(), m.name+".key")
		m.args = []string{"--name", m.name, "--data-dir", filepath.Join(m.dir, "data"),
			"--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
			"--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "etcdcluster",
			"--cert-file", cert, "--key-file", key, "--client-cert-auth", "--trusted-ca-file", c.files.ca,
			"--peer-cert-file", cert, "--peer-key-file", key, "--peer-client-cert-auth", "--peer-trusted-ca-file", c.files.ca,
			"--log-level", "warn"}
		if !c.opts.Fsync {
			m.args = append(m.args, "--unsafe-no-fsync")
		}
		if m.proc, err = localfleet.StartProc(m.dir, "etcd", c.opts.Bin, m.args...); err != nil {
			c.mu.Unlock()
			return err
		}
	}
	c.mu.Unlock()
	for i := range n {
		if err := c.waitReady(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// waitReady waits until member i answers a read over its own client URL.
func (c *Cluster) waitReady(ctx context.Context, i int) error {
	c.mu.Lock()
	m := c.members[i]
	c.mu.Unlock()
	cli, err := c.client([]string{m.clientURL})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var last error
	for {
		select {
		case <-m.proc.Done():
			log, _ := os.ReadFile(m.proc.LogPath)
			if bytes.Contains(log, []byte("address already in use")) {
				return fmt.Errorf("etcd member %s exited during start-up: %w", m.name, errAddrInUse)
			}
			return fmt.Errorf("etcd member %s exited during start-up: %v\n%s", m.name, m.proc.Err(), tail(log, 2000))
		default:
		}
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		_, last = cli.Get(rctx, "etcdcluster-ready", clientv3.WithCountOnly())
		rcancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd member %s not ready after %s: %w", m.name, readyTimeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Size returns the number of members.
func (c *Cluster) Size() int { return c.opts.Members }

// Endpoints returns the members' client URLs (https://127.0.0.1:port), in member order.
func (c *Cluster) Endpoints() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, m.clientURL)
	}
	return out
}

// CAFile returns the CA bundle that verifies the members (a hub's --etcd-cacert).
func (c *Cluster) CAFile() string { return c.files.ca }

// CertFile returns the client certificate the members accept (a hub's --etcd-cert).
func (c *Cluster) CertFile() string { return c.files.cert }

// KeyFile returns the key of CertFile (a hub's --etcd-key).
func (c *Cluster) KeyFile() string { return c.files.key }

// HubArgs returns the hub flags that reach this cluster.
func (c *Cluster) HubArgs() []string {
	return []string{"--etcd-endpoints", strings.Join(c.Endpoints(), ","),
		"--etcd-cacert", c.files.ca, "--etcd-cert", c.files.cert, "--etcd-key", c.files.key}
}

// ClientTLS returns the client's TLS configuration.
func (c *Cluster) ClientTLS() (*tls.Config, error) {
	return transport.TLSInfo{CertFile: c.files.cert, KeyFile: c.files.key, TrustedCAFile: c.files.ca}.ClientConfig()
}

// Client returns a client of the given endpoints (every member's when none are given); the
// caller closes it.
func (c *Cluster) Client(endpoints ...string) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		endpoints = c.Endpoints()
	}
	return c.client(endpoints)
}

func (c *Cluster) client(endpoints []string) (*clientv3.Client, error) {
	cfg, err := c.ClientTLS()
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: cfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// LogPath returns the log file of member i.
func (c *Cluster) LogPath(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return filepath.Join(c.members[i].dir, "etcd.log")
}

// Pid returns the process ID of member i (its latest start).
func (c *Cluster) Pid(i int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].proc.Pid()
}

// Kill ends member i at once (SIGKILL), as a crash would. Its data stays for Restart.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	p := c.members[i].proc
	c.mu.Unlock()
	p.Kill()
}

// Restart starts member i again, on its ports and with its data, after Kill, and waits until it
// serves clients (which needs a quorum of members running).
func (c *Cluster) Restart(ctx context.Context, i int) error {
	c.mu.Lock()
	m := c.members[i]
	select {
	case <-m.proc.Done():
	default:
		c.mu.Unlock()
		return fmt.Errorf("etcdcluster: member %s is running; Kill it first", m.name)
	}
	// The log of the earlier run is kept beside the new one.
	_ = os.Rename(m.proc.LogPath, m.proc.LogPath+"."+strconv.FormatInt(time.Now().UnixNano(), 10))
	p, err := localfleet.StartProc(m.dir, "etcd", c.opts.Bin, m.args...)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	m.proc = p
	c.mu.Unlock()
	return c.waitReady(ctx, i)
}

// Stop stops every member (SIGTERM, SIGKILL after a few seconds).
func (c *Cluster) Stop() {
	c.mu.Lock()
	ms := c.members
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, m := range ms {
		if m == nil || m.proc == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = m.proc.Stop(5 * time.Second)
		}()
	}
	wg.Wait()
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var out []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

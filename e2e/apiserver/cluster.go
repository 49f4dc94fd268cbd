// Package apiserver starts real Kubernetes API servers for tests and benchmarks: one etcd and one
// kube-apiserver process per simulated cluster, built from the Go module proxy by
// hack/k8s-bins.sh, with TLS certificates generated at start, a static admin token and RBAC on.
// There is no kubelet: tests create Pods through the API and set their status (podIP, Ready)
// themselves, as kwok does.
package apiserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	"github.com/spillway-io/spillway/e2e/localfleet"
)

// Bins are the paths of the binaries a cluster runs.
type Bins struct {
	APIServer, Etcd string
}

// FindBins returns the binaries in SPILLWAY_K8S_BIN_DIR, or builds (or reuses the cache of)
// hack/k8s-bins.sh from the repository at root.
func FindBins(root string) (Bins, error) {
	dir := os.Getenv("SPILLWAY_K8S_BIN_DIR")
	if dir == "" {
		cmd := exec.Command("bash", filepath.Join(root, "hack", "k8s-bins.sh"))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return Bins{}, fmt.Errorf("hack/k8s-bins.sh: %w", err)
		}
		dir = strings.TrimSpace(string(out))
	}
	b := Bins{APIServer: filepath.Join(dir, "kube-apiserver"), Etcd: filepath.Join(dir, "etcd")}
	for _, p := range []string{b.APIServer, b.Etcd} {
		if _, err := os.Stat(p); err != nil {
			return Bins{}, fmt.Errorf("kubernetes test binaries: %w", err)
		}
	}
	return b, nil
}

// Cluster is a running API server with its etcd.
type Cluster struct {
	Name string
	Dir  string
	// Host is the API server's URL, Token the admin bearer token, CA the serving CA (PEM).
	Host       string
	Token      string
	CA         []byte
	Kubeconfig string
	etcd, api  *localfleet.Proc
	apiBin     string
	apiArgs    []string
}

// startAttempts bounds the starts of a cluster whose ports were taken between their choice and
// the processes binding them.
const startAttempts = 5

// Start starts a cluster whose processes bind ip (a loopback address), in dir.
//
// etcd and kube-apiserver take their ports on the command line, so the ports are chosen free
// (freePorts) before the processes start; another process may bind one in between. A start that
// fails because an address was in use is stopped and tried again on new ports.
func Start(ctx context.Context, bins Bins, dir, name, ip string) (*Cluster, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr := net.ParseIP(ip)
	if addr == nil {
		return nil, fmt.Errorf("bind address %q is not an IP", ip)
	}
	if err := writeCerts(dir, []net.IP{addr, net.ParseIP("127.0.0.1")}); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	c := &Cluster{Name: name, Dir: dir, Token: "spillway-admin-" + name, apiBin: bins.APIServer}
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(c.Token+",admin,admin-uid,system:masters\n"), 0o600); err != nil {
		return nil, err
	}
	var err error
	if c.CA, err = os.ReadFile(filepath.Join(dir, "ca.crt")); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		err = c.start(ctx, bins.Etcd, ip)
		if err == nil {
			break
		}
		c.Stop()
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			return nil, err
		}
	}
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, []byte(c.kubeconfig()), 0o600); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// errAddrInUse marks a start that failed because a process found its port taken.
var errAddrInUse = errors.New("address already in use")

// start starts etcd and the API server on new free ports of ip and waits until the API is ready.
func (c *Cluster) start(ctx context.Context, etcdBin, ip string) error {
	ports, err := pickPorts(ip, 3)
	if err != nil {
		return err
	}
	// A fresh etcd: nothing of an attempt on other ports stays.
	if err := os.RemoveAll(filepath.Join(c.Dir, "etcd-data")); err != nil {
		return err
	}
	etcdURL := "http://" + net.JoinHostPort(ip, strconv.Itoa(ports[0]))
	peerURL := "http://" + net.JoinHostPort(ip, strconv.Itoa(ports[1]))
	c.etcd, err = localfleet.StartProc(c.Dir, "etcd", etcdBin,
		"--name", "default", "--data-dir", filepath.Join(c.Dir, "etcd-data"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL, "--log-level", "error",
		"--unsafe-no-fsync")
	if err != nil {
		return err
	}
	c.Host = "https://" + net.JoinHostPort(ip, strconv.Itoa(ports[2]))
	c.apiArgs = apiServerArgs(c.Dir, ip, etcdURL, ports[2])
	if c.api, err = localfleet.StartProc(c.Dir, "kube-apiserver", c.apiBin, c.apiArgs...); err != nil {
		return err
	}
	return c.waitReady(ctx)
}

func apiServerArgs(dir, ip, etcdURL string, port int) []string {
	return []string{"--etcd-servers", etcdURL,
		"--bind-address", ip, "--advertise-address", ip, "--secure-port", strconv.Itoa(port),
		"--tls-cert-file", filepath.Join(dir, "server.crt"), "--tls-private-key-file", filepath.Join(dir, "server.key"),
		"--client-ca-file", filepath.Join(dir, "ca.crt"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range", "10.96.0.0/24",
		// Required when advertising a loopback address: the default reconciler refuses it.
		"--endpoint-reconciler-type", "none",
		// No controller manager runs to create default service accounts.
		"--disable-admission-plugins", "ServiceAccount",
		"--profiling=false", "--v=0"}
}

func (c *Cluster) kubeconfig() string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster: {server: %[2]s, certificate-authority-data: %[3]s}
users:
- name: admin
  user: {token: %[4]s}
contexts:
- name: %[1]s
  context: {cluster: %[1]s, user: admin}
current-context: %[1]s
`, c.Name, c.Host, base64.StdEncoding.EncodeToString(c.CA), c.Token)
}

// HTTPClient returns a client that trusts the cluster's CA.
func (c *Cluster) HTTPClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CA)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// waitReady polls the API server's /readyz until it answers 200, for at most 90 s; a process
// that exits meanwhile ends the wait.
func (c *Cluster) waitReady(ctx context.Context) error {
	client := c.HTTPClient()
	var last error
	exited := false
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, p := range []*localfleet.Proc{c.etcd, c.api} {
			select {
			case <-p.Done():
				exited = true
				log, _ := os.ReadFile(p.LogPath)
				if bytes.Contains(log, []byte("address already in use")) {
					return false, fmt.Errorf("%s exited during start-up: %w: %v", p.Name, errAddrInUse, p.Err())
				}
				return false, fmt.Errorf("%s exited during start-up: %v\n%s", p.Name, p.Err(), tail(log, 2000))
			default:
			}
		}
		last = c.readyz(ctx, client)
		return last == nil, nil
	})
	if err != nil && !exited && ctx.Err() == nil {
		if last == nil {
			last = err
		}
		return fmt.Errorf("API server %s not ready after 90s: %w", c.Name, last)
	}
	return err
}

func (c *Cluster) readyz(ctx context.Context, client *http.Client) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Host+"/readyz", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz: HTTP %d", resp.StatusCode)
	}
	return nil
}

// StopAPIServer stops the API server and keeps etcd: the cluster's state survives for
// StartAPIServer. Tests use it to take a cluster's API away from its clients.
// The API server is killed, as a crash or a lost control plane would end it.
func (c *Cluster) StopAPIServer() {
	c.api.Kill()
}

// StartAPIServer starts the API server again, on the same address, after StopAPIServer.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	api, err := localfleet.StartProc(c.Dir, "kube-apiserver", c.apiBin, c.apiArgs...)
	if err != nil {
		return err
	}
	c.api = api
	return c.waitReady(ctx)
}

// RESTConfig returns a client-go configuration for the cluster's admin.
func (c *Cluster) RESTConfig() *rest.Config {
	return &rest.Config{Host: c.Host, BearerToken: c.Token, TLSClientConfig: rest.TLSClientConfig{CAData: c.CA}, QPS: 100, Burst: 200}
}

// Stop stops the API server, then etcd.
func (c *Cluster) Stop() {
	if c.api != nil {
		_ = c.api.Stop(15 * time.Second)
	}
	if c.etcd != nil {
		_ = c.etcd.Stop(10 * time.Second)
	}
}

// Kubectl runs kubectl against the cluster.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// KubectlStdin runs kubectl with stdin.
func (c *Cluster) KubectlStdin(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// pickPorts is freePorts, but for the test that takes a port first.
var pickPorts = freePorts

// freePorts returns n ports of ip that were free a moment ago, the one way ports are chosen for a
// process that must be told its port; Start retries when one was taken in between.
func freePorts(ip string, n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

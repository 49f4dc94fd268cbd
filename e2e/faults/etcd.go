package faults

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// startEtcd starts the three etcd members, member i in node h<i> at 10.79.0.i: clients over
// mutual TLS from the fleet's CA on port 2379, peers in plaintext on 2380 (inside the test
// network), and waits until the cluster answers.
func (f *Fleet) startEtcd(ctx context.Context) error {
	serving, err := f.pki.issue("etcd-server", infra("etcd"), "10.79.0.1", "10.79.0.2", "10.79.0.3")
	if err != nil {
		return err
	}
	var initial []string
	for i := 1; i <= 3; i++ {
		initial = append(initial, fmt.Sprintf("e%d=http://%s", i, hostPort(fmt.Sprintf("10.79.0.%d", i), etcdPeerPort)))
	}
	for i := 1; i <= 3; i++ {
		ip := fmt.Sprintf("10.79.0.%d", i)
		client := "https://" + hostPort(ip, etcdPort)
		peer := "http://" + hostPort(ip, etcdPeerPort)
		if _, err := f.newProc(fmt.Sprintf("etcd-%d", i), fmt.Sprintf("h%d", i), filepath.Join(f.EtcdBin, "etcd"),
			"--name", fmt.Sprintf("e%d", i), "--data-dir", filepath.Join(f.WorkDir, fmt.Sprintf("etcd-%d", i)),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new", "--initial-cluster-token", "spillway-faults",
			"--cert-file", filepath.Join(serving, tlsconfig.CertFile), "--key-file", filepath.Join(serving, tlsconfig.KeyFile),
			"--trusted-ca-file", f.pki.CAFile(), "--client-cert-auth",
			"--heartbeat-interval", "100", "--election-timeout", "1000", "--log-level", "warn"); err != nil {
			return err
		}
	}
	return poll(ctx, 30*time.Second, "etcd cluster healthy", func() error {
		for i := 1; i <= 3; i++ {
			if p := f.Etcd(i); !p.Running() {
				return fmt.Errorf("etcd member %d exited:\n%s", i, p.LogTail(3000))
			}
		}
		return f.EtcdHealthy(ctx, 1)
	})
}

// EtcdHealthy reads member i's /health (over its client port, with the admin's certificate,
// which the fleet CA issued): nil when the member has a leader and serves.
func (f *Fleet) EtcdHealthy(ctx context.Context, i int) error {
	body, err := f.Get(ctx, fmt.Sprintf("h%d", i), "https://"+hostPort(fmt.Sprintf("10.79.0.%d", i), etcdPort)+"/health")
	if err != nil {
		return err
	}
	if !strings.Contains(string(body), `"health":"true"`) {
		return fmt.Errorf("etcd member %d: %s", i, body)
	}
	return nil
}

// EtcdLeader is the member that leads the etcd cluster now, by its etcd_server_is_leader gauge.
func (f *Fleet) EtcdLeader(ctx context.Context) (int, error) {
	for i := 1; i <= 3; i++ {
		if !f.Etcd(i).Running() {
			continue
		}
		body, err := f.Get(ctx, fmt.Sprintf("h%d", i), "https://"+hostPort(fmt.Sprintf("10.79.0.%d", i), etcdPort)+"/metrics")
		if err != nil {
			return 0, fmt.Errorf("etcd member %d: %w", i, err)
		}
		for line := range strings.Lines(string(body)) {
			if strings.TrimSpace(line) == "etcd_server_is_leader 1" {
				return i, nil
			}
		}
	}
	return 0, errors.New("no etcd member says it leads")
}

// Etcd returns etcd member i's process.
func (f *Fleet) Etcd(i int) *Proc { return f.byNm[fmt.Sprintf("etcd-%d", i)] }

package etcdcluster

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// put writes key within timeout through a client of every member.
func put(t *testing.T, c *Cluster, key string, timeout time.Duration) error {
	t.Helper()
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err = cli.Put(ctx, key, "v")
	return err
}

// putRetrying writes key as a client of a cluster that may be electing a leader does: a write
// that etcd answers with a retryable error (a leader lost with the killed member) is sent
// again, until within ends.
func putRetrying(t *testing.T, c *Cluster, key string, within time.Duration) error {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := put(t, c, key, 5*time.Second)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		t.Logf("write of %s: %v; retrying", key, err)
	}
}

// TestQuorum: three members over mutual TLS take writes; with one killed the other two still
// make a quorum; with two killed no write commits; a restarted member brings the quorum back and
// holds what was written while it was away.
func TestQuorum(t *testing.T) {
	c := Start(t, 3)
	if got := len(c.Endpoints()); got != 3 {
		t.Fatalf("%d endpoints, want 3", got)
	}
	if err := put(t, c, "a", 10*time.Second); err != nil {
		t.Fatalf("write to a healthy cluster: %v", err)
	}

	c.Kill(0)
	if err := putRetrying(t, c, "b", 30*time.Second); err != nil {
		t.Fatalf("write with one member of three killed: %v", err)
	}

	c.Kill(1)
	if err := put(t, c, "c", 3*time.Second); err == nil {
		t.Fatal("a write committed with two members of three killed")
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Restart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := putRetrying(t, c, "d", 30*time.Second); err != nil {
		t.Fatalf("write after the quorum came back: %v", err)
	}
	// The restarted member serves what the others wrote while it was down, from its own port.
	cli, err := c.Client(c.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatal("the restarted member lacks the key written while it was down")
	}
}

// TestClientNeedsCertificate: the client port refuses a client without the cluster's client
// certificate.
func TestClientNeedsCertificate(t *testing.T) {
	c := Start(t, 1)
	cfg, err := c.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Certificates, cfg.GetClientCertificate = nil, nil
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), TLS: cfg, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "x", "y"); err == nil {
		t.Fatal("a client without a certificate wrote")
	}
}

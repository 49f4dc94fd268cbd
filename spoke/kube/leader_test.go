package kube_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/apiserver"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/spoke/kube"
)

// syncBuffer is a log sink for several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// candidate runs an Elector until stop; leading reports whether its lead function runs.
type candidate struct {
	mu      sync.Mutex
	leading bool
	terms   int
	stop    func() error
}

func (c *candidate) isLeading() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leading
}

func runCandidate(t *testing.T, e *kube.Elector) *candidate {
	t.Helper()
	c := &candidate{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.Run(ctx, func(lctx context.Context) error {
			c.mu.Lock()
			c.leading, c.terms = true, c.terms+1
			c.mu.Unlock()
			<-lctx.Done()
			c.mu.Lock()
			c.leading = false
			c.mu.Unlock()
			return nil
		})
	}()
	var once sync.Once
	var err error
	c.stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = c.stop() })
	return c
}

// TestElectorOnAPIServer runs leader election on a real API server. Without the Lease's
// namespace nobody leads, and the log says why once, in the spoke's words; once the namespace
// exists one candidate leads, the other waits; when the leader stops it releases the Lease and
// the other leads within a retry period or two, far sooner than the lease duration.
func TestElectorOnAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bins, err := apiserver.FindBins("../..")
	if err != nil {
		t.Fatal(err)
	}
	api, err := apiserver.Start(ctx, bins, t.TempDir(), "a", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(api.Stop)
	logs := &syncBuffer{}
	elector := func(id string) *kube.Elector {
		e, err := kube.NewElector(kube.ElectorOptions{Config: api.RESTConfig(), Namespace: "spoke-ns", Name: kube.LeaseName("a"), Identity: id,
			LeaseDuration: 6 * time.Second, RenewDeadline: 4 * time.Second, RetryPeriod: 300 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	one, two := runCandidate(t, elector("one")), runCandidate(t, elector("two"))

	testkit.Eventually(t, 30*time.Second, "the missing namespace explained by each candidate", func() error {
		if n := strings.Count(logs.String(), "the Lease's namespace does not exist"); n < 2 {
			return fmt.Errorf("logged %d times", n)
		}
		return nil
	})
	if one.isLeading() || two.isLeading() {
		t.Fatal("a candidate leads without a Lease")
	}

	if _, err := api.Kubectl(ctx, "create", "namespace", "spoke-ns"); err != nil {
		t.Fatal(err)
	}
	var leader, other *candidate
	testkit.Eventually(t, 30*time.Second, "one candidate leads", func() error {
		switch a, b := one.isLeading(), two.isLeading(); {
		case a && !b:
			leader, other = one, two
		case b && !a:
			leader, other = two, one
		default:
			return fmt.Errorf("leading: %v, %v", a, b)
		}
		return nil
	})
	// Each candidate retried every 300 ms meanwhile, and said it once.
	if n := strings.Count(logs.String(), "no replica can lead"); n != 2 {
		t.Errorf("the explanation was logged %d times, want once per candidate", n)
	}
	holder, err := api.Kubectl(ctx, "-n", "spoke-ns", "get", "lease", "spillway-spoke-a", "-o", "jsonpath={.spec.holderIdentity}")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[*candidate]string{one: "one", two: "two"}[leader]; string(holder) != want {
		t.Errorf("the Lease names %q, want the leader %q", holder, want)
	}

	stopped := time.Now()
	if err := leader.stop(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "the other candidate leads", func() error {
		if !other.isLeading() {
			return errors.New("not yet")
		}
		return nil
	})
	if took := time.Since(stopped); took >= 6*time.Second {
		t.Errorf("the Lease moved %s after its holder stopped, want less than the lease duration: a stopping leader releases it", took.Round(time.Millisecond))
	}
}

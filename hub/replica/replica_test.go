package replica

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spillway-io/spillway/e2e/testkit"
	hubetcd "github.com/spillway-io/spillway/hub/etcd"
	"github.com/spillway-io/spillway/hub/registry"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// replica is one Elector running in the test, with a lead function that counts who runs it.
type replica struct {
	e       *Elector
	cancel  context.CancelFunc
	done    chan struct{}
	leading atomic.Bool
	// ended receives when its lead function's context ended.
	ended chan time.Time
}

func startEtcd(t *testing.T) (*hubetcd.Embedded, *clientv3.Client) {
	t.Helper()
	e, err := hubetcd.StartEmbedded(context.Background(), hubetcd.EmbeddedOptions{Dir: t.TempDir(), ListenAddress: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cli, err := e.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return e, cli
}

func startReplica(t *testing.T, cli *clientv3.Client, id string, active *atomic.Int32, ttl time.Duration) *replica {
	t.Helper()
	store := registry.New(cli, registry.Options{LeaseTTL: 5 * time.Second})
	r := &replica{
		e: New(cli, store, Options{HubID: id, Incarnation: id + "-1", AdvertiseAddress: id + ".test:8472", LeaseTTL: ttl,
			Logger: slog.New(slog.NewTextHandler(t.Output(), nil)).With("replica", id)}),
		done:  make(chan struct{}),
		ended: make(chan time.Time, 8),
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.done)
		_ = r.e.Run(ctx, func(ctx context.Context) error {
			if n := active.Add(1); n > 1 {
				t.Errorf("%d replicas run the leader work at once", n)
			}
			r.leading.Store(true)
			<-ctx.Done()
			r.leading.Store(false)
			active.Add(-1)
			r.ended <- time.Now()
			return nil
		})
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
}

func leaderOf(rs []*replica) (int, error) {
	n, who := 0, -1
	for i, r := range rs {
		if r.e.Leader() {
			n, who = n+1, i
		}
	}
	if n != 1 {
		return -1, fmt.Errorf("%d leaders", n)
	}
	if !rs[who].leading.Load() {
		return -1, fmt.Errorf("replica %d leads but its leader work does not run", who)
	}
	return who, nil
}

// TestOneLeaderAtATime: of three replicas one leads and runs the leader work; each is
// registered in hubs/ with its address; when the leader stops, it resigns and another leads at
// once. The session TTL is 30 s, so leadership that moves within 20 s moved by the resignation,
// not by a lapsed lease.
func TestOneLeaderAtATime(t *testing.T) {
	_, cli := startEtcd(t)
	var active atomic.Int32
	var rs []*replica
	for _, id := range []string{"hub-0", "hub-1", "hub-2"} {
		rs = append(rs, startReplica(t, cli, id, &active, 30*time.Second))
	}
	var leader int
	testkit.Eventually(t, 10*time.Second, "one leader", func() (err error) {
		leader, err = leaderOf(rs)
		return err
	})
	store := registry.New(cli, registry.Options{})
	testkit.Eventually(t, 5*time.Second, "every replica in hubs/", func() error {
		hubs, _, err := store.Hubs(context.Background())
		if err != nil {
			return err
		}
		for _, id := range []string{"hub-0", "hub-1", "hub-2"} {
			if hubs[id].Address != id+".test:8472" || hubs[id].Incarnation != id+"-1" {
				return fmt.Errorf("hubs/%s = %+v", id, hubs[id])
			}
		}
		return nil
	})

	stopped := time.Now()
	rs[leader].stop()
	rest := append(append([]*replica{}, rs[:leader]...), rs[leader+1:]...)
	testkit.Eventually(t, 20*time.Second, "another leader after a clean stop, before the 30 s TTL", func() error {
		_, err := leaderOf(rest)
		return err
	})
	t.Logf("leadership moved %s after a clean stop", time.Since(stopped))
	testkit.Eventually(t, 5*time.Second, "the stopped replica's record gone", func() error {
		hubs, _, err := store.Hubs(context.Background())
		if err != nil {
			return err
		}
		if _, ok := hubs[rs[leader].e.opts.HubID]; ok {
			return fmt.Errorf("hubs/%s still there", rs[leader].e.opts.HubID)
		}
		return nil
	})
}

// TestSessionLostStopsLeaderWork: a leader that loses etcd stops its leader work once its
// session lapses (the TTL, rounded up by etcd's minimum), and no longer says it leads.
func TestSessionLostStopsLeaderWork(t *testing.T) {
	e, cli := startEtcd(t)
	var active atomic.Int32
	r := startReplica(t, cli, "hub-0", &active, time.Second)
	testkit.Eventually(t, 10*time.Second, "the replica leads", func() error {
		_, err := leaderOf([]*replica{r})
		return err
	})
	// Close stops etcd gracefully, serving streams (the lease's keepalives among them) until it
	// returns: the time counts from then.
	e.Close()
	lost := time.Now()
	select {
	case at := <-r.ended:
		if d := at.Sub(lost); d > 5*time.Second {
			t.Errorf("the leader work stopped %s after etcd went away", d)
		}
		t.Logf("the leader work stopped %s after etcd went away", at.Sub(lost))
	case <-time.After(10 * time.Second):
		t.Fatal("the leader work still runs 10 s after etcd went away")
	}
	if r.e.Leader() {
		t.Fatal("the replica still says it leads")
	}
}

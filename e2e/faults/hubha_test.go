package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// hubHA says why the binaries cannot run hub replicas, "" when they can: the hub needs its
// election (--leader-lease-ttl) and the spoke a list of hub addresses.
func hubHA() string {
	bin := os.Getenv("SPILLWAY_BIN_DIR")
	for _, c := range []struct{ bin, text, what string }{
		{"hub", "--leader-lease-ttl", "the hub has no election (--leader-lease-ttl)"},
		{"spoke", "each hub replica", "the spoke takes no list of hub addresses (--hub-address a,b,c)"},
	} {
		out, _ := exec.Command(filepath.Join(bin, c.bin), "--help").CombinedOutput()
		if !strings.Contains(string(out), c.text) {
			return c.what
		}
	}
	return ""
}

// requireHubHA skips a scenario that needs hub replicas when the binaries cannot run them, and
// says so in faults.json.
func requireHubHA(t *testing.T, scenario string) {
	t.Helper()
	if why := enabled(); why != "" {
		t.Skip(why)
	}
	if why := hubHA(); why != "" {
		results.skip(scenario, why)
		t.Skip(why)
	}
}

// haArgs are the hub flags of the replica runs: the election's session TTL.
var haArgs = []string{"--leader-lease-ttl", "3s"}

// leader returns the one running replica whose spillway_hub_leader is 1, waiting up to within.
func (f *Fleet) leader(ctx context.Context, within time.Duration) (Hub, error) {
	var out Hub
	err := poll(ctx, within, "one hub leader", func() error {
		var leaders []Hub
		for _, h := range f.Hubs {
			if !f.Proc(h.Name).Running() {
				continue
			}
			v, err := f.HubMetric(ctx, h, "spillway_hub_leader")
			if err != nil {
				return err
			}
			if v == 1 {
				leaders = append(leaders, h)
			}
		}
		if len(leaders) != 1 {
			return fmt.Errorf("%d leaders", len(leaders))
		}
		out = leaders[0]
		return nil
	})
	return out, err
}

// sessionsOff waits until every cluster is alive on a running replica, none on dead.
func (f *Fleet) sessionsOff(ctx context.Context, dead Hub, within time.Duration) error {
	return poll(ctx, within, "every spoke on a live replica", func() error {
		for _, h := range f.Hubs {
			if h.Name == dead.Name || !f.Proc(h.Name).Running() {
				continue
			}
			admin, err := f.Admin(h)
			if err != nil {
				return err
			}
			c, cancel := context.WithTimeout(ctx, 2*time.Second)
			cl, err := admin.ListClusters(c, &pb.ListClustersRequest{})
			cancel()
			if err != nil {
				return err
			}
			for _, c := range cl.GetClusters() {
				if c.GetState() != pb.ClusterState_CLUSTER_STATE_ALIVE || c.GetHubId() == dead.Name || c.GetHubId() == "" {
					return fmt.Errorf("%s: %s %s on %q", h.Name, c.GetInfo().GetClusterId(), c.GetState(), c.GetHubId())
				}
			}
			return nil
		}
		return fmt.Errorf("no live replica")
	})
}

// TestHubLeaderKilled: three hub replicas on the etcd cluster; the leader is killed with SIGKILL
// under steady load. Another replica leads within 5 s, the spokes it served reconnect to the
// others, no export is lost, no import deleted and no request fails; the killed replica started
// again rejoins.
func TestHubLeaderKilled(t *testing.T) {
	const name = "kill -9 of the hub leader"
	requireHubHA(t, name)
	f, s, ctx := scenario(t, name, Config{Hubs: 3, HubArgs: haArgs, Kubernetes: true})
	old, err := f.leader(ctx, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	before, err := f.Exports(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	load := f.StartLoad(ctx, f.Regions, 4, 5*time.Minute)
	watch := f.Watch(ctx, f.Regions)
	imports := watchImports(t, ctx, f)
	sleepCtx(ctx, 3*time.Second)
	killAt := time.Now()
	f.Proc(old.Name).Kill()
	next, err := f.leader(ctx, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	failover := time.Since(killAt)
	s.Failover(failover)
	s.Figures["old_leader"], s.Figures["new_leader"] = old.Name, next.Name
	if failover > 5*time.Second {
		t.Errorf("new leader %s %.2fs after the old one was killed: want ≤ 5s", next.Name, failover.Seconds())
	}
	if err := f.sessionsOff(ctx, old, 30*time.Second); err != nil {
		t.Error(err)
	} else {
		s.Figures["spokes_reconnected_s"] = round(time.Since(killAt).Seconds())
	}
	s.ExportsLost(f.checkExports(ctx, t, s, "exports", before))
	sleepCtx(ctx, 3*time.Second)
	end := time.Now()
	samples := watch()
	rs, _ := load.Stop()
	checkImports(t, s, imports())
	// The spill candidates (clusters with capacity in the spoke's view) that went missing for a
	// moment: a replica that restarts has no capacity until the spokes report again.
	n, del := importsDeleted(samples, f.clusters(), killAt, end)
	s.Figures["spill_candidates_missing"] = n
	if n > 0 {
		t.Logf("spill candidates missing for a moment: %v", del)
	}
	sum := Summarize(rs, nil)
	s.Figures["requests"], s.Figures["failed"], s.Figures["besteffort_shed"] = sum.Requests, sum.Failed, sum.Shed
	// No request is in flight on a hub: every failure is one beyond those in flight.
	s.FailedBeyondInflight(sum.Total())
	if sum.Total() > 0 {
		t.Errorf("failed requests on the data path: %v, e.g. %v", sum.Failed, sum.Examples)
	}
	rejoin := time.Now()
	if err := f.Proc(old.Name).Restart(); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, 30*time.Second, old.Name+" ready again", func() error {
		if err := f.HubReady(ctx, old); err != nil {
			return err
		}
		return f.hubReady(ctx)
	}); err != nil {
		t.Error(err)
	}
	s.Figures["killed_replica_ready_again_s"] = round(time.Since(rejoin).Seconds())
}

// TestAllHubReplicasKilled: every hub replica is killed with SIGKILL, held down and started
// again: first for half the session lease TTL (a crash loop, a bad rollout), then for twice it
// (so every session's lease lapses in etcd meanwhile). No member cluster deletes or shrinks an
// InferencePoolImport meanwhile (spokes keep their last view; a replica that comes back serves
// none before its registry load, and a view marked incomplete removes nothing); the registry and
// the export set of before come back, and no request fails.
func TestAllHubReplicasKilled(t *testing.T) {
	const name = "kill -9 of every hub replica, then restart"
	requireHubHA(t, name)
	f, s, ctx := scenario(t, name, Config{Hubs: 3, HubArgs: haArgs, Kubernetes: true})
	before, err := f.anyExports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lost, deleted, failed := 0, 0, 0
	for _, tc := range []struct {
		name, key string
		down      time.Duration
	}{
		{"down for half the lease TTL", "down_half_ttl", f.LeaseTTL / 2},
		{"down for twice the lease TTL", "down_twice_ttl", 2 * f.LeaseTTL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fig := map[string]any{"held_down_s": tc.down.Seconds()}
			s.Figures[tc.key] = fig
			load := f.StartLoad(ctx, f.Regions, 4, 5*time.Minute)
			watch := f.Watch(ctx, f.Regions)
			imports := watchImports(t, ctx, f)
			sleepCtx(ctx, 3*time.Second)
			killAt := time.Now()
			for _, h := range f.Hubs {
				f.Proc(h.Name).Kill()
			}
			sleepCtx(ctx, tc.down)
			restartAt := time.Now()
			for _, h := range f.Hubs {
				if err := f.Proc(h.Name).Restart(); err != nil {
					t.Fatal(err)
				}
			}
			if err := poll(ctx, 60*time.Second, "every replica serves the whole fleet", func() error { return f.hubReady(ctx) }); err != nil {
				t.Error(err)
			}
			fig["registry_restored_s"] = round(time.Since(restartAt).Seconds())
			sub := &Scenario{Figures: fig}
			n := f.checkExports(ctx, t, sub, "exports", before)
			fig["exports_lost"] = n
			lost += n
			sleepCtx(ctx, 3*time.Second)
			end := time.Now()
			samples := watch()
			rs, _ := load.Stop()
			events := imports()
			fig["imports_deleted_spuriously"] = len(events)
			deleted += len(events)
			for _, e := range events {
				t.Errorf("import lost while the hub was down or coming back: %s", e)
			}
			c, del := importsDeleted(samples, f.clusters(), killAt, end)
			fig["spill_candidates_missing"] = c
			if c > 0 {
				t.Logf("spill candidates missing for a moment: %v", del)
			}
			sum := Summarize(rs, nil)
			fig["requests"], fig["failed"], fig["besteffort_shed"] = sum.Requests, sum.Failed, sum.Shed
			failed += sum.Total()
			if sum.Total() > 0 {
				t.Errorf("failed requests on the data path: %v, e.g. %v", sum.Failed, sum.Examples)
			}
		})
	}
	s.ExportsLost(lost)
	s.ImportsDeleted(deleted)
	s.FailedBeyondInflight(failed)
}

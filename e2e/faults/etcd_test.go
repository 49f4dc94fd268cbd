package faults

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// TestEtcdMemberAndQuorumLoss: under steady load, one etcd member of three is killed, the one
// that leads (the hub stays ready through etcd's election), then two (quorum lost) for less than
// the lease TTL and for twice it, and started again. While quorum is gone the hub's /readyz answers not ready with a reason that names etcd,
// the spokes keep routing (no request fails) and keep their imports; once quorum is back the hub
// is ready again and serves the export set of before, without any operator action.
func TestEtcdMemberAndQuorumLoss(t *testing.T) {
	f, s, ctx := scenario(t, "etcd member loss; quorum loss shorter and longer than the lease TTL", Config{Kubernetes: true})
	hub := f.Hubs[0]
	lost, deleted := 0, 0
	for _, tc := range []struct {
		name, key string
		kill      []int // members to kill; none: the leader
		hold      time.Duration
	}{
		{"one member lost", "one_member", nil, 5 * time.Second},
		// Long enough for /readyz to say that etcd is gone (within about 3 s).
		{"quorum lost for less than the lease TTL", "quorum_short", []int{2, 3}, f.LeaseTTL - time.Second},
		{"quorum lost for twice the lease TTL", "quorum_long", []int{2, 3}, 2 * f.LeaseTTL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fig := map[string]any{"held_s": tc.hold.Seconds()}
			s.Figures[tc.key] = fig
			before, err := f.Exports(ctx, hub)
			if err != nil {
				t.Fatal(err)
			}
			load := f.StartLoad(ctx, f.Regions, 4, tc.hold+30*time.Second)
			watch := f.Watch(ctx, f.Regions)
			imports := watchImports(t, ctx, f)
			sleepCtx(ctx, 2*time.Second)
			kill := tc.kill
			if kill == nil {
				leader, err := f.EtcdLeader(ctx)
				if err != nil {
					t.Fatal(err)
				}
				kill, fig["killed_leader"] = []int{leader}, true
			}
			killAt := time.Now()
			for _, i := range kill {
				f.Etcd(i).Kill()
			}
			quorum := len(kill) < 2
			var reason string
			var notReady time.Time
			// Watch /readyz for the whole hold: ready throughout with quorum, not ready (with its
			// reason) soon after it is lost.
			for deadline := killAt.Add(tc.hold); time.Now().Before(deadline); sleepCtx(ctx, 200*time.Millisecond) {
				err := f.HubReady(ctx, hub)
				if quorum && err != nil {
					t.Errorf("hub not ready with one etcd member lost: %v", err)
					break
				}
				if !quorum && err != nil && notReady.IsZero() {
					notReady, reason = time.Now(), err.Error()
				}
			}
			if !quorum {
				switch {
				case notReady.IsZero():
					t.Errorf("the hub stayed ready for %s without etcd quorum", tc.hold)
				default:
					fig["not_ready_after_s"], fig["not_ready_reason"] = round(notReady.Sub(killAt).Seconds()), reason
					if !strings.Contains(reason, "etcd") {
						t.Errorf("the hub's /readyz reason %q does not say etcd is the trouble", reason)
					}
				}
			}
			restartAt := time.Now()
			for _, i := range kill {
				if err := f.Etcd(i).Restart(); err != nil {
					t.Fatal(err)
				}
			}
			if err := poll(ctx, 60*time.Second, "the hub ready with the whole fleet again", func() error {
				if err := f.HubReady(ctx, hub); err != nil {
					return err
				}
				return f.fleetComplete(ctx, mustAdmin(t, f, hub))
			}); err != nil {
				t.Error(err)
			}
			fig["recovered_after_restart_s"] = round(time.Since(restartAt).Seconds())
			after, err := f.Exports(ctx, hub)
			if err != nil {
				t.Fatal(err)
			}
			missing := exportsMissing(before, after)
			fig["exports_lost"] = len(missing)
			lost += len(missing)
			if len(missing) > 0 {
				t.Errorf("exports lost: %v (before %v, after %v)", missing, before, after)
			}
			end := time.Now()
			samples := watch()
			rs, err := load.Stop()
			if err != nil {
				t.Fatal(err)
			}
			events := imports()
			fig["imports_deleted_spuriously"] = len(events)
			deleted += len(events)
			for _, e := range events {
				t.Errorf("import lost while etcd was down or coming back: %s", e)
			}
			n, del := importsDeleted(samples, f.clusters(), killAt, end)
			fig["spill_candidates_missing"] = n
			if n > 0 {
				t.Errorf("spill candidates lost: %v", del)
			}
			sum := Summarize(rs, nil)
			fig["requests"], fig["failed"], fig["besteffort_shed"] = sum.Requests, sum.Failed, sum.Shed
			if sum.Total() > 0 {
				t.Errorf("failed requests while etcd was down: %v, e.g. %v", sum.Failed, sum.Examples)
			}
			t.Logf("%s: %v", tc.name, fig)
		})
	}
	s.ExportsLost(lost)
	s.ImportsDeleted(deleted)
}

func mustAdmin(t *testing.T, f *Fleet, h Hub) pb.AdminServiceClient {
	t.Helper()
	a, err := f.Admin(h)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// exportsMissing lists the (pool, cluster) exports of before that after lacks.
func exportsMissing(before, after map[string][]string) []string {
	var out []string
	for _, pool := range slices.Sorted(maps.Keys(before)) {
		for _, c := range before[pool] {
			if !slices.Contains(after[pool], c) {
				out = append(out, fmt.Sprintf("%s from %s", pool, c))
			}
		}
	}
	return out
}

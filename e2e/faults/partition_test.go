package faults

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/loadgen"
)

// ExportSample is the exporters of pool default/chat as a hub replica served them at one moment.
type ExportSample struct {
	At        time.Time
	Exporters []string
	Err       error
}

// WatchExports polls hub h's exports of default/chat every 200 ms until stop.
func (f *Fleet) WatchExports(ctx context.Context, h Hub) (stop func() []ExportSample) {
	ctx, cancel := context.WithCancel(ctx)
	var out []ExportSample
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for ctx.Err() == nil {
			ex, err := f.Exports(ctx, h)
			if ctx.Err() != nil {
				return
			}
			out = append(out, ExportSample{At: time.Now(), Exporters: ex["default/chat"], Err: err})
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
	}()
	return func() []ExportSample {
		cancel()
		wg.Wait()
		return out
	}
}

// withdrawn is when cluster first went missing from the exports sampled after from (zero if
// never), and when it was back after that.
func withdrawn(ss []ExportSample, cluster string, from time.Time) (gone, back time.Time) {
	for _, s := range ss {
		if s.At.Before(from) || s.Err != nil {
			continue
		}
		has := slices.Contains(s.Exporters, cluster)
		if gone.IsZero() && !has {
			gone = s.At
		}
		if !gone.IsZero() && has {
			return gone, s.At
		}
	}
	return gone, time.Time{}
}

// TestRegionPartitionedFromHub: eu-west loses its link to the hub (both directions, then only
// what the hub sends), then is cut off from everyone. Under steady load in every region,
// eu-west keeps routing locally (no failed request), nobody loses an import of a region that
// is still reachable, the hub withdraws eu-west's exports only once its session lease could
// have lapsed (not before two thirds of the lease TTL: the hub renews every third) and restores
// them after the heal; cut off from everyone, eu-west leaves the others' spill target lists and
// receives none of their requests after that.
func TestRegionPartitionedFromHub(t *testing.T) {
	f, s, ctx := scenario(t, "region partitioned from the hub", Config{})
	victim := f.Regions[2]
	hubIPs := []string{"10.79.0.1", "10.79.0.2", "10.79.0.3"}
	everyone := append(slices.Clone(hubIPs), f.Regions[0].IP, f.Regions[1].IP)
	// Longer than the time the hub takes to see the session gone (its connection's segments
	// unacknowledged for 10 s) and its lease (6 s) lapse.
	cut := short(25*time.Second, time.Minute)
	failed := 0
	for _, tc := range []struct {
		name, key string
		peers     []string
		dir       Direction
		isolated  bool
	}{
		{"hub link cut both ways", "hub_link_both_ways", hubIPs, Both, false},
		{"hub link cut one way: the hub's packets dropped", "hub_link_one_way", hubIPs, Inbound, false},
		{"region cut off from hub and regions", "isolated", everyone, Both, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fig := map[string]any{}
			s.Figures[tc.key] = fig
			load := f.StartLoad(ctx, f.Regions, 4, cut+time.Minute)
			watch := f.Watch(ctx, f.Regions)
			exports := f.WatchExports(ctx, f.Hubs[0])
			sleepCtx(ctx, 3*time.Second)
			cutAt := time.Now()
			if err := f.Net.Partition(ctx, victim.Node, tc.peers, tc.dir); err != nil {
				t.Fatal(err)
			}
			sleepCtx(ctx, cut)
			healAt := time.Now()
			if err := f.Net.Heal(ctx, victim.Node); err != nil {
				t.Fatal(err)
			}
			restoreErr := poll(ctx, 40*time.Second, "eu-west's exports back at the hub and in the other spokes", func() error {
				ex, err := f.Exports(ctx, f.Hubs[0])
				if err != nil {
					return err
				}
				if !slices.Contains(ex["default/chat"], victim.Cluster) {
					return fmt.Errorf("hub exports of default/chat: %v", ex["default/chat"])
				}
				for _, o := range f.others(victim) {
					rep, err := f.Spill(ctx, o)
					if err != nil {
						return err
					}
					if !slices.Contains(rep.CandidateClusters(), victim.Cluster) || !slices.Contains(rep.TargetRegions(), victim.Name) {
						return fmt.Errorf("%s: candidates %v, targets %v", o.Name, rep.CandidateClusters(), rep.TargetRegions())
					}
				}
				return nil
			})
			restoredAt := time.Now()
			samples := watch()
			exportSamples := exports()
			rs, loadErr := load.Stop()
			if loadErr != nil {
				t.Fatal(loadErr)
			}
			if restoreErr != nil {
				t.Error(restoreErr)
			} else {
				fig["restored_after_heal_s"] = round(restoredAt.Sub(healAt).Seconds())
			}

			gone, _ := withdrawn(exportSamples, victim.Cluster, cutAt)
			switch {
			case gone.IsZero() || gone.After(healAt):
				t.Errorf("the hub never withdrew eu-west's exports during the %s partition", cut)
			default:
				after := gone.Sub(cutAt)
				fig["exports_withdrawn_after_s"] = round(after.Seconds())
				if min := 2 * f.LeaseTTL / 3; after < min {
					t.Errorf("eu-west's exports withdrawn %.1fs after the cut: before the damping (%s)", after.Seconds(), min)
				}
			}

			local := Summarize(map[string][]loadgen.Result{victim.Name: rs[victim.Name]}, nil)
			fig["partitioned_region_requests"], fig["partitioned_region_failed"] = local.Requests, local.Failed
			if local.Total() > 0 {
				t.Errorf("eu-west did not keep routing locally: %v failed, e.g. %v", local.Failed, local.Examples)
			}
			all := Summarize(rs, nil)
			fig["failed_requests"] = all.Failed
			failed += all.Total()
			if all.Total() > 0 {
				t.Errorf("failed requests: %v, e.g. %v", all.Failed, all.Examples)
			}

			// The spokes run on pool files here: what they import is read from their spill
			// candidates. The others keep each other; eu-west keeps both of them (it has no newer
			// view).
			var keepers = map[string][]Sample{}
			for _, o := range f.others(victim) {
				keepers[o.Name] = samples[o.Name]
			}
			n, lost := importsDeleted(keepers, []string{f.Regions[0].Cluster, f.Regions[1].Cluster}, cutAt, restoredAt)
			m, lost2 := importsDeleted(map[string][]Sample{victim.Name: samples[victim.Name]}, []string{f.Regions[0].Cluster, f.Regions[1].Cluster}, cutAt, restoredAt)
			fig["spill_candidates_lost"] = n + m
			if n+m > 0 {
				t.Errorf("clusters gone from a spoke's spill candidates while reachable and exporting: %v", append(lost, lost2...))
			}

			if tc.isolated {
				for _, o := range f.others(victim) {
					left := leftTargets(samples[o.Name], victim.Name, cutAt, healAt)
					if left.IsZero() || left.After(healAt) {
						t.Errorf("%s kept eu-west among its spill targets while eu-west was cut off", o.Name)
						continue
					}
					fig["left_targets_of_"+o.Name+"_s"] = round(left.Sub(cutAt).Seconds())
					into := 0
					for _, r := range rs[o.Name] {
						if r.Start.After(left) && r.Start.Before(healAt) && r.Served == proxyAddress(victim.Index) {
							into++
						}
					}
					fig["requests_into_cut_region_from_"+o.Name] = into
					if into > 0 {
						t.Errorf("%s sent %d requests into the cut-off eu-west after dropping it", o.Name, into)
					}
				}
			}
			t.Logf("%s: %v", tc.name, fig)
		})
	}
	// Cut off from everyone, eu-west is dead to the others and they to it: those verdicts are
	// true ones for a partition; they are reported, not counted as false.
	s.Figures["dead_verdicts"] = f.DeadVerdicts()
	s.Figures["spill_candidates_lost"] = sumFigure(s, "spill_candidates_lost")
	s.FailedBeyondInflight(failed)
}

// sumFigure adds up an integer figure over a scenario's subtests' figure maps.
func sumFigure(s *Scenario, name string) int {
	n := 0
	for _, v := range s.Figures {
		if m, ok := v.(map[string]any); ok {
			if x, ok := m[name].(int); ok {
				n += x
			}
		}
	}
	return n
}

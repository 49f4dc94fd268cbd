package faults

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// lossOnHubAndGossip drops percent of the packets on every hub link and every gossip link,
// each packet once: at a region's ingress everything but the data path (the gateways' port),
// at a hub node's ingress what comes from the regions (not etcd's traffic between hub nodes).
func (f *Fleet) lossOnHubAndGossip(ctx context.Context, percent int) error {
	var regionIPs []string
	for _, r := range f.Regions {
		if err := f.Net.Loss(ctx, r.Node, percent, "", gatewayPort); err != nil {
			return err
		}
		regionIPs = append(regionIPs, r.IP)
	}
	for i := 1; i <= 3; i++ {
		if err := f.Net.Loss(ctx, fmt.Sprintf("h%d", i), percent, "ip saddr { "+joinComma(regionIPs)+" }"); err != nil {
			return err
		}
	}
	return nil
}

func (f *Fleet) healAll(ctx context.Context) error {
	for _, n := range []string{"h1", "h2", "h3", "r1", "r2", "r3"} {
		if err := f.Net.Heal(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func joinComma(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += ", "
		}
		out += s
	}
	return out
}

// TestLossOnHubAndGossipLinks: 30 % of the packets on every hub and gossip link are dropped
// for the run (2 minutes, 10 with -faults.full) under steady load; halfway, eu-west is killed
// (spoke, gateway and model servers, SIGKILL). No member alive is ever declared dead, eu-west
// leaves the spill target list of every other spoke within 1.5 s of its death, no request fails,
// and no spoke loses the import of a live cluster.
func TestLossOnHubAndGossipLinks(t *testing.T) {
	// The sessions' lease TTL is the hub's default (15 s): a session that a lossy link breaks
	// is resumed within it.
	f, s, ctx := scenario(t, "30% loss on every hub and gossip link", Config{LeaseTTL: 15 * time.Second})
	d := short(2*time.Minute, 10*time.Minute)
	victim := f.Regions[2]
	live := f.others(victim)
	s.Figures["duration_s"] = d.Seconds()
	s.Figures["loss_percent"] = 30

	load := f.StartLoad(ctx, live, 4, d+5*time.Second)
	watch := f.Watch(ctx, live)
	start := time.Now()
	if err := f.lossOnHubAndGossip(ctx, 30); err != nil {
		t.Fatal(err)
	}
	sleepCtx(ctx, d/2)
	killAt := time.Now()
	f.KillRegion(victim)
	sleepCtx(ctx, d/2)
	verdicts := f.DeadVerdicts()
	rules, _ := f.Net.Rules(ctx, "r1")
	if err := f.healAll(ctx); err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	samples := watch()
	rs, err := load.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("us-east's fault rules at the end (with their counters):\n%s", rules)

	falsev := falseDead(verdicts, killAt, victim.Cluster)
	s.FalseDead(len(falsev))
	if len(falsev) > 0 {
		t.Errorf("%d false dead verdicts under loss: %v", len(falsev), falsev)
	}
	var worst time.Duration
	for _, o := range live {
		left := leftTargets(samples[o.Name], victim.Name, killAt, time.Time{})
		if left.IsZero() {
			t.Errorf("%s never dropped the killed eu-west from its spill targets", o.Name)
			continue
		}
		d := left.Sub(killAt)
		s.Figures["detect_s_"+o.Name] = round(d.Seconds())
		worst = max(worst, d)
		if dead := deadAt(samples[o.Name], victim.Name, killAt); !dead.IsZero() {
			s.Figures["declared_dead_s_"+o.Name] = round(dead.Sub(killAt).Seconds())
		}
	}
	s.Detect(worst)
	if worst > 1500*time.Millisecond {
		t.Errorf("the killed eu-west left the last spill target list %.2fs after its death: want ≤ 1.5s", worst.Seconds())
	}
	// Before the kill, a live region missing from a spill target list is a flap: counted, and
	// reported (a capacity report held up by the loss can age past the freshness bound).
	flaps, before := 0, 0
	why := map[string]int{}
	for _, o := range live {
		for _, smp := range samples[o.Name] {
			if smp.At.Before(killAt) && smp.At.After(start) {
				before++
				if len(smp.Targets) < len(f.Regions)-1 {
					flaps++
				}
				for _, w := range smp.Why {
					why[w]++
				}
			}
		}
	}
	s.Figures["missing_targets_by_reason_before_the_kill"] = why
	s.Figures["samples_before_the_kill"] = before
	s.Figures["samples_with_a_live_target_missing_before_the_kill"] = flaps
	sum := Summarize(rs, nil)
	s.Figures["requests"], s.Figures["failed"] = sum.Requests, sum.Failed
	s.FailedBeyondInflight(sum.Total())
	if sum.Total() > 0 {
		t.Errorf("failed requests under loss: %v, e.g. %v", sum.Failed, sum.Examples)
	}
	var keep []string
	for _, o := range live {
		keep = append(keep, o.Cluster)
	}
	// The spokes run on pool files here: what they import is read from their spill candidates
	// (the remote clusters with capacity in their view).
	n, lost := importsDeleted(samples, keep, start, end)
	s.Figures["spill_candidates_lost"] = n
	if n > 0 {
		t.Errorf("live clusters gone from a spoke's spill candidates under loss: %v", lost)
	}
	if !slices.ContainsFunc(verdicts, func(v Verdict) bool { return v.Member == victim.Cluster }) {
		t.Errorf("nobody declared the killed eu-west dead")
	}
}

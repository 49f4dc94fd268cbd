package faults

import (
	"context"
	"testing"
	"time"
)

// wanDelay is the one-way delay before each gossip member's port: a datagram to a member waits
// that member's delay, so the round trip between two members is the sum of theirs (150 ms
// between the hub and us-east, 175 to us-west, 225 to eu-west; 250 between us-west and eu-west).
var wanDelay = map[string]time.Duration{"h1": 75 * time.Millisecond, "r1": 75 * time.Millisecond, "r2": 100 * time.Millisecond, "r3": 150 * time.Millisecond}

// relayPort is where the WAN members advertise their gossip: the relays listen there.
const relayPort = 7947

// TestGossipAcrossWAN: every gossip member is reached through a relay that delays it (UDP: a
// relay of the suite; TCP: toxiproxy), for round trips of 150 to 250 ms. Under steady load for
// 1 minute (5 with -faults.full), no live member is declared dead; then eu-west is killed and
// the time until it leaves every other spoke's spill target list is reported.
func TestGossipAcrossWAN(t *testing.T) {
	var relays []*udpDelay
	t.Cleanup(func() {
		for _, r := range relays {
			r.Close()
		}
	})
	f, s, ctx := scenario(t, "gossip across 150-300 ms RTT", Config{
		LeaseTTL:            15 * time.Second,
		GossipAdvertisePort: relayPort,
		BeforeStart: func(ctx context.Context, f *Fleet) error {
			for node, d := range wanDelay {
				ip := f.Net.IP(node)
				r, err := f.StartUDPDelay(node, hostPort(ip, relayPort), hostPort(ip, gossipPort), d)
				if err != nil {
					return err
				}
				relays = append(relays, r)
				if err := f.AddProxy(ctx, node, "gossip", hostPort(ip, relayPort), hostPort(ip, gossipPort), int(d/time.Millisecond)); err != nil {
					return err
				}
			}
			return nil
		},
	})
	rtts := map[string]float64{}
	for a, da := range wanDelay {
		for b, db := range wanDelay {
			if a < b {
				rtts[a+"-"+b] = float64((da + db) / time.Millisecond)
			}
		}
	}
	s.Figures["gossip_rtt_ms"] = rtts
	d := short(time.Minute, 5*time.Minute)
	victim := f.Regions[2]
	live := f.others(victim)
	load := f.StartLoad(ctx, live, 4, d+10*time.Second)
	watch := f.Watch(ctx, live)
	start := time.Now()
	sleepCtx(ctx, d)
	killAt := time.Now()
	f.KillRegion(victim)
	sleepCtx(ctx, 20*time.Second) // a death verdict takes the 12 s suspicion and its gossip
	verdicts := f.DeadVerdicts()
	samples := watch()
	rs, err := load.Wait()
	if err != nil {
		t.Fatal(err)
	}
	falsev := falseDead(verdicts, killAt, victim.Cluster)
	s.FalseDead(len(falsev))
	if len(falsev) > 0 {
		t.Errorf("%d false dead verdicts across the WAN: %v", len(falsev), falsev)
	}
	var worst time.Duration
	for _, o := range live {
		left := leftTargets(samples[o.Name], victim.Name, killAt, time.Time{})
		if left.IsZero() {
			t.Errorf("%s never dropped the killed eu-west from its spill targets", o.Name)
			continue
		}
		s.Figures["detect_s_"+o.Name] = round(left.Sub(killAt).Seconds())
		if dead := deadAt(samples[o.Name], victim.Name, killAt); !dead.IsZero() {
			s.Figures["declared_dead_s_"+o.Name] = round(dead.Sub(killAt).Seconds())
		}
		worst = max(worst, left.Sub(killAt))
	}
	s.Figures["detect_s"] = round(worst.Seconds())
	t.Logf("eu-west left the last spill target list %.2fs after it was killed", worst.Seconds())
	var keep []string
	for _, o := range live {
		keep = append(keep, o.Cluster)
	}
	n, lost := importsDeleted(samples, keep, start, killAt)
	s.Figures["spill_candidates_lost"] = n
	if n > 0 {
		t.Errorf("live clusters gone from a spoke's spill candidates across the WAN: %v", lost)
	}
	sum := Summarize(rs, nil)
	s.Figures["requests"], s.Figures["failed"], s.Figures["besteffort_shed"] = sum.Requests, sum.Failed, sum.Shed
	if sum.Total() > 0 {
		t.Errorf("failed requests: %v, e.g. %v", sum.Failed, sum.Examples)
	}
}

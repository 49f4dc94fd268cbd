package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// enabled says why the suite does not run here, "" when it does.
func enabled() string {
	switch {
	case os.Getenv("SPILLWAY_FAULTS") != "1":
		return "run by make e2e-faults (root, SPILLWAY_FAULTS=1: it creates network namespaces)"
	case os.Geteuid() != 0:
		return "needs root (network namespaces, nftables)"
	case os.Getenv("SPILLWAY_BIN_DIR") == "" || os.Getenv("SPILLWAY_K8S_BIN_DIR") == "":
		return "needs SPILLWAY_BIN_DIR (make build) and SPILLWAY_K8S_BIN_DIR (hack/k8s-bins.sh, for etcd)"
	}
	return ""
}

// short picks the short or the full duration.
func short(s, f time.Duration) time.Duration {
	if *full {
		return f
	}
	return s
}

// scenario starts a fleet for one scenario and its entry in faults.json, whose Passed is set
// when the test ends. Everything stops at the end of the test.
func scenario(t *testing.T, name string, c Config) (*Fleet, *Scenario, context.Context) {
	t.Helper()
	if why := enabled(); why != "" {
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute+short(0, 40*time.Minute))
	t.Cleanup(cancel)
	s := &Scenario{Scenario: name, Figures: map[string]any{}}
	results.add(s)
	t.Cleanup(func() { s.Passed = !t.Failed() })
	c.Prefix = fmt.Sprintf("spf%d", os.Getpid()%100000)
	c.BinDir, c.EtcdBin, c.WorkDir = os.Getenv("SPILLWAY_BIN_DIR"), os.Getenv("SPILLWAY_K8S_BIN_DIR"), t.TempDir()
	if keep := os.Getenv("SPILLWAY_FAULTS_KEEP"); keep != "" {
		// Kept after the run (logs, load results, etcd data): a directory per scenario.
		c.WorkDir = filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_"))
		if err := os.MkdirAll(c.WorkDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	started := time.Now()
	f, err := StartFleet(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fleet ready in %.1fs", time.Since(started).Seconds())
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range f.Procs() {
				if strings.HasPrefix(p.Name, "hub-") || strings.HasPrefix(p.Name, "spoke-") {
					t.Log(p.LogTail(2500))
				}
			}
		}
		f.Stop()
	})
	return f, s, ctx
}

// deadVerdict matches the gossip layer's log line for a member it declared dead.
var deadVerdict = regexp.MustCompile(`(?m)^time=(\S+) .*msg="gossip member dead or left".* member=(\S+)`)

// Verdict is one process's log of a gossip member declared dead.
type Verdict struct {
	At     time.Time
	By     string
	Member string
}

// DeadVerdicts returns every "gossip member dead or left" the hubs and spokes logged so far. A member
// that left (a process stopped with SIGTERM) is logged so too: call it before stopping anything.
func (f *Fleet) DeadVerdicts() []Verdict {
	var out []Verdict
	for _, p := range f.Procs() {
		if !strings.HasPrefix(p.Name, "hub-") && !strings.HasPrefix(p.Name, "spoke-") {
			continue
		}
		for _, m := range deadVerdict.FindAllStringSubmatch(p.Logs(), -1) {
			at, _ := time.Parse(time.RFC3339Nano, m[1])
			out = append(out, Verdict{At: at, By: p.Name, Member: m[2]})
		}
	}
	return out
}

// falseDead returns the verdicts on members that were alive: every verdict but those on a
// member of killed logged after killedAt.
func falseDead(vs []Verdict, killedAt time.Time, killed ...string) []string {
	var out []string
	for _, v := range vs {
		if slices.Contains(killed, v.Member) && !v.At.Before(killedAt) {
			continue
		}
		out = append(out, fmt.Sprintf("%s declared %s dead at %s", v.By, v.Member, v.At.Format("15:04:05.000")))
	}
	return out
}

// Sample is what one spoke's GET /spill said at one moment.
type Sample struct {
	At         time.Time
	Targets    []string // regions
	Candidates []string // clusters
	// MinAge and MaxAge bound the ages of the candidates' capacity reports.
	MinAge, MaxAge time.Duration
	// Why says, for each candidate that is not a target, why: "dead" (gossip or the hub says
	// it is gone), "unreachable" (the spoke's gossip pings went unanswered for a second), "stale" (its capacity report is older than the 5 s freshness bound),
	// "saturated", "spilling" (its own report says so) or "no ready endpoint".
	Why map[string]string
}

// Watch polls every region's GET /spill every 50 ms until stop, which returns the samples by
// region. Failed reads (a killed spoke) are skipped.
func (f *Fleet) Watch(ctx context.Context, regions []Region) (stop func() map[string][]Sample) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	out := map[string][]Sample{}
	for _, r := range regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(50 * time.Millisecond)
			defer t.Stop()
			for ctx.Err() == nil {
				rep, err := f.Spill(ctx, r)
				if err == nil {
					s := Sample{At: time.Now(), Targets: rep.TargetRegions(), Candidates: rep.CandidateClusters()}
					for i, c := range rep.Candidates {
						if !slices.Contains(s.Targets, c.Region) {
							if s.Why == nil {
								s.Why = map[string]string{}
							}
							switch {
							case !c.Alive:
								s.Why[c.Region] = "dead"
							case c.Unreachable:
								s.Why[c.Region] = "unreachable"
							case c.Age > 5*time.Second:
								s.Why[c.Region] = "stale"
							case c.Saturated:
								s.Why[c.Region] = "saturated"
							case c.Spilling:
								s.Why[c.Region] = "spilling"
							case c.ReadyEndpoints == 0:
								s.Why[c.Region] = "no ready endpoint"
							default:
								s.Why[c.Region] = "other"
							}
						}
						if i == 0 {
							s.MinAge, s.MaxAge = c.Age, c.Age
						}
						s.MinAge, s.MaxAge = min(s.MinAge, c.Age), max(s.MaxAge, c.Age)
					}
					mu.Lock()
					out[r.Name] = append(out[r.Name], s)
					mu.Unlock()
				}
				select {
				case <-ctx.Done():
				case <-t.C:
				}
			}
		}()
	}
	return func() map[string][]Sample {
		cancel()
		wg.Wait()
		return out
	}
}

// leftTargets is when region victim left the spill targets for good within (from, to) (to zero:
// no end): the first sample taken after from that does not list it and after which no sample
// before to lists it again; zero when the last such sample still lists it. (A sample already
// without it at from, say a target flapping on a lossy link, counts as leaving then.)
func leftTargets(samples []Sample, victim string, from, to time.Time) time.Time {
	var left time.Time
	for _, s := range samples {
		if !s.At.After(from) || !to.IsZero() && !s.At.Before(to) {
			continue
		}
		switch listed := slices.Contains(s.Targets, victim); {
		case listed:
			left = time.Time{}
		case left.IsZero():
			left = s.At
		}
	}
	return left
}

// deadAt is when region victim was first reported dead (not alive, or gone from the candidates)
// for good in the samples taken after from: the signal gossip and the hub give, apart from the
// load-based reasons a target may be left out.
func deadAt(samples []Sample, victim string, from time.Time) time.Time {
	var dead time.Time
	for _, s := range samples {
		if !s.At.After(from) {
			continue
		}
		alive := slices.Contains(s.Targets, victim) || s.Why[victim] != "" && s.Why[victim] != "dead"
		switch {
		case alive:
			dead = time.Time{}
		case dead.IsZero():
			dead = s.At
		}
	}
	return dead
}

// importsDeleted counts, over every watcher, the clusters that vanished from a spoke's
// candidates (its imports of pool default/chat) while they should have stayed: every sample
// taken inside [from, to) must list every cluster of keep.
func importsDeleted(samples map[string][]Sample, keep []string, from, to time.Time) (int, []string) {
	var lost []string
	for region, ss := range samples {
		seen := map[string]bool{}
		for _, s := range ss {
			if s.At.Before(from) || !s.At.Before(to) {
				continue
			}
			for _, c := range keep {
				if c == region+"-1" || seen[c] {
					continue
				}
				if !slices.Contains(s.Candidates, c) {
					seen[c] = true
					lost = append(lost, fmt.Sprintf("%s lost %s at %s", region, c, s.At.Format("15:04:05.000")))
				}
			}
		}
	}
	return len(lost), lost
}

// watchImports starts watching the member clusters' InferencePoolImports (a fleet with
// Kubernetes): everything the returned stop reports was taken away from an import meanwhile.
func watchImports(t *testing.T, ctx context.Context, f *Fleet) func() []ImportEvent {
	t.Helper()
	stop, err := f.WatchImports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	return stop
}

// checkImports records and asserts that no import lost anything.
func checkImports(t *testing.T, s *Scenario, events []ImportEvent) {
	t.Helper()
	s.ImportsDeleted(len(events))
	if len(events) > 0 {
		var out []string
		for _, e := range events[:min(10, len(events))] {
			out = append(out, e.String())
		}
		t.Errorf("%d imports deleted or shrunk in member clusters: %v", len(events), out)
	}
}

// clusters are every region's cluster ID.
func (f *Fleet) clusters() []string {
	var out []string
	for _, r := range f.Regions {
		out = append(out, r.Cluster)
	}
	return out
}

// others are the regions but r.
func (f *Fleet) others(r Region) []Region {
	var out []Region
	for _, o := range f.Regions {
		if o.Index != r.Index {
			out = append(out, o)
		}
	}
	return out
}

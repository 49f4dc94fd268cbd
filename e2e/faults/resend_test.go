package faults

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"
)

// exportCount is how many pools cluster exports in export set ex.
func exportCount(ex map[string][]string, cluster string) int {
	n := 0
	for _, cs := range ex {
		for _, c := range cs {
			if c == cluster {
				n++
			}
		}
	}
	return n
}

// waitLog waits until the log of p's current start has a line that matches re.
func waitLog(ctx context.Context, p *Proc, re *regexp.Regexp, within time.Duration) error {
	return poll(ctx, within, fmt.Sprintf("%s logs %s", p.Name, re), func() error {
		if re.MatchString(p.CurrentLog()) {
			return nil
		}
		return fmt.Errorf("not yet")
	})
}

// fullSession matches the log line of a spoke's full hub session (not an observer's).
var fullSession = regexp.MustCompile(`msg="hub session started".* observer=false`)

// TestHubKilledDuringResendAndStartup: us-east exports 1,000 pools. Its spoke is killed and
// started again, which sends the 1,000 exports again, and the hub replica it reaches is killed
// with SIGKILL as soon as that session starts; later a hub replica is killed again 300 ms into
// its start-up. After each, the hub serves exactly the export set of before, and no spoke ever
// loses an import of pool default/chat.
func TestHubKilledDuringResendAndStartup(t *testing.T) {
	f, s, ctx := scenario(t, "kill -9 of the hub during a 1,000-export resend and during startup", Config{Kubernetes: true})
	east := f.Regions[0]
	if err := f.WritePools(east, 999); err != nil {
		t.Fatal(err)
	}
	var before map[string][]string
	if err := poll(ctx, 90*time.Second, "us-east's 1,000 exports at the hub", func() error {
		ex, err := f.anyExports(ctx)
		if err != nil {
			return err
		}
		if n := exportCount(ex, east.Cluster); n != 1000 {
			return fmt.Errorf("%d exports of us-east", n)
		}
		before = ex
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s.Figures["exports_before"] = exportCount(before, east.Cluster) + exportCount(before, f.Regions[1].Cluster) + exportCount(before, f.Regions[2].Cluster)
	load := f.StartLoad(ctx, f.Regions[1:], 4, 5*time.Minute)
	watch := f.Watch(ctx, f.Regions[1:])
	imports := watchImports(t, ctx, f)
	start := time.Now()
	lost := 0

	t.Run("hub killed during the resend", func(t *testing.T) {
		// us-east's link to the hub is throttled, so that its 1,000 exports take a while to
		// send: the hub is killed while they are on the way.
		if err := f.Net.Throttle(ctx, east.Node, "ip daddr 10.79.0.0/24 tcp dport 8470", 64); err != nil {
			t.Fatal(err)
		}
		counts := f.watchExportCount(ctx, east.Cluster)
		spoke := f.Proc("spoke-" + east.Cluster)
		spoke.Kill()
		if err := spoke.Restart(); err != nil {
			t.Fatal(err)
		}
		if err := waitLog(ctx, spoke, fullSession, 60*time.Second); err != nil {
			t.Fatal(err)
		}
		sleepCtx(ctx, 300*time.Millisecond)
		victim := f.Hubs[0]
		f.Proc(victim.Name).Kill()
		if err := f.Proc(victim.Name).Restart(); err != nil {
			t.Fatal(err)
		}
		sleepCtx(ctx, time.Second)
		if err := f.Net.Heal(ctx, east.Node); err != nil {
			t.Fatal(err)
		}
		lost += f.checkExports(ctx, t, s, "resend", before)
		least := counts()
		s.Figures["resend_least_exports_seen"] = least
		if least < 1000 {
			// Not a must-hold of the issue (the export sets before and after and the imports
			// are): what hubctl would have shown for a moment.
			note := fmt.Sprintf("the hub listed %d of us-east's 1,000 exports for a moment during the resend (hubctl get imports would show it)", least)
			s.Notes = append(s.Notes, note)
			t.Log(note)
		}
	})
	t.Run("hub killed during its start-up", func(t *testing.T) {
		victim := f.Hubs[0]
		p := f.Proc(victim.Name)
		p.Kill()
		if err := p.Restart(); err != nil {
			t.Fatal(err)
		}
		sleepCtx(ctx, 300*time.Millisecond)
		p.Kill()
		if err := p.Restart(); err != nil {
			t.Fatal(err)
		}
		lost += f.checkExports(ctx, t, s, "startup", before)
	})
	end := time.Now()
	samples := watch()
	rs, _ := load.Stop()
	checkImports(t, s, imports())
	n, del := importsDeleted(samples, f.clusters(), start, end)
	s.Figures["spill_candidates_missing"] = n
	if n > 0 {
		t.Logf("spill candidates missing for a moment: %v", del)
	}
	s.ExportsLost(lost)
	sum := Summarize(rs, nil)
	s.Figures["requests"], s.Figures["failed"], s.Figures["besteffort_shed"] = sum.Requests, sum.Failed, sum.Shed
	if sum.Total() > 0 {
		t.Errorf("failed requests: %v, e.g. %v", sum.Failed, sum.Examples)
	}
}

// watchExportCount polls the number of exports of cluster the hub replicas serve every 200 ms
// until the returned function is called, which returns the least seen (-1 when none answered).
func (f *Fleet) watchExportCount(ctx context.Context, cluster string) func() int {
	ctx, cancel := context.WithCancel(ctx)
	least := -1
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if ex, err := f.anyExports(ctx); err == nil && ctx.Err() == nil {
				if n := exportCount(ex, cluster); least < 0 || n < least {
					least = n
				}
			}
			sleepCtx(ctx, 200*time.Millisecond)
		}
	}()
	return func() int {
		cancel()
		<-done
		return least
	}
}

// anyExports reads the export set from the first hub replica that answers.
func (f *Fleet) anyExports(ctx context.Context) (map[string][]string, error) {
	var last error
	for _, h := range f.Hubs {
		if !f.Proc(h.Name).Running() {
			continue
		}
		ex, err := f.Exports(ctx, h)
		if err == nil {
			return ex, nil
		}
		last = err
	}
	return nil, fmt.Errorf("no hub replica answered: %w", last)
}

// checkExports waits until the hub serves the export set of before again and returns how many
// exports of before are missing when it gives up (0 when restored), recording the time it took.
func (f *Fleet) checkExports(ctx context.Context, t *testing.T, s *Scenario, key string, before map[string][]string) int {
	t.Helper()
	start := time.Now()
	var missing []string
	var extra int
	err := poll(ctx, 60*time.Second, "the export set of before", func() error {
		after, err := f.anyExports(ctx)
		if err != nil {
			return err
		}
		missing = exportsMissing(before, after)
		extra = len(exportsMissing(after, before))
		if len(missing) > 0 || extra > 0 {
			return fmt.Errorf("%d exports missing (e.g. %v), %d not there before", len(missing), missing[:min(3, len(missing))], extra)
		}
		return nil
	})
	s.Figures[key+"_restored_s"] = round(time.Since(start).Seconds())
	if err != nil {
		t.Error(err)
		return len(missing)
	}
	return 0
}

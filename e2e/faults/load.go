package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/spillway-io/spillway/e2e/loadgen"
)

// Classes are the priority classes of the steady load, with their share of the arrivals: 20 %
// Critical, 50 % Standard, 30 % BestEffort (the objectives of localfleet.EPPConfig).
var Classes = []string{"Critical", "Standard", "BestEffort"}

// Load is steady load sent to each region's own gateway by a bin/loadgen in the region's
// namespace.
type Load struct {
	stop    context.CancelFunc
	done    chan struct{}
	results map[string][]loadgen.Result // by region
	errs    []error
}

// StartLoad sends rate requests per second to each of regions' gateways for d. A region's
// capacity is about 25 requests per second (2 endpoints × 4 sequences, 16 tokens of 20 ms), so
// a few per second never saturates it.
func (f *Fleet) StartLoad(ctx context.Context, regions []Region, rate float64, d time.Duration) *Load {
	ctx, stop := context.WithCancel(ctx)
	l := &Load{stop: stop, done: make(chan struct{}), results: map[string][]loadgen.Result{}}
	type out struct {
		region string
		rs     []loadgen.Result
		err    error
	}
	ch := make(chan out, len(regions))
	for _, r := range regions {
		go func() {
			rs, err := f.runLoad(ctx, r, rate, d)
			ch <- out{r.Name, rs, err}
		}()
	}
	go func() {
		defer close(l.done)
		for range regions {
			o := <-ch
			l.results[o.region] = o.rs
			if o.err != nil {
				l.errs = append(l.errs, o.err)
			}
		}
	}()
	return l
}

// Stop ends the load early (loadgen, sent SIGTERM, waits for the requests in flight and writes
// its results) and returns them as Wait does.
func (l *Load) Stop() (map[string][]loadgen.Result, error) {
	l.stop()
	return l.Wait()
}

// Wait waits for the load to end and returns every region's results.
func (l *Load) Wait() (map[string][]loadgen.Result, error) {
	<-l.done
	l.stop()
	if len(l.errs) > 0 {
		return l.results, fmt.Errorf("load: %v", l.errs)
	}
	return l.results, nil
}

func (f *Fleet) runLoad(ctx context.Context, r Region, rate float64, d time.Duration) ([]loadgen.Result, error) {
	file, err := os.CreateTemp(f.WorkDir, "load-"+r.Name+"-*.jsonl")
	if err != nil {
		return nil, err
	}
	file.Close()
	args := []string{"netns", "exec", f.Net.NS(r.Node), filepath.Join(f.BinDir, "loadgen"),
		"--target", "http://" + r.Gateway(), "--rate", fmt.Sprint(rate), "--duration", d.String(), "--max-tokens", "16",
		"--class", "Critical=critical:0.2", "--class", "Standard=standard:0.5", "--class", "BestEffort=batch:0.3",
		"--results", file.Name()}
	// Ended with SIGTERM to its PID when ctx ends (`ip netns exec` execs loadgen, so the PID is
	// loadgen's): it stops sending, waits for the requests in flight and writes its results.
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 90 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("loadgen in %s: %w\n%s", r.Name, err, out)
	}
	rf, err := os.Open(file.Name())
	if err != nil {
		return nil, err
	}
	defer rf.Close()
	var rs []loadgen.Result
	sc := bufio.NewScanner(rf)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var res loadgen.Result
		if err := json.Unmarshal(sc.Bytes(), &res); err != nil {
			return nil, fmt.Errorf("loadgen result: %w", err)
		}
		rs = append(rs, res)
	}
	return rs, sc.Err()
}

// FailureSummary is the figures of one load: requests and failures by class over every region,
// and a few failed requests as examples. A BestEffort request answered 429 was shed by design
// (the EPP sheds sheddable requests when no endpoint has headroom, and an endpoint whose
// metrics are older than the staleness bound has none: on a busy 2-core machine a scrape can be
// late): it is counted in Shed, not Failed.
type FailureSummary struct {
	Requests map[string]int `json:"requests"`
	Failed   map[string]int `json:"failed"`
	Shed     int            `json:"besteffort_shed"`
	Examples []string       `json:"examples,omitempty"`
}

// Total is the number of failed requests.
func (s FailureSummary) Total() int {
	n := 0
	for _, v := range s.Failed {
		n += v
	}
	return n
}

// Summarize adds up every region's results, leaving out the requests that started inside one
// of the excluded windows of their region (a region being killed).
func Summarize(results map[string][]loadgen.Result, exclude func(region string, start time.Time) bool) FailureSummary {
	s := FailureSummary{Requests: map[string]int{}, Failed: map[string]int{}}
	for _, c := range Classes {
		s.Requests[c], s.Failed[c] = 0, 0
	}
	regions := slices.Sorted(func(yield func(string) bool) {
		for k := range results {
			if !yield(k) {
				return
			}
		}
	})
	for _, region := range regions {
		for _, r := range results[region] {
			if exclude != nil && exclude(region, r.Start) {
				continue
			}
			s.Requests[r.Class]++
			if r.Class == "BestEffort" && r.Status == http.StatusTooManyRequests {
				s.Shed++
				continue
			}
			if !r.OK() {
				s.Failed[r.Class]++
				if len(s.Examples) < 5 {
					s.Examples = append(s.Examples, fmt.Sprintf("%s %s at %s: status %d %s", region, r.Class, r.Start.Format("15:04:05.000"), r.Status, r.Err))
				}
			}
		}
	}
	return s
}

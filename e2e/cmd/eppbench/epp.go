package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/e2e/localfleet"
)

// runningEPP is one EPP started on fresh simulators, with a client of its ext_proc service.
type runningEPP struct {
	proc   *localfleet.Proc
	client *gateway.Client
	// ready is how many endpoints the EPP had ready when it was taken as started.
	ready int
	// stop closes the client and stops the EPP, then the simulators.
	stop func()
}

// startEPP starts simulators of ips and the side's EPP on them, in workDir/name.
func (o options) startEPP(ctx context.Context, side, name string, ips []string, scrape time.Duration) (*runningEPP, error) {
	dir := filepath.Join(o.workDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sims, err := o.startSims(ctx, dir, ips)
	if err != nil {
		return nil, err
	}
	stopSims := func() {
		for _, p := range sims {
			_ = p.Stop(10 * time.Second)
		}
	}
	e := &runningEPP{ready: len(ips)}
	var addr string
	if side == "gie" {
		e.proc, addr, e.ready, err = o.startGIE(ctx, dir, len(ips), scrape)
	} else {
		e.proc, addr, err = o.startSpillway(ctx, dir, ips, scrape)
	}
	if err != nil {
		stopSims()
		return nil, err
	}
	conn, err := gateway.DialEPP(addr, gateway.EPPTLS{Insecure: true}) // both EPPs serve plaintext
	if err != nil {
		_ = e.proc.Stop(10 * time.Second)
		stopSims()
		return nil, err
	}
	e.client = &gateway.Client{EPP: extprocv3.NewExternalProcessorClient(conn)}
	e.stop = func() {
		conn.Close()
		_ = e.proc.Stop(10 * time.Second)
		stopSims()
	}
	return e, nil
}

// startSims starts the simulators of ips, 250 endpoints per process, and waits until every
// endpoint answers.
func (o options) startSims(ctx context.Context, dir string, ips []string) ([]*localfleet.Proc, error) {
	var procs []*localfleet.Proc
	kill := func() {
		for _, p := range procs {
			p.Kill()
		}
	}
	for i := 0; i < len(ips); i += 250 {
		var eps []string
		for _, ip := range ips[i:min(i+250, len(ips))] {
			eps = append(eps, ip+":8000")
		}
		p, err := localfleet.StartProc(dir, fmt.Sprintf("modelsim-%d", i/250), filepath.Join(o.binDir, "modelsim"),
			"--endpoints", strings.Join(eps, ","), "--max-num-seqs", "8", "--decode-latency", "10ms")
		if err != nil {
			kill()
			return nil, err
		}
		procs = append(procs, p)
	}
	waiting := ips
	var last error
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		for ; len(waiting) > 0; waiting = waiting[1:] {
			c, err := net.DialTimeout("tcp", waiting[0]+":8000", time.Second)
			if err != nil {
				last = fmt.Errorf("simulator %s not listening: %w", waiting[0], err)
				return false, nil
			}
			c.Close()
		}
		return true, nil
	})
	if err != nil {
		kill()
		return nil, errors.Join(err, last)
	}
	return procs, nil
}

// gieConfig is the scheduler configuration of GIE v1.5.0's Helm chart for a vLLM pool.
const gieConfig = `apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: metrics-data-source
  parameters:
    scheme: "http"
    path: "/metrics"
    insecureSkipVerify: true
- type: core-metrics-extractor
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: prefix-cache-scorer
    weight: 3
`

// startGIE starts GIE's EPP and waits until it has every Pod ready, or, when the machine cannot
// keep that many endpoints fresh for it, until it has routed for two minutes with as many as it
// can; it returns how many it had.
func (o options) startGIE(ctx context.Context, dir string, n int, scrape time.Duration) (*localfleet.Proc, string, int, error) {
	cfg := filepath.Join(dir, "gie-config.yaml")
	if err := os.WriteFile(cfg, []byte(gieConfig), 0o644); err != nil {
		return nil, "", 0, err
	}
	kubeconfig := filepath.Join(o.workDir, "cluster", "kubeconfig")
	// Plaintext ext_proc, as Spillway's EPP below: both sides compared without TLS (see main.go).
	p, err := localfleet.StartProcEnv(dir, "gie-epp", filepath.Join(o.gieDir, "bin", "epp"), []string{"KUBECONFIG=" + kubeconfig},
		"--pool-name", "chat", "--pool-namespace", namespace, "--config-file", cfg,
		"--tracing=false", "--metrics-endpoint-auth=false", "--secure-serving=false",
		"--refresh-metrics-interval", scrape.String(), "--enable-pprof=false")
	if err != nil {
		return nil, "", 0, err
	}
	ready := 0
	var routing time.Time
	err = waitFor(ctx, p, 4*time.Minute, func() error {
		v, err := metricValue(ctx, gieMetrics, "inference_pool_ready_pods", nil)
		if err != nil {
			return err
		}
		ready = int(v)
		if err := routes(ctx, gieExtProc); err != nil {
			return err
		}
		if routing.IsZero() {
			routing = time.Now()
		}
		if ready != n && time.Since(routing) < 2*time.Minute {
			return fmt.Errorf("GIE sees %d ready pods of %d", ready, n)
		}
		return nil
	})
	if err != nil {
		_ = p.Stop(5 * time.Second)
		return nil, "", 0, err
	}
	if ready != n {
		fmt.Fprintf(os.Stderr, "   gie      has %d of %d endpoints ready; measuring with those\n", ready, n)
	}
	return p, gieExtProc, ready, nil
}

// startSpillway starts a standalone spoke serving a static pool of ips and waits until it has
// every endpoint's metrics fresh and routes.
func (o options) startSpillway(ctx context.Context, dir string, ips []string, scrape time.Duration) (*localfleet.Proc, string, error) {
	p, err := o.startSpoke(ctx, dir, spokeAddrs{name: "spoke", extProc: spillwayExtProc, http: spillwayHTTP}, ips, scrape, o.spillwayArgs...)
	return p, spillwayExtProc, err
}

// spokeAddrs are one spoke process's name (its log file) and addresses.
type spokeAddrs struct {
	name, extProc, http string
}

// startSpoke starts a spoke without a hub serving a static pool of ips, with extra arguments,
// and waits until it has every endpoint's metrics fresh and routes.
func (o options) startSpoke(ctx context.Context, dir string, a spokeAddrs, ips []string, scrape time.Duration, extra ...string) (*localfleet.Proc, error) {
	var b strings.Builder
	b.WriteString("pools:\n- namespace: bench\n  name: chat\n  targetPorts: [8000]\n  endpoints:\n")
	for _, ip := range ips {
		fmt.Fprintf(&b, "  - %s\n", ip)
	}
	pools := filepath.Join(dir, "pools.yaml")
	if err := os.WriteFile(pools, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	staleness := max(4*scrape, 200*time.Millisecond)
	// Plaintext ext_proc and HTTP, as GIE's EPP above (--secure-serving=false): both sides compared
	// without TLS (see main.go). No hub (--hub-address ""): the spoke serves its static pool alone,
	// and several spokes of the one cluster ID never contend for a hub session.
	args := append([]string{"--cluster-id", "bench", "--region", "bench", "--hub-address", "", "--pools-file", pools, "--pools-reload", "0",
		"--http-address", a.http, "--insecure-http", "--epp-address", a.extProc, "--epp-secure-serving=false",
		"--scrape-interval", scrape.String(), "--metrics-staleness", staleness.String(), "--log-level", "warn"}, extra...)
	p, err := localfleet.StartProcEnv(dir, a.name, filepath.Join(o.binDir, "spoke"), o.spillwayEnv, args...)
	if err != nil {
		return nil, err
	}
	err = waitFor(ctx, p, 60*time.Second, func() error {
		v, err := metricValue(ctx, "http://"+a.http+"/metrics", "spillway_spoke_endpoints", map[string]string{"freshness": "fresh"})
		if err != nil {
			return err
		}
		if int(v) != len(ips) {
			return fmt.Errorf("spoke has %v fresh endpoints of %d", v, len(ips))
		}
		return routes(ctx, a.extProc)
	})
	if err != nil {
		_ = p.Stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}

// waitFor asks ready every 200 ms until it answers nil, and fails when p exits, ctx ends or
// within passes first.
func waitFor(ctx context.Context, p *localfleet.Proc, within time.Duration, ready func() error) error {
	var last error
	exited := false
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, within, true, func(context.Context) (bool, error) {
		select {
		case <-p.Done():
			exited = true
			return false, fmt.Errorf("%s exited (%v); see %s", p.Name, p.Err(), p.LogPath)
		default:
		}
		last = ready()
		return last == nil, nil
	})
	if err != nil && !exited && ctx.Err() == nil {
		if last == nil {
			last = err
		}
		return fmt.Errorf("%s not ready within %s: %w (see %s)", p.Name, within, last, p.LogPath)
	}
	return err
}

// routes checks that the EPP routes a request.
func routes(ctx context.Context, addr string) error {
	conn, err := gateway.DialEPP(addr, gateway.EPPTLS{Insecure: true})
	if err != nil {
		return err
	}
	defer conn.Close()
	c := &gateway.Client{EPP: extprocv3.NewExternalProcessorClient(conn)}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	call, d, err := c.Request(rctx, headers(), body(0), nil)
	if err != nil {
		return err
	}
	call.Close()
	if d.Immediate != nil {
		return fmt.Errorf("EPP answered %d: %s", d.Immediate.Status, d.Immediate.Body)
	}
	return nil
}

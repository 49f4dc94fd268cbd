package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spillway-io/spillway/e2e/apiserver"
)

type options struct {
	binDir, k8sBinDir, gieDir, workDir string
	counts                             []int
	rounds                             int
	spillwayEnv                        []string
	spillwayArgs                       []string
	requests, concurrency              int
	idle                               time.Duration
	qualityRate                        float64
	qualityDuration                    time.Duration
	qualityEndpoints                   int
	// replicas is how many spoke replicas the replicas command runs behind its round-robin gateway.
	replicas int
}

const (
	gieExtProc      = "127.0.0.1:9002"
	gieMetrics      = "http://127.0.0.1:9090/metrics"
	spillwayExtProc = "127.0.0.1:9012"
	spillwayHTTP    = "127.0.0.1:9091"
	// noopAddress is where the do-nothing ext_proc server of the baseline listens.
	noopAddress = "127.0.0.1:9102"
	namespace   = "bench"
)

// sides are the two EPPs, in the order they take turns.
var sides = []string{"gie", "spillway"}

func scrapeInterval(n int) time.Duration {
	if n > 200 {
		return time.Second
	}
	return 50 * time.Millisecond
}

func endpointIPs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.1.%d.%d", i/250, i%250+1)
	}
	return out
}

// run measures the do-nothing baseline, both EPPs at every endpoint count, and their routing
// quality.
func run(ctx context.Context, o options) (*report, error) {
	if o.workDir == "" {
		d, err := os.MkdirTemp("", "spillway-eppbench-")
		if err != nil {
			return nil, err
		}
		o.workDir = d
	}
	if err := os.MkdirAll(filepath.Join(o.workDir, "logs"), 0o755); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "work directory %s\n", o.workDir)
	cl, k, err := o.startCluster(ctx)
	if err != nil {
		return nil, err
	}
	defer cl.Stop()
	rep := &report{Date: time.Now().UTC().Format(time.RFC3339), Command: "make bench-epp", Machine: machine(), Rounds: o.rounds, SpillwayEnv: o.spillwayEnv}
	if rep.BaselineP50, rep.BaselineCtx, err = noopBaseline(ctx, o); err != nil {
		return nil, err
	}
	for _, n := range o.counts {
		r, err := o.compare(ctx, k, n)
		if err != nil {
			return nil, err
		}
		rep.Rows = append(rep.Rows, r)
	}
	if o.qualityDuration > 0 {
		if rep.Quality, err = o.compareQuality(ctx, k); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// startCluster starts the API server GIE's EPP reads its pool from, with GIE's CRDs and the
// benchmark's namespace.
func (o options) startCluster(ctx context.Context) (*apiserver.Cluster, *kubeClients, error) {
	bins := apiserver.Bins{APIServer: filepath.Join(o.k8sBinDir, "kube-apiserver"), Etcd: filepath.Join(o.k8sBinDir, "etcd")}
	cl, err := apiserver.Start(ctx, bins, filepath.Join(o.workDir, "cluster"), "bench", "127.0.0.1")
	if err != nil {
		return nil, nil, err
	}
	k, err := newKube(cl)
	if err == nil {
		_, err = cl.Kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(o.gieDir, "crds"))
	}
	if err == nil {
		_, err = cl.Kubectl(ctx, "create", "namespace", namespace)
	}
	if err != nil {
		cl.Stop()
		return nil, nil, err
	}
	return cl, k, nil
}

// compare measures both EPPs at n endpoints, in rounds in which they take turns.
func (o options) compare(ctx context.Context, k *kubeClients, n int) (row, error) {
	fmt.Fprintf(os.Stderr, "== %d endpoints\n", n)
	ips := endpointIPs(n)
	if err := k.setPods(ctx, ips); err != nil {
		return row{}, err
	}
	rounds := map[string][]measurement{}
	for i := range o.rounds {
		fmt.Fprintf(os.Stderr, "   round %d\n", i+1)
		for _, side := range sides {
			m, err := o.measure(ctx, side, ips)
			if err != nil {
				return row{}, fmt.Errorf("%s at %d endpoints: %w", side, n, err)
			}
			rounds[side] = append(rounds[side], m)
		}
	}
	return newRow(n, rounds["gie"], rounds["spillway"]), nil
}

// compareQuality runs the routing-quality workload through each EPP.
func (o options) compareQuality(ctx context.Context, k *kubeClients) (quality, error) {
	n := o.qualityEndpoints
	fmt.Fprintf(os.Stderr, "== routing quality at %d endpoints\n", n)
	ips := endpointIPs(n)
	if err := k.setPods(ctx, ips); err != nil {
		return quality{}, err
	}
	out := quality{Endpoints: n, Rate: o.qualityRate}
	for _, side := range sides {
		q, err := o.measureQuality(ctx, side, ips)
		if err != nil {
			return quality{}, fmt.Errorf("%s routing quality: %w", side, err)
		}
		if side == "gie" {
			out.GIE = q
		} else {
			out.Spillway = q
		}
	}
	return out, nil
}

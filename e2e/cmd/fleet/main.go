// Command fleet runs a whole local Spillway fleet, the one `make demo` starts: a hub with
// embedded etcd, three regional spokes and their simulated model servers; with --kubernetes
// (`make demo-k8s`) each region also gets a real kube-apiserver that the spoke watches. It prints the fleet as
// hubctl shows it once everything is up, and runs until Ctrl-C or --duration.
//
// The fleet runs with TLS everywhere, from a CA it makes in the work directory (see
// e2e/localfleet); it prints the hubctl commands with the admin's --credentials-dir.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spillway-io/spillway/e2e/apiserver"
	"github.com/spillway-io/spillway/e2e/loadgen"
	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/pkg/cli"
)

func main() { cli.Main(newCommand()) }

func newCommand() *cobra.Command {
	var binDir, workDir, repoRoot string
	var duration time.Duration
	var withKube bool
	cmd := &cobra.Command{
		Use:          "fleet",
		Short:        "Run a local Spillway fleet: hub, three regional spokes, simulated model servers",
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), binDir, workDir, repoRoot, duration, withKube)
		},
	}
	cmd.Flags().StringVar(&binDir, "bin-dir", "bin", "directory of the hub, spoke, hubctl and modelsim binaries")
	cmd.Flags().StringVar(&workDir, "work-dir", "", "directory for logs, pool files and the hub's data (default: a new temporary directory)")
	cmd.Flags().DurationVar(&duration, "duration", 0, "stop after this long (0: run until interrupted)")
	cmd.Flags().BoolVar(&withKube, "kubernetes", false, "give each region a real kube-apiserver: pools, Pods and objectives come from it and the spokes write InferencePoolImports into it")
	cmd.Flags().StringVar(&repoRoot, "repo-root", ".", "the repository (for deploy/crds and hack/k8s-bins.sh) with --kubernetes")
	return cmd
}

func run(ctx context.Context, binDir, workDir, repoRoot string, duration time.Duration, withKube bool) error {
	if workDir == "" {
		d, err := os.MkdirTemp("", "spillway-demo-")
		if err != nil {
			return err
		}
		workDir = d
	}
	binDir, _ = filepath.Abs(binDir)
	o := localfleet.DefaultOptions(binDir, workDir)
	fmt.Printf("starting a local fleet in %s (logs in %s)\n", workDir, filepath.Join(workDir, "logs"))
	var clusters map[string]*apiserver.Cluster
	if withKube {
		var err error
		clusters, err = startClusters(ctx, repoRoot, workDir, o)
		defer func() { // after the spokes: registered before the fleet's deferred stop
			for _, c := range clusters {
				c.Stop()
			}
		}()
		if err != nil {
			return err
		}
		o.Kubeconfigs = map[string]string{}
		for id, c := range clusters {
			o.Kubeconfigs[id] = c.Kubeconfig
		}
	}
	f, err := localfleet.Start(ctx, o)
	if err != nil {
		return err
	}
	defer func() {
		for _, err := range f.Stop() {
			fmt.Fprintln(os.Stderr, err)
		}
		fmt.Println("fleet stopped")
	}()
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = f.WaitReady(rctx)
	cancel()
	if err != nil {
		return err
	}
	fmt.Println("fleet is up")
	fmt.Printf("hubctl reaches the hub's admin port %s with the admin's client certificate: --credentials-dir %s (or SPILLWAY_CREDENTIALS)\n",
		o.HubAdmin, f.HubctlCredentials())
	hubctlArgs := strings.Join(f.HubctlArgs(), " ")
	hubctl := func(what string) error {
		fmt.Printf("\n$ hubctl %s get %s\n", hubctlArgs, what)
		c := exec.CommandContext(ctx, filepath.Join(binDir, "hubctl"), append(f.HubctlArgs(), "get", what)...)
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		if err := c.Run(); err != nil {
			return fmt.Errorf("hubctl get %s: %w", what, err)
		}
		return nil
	}
	for _, what := range []string{"clusters", "pools", "imports"} {
		if err := hubctl(what); err != nil {
			return err
		}
	}
	if clusters != nil {
		if err := showKube(ctx, clusters, o); err != nil {
			return err
		}
	}

	// Real load through each region's gateway → EPP → simulators, for as long as the fleet runs.
	var loads []*localfleet.Proc
	defer func() {
		for i, p := range loads {
			_ = p.Stop(30 * time.Second)
			out, _ := os.ReadFile(p.LogPath)
			fmt.Printf("\nload through the %s gateway:\n%s", o.Regions[i].Name, summaryOf(out))
		}
	}()
	for _, r := range o.Regions {
		p, err := localfleet.StartProc(filepath.Join(workDir, "logs"), "loadgen-"+r.Cluster, filepath.Join(binDir, "loadgen"),
			"--target", "http://"+r.Gateway, "--rate", "6", "--duration", "24h", "--max-tokens", "48",
			"--class", "Critical=critical:0.2", "--class", "Standard=standard:0.5", "--class", "BestEffort=batch:0.3")
		if err != nil {
			return err
		}
		loads = append(loads, p)
	}
	fmt.Printf("\nsending 6 requests/s through each region's gateway (%s); in a few seconds:\n", o.Regions[0].Gateway)
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(5 * time.Second):
	}
	if err := hubctl("pools"); err != nil {
		return err
	}
	if duration > 0 {
		fmt.Printf("\nrunning for %s; Ctrl-C stops earlier\n", duration)
		var dcancel context.CancelFunc
		ctx, dcancel = context.WithTimeout(ctx, duration)
		defer dcancel()
	} else {
		fmt.Printf("\nrunning until Ctrl-C; try: bin/hubctl %s get pools\n", hubctlArgs)
	}
	<-ctx.Done()
	return nil
}

// summaryOf renders the JSON summary a loadgen prints when it stops as a table.
func summaryOf(log []byte) string {
	s := string(log)
	i := strings.Index(s, "[")
	var sums []loadgen.ClassSummary
	if i < 0 || json.Unmarshal([]byte(s[i:]), &sums) != nil {
		return "(no summary: " + strings.TrimSpace(s) + ")\n"
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  CLASS\tREQUESTS\tSUCCEEDED\tSTATUSES\tSTREAMED: TTFT P50\tTTFT P99\tNOT STREAMED: RESPONSE P50\tRESPONSE P99")
	for _, c := range sums {
		var st []string
		for k, v := range c.Statuses {
			st = append(st, fmt.Sprintf("%s×%d", k, v))
		}
		slices.Sort(st)
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\t%.0f ms\t%.0f ms\t%.0f ms\t%.0f ms\n", c.Class, c.Requests, c.Succeeded, strings.Join(st, " "),
			c.TTFTp50, c.TTFTp99, c.Responsep50, c.Responsep99)
	}
	tw.Flush()
	return b.String()
}

// startClusters starts one real API server per region and seeds it with the region's identity,
// the exported pool default/chat, a ready Pod per simulator address and the demo objectives.
func startClusters(ctx context.Context, repoRoot, workDir string, o localfleet.Options) (map[string]*apiserver.Cluster, error) {
	bins, err := apiserver.FindBins(repoRoot)
	if err != nil {
		return nil, err
	}
	fmt.Println("starting a kube-apiserver per region")
	var names []string
	for _, r := range o.Regions {
		names = append(names, r.Cluster)
	}
	clusters, err := apiserver.StartWithCRDs(ctx, bins, filepath.Join(workDir, "kube"), repoRoot, names...)
	if err != nil {
		return clusters, err
	}
	for _, r := range o.Regions {
		seed := apiserver.Seed{ClusterID: r.Cluster, ClusterSet: "demo", Namespace: "default", Pool: "chat", TargetPort: 8000,
			Objectives: map[string]int{"critical": 100, "standard": 0, "batch": -1}}
		for _, e := range r.Endpoints {
			host, _, _ := net.SplitHostPort(e)
			seed.EndpointIPs = append(seed.EndpointIPs, host)
		}
		if err := clusters[r.Cluster].SeedCluster(ctx, seed); err != nil {
			return clusters, fmt.Errorf("%s: %w", r.Cluster, err)
		}
	}
	return clusters, nil
}

// showKube waits until every cluster imports the pool from every region, then shows one
// cluster's InferencePoolImport and one exported pool's Exported condition.
func showKube(ctx context.Context, clusters map[string]*apiserver.Cluster, o localfleet.Options) error {
	const importJSONPath = `{.status.controllers[?(@.name=="spillway.io/spoke")].exportingClusters[*].name}`
	const exportedJSONPath = `{.status.parents[?(@.controllerName=="spillway.io/spoke")].conditions[?(@.type=="Exported")].status}`
	deadline := time.Now().Add(60 * time.Second)
	for _, r := range o.Regions {
		c := clusters[r.Cluster]
		for {
			imp, _ := c.Kubectl(ctx, "get", "inferencepoolimport", "chat", "-n", "default", "-o", "jsonpath="+importJSONPath)
			exp, _ := c.Kubectl(ctx, "get", "inferencepool", "chat", "-n", "default", "-o", "jsonpath="+exportedJSONPath)
			if len(strings.Fields(string(imp))) == len(o.Regions) && string(exp) == "True" {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: import lists %q, Exported=%q after 60s", r.Cluster, imp, exp)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	last := o.Regions[len(o.Regions)-1].Cluster
	out, err := clusters[last].Kubectl(ctx, "get", "inferencepoolimports", "-A", "-o",
		`custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,CONTROLLER:.status.controllers[0].name,EXPORTING CLUSTERS:.status.controllers[0].exportingClusters[*].name`)
	if err != nil {
		return err
	}
	fmt.Printf("\n$ kubectl --kubeconfig %s get inferencepoolimports -A\n%s", clusters[last].Kubeconfig, out)
	first := o.Regions[0].Cluster
	out, err = clusters[first].Kubectl(ctx, "get", "inferencepool", "chat", "-n", "default", "-o",
		`jsonpath={range .status.parents[*]}{.controllerName}{"  "}{.parentRef.kind}/{.parentRef.name}{"  "}{range .conditions[*]}{.type}={.status} ({.reason}: {.message}){end}{"\n"}{end}`)
	if err != nil {
		return err
	}
	fmt.Printf("\n$ kubectl --kubeconfig %s get inferencepool chat -n default  # status.parents\n%s", clusters[first].Kubeconfig, out)
	return nil
}

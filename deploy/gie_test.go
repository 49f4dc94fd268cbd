package deploy

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/e2e/modelsim"
	"github.com/spillway-io/spillway/e2e/testkit"
)

// gieChart copies GIE v1.5.0's inferencepool chart from its module (hack/crds.sh downloads it)
// with its epplib dependency in charts/, as `helm dependency build` would, and returns its
// directory.
func gieChart(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "inferencepool")
	charts := filepath.Join(testkit.ModuleDir(t, testkit.GIEModule), "config", "charts")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(charts, "inferencepool"))); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(dir, "charts", "epplib"), os.DirFS(filepath.Join(charts, "epplib"))); err != nil {
		t.Fatal(err)
	}
	return dir
}

// gieObjects renders GIE's chart in dir with values, as `helm template spillway dir -n
// spillway-system` would, into objects (empty documents left out).
func gieObjects(t *testing.T, dir string, values map[string]any) []object {
	t.Helper()
	files, err := render(t, dir, values)
	if err != nil {
		t.Fatalf("render GIE's chart: %v", err)
	}
	var docs []string
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(files[name], -1) {
			var m map[string]any
			if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(m) > 0 {
				docs = append(docs, strings.Trim(doc, "\n"))
			}
		}
	}
	return objects(t, []byte(strings.Join(docs, "\n---\n")))
}

// gieValues are the values an operator gives GIE's chart to run the spoke's image in place of
// GIE's EPP: the image, the pool's servers and Spillway's own settings in inferenceExtension.flags
// (the chart writes each as --name "value").
func gieValues(serverType string, port int, kubeconfig string) map[string]any {
	return map[string]any{
		"inferenceExtension": map[string]any{
			"image": map[string]any{"registry": "ghcr.io", "repository": "spillway-io/spoke", "tag": "test"},
			// The cluster's ID is its ClusterProperty's (examples/cluster-properties.yaml).
			"flags": map[string]any{"v": 1, "region": "us-east", "hub-address": "", "kubeconfig": kubeconfig},
		},
		"inferencePool": map[string]any{
			"modelServers":    map[string]any{"matchLabels": map[string]any{"app": "gie-chat"}},
			"targetPorts":     []any{map[string]any{"number": port}},
			"modelServerType": serverType,
		},
	}
}

// testGIEChart: GIE v1.5.0's own inferencepool chart, with the EPP's image swapped for the
// spoke's and Spillway's settings in its inferenceExtension.flags, runs the spoke. The arguments
// the chart gives GIE's EPP are taken (its pool flags, --config-file with the chart's own
// EndpointPickerConfig, --zap-encoder, --v, --tracing, --metrics-endpoint-auth, and the metric
// flags of each model-server type); the spoke answers the chart's gRPC probe (service
// inference-extension on the health port) once it has synced, and routes a request for the
// chart's InferencePool to its endpoint over ext_proc, with TLS as GIE's EPP serves it.
func testGIEChart(t *testing.T, ctx context.Context, r *spokeRun) {
	chart := gieChart(t)
	// The pool's model server: a simulator on a port of its own, and its Pod as a kubelet shows it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := modelsim.DefaultConfig()
	cfg.Model = "chat"
	engine, err := modelsim.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: modelsim.NewServer(engine, l.Addr().String()), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	port := l.Addr().(*net.TCPAddr).Port
	if err := r.c.ReadyPod(ctx, namespace, "gie-chat-0", "gie-chat", "127.0.0.1", port); err != nil {
		t.Fatal(err)
	}

	// The chart's InferencePool (which names the chart's EPP Service) and ServiceAccount, bound
	// to the spoke's ClusterRole and leader-election Role as docs/install.md says; the spoke runs
	// with that ServiceAccount's token.
	objs := gieObjects(t, chart, gieValues("vllm", port, ""))
	for _, o := range []object{find(t, objs, "InferencePool", "spillway"), find(t, objs, "ServiceAccount", "spillway-epp")} {
		if _, err := apply(ctx, r.c, o.yaml); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"create", "clusterrolebinding", "spillway-epp-spoke", "--clusterrole=spillway-spoke", "--serviceaccount=" + namespace + ":spillway-epp"},
		{"-n", namespace, "create", "rolebinding", "spillway-epp-leader-election", "--role=spillway-spoke-leader-election", "--serviceaccount=" + namespace + ":spillway-epp"},
	} {
		if _, err := r.c.Kubectl(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := serviceAccountKubeconfig(t, ctx, r.c, "spillway-epp")

	for _, serverType := range []string{"vllm", "sglang", "triton-tensorrt-llm", "trtllm-serve"} {
		t.Run(serverType, func(t *testing.T) {
			objs := gieObjects(t, chart, gieValues(serverType, port, kubeconfig))
			d := decode[appsv1.Deployment](t, find(t, objs, "Deployment", "spillway-epp"))
			if img := d.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/spillway-io/spoke:test" {
				t.Fatalf("the chart runs %s", img)
			}
			c := emulate(t, d, podEnv{namespace: namespace, configMaps: objs})
			probe := d.Spec.Template.Spec.Containers[0].ReadinessProbe
			if probe == nil || probe.GRPC == nil || probe.GRPC.Service == nil {
				t.Fatalf("the chart's readiness probe: %+v", probe)
			}
			// What differs outside a Pod, appended: ports the system picks (the spoke logs them).
			args := append(c.args, "--epp-address=127.0.0.1:0", "--http-address=127.0.0.1:0", "--health-address=127.0.0.1:0")
			p := startProcess(t, filepath.Join(r.bins, "spoke"), args, c.env)
			rec := p.logged("spoke started", 60*time.Second) // a JSON line: --zap-encoder json
			healthAddr, _ := rec["health"].(string)
			eppAddr, _ := rec["epp"].(string)
			if rec["eppPool"] != namespace+"/spillway" || healthAddr == "" || rec["eppTLS"] != true {
				t.Fatalf("spoke started: %v", rec)
			}
			conn, err := grpc.NewClient(healthAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			testkit.Eventually(t, 30*time.Second, "the chart's probe answered SERVING", func() error {
				p.running()
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				resp, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{Service: *probe.GRPC.Service})
				if err != nil {
					return err
				}
				if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					return fmt.Errorf("%s: %v", *probe.GRPC.Service, resp.GetStatus())
				}
				return nil
			})
			if serverType == "vllm" {
				routesToThePool(t, ctx, eppAddr, "127.0.0.1:"+strconv.Itoa(port))
			}
			notRefused(t, p)
		})
	}
}

// routesToThePool: a request through the EPP at addr, dialled as a gateway dials GIE's EPP (TLS,
// its self-signed certificate not verified), is sent to want.
func routesToThePool(t *testing.T, ctx context.Context, addr, want string) {
	t.Helper()
	conn, err := gateway.DialEPP(addr, gateway.EPPTLS{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &gateway.Client{EPP: extprocv3.NewExternalProcessorClient(conn)}
	testkit.Eventually(t, 30*time.Second, "a request routed to the pool's endpoint", func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		call, d, err := c.Request(rctx, []gateway.Header{{Key: ":method", Value: "POST"}, {Key: ":path", Value: "/v1/completions"},
			{Key: ":authority", Value: "gw"}, {Key: "content-type", Value: "application/json"}}, []byte(`{"model":"chat","prompt":"hello"}`), nil)
		if err != nil {
			return err
		}
		defer call.Close()
		if d.Immediate != nil || !slices.Equal(d.Destinations, []string{want}) {
			return fmt.Errorf("answered %+v, destinations %v, want %s", d.Immediate, d.Destinations, want)
		}
		return nil
	})
}

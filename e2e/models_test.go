package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/apiserver"
	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/e2e/testkit"
)

// The models of TestModelAwareFleet.
const (
	modelLlama = "meta-llama/Llama-3.1-8B-Instruct"
	modelQwen  = "Qwen/Qwen3-8B"
	modelPhi   = "microsoft/phi-4"
	// modelQwenOld is what another region's pool of the same name still serves.
	modelQwenOld = "Qwen/Qwen2.5-Coder-7B"
)

// sendModel sends a Critical completion for model through a gateway.
func sendModel(ctx context.Context, gateway, model string) (served, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return post(ctx, gateway, "critical", fmt.Sprintf(`{"model":%q,"prompt":"p","max_tokens":1}`, model))
}

// TestModelAwareFleet runs one spoke (a real process, on a real kube-apiserver) serving three
// InferencePools of three models through --epp-service, one listener per pool, and one gateway
// whose route goes to the first pool's EPP. Two other regions (static pools) export a pool of the
// same name as the second: eu-west serves its model, ap-south an older one.
//
//   - Through the one gateway, each model's requests reach the endpoints of its own pool.
//   - hubctl get models lists each model with the clusters serving it.
//   - When the second pool loses its endpoints, its model's requests go to eu-west, never to
//     ap-south (which sorts first among equals and serves another model); with eu-west gone too
//     they get 503, still never ap-south.
//   - Deleting a pool stops its listener, creating it again starts it: no restart.
func TestModelAwareFleet(t *testing.T) {
	bin := bins(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const home = "us-east-1"
	apis := startAPIServers(t, ctx, home)
	api := apis[home]
	pools := []apiserver.SeedPool{
		{Name: "chat", TargetPort: 8000, EPPPort: 19002, EndpointIPs: []string{"127.0.71.1"}},
		{Name: "code", TargetPort: 8000, EPPPort: 19003, EndpointIPs: []string{"127.0.71.2"}},
		{Name: "vision", TargetPort: 8000, EPPPort: 19004, EndpointIPs: []string{"127.0.71.3"}},
	}
	if err := api.SeedCluster(ctx, apiserver.Seed{ClusterID: home, ClusterSet: "models", Namespace: "default", Pools: pools,
		Objectives: map[string]int{"critical": 100}}); err != nil {
		t.Fatal(err)
	}
	const hub = "127.0.70.1"
	regions := []localfleet.Region{
		{Name: "us-east", Cluster: home, EPPService: "spillway-spoke-epp", EPP: "127.0.71.254:19002", Gateway: "127.0.71.254:18080",
			SpokeHTTP: hub + ":18781", Gossip: "127.0.71.254:17946"},
		{Name: "eu-west", Cluster: "eu-west-1", PoolName: "code", Endpoints: []string{"127.0.72.1:8000"}, SimArgs: []string{"--model", modelQwen},
			EPP: "127.0.72.254:19002", Gateway: "127.0.72.254:18080", SpokeHTTP: hub + ":18782", Gossip: "127.0.72.254:17946"},
		{Name: "ap-south", Cluster: "ap-south-1", PoolName: "code", Endpoints: []string{"127.0.73.1:8000"}, SimArgs: []string{"--model", modelQwenOld},
			EPP: "127.0.73.254:19002", Gateway: "127.0.73.254:18080", SpokeHTTP: hub + ":18783", Gossip: "127.0.73.254:17946"},
	}
	f, err := localfleet.Start(ctx, localfleet.Options{BinDir: bin, WorkDir: t.TempDir(), HubGRPC: hub + ":18770", HubHTTP: hub + ":18771",
		HubGossip: hub + ":18772", HubAdmin: hub + ":18773", LeaseTTL: 3 * time.Second,
		EPPConfig:   localfleet.EPPConfig + "spill: {minDwell: 2s, freshness: 3s}\n",
		Kubeconfigs: map[string]string{home: api.Kubeconfig}, Regions: regions})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Stop() })
	// The home cluster's model servers, one per pool and model.
	for i, m := range []string{modelLlama, modelQwen, modelPhi} {
		p, err := f.StartIn("", "modelsim-"+pools[i].Name, filepath.Join(bin, "modelsim"), "--endpoints", pools[i].EndpointIPs[0]+":8000", "--model", m)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Stop(5 * time.Second) })
	}
	gw := regions[0].Gateway
	endpoint := func(i int) string { return pools[i].EndpointIPs[0] + ":8000" }

	// One gateway route, three models: each to its own pool's endpoint.
	for i, m := range []string{modelLlama, modelQwen, modelPhi} {
		testkit.Eventually(t, 60*time.Second, m+" routed to its pool", func() error {
			got, err := sendModel(ctx, gw, m)
			return want(got, err, 200, endpoint(i))
		})
	}
	// The fleet knows which clusters serve which model.
	testkit.Eventually(t, 20*time.Second, "hubctl get models", func() error {
		out, err := exec.CommandContext(ctx, filepath.Join(bin, "hubctl"), append(f.HubctlArgs(), "get", "models", "-o", "json")...).Output()
		if err != nil {
			return fmt.Errorf("hubctl get models: %w", err)
		}
		var got struct {
			Models []struct {
				Model    string `json:"model"`
				ServedBy []struct {
					Cluster string `json:"cluster"`
					Pool    string `json:"pool"`
				} `json:"servedBy"`
			} `json:"models"`
		}
		if err := json.Unmarshal(out, &got); err != nil {
			return err
		}
		hosts := map[string][]string{}
		for _, m := range got.Models {
			for _, h := range m.ServedBy {
				hosts[m.Model] = append(hosts[m.Model], h.Cluster+" "+h.Pool)
			}
		}
		wantHosts := map[string][]string{
			modelLlama: {home + " default/chat"}, modelPhi: {home + " default/vision"},
			modelQwen: {"eu-west-1 default/code", home + " default/code"}, modelQwenOld: {"ap-south-1 default/code"},
		}
		for m, w := range wantHosts {
			if !slices.Equal(hosts[m], w) {
				return fmt.Errorf("model %s served by %v, want %v (all: %s)", m, hosts[m], w, out)
			}
		}
		return nil
	})

	// The code pool loses its endpoint: its model fails over to eu-west, the one cluster that
	// serves it; ap-south, whose pool of that name serves another model, gets none.
	if _, err := api.Kubectl(ctx, "delete", "pod", "code-0", "-n", "default", "--wait=false"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "qwen fails over to eu-west", func() error {
		got, err := sendModel(ctx, gw, modelQwen)
		return want(got, err, 200, regions[1].Gateway)
	})
	for range 20 {
		got, err := sendModel(ctx, gw, modelQwen)
		if err := want(got, err, 200, regions[1].Gateway); err != nil {
			t.Fatalf("qwen with its pool down: %v", err)
		}
	}
	// eu-west goes: no cluster serves the model, and nothing goes to ap-south under another.
	_ = f.Gateways[regions[1].Cluster].Stop(5 * time.Second)
	_ = f.Spokes[regions[1].Cluster].Stop(5 * time.Second)
	testkit.Eventually(t, 20*time.Second, "qwen refused once eu-west is gone", func() error {
		got, err := sendModel(ctx, gw, modelQwen)
		return want(got, err, 503)
	})
	for range 10 {
		got, err := sendModel(ctx, gw, modelQwen)
		if err := want(got, err, 503); err != nil {
			t.Fatalf("qwen with no cluster serving it: %v", err)
		}
	}
	// The other models still go to their own pools.
	for i, m := range []string{modelLlama, modelPhi} {
		got, err := sendModel(ctx, gw, m)
		if err := want(got, err, 200, endpoint(i*2)); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
	}

	// Pools come and go without a restart: the vision pool's listener stops with the pool and
	// starts again with it.
	listening := func(addr string) bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	vision := "127.0.71.254:19004"
	if _, err := api.Kubectl(ctx, "delete", "inferencepool", "vision", "-n", "default"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "the vision pool's EPP stops", func() error {
		if listening(vision) {
			return fmt.Errorf("%s still listening", vision)
		}
		return nil
	})
	if _, err := api.KubectlStdin(ctx, apiserver.PoolManifest("default", pools[2]), "apply", "--server-side", "--field-manager=test", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "the vision pool's EPP serves again", func() error {
		if !listening(vision) {
			return fmt.Errorf("%s not listening", vision)
		}
		got, err := sendModel(ctx, gw, modelPhi)
		return want(got, err, 200, endpoint(2))
	})
	select {
	case <-f.Spokes[home].Done():
		t.Fatal("the home spoke exited")
	default:
	}
}

package gateway_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"

	"github.com/spillway-io/spillway/e2e/extproctest"
	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/e2e/modelsim"
	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/epp/scheduler"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

var pool = fleet.PoolRef{Namespace: "default", Name: "chat"}

type fixed []epp.Endpoint

func (f fixed) Endpoints(_ fleet.PoolRef, dst []epp.Endpoint) ([]epp.Endpoint, bool) {
	for _, e := range f {
		e.ScrapedAt = time.Now()
		dst = append(dst, e)
	}
	return dst, true
}

// setup runs a real simulator, a real EPP over gRPC (as opts say: plaintext, TLS or mutual TLS),
// and the gateway in front of them. The EPP's pool lists a dead address as the best endpoint, so
// every request needs the fallback.
func setup(t *testing.T, mode filterv3.ProcessingMode_BodySendMode, opts ...extproctest.Option) *httptest.Server {
	t.Helper()
	ls, err := modelsim.Listen([]string{"127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := modelsim.DefaultConfig()
	cfg.DecodeLatency = 2 * time.Millisecond
	simCtx, stopSim := context.WithCancel(context.Background())
	simDone := make(chan struct{})
	go func() { defer close(simDone); _ = modelsim.Serve(simCtx, ls, cfg) }()

	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	ds := fixed{
		{Endpoint: scheduler.Endpoint{Address: deadAddr}, Ready: true},
		{Endpoint: scheduler.Endpoint{Address: ls[0].Addr().String(), Metrics: modelmetrics.Metrics{WaitingQueue: 4}}, Ready: true},
	}
	settings := epp.DefaultSettings()
	settings.Objectives["batch"] = epp.PriorityBestEffort
	srv, err := epp.New(epp.Options{Pool: pool, Settings: settings, Datastore: ds})
	if err != nil {
		t.Fatal(err)
	}
	h := gateway.NewHandler(gateway.Options{Client: &gateway.Client{EPP: extproctest.Serve(t, srv, opts...), RequestMode: mode, ResponseMode: mode}})
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		ts.Close()
		stopSim()
		<-simDone
	})
	return ts
}

// TestGatewayFallsBackAndStreams runs over mutual TLS to the EPP, as the local fleet does.
func TestGatewayFallsBackAndStreams(t *testing.T) {
	for _, mode := range []filterv3.ProcessingMode_BodySendMode{filterv3.ProcessingMode_FULL_DUPLEX_STREAMED, filterv3.ProcessingMode_BUFFERED} {
		t.Run(mode.String(), func(t *testing.T) {
			ts := setup(t, mode, extproctest.WithClientCert())
			resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(
				`{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"hi","max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			served := resp.Header.Get("x-gateway-destination-endpoint-served")
			if resp.StatusCode != 200 || served == "" || resp.Header.Get(modelsim.EndpointHeader) != served {
				t.Fatalf("status %d, served %q by %q: want the fallback simulator", resp.StatusCode, served, resp.Header.Get(modelsim.EndpointHeader))
			}
			var events []string
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
					events = append(events, d)
				}
			}
			if len(events) != 8 || events[7] != "[DONE]" || !strings.Contains(events[6], `"completion_tokens":5`) {
				t.Fatalf("streamed events through the gateway: %q", events)
			}
		})
	}
}

func TestGatewayPassesEPPAnswers(t *testing.T) {
	ts := setup(t, filterv3.ProcessingMode_FULL_DUPLEX_STREAMED)
	resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(`{"prompt":"no model"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), `\"model\" is required`) || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("bad request through the gateway: %d %s", resp.StatusCode, b)
	}
}

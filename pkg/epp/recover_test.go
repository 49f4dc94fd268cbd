package epp

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

// panickyDatastore panics while the next request asks for endpoints, then serves ds.
type panickyDatastore struct {
	ds    fakeDatastore
	panic bool
}

func (d *panickyDatastore) Endpoints(p fleet.PoolRef, dst []Endpoint) ([]Endpoint, bool) {
	if d.panic {
		d.panic = false
		panic("endpoint list broken")
	}
	return d.ds.Endpoints(p, dst)
}

// TestPanicFailsOneRequestOnly: a panic while a request is decided ends that request's stream
// with Internal, is logged with its stack and counted; the next request is routed.
func TestPanicFailsOneRequestOnly(t *testing.T) {
	ds := &panickyDatastore{ds: fakeDatastore{testPool: {readyEndpoint("10.0.0.1:8000", modelmetrics.Metrics{})}}, panic: true}
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	srv, err := New(Options{Pool: testPool, Settings: DefaultSettings(), Datastore: ds, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"model":"m","prompt":"hello"}`
	request := func() (*memStream, error) {
		st := &memStream{in: []*extprocv3.ProcessingRequest{requestHeaders(":path", "/v1/completions"), requestBody(body, true)}}
		return st, srv.Process(st)
	}

	if _, err := request(); status.Code(err) != codes.Internal {
		t.Fatalf("Process with a panicking datastore = %v, want Internal", err)
	}
	if !strings.Contains(logs.String(), "endpoint list broken") || !strings.Contains(logs.String(), "recover_test.go") {
		t.Errorf("the log does not carry the panic and its stack:\n%s", logs.String())
	}
	if n := testutil.ToFloat64(srv.metrics.panics); n != 1 {
		t.Errorf("spillway_epp_panics_total = %v, want 1", n)
	}

	st, err := request()
	if err != nil {
		t.Fatalf("the request after the panic: %v", err)
	}
	if len(st.out) == 0 || st.out[0].GetImmediateResponse() != nil {
		t.Fatalf("the request after the panic was not routed: %v", st.out)
	}
}

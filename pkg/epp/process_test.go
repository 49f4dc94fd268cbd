package epp

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"

	"github.com/spillway-io/spillway/pkg/epp/scheduler"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

var testPool = fleet.PoolRef{Namespace: "default", Name: "chat"}

// fakeDatastore holds each pool's endpoints; an endpoint never scraped counts as scraped now.
type fakeDatastore map[fleet.PoolRef][]Endpoint

func (d fakeDatastore) Endpoints(p fleet.PoolRef, dst []Endpoint) ([]Endpoint, bool) {
	eps, ok := d[p]
	now := time.Now()
	for _, e := range eps {
		if e.ScrapedAt.IsZero() {
			e.ScrapedAt = now
		}
		dst = append(dst, e)
	}
	return dst, ok
}

func readyEndpoint(addr string, m modelmetrics.Metrics, models ...string) Endpoint {
	return Endpoint{Endpoint: scheduler.Endpoint{Address: addr, Metrics: m}, Ready: true, Models: models}
}

// memStream is an ext_proc stream in memory: Recv replays in, then io.EOF; Send records.
type memStream struct {
	grpc.ServerStream
	in  []*extprocv3.ProcessingRequest
	out []*extprocv3.ProcessingResponse
}

func (m *memStream) Context() context.Context { return context.Background() }

func (m *memStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if len(m.in) == 0 {
		return nil, io.EOF
	}
	r := m.in[0]
	m.in = m.in[1:]
	return r, nil
}

func (m *memStream) Send(r *extprocv3.ProcessingResponse) error {
	m.out = append(m.out, r)
	return nil
}

func requestHeaders(kv ...string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hm}}}
}

func requestBody(b string, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(b), EndOfStream: eos}}}
}

// BenchmarkProcess is one request phase through Process without the gRPC transport: the EPP's
// own work (headers, body, decision, answer) and nothing else.
func BenchmarkProcess(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) { benchmarkProcess(b, n) })
	}
}

func benchmarkProcess(b *testing.B, n int) {
	var eps []Endpoint
	for i := range n {
		eps = append(eps, readyEndpoint(fmt.Sprintf("10.0.%d.%d:8000", i/250, i%250), modelmetrics.Metrics{WaitingQueue: i % 5}))
	}
	srv, err := New(Options{Pool: testPool, Settings: DefaultSettings(), Datastore: fakeDatastore{testPool: eps}})
	if err != nil {
		b.Fatal(err)
	}
	headers := requestHeaders(":method", "POST", ":path", "/v1/chat/completions", ":authority", "gw", "content-type", "application/json")
	prefix := strings.Repeat("You are a benchmark assistant. ", 70)
	bodies := make([]*extprocv3.ProcessingRequest, 256)
	for i := range bodies {
		bodies[i] = requestBody(fmt.Sprintf(`{"model":"m","messages":[{"role":"system","content":%q},{"role":"user","content":"q %d"}]}`, prefix, i), true)
	}
	st := &memStream{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st.in = append(st.in[:0], headers, bodies[i%len(bodies)])
		st.out = st.out[:0]
		if err := srv.Process(st); err != nil || len(st.out) == 0 || st.out[0].GetImmediateResponse() != nil {
			b.Fatal(err, st.out)
		}
	}
}

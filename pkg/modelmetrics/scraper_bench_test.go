package modelmetrics

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"
)

// BenchmarkScrape is one endpoint's scrape over loopback HTTP: request, a vLLM page of the
// published shape, read and parse. It is the per-endpoint cost of the spoke's idle CPU.
func BenchmarkScrape(b *testing.B) {
	page, err := os.ReadFile("testdata/vllm-v0.19.1-kvwarden-snapshot.prom")
	if err != nil {
		b.Skip(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(page) }))
	defer srv.Close()
	c := newPageConn(srv.Listener.Addr().String(), "")
	defer c.close()
	p, err := NewParser(EngineVLLM)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.SetBytes(int64(len(page)))
	b.ReportAllocs()
	for b.Loop() {
		bp := pageBuffers.Get().(*[]byte)
		var err error
		*bp, err = c.get(ctx, (*bp)[:0], time.Second)
		if err == nil {
			_, err = p.Parse(*bp)
		}
		pageBuffers.Put(bp)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParse is the parse alone of a vLLM page of the published shape (57 KB, histograms).
func BenchmarkParse(b *testing.B) {
	page, err := os.ReadFile("testdata/vllm-v0.19.1-kvwarden-snapshot.prom")
	if err != nil {
		b.Skip(err)
	}
	p, err := NewParser(EngineVLLM)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(page)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Parse(page); err != nil {
			b.Fatal(err)
		}
	}
}

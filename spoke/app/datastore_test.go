package app

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/epp/scheduler"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/spoke/source"
)

// scraped is a fake scraper with fixed samples.
type scraped map[string]modelmetrics.Sample

func (s scraped) Samples(addrs []string, dst []modelmetrics.Sample) []modelmetrics.Sample {
	for _, a := range addrs {
		dst = append(dst, s[a])
	}
	return dst
}

func TestDatastore(t *testing.T) {
	chat, code := fleet.PoolRef{Namespace: "default", Name: "chat"}, fleet.PoolRef{Namespace: "default", Name: "code"}
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	m := modelmetrics.Metrics{WaitingQueue: 2}
	ds := newDatastore(scraped{
		"10.0.0.1:8000": {Metrics: m, ScrapedAt: at},
		"10.0.0.2:8000": {Metrics: m, ScrapedAt: at, Err: errFailed},
		// 10.0.0.3:8000 was never scraped
	})
	first := at.Add(time.Second)
	ds.now = func() time.Time { return first }
	gone := ds.Set([]source.Pool{
		{Ref: chat, Endpoints: []source.Endpoint{{Address: "10.0.0.1:8000", Models: []string{"base"}}, {Address: "10.0.0.2:8000"}}},
		{Ref: code, Endpoints: []source.Endpoint{{Address: "10.0.0.3:8000"}, {Address: "10.0.0.4:8000"}}},
	})
	if len(gone) != 0 {
		t.Errorf("first Set: gone %q, want none", gone)
	}
	got, ok := ds.Endpoints(chat, nil)
	want := []epp.Endpoint{
		{Endpoint: scheduler.Endpoint{Address: "10.0.0.1:8000", Metrics: m, ScrapedAt: at}, Ready: true, TargetSince: first, Models: []string{"base"}},
		{Endpoint: scheduler.Endpoint{Address: "10.0.0.2:8000", Metrics: m, ScrapedAt: at}, Failed: true, TargetSince: first}, // its last scrape failed
	}
	if !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("Endpoints(chat) = %+v, %v\nwant %+v", got, ok, want)
	}
	if got, _ := ds.Endpoints(code, nil); len(got) != 2 || got[0].Ready || got[0].Failed || !got[0].TargetSince.Equal(first) {
		t.Errorf("Endpoints(code) = %+v: a never-scraped endpoint is neither ready nor failed, and a target since the first Set", got)
	}

	// 10.0.0.2 moves to code, 10.0.0.3 and 10.0.0.4 leave every pool, 10.0.0.5 arrives: the
	// endpoints that stay keep the time they became targets.
	second := first.Add(time.Minute)
	ds.now = func() time.Time { return second }
	gone = ds.Set([]source.Pool{
		{Ref: chat, Endpoints: []source.Endpoint{{Address: "10.0.0.1:8000"}}},
		{Ref: code, Endpoints: []source.Endpoint{{Address: "10.0.0.2:8000"}, {Address: "10.0.0.5:8000"}}},
	})
	if got, _ := ds.Endpoints(code, nil); len(got) != 2 || !got[0].TargetSince.Equal(first) || !got[1].TargetSince.Equal(second) {
		t.Errorf("Endpoints(code) after the second Set = %+v: want 10.0.0.2 a target since the first Set, 10.0.0.5 since the second", got)
	}
	slices.Sort(gone)
	if want := []string{"10.0.0.3:8000", "10.0.0.4:8000"}; !slices.Equal(gone, want) {
		t.Errorf("second Set: gone %q, want %q", gone, want)
	}
	if _, ok := ds.Endpoints(fleet.PoolRef{Namespace: "default", Name: "other"}, nil); ok {
		t.Error("Endpoints of an unknown pool: ok")
	}
}

var errFailed = errors.New("scrape failed")

// TestDatastoreAttachesGPUUtilization: an endpoint whose Pod a DCGM exporter attributes GPUs to
// carries their utilisation; one without a Pod, or whose Pod has none, carries nothing.
func TestDatastoreAttachesGPUUtilization(t *testing.T) {
	chat := fleet.PoolRef{Namespace: "llm", Name: "chat"}
	ds := newDatastore(scraped{})
	ds.gpu = func(pod string) (float64, bool) {
		u, ok := map[string]float64{"llm/chat-0": 0.7}[pod]
		return u, ok
	}
	ds.Set([]source.Pool{{Ref: chat, Endpoints: []source.Endpoint{
		{Address: "10.0.0.1:8000", Pod: "llm/chat-0"}, {Address: "10.0.0.2:8000", Pod: "llm/chat-1"}, {Address: "10.0.0.3:8000"},
	}}})
	got, _ := ds.Endpoints(chat, nil)
	if len(got) != 3 || !got[0].HasGPU || got[0].GPUUtilization != 0.7 || got[1].HasGPU || got[2].HasGPU {
		t.Fatalf("endpoints %+v: want only the first with GPU utilisation 0.7", got)
	}
}

package view

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

// flakySource fails the loads numbered in failLoads; its first watch ends at once, the second
// lasts until ctx ends.
type flakySource struct {
	failLoads []int
	watching  chan struct{}

	loads, watches int
}

func (s *flakySource) Load(context.Context) (registry.State, error) {
	s.loads++
	if slices.Contains(s.failLoads, s.loads) {
		return registry.State{}, errors.New("etcd away")
	}
	return registry.State{Revision: int64(s.loads), Clusters: map[string]registry.ClusterRecord{
		"a": {Info: fleet.ClusterInfo{ID: "a"}},
	}}, nil
}

func (s *flakySource) Watch(ctx context.Context, _ int64, _ func([]registry.Event)) error {
	s.watches++
	if s.watches == 1 {
		return errors.New("compacted")
	}
	close(s.watching)
	<-ctx.Done()
	return ctx.Err()
}

// retryLog keeps the retry attribute of every record logged.
type retryLog struct {
	mu      sync.Mutex
	retries []time.Duration
}

func (h *retryLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *retryLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *retryLog) WithGroup(string) slog.Handler            { return h }
func (h *retryLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "retry" {
			h.mu.Lock()
			h.retries = append(h.retries, a.Value.Duration())
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

func TestFollowRetriesLoadsWithBackoffThatRestartsAfterALoad(t *testing.T) {
	src := &flakySource{failLoads: []int{1, 2, 4}, watching: make(chan struct{})}
	logs := &retryLog{}
	m := New()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Follow(ctx, src, slog.New(logs)) }()

	select {
	case <-src.watching:
	case <-time.After(10 * time.Second):
		t.Fatal("the view never reached its second watch")
	}
	if _, ok := m.Cluster("a"); !ok {
		t.Fatal("the loaded state did not reach the model")
	}
	logs.mu.Lock()
	got := slices.Clone(logs.retries)
	logs.mu.Unlock()
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 100 * time.Millisecond}
	if !slices.Equal(got, want) {
		t.Fatalf("waits between loads %v, want %v: doubling from 100 ms, from the bottom again after a load", got, want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Follow returned %v after its context ended", err)
	}
}

package view

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

// gatedSource answers its first Load only once release is closed, with a registry in which
// cluster a exports chat; its watch lasts until ctx ends.
type gatedSource struct {
	release chan struct{}
	loading chan struct{} // closed when the first Load starts
}

func (s *gatedSource) Load(ctx context.Context) (registry.State, error) {
	select {
	case <-s.loading:
	default:
		close(s.loading)
	}
	select {
	case <-s.release:
	case <-ctx.Done():
		return registry.State{}, ctx.Err()
	}
	return registry.State{
		Revision: 7,
		Clusters: map[string]registry.ClusterRecord{"a": {Info: fleet.ClusterInfo{ID: "a"}}},
		Sessions: map[string]registry.SessionRecord{},
		Exports:  map[string]map[fleet.PoolRef]fleet.Export{"a": {chat: {Pool: chat}}},
	}, nil
}

func (s *gatedSource) Watch(ctx context.Context, _ int64, _ func([]registry.Event)) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestModelIsNotLoadedBeforeItsFirstLoad: a new model, and one whose Follow has not finished its
// first load, is not loaded and WaitLoaded does not return; once the load is in, the model is
// loaded, WaitLoaded returns, and what it serves holds the registry's imports.
func TestModelIsNotLoadedBeforeItsFirstLoad(t *testing.T) {
	m := New()
	if m.Loaded() {
		t.Fatal("a new model claims to have loaded the registry")
	}
	src := &gatedSource{release: make(chan struct{}), loading: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Follow(ctx, src, slog.New(slog.DiscardHandler)) }()
	defer func() {
		cancel()
		<-done
	}()

	select {
	case <-src.loading:
	case <-time.After(10 * time.Second):
		t.Fatal("Follow never started loading")
	}
	if m.Loaded() {
		t.Fatal("the model claims to be loaded while its first load is under way")
	}
	short, stop := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer stop()
	if err := m.WaitLoaded(short); err == nil {
		t.Fatal("WaitLoaded returned before the first load")
	}

	close(src.release)
	wait, stopWait := context.WithTimeout(t.Context(), 10*time.Second)
	defer stopWait()
	if err := m.WaitLoaded(wait); err != nil {
		t.Fatalf("WaitLoaded after the load: %v", err)
	}
	if !m.Loaded() {
		t.Fatal("WaitLoaded returned but the model is not loaded")
	}
	u := m.Since("", 0, nil)
	if !u.Snapshot || len(u.Imports) != 1 || u.Imports[0].Pool != chat {
		t.Fatalf("the first update after the load = %+v, want a snapshot with the import of %v", u, chat)
	}
}

// TestResetLoadsTheModel: a Reset (a full load) marks the model loaded for good.
func TestResetLoadsTheModel(t *testing.T) {
	m := New()
	select {
	case <-m.FirstLoad():
		t.Fatal("FirstLoad is closed before any load")
	default:
	}
	m.Reset(registry.State{})
	m.Reset(registry.State{}) // a reload closes nothing twice
	if !m.Loaded() {
		t.Fatal("a model that was reset is not loaded")
	}
	select {
	case <-m.FirstLoad():
	default:
		t.Fatal("FirstLoad is still open after a load")
	}
}

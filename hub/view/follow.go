package view

import (
	"context"
	"log/slog"
	"time"

	"github.com/spillway-io/spillway/hub/registry"
)

// Source is the registry as the view reads it.
type Source interface {
	Load(ctx context.Context) (registry.State, error)
	Watch(ctx context.Context, rev int64, fn func([]registry.Event)) error
}

// Follow keeps the model in step with the registry until ctx ends: a full load, then a watch from
// the loaded revision; when the watch breaks (compaction, etcd away) it loads again.
func (m *Model) Follow(ctx context.Context, src Source, log *slog.Logger) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		st, err := src.Load(ctx)
		if err != nil {
			log.Warn("registry load failed, retrying", "err", err, "retry", backoff)
			if !sleep(ctx, backoff) {
				break
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		m.Reset(st)
		log.Debug("registry loaded", "revision", st.Revision, "clusters", len(st.Clusters))
		if err := src.Watch(ctx, st.Revision, m.Apply); err != nil {
			log.Warn("registry watch ended, reloading", "err", err)
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

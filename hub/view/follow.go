package view

import (
	"context"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/spillway-io/spillway/hub/registry"
)

// Source is the registry as the view reads it.
type Source interface {
	Load(ctx context.Context) (registry.State, error)
	Watch(ctx context.Context, rev int64, fn func([]registry.Event)) error
}

// IncompleteRegistry is the reason Follow marks the view incomplete with, from a broken watch
// until the next full load.
const IncompleteRegistry = "registry"

// Follow keeps the model in step with the registry until ctx ends: a full load, then a watch from
// the loaded revision; when the watch breaks (compaction, etcd away) it marks the view incomplete
// (IncompleteRegistry) and loads again, which lifts the mark. A failed load
// is retried after 100 ms doubling to 5 s, for as long as ctx lasts.
func (m *Model) Follow(ctx context.Context, src Source, log *slog.Logger) error {
	bo := &backoff.ExponentialBackOff{InitialInterval: 100 * time.Millisecond, Multiplier: 2, MaxInterval: 5 * time.Second}
	load := func() (registry.State, error) { return src.Load(ctx) }
	for ctx.Err() == nil {
		st, err := backoff.Retry(ctx, load,
			backoff.WithBackOff(bo), // Retry resets it: each reload starts again from 100 ms
			backoff.WithMaxElapsedTime(0),
			backoff.WithNotify(func(err error, d time.Duration) {
				log.Warn("registry load failed, retrying", "err", err, "retry", d)
			}))
		if err != nil {
			break // only the end of ctx stops the retries
		}
		m.Reset(st)
		m.ClearIncomplete(IncompleteRegistry)
		log.Debug("registry loaded", "revision", st.Revision, "clusters", len(st.Clusters))
		if err := src.Watch(ctx, st.Revision, m.Apply); err != nil {
			log.Warn("registry watch ended, reloading", "err", err)
			// Until the reload, the view keeps its last state and says it may miss changes.
			m.SetIncomplete(IncompleteRegistry, "registry watch broken (etcd unreachable or quorum lost): "+err.Error())
		}
	}
	return nil
}

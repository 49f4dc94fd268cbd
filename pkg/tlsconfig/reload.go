package tlsconfig

import (
	"context"
	"log/slog"
	"os"
	"time"
)

// DefaultInterval is how often KeyPair and CAPool look at their files when no Interval is given.
const DefaultInterval = time.Second

// stamp is what says a file changed: its modification time and size.
type stamp struct {
	modTime time.Time
	size    int64
}

// stampsOf stats files; a file that cannot be read has the zero stamp.
func stampsOf(files []string) []stamp {
	stamps := make([]stamp, len(files))
	for i, f := range files {
		if fi, err := os.Stat(f); err == nil {
			stamps[i] = stamp{modTime: fi.ModTime(), size: fi.Size()}
		}
	}
	return stamps
}

func sameStamps(a, b []stamp) bool {
	for i := range a {
		if !a[i].modTime.Equal(b[i].modTime) || a[i].size != b[i].size {
			return false
		}
	}
	return true
}

// reloader calls load whenever one of files changes. Stamps are taken before load reads the
// files, so a write that lands during a load is seen at the next poll.
type reloader struct {
	files    []string
	interval time.Duration
	load     func() error
	log      *slog.Logger
	stamps   []stamp // owned by run after construction
}

func newReloader(files []string, interval time.Duration, log *slog.Logger, load func() error) (*reloader, error) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &reloader{files: files, interval: interval, load: load, log: log, stamps: stampsOf(files)}
	if err := load(); err != nil {
		return nil, err
	}
	return r, nil
}

// run polls the files every interval until ctx ends. A failed load keeps what was loaded before
// and is logged once per change of the files.
func (r *reloader) run(ctx context.Context) error {
	if len(r.files) == 0 { // static: nothing to reload
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := stampsOf(r.files)
		if sameStamps(now, r.stamps) {
			continue
		}
		r.stamps = now
		if err := r.load(); err != nil {
			r.log.Warn("TLS files changed but could not be reloaded; keeping the previous ones", "files", r.files, "err", err)
			continue
		}
		r.log.Info("TLS files reloaded", "files", r.files)
	}
}

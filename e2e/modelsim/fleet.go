package modelsim

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
)

// Listen opens one listener per address, so that a failure to bind is reported before anything
// is served.
func Listen(addrs []string) ([]net.Listener, error) {
	ls := make([]net.Listener, 0, len(addrs))
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			for _, o := range ls {
				o.Close()
			}
			return nil, fmt.Errorf("listen on %s: %w", a, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// Serve runs one simulated model server per listener, each with its own engine, until ctx ends.
func Serve(ctx context.Context, ls []net.Listener, cfg Config) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, l := range ls {
		e, err := NewEngine(cfg)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: NewServer(e, l.Addr().String()), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(l); err != nil && err != http.ErrServerClosed {
				return fmt.Errorf("serve %s: %w", l.Addr(), err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				srv.Close()
			}
			return nil
		})
	}
	return g.Wait()
}

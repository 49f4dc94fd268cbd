package scale

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"

	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// trustDomain is the fleet's trust domain in the run.
const trustDomain = "spillway.local"

// serverName is the name the hub's serving certificate is verified for: the hub issues itself
// one for localhost.
const serverName = "localhost"

// hub is the hub process under test, on loopback ports chosen once, so that a restart serves
// the same addresses from the same data directory.
type hub struct {
	id                   string
	bin, dir             string
	grpc, admin, metrics string
	args                 []string
	proc                 *localfleet.Proc
	starts               int
}

func newHub(id, binDir, dir string, ca *tlsconfig.CA, extra []string) (*hub, error) {
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return nil, err
	}
	for name, data := range map[string][]byte{tlsconfig.CAFile: ca.CertPEM(), "ca.key": ca.KeyPEM()} {
		if err := os.WriteFile(filepath.Join(pki, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	addrs, err := freeAddrs(3)
	if err != nil {
		return nil, err
	}
	h := &hub{id: id, bin: filepath.Join(binDir, "hub"), dir: dir, grpc: addrs[0], admin: addrs[1], metrics: addrs[2]}
	h.args = append([]string{"--grpc-address", h.grpc, "--admin-address", h.admin, "--http-address", h.metrics, "--insecure-http",
		"--data-dir", filepath.Join(dir, "data"), "--pki-dir", pki, "--hub-id", id, "--trust-domain", trustDomain,
		"--enable-pprof", "--log-level", "warn"}, extra...)
	return h, nil
}

// start runs the hub process and waits until /readyz answers 200.
func (h *hub) start(ctx context.Context) error {
	h.starts++
	p, err := localfleet.StartProc(h.dir, fmt.Sprintf("hub-%d", h.starts), h.bin, h.args...)
	if err != nil {
		return err
	}
	h.proc = p
	for {
		if code, err := h.get(ctx, "/readyz", io.Discard); err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("the hub exited (%v); see %s", p.Err(), p.LogPath)
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (h *hub) stop() error {
	if h.proc == nil {
		return nil
	}
	err := h.proc.Stop(20 * time.Second)
	h.proc = nil
	return err
}

func (h *hub) get(ctx context.Context, path string, w io.Writer) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.metrics+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return resp.StatusCode, err
}

// metric returns the sum of a metric's series on the hub's /metrics page whose labels contain
// every one of labels (name="value" as written on the page).
func (h *hub) metric(ctx context.Context, name string, labels ...string) (float64, error) {
	var page strings.Builder
	if _, err := h.get(ctx, "/metrics", &page); err != nil {
		return 0, err
	}
	var sum float64
	found := false
	sc := bufio.NewScanner(strings.NewReader(page.String()))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || len(line) == len(name) || (line[len(name)] != ' ' && line[len(name)] != '{') {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(series, l)
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", line, err)
		}
		sum, found = sum+v, true
	}
	if !found {
		return 0, fmt.Errorf("%s%v not on the hub's /metrics page", name, labels)
	}
	return sum, nil
}

// usage is a process's CPU time and resident memory at one moment.
type usage struct {
	at  time.Time
	cpu float64 // seconds, user and system
	rss int64   // bytes
}

func usageOf(pid int) (usage, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return usage{}, err
	}
	st, err := p.Stat()
	if err != nil {
		return usage{}, err
	}
	return usage{at: time.Now(), cpu: st.CPUTime(), rss: int64(st.ResidentMemory())}, nil
}

// cores is the CPU a process used between two readings, in cores.
func cores(a, b usage) float64 {
	if d := b.at.Sub(a.at).Seconds(); d > 0 {
		return (b.cpu - a.cpu) / d
	}
	return 0
}

// profile saves the hub's CPU profile over d, then its heap profile, into dir.
func (h *hub) profile(ctx context.Context, dir, tag string, d time.Duration) error {
	for _, p := range []struct{ path, file string }{
		{fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())), "cpu"},
		{"/debug/pprof/heap", "heap"},
	} {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("hub-%s-%s.pprof", tag, p.file)))
		if err != nil {
			return err
		}
		code, err := h.get(ctx, p.path, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("%s: HTTP %d", p.path, code)
		}
		if err != nil {
			return fmt.Errorf("profile the hub: %w", err)
		}
	}
	return nil
}

// freeAddrs returns n loopback addresses whose ports were free a moment ago.
func freeAddrs(n int) ([]string, error) {
	var out []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, errors.Join(errors.New("no free loopback port"), err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

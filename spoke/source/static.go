package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

// StaticFile is the YAML format of a static pool file:
//
//	pools:
//	- namespace: default
//	  name: chat
//	  export: true
//	  targetPorts: [8000]
//	  engine: vllm            # optional; vllm, sglang, trtllm-serve or triton-trtllm
//	  labels: {app: chat}     # optional
//	  models: [base, sql-lora] # optional; the models every endpoint serves (empty: any)
//	  endpoints:              # IPs (one endpoint per target port) or ip:port
//	  - 127.0.1.1
//	  - 127.0.1.2
//	  - {address: 127.0.1.3, models: [base]}   # an endpoint with its own models
type StaticFile struct {
	Pools []StaticPool `json:"pools"`
}

// StaticPool is one pool of a static file.
type StaticPool struct {
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	Export      bool              `json:"export"`
	TargetPorts []uint32          `json:"targetPorts"`
	Engine      string            `json:"engine,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Models      []string          `json:"models,omitempty"`
	Endpoints   []StaticEndpoint  `json:"endpoints"`
}

// StaticEndpoint is an address, or an object with an address and the models it serves.
type StaticEndpoint struct {
	Address string   `json:"address"`
	Models  []string `json:"models,omitempty"`
}

// UnmarshalJSON accepts a plain address string or an object.
func (e *StaticEndpoint) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*e = StaticEndpoint{Address: s}
		return nil
	}
	type plain StaticEndpoint
	var p plain
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("endpoint: want an address or {address, models}: %w", err)
	}
	*e = StaticEndpoint(p)
	return nil
}

// ErrInvalidFile marks a pool file that cannot be used.
var ErrInvalidFile = errors.New("invalid pool file")

// ParseStatic reads and checks a static pool file.
func ParseStatic(data []byte) ([]Pool, error) {
	var f StaticFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidFile, err)
	}
	var errs []error
	seen := map[fleet.PoolRef]bool{}
	var pools []Pool
	for i, sp := range f.Pools {
		where := fmt.Sprintf("pools[%d] (%s/%s)", i, sp.Namespace, sp.Name)
		ref := fleet.PoolRef{Namespace: sp.Namespace, Name: sp.Name}
		if msgs := validation.IsDNS1123Label(sp.Namespace); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("%s: namespace %q: %s", where, sp.Namespace, strings.Join(msgs, "; ")))
		}
		if msgs := validation.IsDNS1123Label(sp.Name); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("%s: name %q: %s", where, sp.Name, strings.Join(msgs, "; ")))
		}
		if seen[ref] {
			errs = append(errs, fmt.Errorf("%s: listed twice", where))
		}
		seen[ref] = true
		if len(sp.TargetPorts) == 0 || len(sp.TargetPorts) > 8 {
			errs = append(errs, fmt.Errorf("%s: targetPorts needs 1..8 ports", where))
		}
		for _, p := range sp.TargetPorts {
			if p < 1 || p > 65535 {
				errs = append(errs, fmt.Errorf("%s: target port %d out of range", where, p))
			}
		}
		engine, err := modelmetrics.ParseEngine(sp.Engine)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
		p := Pool{Ref: ref, TargetPorts: sp.TargetPorts, Labels: sp.Labels, Export: sp.Export}
		for _, e := range sp.Endpoints {
			addrs, err := expand(e.Address, sp.TargetPorts)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: endpoint %q: %w", where, e.Address, err))
				continue
			}
			models := e.Models
			if models == nil {
				models = sp.Models
			}
			for _, a := range addrs {
				p.Endpoints = append(p.Endpoints, Endpoint{Address: a, Engine: engine, Models: models})
			}
		}
		pools = append(pools, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidFile, err)
	}
	slices.SortFunc(pools, func(a, b Pool) int { return a.Ref.Compare(b.Ref) })
	return pools, nil
}

func expand(e string, ports []uint32) ([]string, error) {
	if ip := net.ParseIP(e); ip != nil {
		out := make([]string, 0, len(ports))
		for _, p := range ports {
			out = append(out, net.JoinHostPort(ip.String(), strconv.Itoa(int(p))))
		}
		return out, nil
	}
	host, port, err := net.SplitHostPort(e)
	if err != nil || net.ParseIP(host) == nil {
		return nil, errors.New("want an IP or ip:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, errors.New("port out of range")
	}
	return []string{e}, nil
}

// Static is a Source read from a YAML file. The file is read again when it changes; a file that
// does not parse is logged and the last good pools stay.
type Static struct {
	path     string
	interval time.Duration
	log      *slog.Logger

	mu      sync.RWMutex
	pools   []Pool
	modTime time.Time
	size    int64
	changed chan struct{}
}

// NewStatic reads a static pool file; the error says what is wrong with it.
func NewStatic(path string, reload time.Duration, log *slog.Logger) (*Static, error) {
	s := &Static{path: path, interval: reload, log: log, changed: make(chan struct{})}
	if _, err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Static) load() (bool, error) {
	st, err := os.Stat(s.path)
	if err != nil {
		return false, fmt.Errorf("pool file: %w", err)
	}
	s.mu.RLock()
	same := st.ModTime().Equal(s.modTime) && st.Size() == s.size
	s.mu.RUnlock()
	if same {
		return false, nil
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return false, fmt.Errorf("pool file: %w", err)
	}
	pools, err := ParseStatic(data)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.modTime, s.size = st.ModTime(), st.Size()
	if err != nil {
		return false, fmt.Errorf("%s: %w", s.path, err)
	}
	s.pools = pools
	close(s.changed)
	s.changed = make(chan struct{})
	return true, nil
}

// Run re-reads the file when it changes, until ctx ends.
func (s *Static) Run(ctx context.Context) error {
	if s.interval <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if changed, err := s.load(); err != nil {
				s.log.Error("pool file rejected, keeping the last good pools", "path", s.path, "err", err)
			} else if changed {
				s.log.Info("pool file reloaded", "path", s.path)
			}
		}
	}
}

// Pools returns the current pools.
func (s *Static) Pools() []Pool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.pools
}

// Changed returns a channel closed when the pools change.
func (s *Static) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

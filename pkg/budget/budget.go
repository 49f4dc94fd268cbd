// Package budget holds token budgets across the fleet: their declaration (Spec, File), the
// spoke's local enforcement on the request path (Ledger) and the hub's division of each budget
// among the clusters that draw on it (Allocator). docs/budgets.md explains the algorithm and
// its overshoot bound.
//
// A budget limits the tokens (and, optionally, the requests) admitted in each window of a fixed
// length, aligned to the Unix epoch so that every cluster counts the same windows. The hub gives
// each cluster a ceiling for the current window; the cluster's EPP admits a request only while
// its charges stay under that ceiling, deciding from local state alone.
package budget

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// ErrInvalid marks a budget declaration that cannot be used.
var ErrInvalid = errors.New("invalid budget")

// Count is what a budget's token limit counts.
type Count string

// Counts.
const (
	CountTotal  Count = "total"
	CountInput  Count = "input"
	CountOutput Count = "output"
)

// DefaultWindow is the window of a budget that names none: tokens per minute.
const DefaultWindow = time.Minute

// DefaultTenantHeader is the request header that names the tenant, set by the gateway after it
// authenticated the caller.
const DefaultTenantHeader = "x-spillway-tenant"

// Limits of a declaration.
const (
	MaxBudgets   = 10000
	MaxNameBytes = 253
	MinWindow    = time.Second
	MaxWindow    = 24 * time.Hour
)

// Selector chooses the requests a budget counts: every field set must match, an empty one
// matches anything. The zero Selector counts every request.
type Selector struct {
	// Tenant is the value of the tenant header.
	Tenant string `json:"tenant,omitempty"`
	// Objective is the request's InferenceObjective (x-gateway-inference-objective).
	Objective string `json:"objective,omitempty"`
	// Model is the model the request asks for (the body's "model").
	Model string `json:"model,omitempty"`
	// Pool is the InferencePool the request reaches, namespace/name.
	Pool string `json:"pool,omitempty"`
}

// Matches reports whether a request of these attributes is counted.
func (s Selector) Matches(a Attributes) bool {
	return (s.Tenant == "" || s.Tenant == a.Tenant) && (s.Objective == "" || s.Objective == a.Objective) &&
		(s.Model == "" || s.Model == a.Model) && (s.Pool == "" || s.Pool == a.Pool)
}

// Attributes are what a selector reads of a request.
type Attributes struct {
	Tenant, Objective, Model, Pool string
}

// Spec is one budget as declared: a TokenBudget's spec, or an entry of the hub's budgets file.
type Spec struct {
	// Name is the TokenBudget's metadata.name.
	Name     string   `json:"-"`
	Selector Selector `json:"selector"`
	// Tokens is the most tokens admitted per window; 0 leaves tokens unlimited (a requests-only
	// budget).
	Tokens int64 `json:"tokensPerWindow,omitempty"`
	// Count says which tokens count: input, output or total (the default).
	Count Count `json:"count,omitempty"`
	// Requests is the most requests admitted per window; 0 leaves them unlimited.
	Requests int64 `json:"requestsPerWindow,omitempty"`
	// Window is the length of a window, whole seconds; DefaultWindow when zero.
	Window Duration `json:"window,omitempty"`
	// Burst, below 1, paces the budget through its window: at a fraction f of the window a
	// cluster may have charged at most (f + Burst) of its ceiling, so that a tenant far over its
	// budget spends it evenly instead of at each window's start (and its load on a pool it
	// shares stays even). 0 (or 1) does not pace.
	Burst float64 `json:"burst,omitempty"`
}

// Duration is a time.Duration written as Go writes one ("1m", "30s").
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return fmt.Errorf("a duration is a string such as \"1m\", not %s", s)
	}
	v, err := time.ParseDuration(s[1 : len(s)-1])
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// nameRE is a DNS subdomain: budget names are metric label values and Kubernetes object names.
var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// Complete fills the defaults in.
func (s *Spec) Complete() {
	if s.Count == "" {
		s.Count = CountTotal
	}
	if s.Window.Duration == 0 {
		s.Window.Duration = DefaultWindow
	}
}

// Validate checks a completed Spec.
func (s Spec) Validate() error {
	var errs []error
	if len(s.Name) > MaxNameBytes || !nameRE.MatchString(s.Name) {
		errs = append(errs, fmt.Errorf("name %q is not a DNS subdomain of at most %d bytes", s.Name, MaxNameBytes))
	}
	switch s.Count {
	case CountTotal, CountInput, CountOutput:
	default:
		errs = append(errs, fmt.Errorf("count %q is none of total, input, output", s.Count))
	}
	if s.Tokens < 0 || s.Requests < 0 {
		errs = append(errs, errors.New("tokensPerWindow and requestsPerWindow may not be negative"))
	}
	if s.Tokens == 0 && s.Requests == 0 {
		errs = append(errs, errors.New("neither tokensPerWindow nor requestsPerWindow is set: the budget would limit nothing"))
	}
	if !(s.Burst >= 0 && s.Burst <= 1) {
		errs = append(errs, fmt.Errorf("burst %v: want 0..1", s.Burst))
	}
	if w := s.Window.Duration; w < MinWindow || w > MaxWindow || w%time.Second != 0 {
		errs = append(errs, fmt.Errorf("window %s is not whole seconds from %s to %s", w, MinWindow, MaxWindow))
	}
	if p := s.Selector.Pool; p != "" {
		if ns, name, ok := strings.Cut(p, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			errs = append(errs, fmt.Errorf("selector.pool %q is not namespace/name", p))
		}
	}
	for _, f := range []struct{ name, v string }{{"tenant", s.Selector.Tenant}, {"objective", s.Selector.Objective}, {"model", s.Selector.Model}} {
		if len(f.v) > MaxNameBytes || strings.ContainsAny(f.v, "\x00\r\n") {
			errs = append(errs, fmt.Errorf("selector.%s is longer than %d bytes or holds a control character", f.name, MaxNameBytes))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w %q: %w", ErrInvalid, s.Name, err)
	}
	return nil
}

// Set is the fleet's budgets, sorted by name, and the header that names the tenant.
type Set struct {
	TenantHeader string
	Budgets      []Spec
}

// Validate checks every budget and that names are unique.
func (s Set) Validate() error {
	if len(s.Budgets) > MaxBudgets {
		return fmt.Errorf("%w: %d budgets, more than %d", ErrInvalid, len(s.Budgets), MaxBudgets)
	}
	if h := s.TenantHeader; h != "" && (h != strings.ToLower(h) || strings.ContainsAny(h, " :\x00\r\n") || h[0] == ':') {
		return fmt.Errorf("%w: tenantHeader %q is not a lower-case HTTP header name", ErrInvalid, h)
	}
	var errs []error
	for i, b := range s.Budgets {
		if err := b.Validate(); err != nil {
			errs = append(errs, err)
		}
		if i > 0 && s.Budgets[i-1].Name == b.Name {
			errs = append(errs, fmt.Errorf("%w: budget %q declared twice", ErrInvalid, b.Name))
		}
	}
	return errors.Join(errs...)
}

// Sort orders the budgets by name and completes their defaults.
func (s *Set) Sort() {
	for i := range s.Budgets {
		s.Budgets[i].Complete()
	}
	if s.TenantHeader == "" {
		s.TenantHeader = DefaultTenantHeader
	}
	slices.SortFunc(s.Budgets, func(a, b Spec) int { return strings.Compare(a.Name, b.Name) })
}

// Equal reports whether two sets declare the same budgets.
func (s Set) Equal(o Set) bool {
	return s.TenantHeader == o.TenantHeader && slices.Equal(s.Budgets, o.Budgets)
}

// WindowStart is the start, in Unix milliseconds, of the window of length w that holds t:
// windows are aligned to the Unix epoch, so clusters whose clocks agree count the same ones.
func WindowStart(t time.Time, w time.Duration) int64 {
	ms, wms := t.UnixMilli(), w.Milliseconds()
	return ms - ((ms%wms)+wms)%wms
}

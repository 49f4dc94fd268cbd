package budget

import (
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// AllocatorOptions configure an Allocator.
type AllocatorOptions struct {
	// MemberTTL is how long a member that stopped reporting (its spoke cut off from the hub, or
	// gone) keeps its ceiling and share counted; 10 minutes when zero.
	MemberTTL time.Duration
	// Settle is how long after the allocator starts no ceiling or share is raised: members
	// that reported to a hub replica now gone tell this one their state first (one report
	// interval suffices); 2 s when zero, none when negative.
	Settle time.Duration
	// Floor is the fraction of an equal split that a member without demand keeps as its share
	// (so that a cluster cut off from the hub is never closed entirely); 0.1 when zero.
	Floor float64
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Allocator divides each budget among the members that draw on it: the hub's side. Every member
// (one spoke process) reports its usage each interval and gets back its grants. A grant never
// lets the ceilings in force add up to more than the budget:
//
//	target_i  = used_i + share_i × (limit − Σ_j used_j)
//	ceiling_i = clamp(target_i, used_i, limit − Σ_{j≠i} committed_j)
//
// where committed_j bounds what member j may admit in the window: the larger of the ceiling it
// reported, the one last granted to it and what it used, or, before it reported for the window,
// its share of the limit (what it takes at a window's start). share_i is member i's demand over
// the fleet's, with a floor, and no more than 1 − Σ_{j≠i} share_j.
type Allocator struct {
	opts    AllocatorOptions
	started time.Time

	mu      sync.Mutex
	set     Set
	specs   map[string]Spec
	members map[string]*member
	// changed is closed when the declarations change.
	changed chan struct{}
}

type member struct {
	cluster string
	seen    time.Time
	usage   map[string]Usage
	granted map[string]Grant
}

// NewAllocator returns an allocator with no budgets.
func NewAllocator(o AllocatorOptions) *Allocator {
	if o.MemberTTL <= 0 {
		o.MemberTTL = 10 * time.Minute
	}
	if o.Settle == 0 {
		o.Settle = 2 * time.Second
	}
	if o.Floor <= 0 {
		o.Floor = 0.1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Allocator{opts: o, started: o.Now(), specs: map[string]Spec{}, members: map[string]*member{}, changed: make(chan struct{})}
}

// SetBudgets replaces the declarations; it reports whether they changed.
func (a *Allocator) SetBudgets(set Set) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.set.Equal(set) {
		return false
	}
	close(a.changed)
	a.changed = make(chan struct{})
	a.set = set
	a.specs = make(map[string]Spec, len(set.Budgets))
	for _, s := range set.Budgets {
		a.specs[s.Name] = s
	}
	return true
}

// Budgets returns the declarations and a channel closed when they change.
func (a *Allocator) Budgets() (Set, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.set, a.changed
}

// Report records a member's usage and returns its grants, one per declared budget. A member
// that has not reported before (a new session) may report nothing.
func (a *Allocator) Report(key, cluster string, us []Usage) []Grant {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Now()
	a.expire(now)
	m := a.record(key, cluster, us, now)
	settling := now.Sub(a.started) < a.opts.Settle
	out := make([]Grant, 0, len(a.set.Budgets))
	for _, s := range a.set.Budgets {
		_, reported := m.usage[s.Name]
		_, granted := m.granted[s.Name]
		if settling && !reported && !granted {
			// Just started, and nothing known of the member's account: it keeps what it
			// has until its report tells.
			continue
		}
		g := a.grant(key, m, s, now)
		m.granted[s.Name] = g
		out = append(out, g)
	}
	return out
}

// Peer records a member's usage and the grants another hub replica gave it.
func (a *Allocator) Peer(key, cluster string, us []Usage, gs []Grant) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Now()
	m := a.record(key, cluster, us, now)
	for _, g := range gs {
		if _, ok := a.specs[g.Name]; ok {
			m.granted[g.Name] = g
		}
	}
}

func (a *Allocator) record(key, cluster string, us []Usage, now time.Time) *member {
	m := a.members[key]
	if m == nil {
		m = &member{cluster: cluster, usage: map[string]Usage{}, granted: map[string]Grant{}}
		a.members[key] = m
	}
	m.seen = now
	for _, u := range us {
		if _, ok := a.specs[u.Name]; ok {
			m.usage[u.Name] = u
		}
	}
	return m
}

func (a *Allocator) expire(now time.Time) {
	for k, m := range a.members {
		if now.Sub(m.seen) > a.opts.MemberTTL {
			delete(a.members, k)
		}
	}
}

// committed bounds the tokens or requests member m may admit of budget s in window w.
func committed(m *member, s Spec, w int64, tokens bool) float64 {
	limit, pick := s.Requests, func(ceil, used int64) float64 { return float64(max(ceil, used)) }
	if tokens {
		limit = s.Tokens
	}
	u, g := m.usage[s.Name], m.granted[s.Name]
	share := max(u.Share, g.Share)
	c := math.Ceil(share * float64(limit))
	if u.Window == w {
		if tokens {
			c = pick(u.CeilingTokens, u.UsedTokens)
		} else {
			c = pick(u.CeilingRequests, u.UsedRequests)
		}
	}
	if g.Window == w {
		if tokens {
			c = max(c, float64(g.CeilingTokens))
		} else {
			c = max(c, float64(g.CeilingRequests))
		}
	}
	return c
}

func used(m *member, s Spec, w int64, tokens bool) float64 {
	u := m.usage[s.Name]
	if u.Window != w {
		return 0
	}
	if tokens {
		return float64(u.UsedTokens)
	}
	return float64(u.UsedRequests)
}

// grant computes member key's grant on budget s.
func (a *Allocator) grant(key string, m *member, s Spec, now time.Time) Grant {
	w := WindowStart(now, s.Window.Duration)
	settling := now.Sub(a.started) < a.opts.Settle
	// Demand weights: each member's share of the fleet's demand, at least Floor of an equal
	// split.
	n := float64(len(a.members))
	var total float64
	for _, o := range a.members {
		total += max(o.usage[s.Name].Demand, 0)
	}
	weight := func(o *member) float64 {
		if total <= 0 {
			return 1 / n
		}
		return max(max(o.usage[s.Name].Demand, 0)/total, a.opts.Floor/n)
	}
	var wsum, othersShare float64
	for k, o := range a.members {
		wsum += weight(o)
		if k != key {
			othersShare += max(o.usage[s.Name].Share, o.granted[s.Name].Share)
		}
	}
	share := min(weight(m)/wsum, max(1-othersShare, 0))
	prev := max(m.usage[s.Name].Share, m.granted[s.Name].Share)
	if settling {
		share = min(share, prev)
	}
	g := Grant{Name: s.Name, Window: w, Share: share}
	for _, tokens := range []bool{true, false} {
		limit := float64(s.Requests)
		if tokens {
			limit = float64(s.Tokens)
		}
		if limit == 0 {
			continue
		}
		var usedAll, othersCommitted float64
		for k, o := range a.members {
			usedAll += used(o, s, w, tokens)
			if k != key {
				othersCommitted += committed(o, s, w, tokens)
			}
		}
		mine := used(m, s, w, tokens)
		target := mine + weight(m)/wsum*max(limit-usedAll, 0)
		ceiling := max(min(target, limit-othersCommitted), mine)
		if settling {
			ceiling = min(ceiling, max(committed(m, s, w, tokens), mine))
		}
		c := int64(math.Floor(ceiling))
		if tokens {
			g.CeilingTokens = c
		} else {
			g.CeilingRequests = c
		}
	}
	return g
}

// MemberStatus is one member's part of a budget, as the hub knows it.
type MemberStatus struct {
	Member, Cluster string
	Usage
	// Granted is the member's last grant (from this replica or another).
	Granted Grant
	// Seen is when the member last reported.
	Seen time.Time
}

// Status is one budget across the fleet.
type Status struct {
	Spec Spec
	// Window is the current window's start (Unix ms); UsedTokens and UsedRequests add up what
	// the members reported for it.
	Window                   int64
	UsedTokens, UsedRequests int64
	Members                  []MemberStatus
}

// Statuses returns every budget's state, by name, its members by cluster.
func (a *Allocator) Statuses() []Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Now()
	out := make([]Status, 0, len(a.set.Budgets))
	for _, s := range a.set.Budgets {
		st := Status{Spec: s, Window: WindowStart(now, s.Window.Duration)}
		for k, m := range a.members {
			u := m.usage[s.Name]
			if u.Window == st.Window {
				st.UsedTokens += u.UsedTokens
				st.UsedRequests += u.UsedRequests
			}
			st.Members = append(st.Members, MemberStatus{Member: k, Cluster: m.cluster, Usage: u, Granted: m.granted[s.Name], Seen: m.seen})
		}
		slices.SortFunc(st.Members, func(x, y MemberStatus) int {
			return strings.Compare(x.Cluster+"\x00"+x.Member, y.Cluster+"\x00"+y.Member)
		})
		out = append(out, st)
	}
	return out
}

package budget

import (
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Usage is what a budget's account holds in one window, as a spoke reports it to the hub.
type Usage struct {
	Name string
	// Window is the start of the window, Unix milliseconds.
	Window int64
	// UsedTokens and UsedRequests are charged in the window: the reservations of requests in
	// flight and what finished requests used.
	UsedTokens, UsedRequests int64
	// CeilingTokens and CeilingRequests are the cluster's ceilings in force for the window.
	CeilingTokens, CeilingRequests int64
	// Demand is the tokens per second the cluster was asked for lately, admitted or not.
	Demand float64
	// Share is the fraction of the budget the cluster takes in a window the hub has not
	// granted (the hub's last word).
	Share float64
	// Refused counts the requests refused in the window.
	Refused int64
}

// Grant is the hub's word to one cluster on one budget: its ceilings for a window, and the
// share it takes of a window the hub has not granted.
type Grant struct {
	Name                           string
	Window                         int64
	CeilingTokens, CeilingRequests int64
	Share                          float64
}

// Refusal says why a request is refused: the first budget it would overdraw.
type Refusal struct {
	Budget string
	// Tokens is true when the token limit refused it, false for the request limit.
	Tokens bool
	// Limit is the budget's limit per window; Remaining what this cluster may still admit of it
	// in the window; Reset the time until the window ends.
	Limit, Remaining int64
	Reset            time.Duration
	// Window is the budget's window.
	Window time.Duration
}

// RetryAfter is the Retry-After value, whole seconds, at least 1.
func (r *Refusal) RetryAfter() string {
	return strconv.FormatInt(max(int64(math.Ceil(r.Reset.Seconds())), 1), 10)
}

// account is one budget's state at this spoke.
type account struct {
	spec  Spec
	index int
	// window is the start of the current window (Unix ms); the other fields are of it.
	window                         int64
	usedTokens, usedRequests       int64
	ceilingTokens, ceilingRequests int64
	// granted is set when the ceilings are the hub's for this window, not the share's.
	granted bool
	share   float64
	refused int64
	// asked counts the tokens asked since the last report; demand is their smoothed rate.
	asked  int64
	demand float64

	admittedTotal, refusedTotal uint64
	tokensTotal                 uint64
	// overdrawTotal counts the tokens requests used beyond what they reserved: the only way
	// the fleet's admissions pass the budget (docs/budgets.md, "The bound").
	overdrawTotal uint64
}

// roll moves the account to the window of now, when it began since.
func (a *account) roll(now time.Time) {
	w := WindowStart(now, a.spec.Window.Duration)
	if w == a.window {
		return
	}
	a.window, a.usedTokens, a.usedRequests, a.refused, a.granted = w, 0, 0, 0, false
	a.ceilingTokens = int64(a.share * float64(a.spec.Tokens))
	a.ceilingRequests = int64(a.share * float64(a.spec.Requests))
}

// reservation is one budget's part of a ticket.
type reservation struct {
	acct   *account
	window int64
	// in and out are the tokens reserved of the prompt and of the output, as the budget counts.
	in, out int64
}

// Ticket is what an admitted request holds of its budgets until it ends (Ledger.Settle).
type Ticket struct {
	res   [4]reservation
	more  []reservation
	n     int
	valid bool
}

func (t *Ticket) add(r reservation) {
	if t.n < len(t.res) {
		t.res[t.n] = r
	} else {
		t.more = append(t.more, r)
	}
	t.n++
}

func (t *Ticket) at(i int) *reservation {
	if i < len(t.res) {
		return &t.res[i]
	}
	return &t.more[i-len(t.res)]
}

// Held reports whether the ticket holds any budget.
func (t *Ticket) Held() bool { return t.valid && t.n > 0 }

// Ledger is a spoke's budgets: their declarations and ceilings from the hub, the charges of the
// requests its EPPs admit. It is safe for concurrent use; the request path takes one lock.
type Ledger struct {
	now          func() time.Time
	tenantHeader atomic.Pointer[string]

	mu    sync.Mutex
	set   Set
	accts []*account
	// byName finds an account; the indexes find the accounts a request may match by the most
	// specific field each selector sets (tenant, then model, objective, pool), every one of
	// which is then checked.
	byName                   map[string]*account
	tenant, model, obj, pool map[string][]*account
	everything               []*account
	lastReport               time.Time
	scratch                  []*account
	defaultOutputTokens      int64
}

// LedgerOptions configure a Ledger.
type LedgerOptions struct {
	// DefaultOutputTokens is reserved for a request that states no max_tokens; 1024 when zero.
	DefaultOutputTokens int64
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// DefaultOutputTokens is the output reservation of a request without max_tokens.
const DefaultOutputTokens = 1024

// NewLedger returns a ledger with no budgets: it admits everything until the hub sends some.
func NewLedger(o LedgerOptions) *Ledger {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DefaultOutputTokens <= 0 {
		o.DefaultOutputTokens = DefaultOutputTokens
	}
	return &Ledger{now: o.Now, defaultOutputTokens: o.DefaultOutputTokens, byName: map[string]*account{}}
}

// TenantHeader is the header that names the tenant. The EPP reads it for every request: it takes
// no lock.
func (l *Ledger) TenantHeader() string {
	if h := l.tenantHeader.Load(); h != nil && *h != "" {
		return *h
	}
	return DefaultTenantHeader
}

// SetBudgets replaces the declarations. A budget that stays keeps its account as long as its
// spec is unchanged; one whose spec changed starts afresh, with no share until a grant comes;
// tickets of the accounts replaced settle nothing.
func (l *Ledger) SetBudgets(set Set) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tenantHeader.Store(&set.TenantHeader)
	old := l.byName
	l.set = set
	l.byName = make(map[string]*account, len(set.Budgets))
	l.accts = l.accts[:0:0]
	l.tenant, l.model, l.obj, l.pool, l.everything = map[string][]*account{}, map[string][]*account{}, map[string][]*account{}, map[string][]*account{}, nil
	for i, s := range set.Budgets {
		a := old[s.Name]
		if a == nil || a.spec != s {
			a = &account{spec: s}
		}
		a.index = i
		l.accts = append(l.accts, a)
		l.byName[s.Name] = a
		switch sel := s.Selector; {
		case sel.Tenant != "":
			l.tenant[sel.Tenant] = append(l.tenant[sel.Tenant], a)
		case sel.Model != "":
			l.model[sel.Model] = append(l.model[sel.Model], a)
		case sel.Objective != "":
			l.obj[sel.Objective] = append(l.obj[sel.Objective], a)
		case sel.Pool != "":
			l.pool[sel.Pool] = append(l.pool[sel.Pool], a)
		default:
			l.everything = append(l.everything, a)
		}
	}
}

// Grant applies the hub's grants. A grant for the current window sets the ceilings; the share
// is kept for the windows to come.
func (l *Ledger) Grant(gs []Grant) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, g := range gs {
		a := l.byName[g.Name]
		if a == nil {
			continue
		}
		a.share = min(max(g.Share, 0), 1)
		a.roll(now)
		if g.Window != a.window {
			continue // a grant for a window past (or, with clocks apart, to come)
		}
		a.ceilingTokens, a.ceilingRequests, a.granted = g.CeilingTokens, g.CeilingRequests, true
	}
}

// Request is what the ledger reads of a request at admission.
type Request struct {
	Attributes
	// PromptTokens is the estimate of the prompt's tokens; MaxTokens the request's max_tokens,
	// 0 when it states none.
	PromptTokens, MaxTokens int64
}

// Admit charges a request to every budget that matches it, or refuses it when one of them
// would be overdrawn (then nothing is charged). The ticket settles the charges when the request
// ends.
func (l *Ledger) Admit(r Request, t *Ticket) *Refusal {
	*t = Ticket{}
	out := r.MaxTokens
	if out <= 0 {
		out = l.defaultOutputTokens
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.accts) == 0 {
		return nil
	}
	now := l.now()
	m := l.match(r.Attributes)
	var refusal *Refusal
	for _, a := range m {
		a.roll(now)
		in, o := a.counted(r.PromptTokens, out)
		a.asked += in + o
		if refusal != nil {
			continue
		}
		switch {
		case a.spec.Tokens > 0 && a.usedTokens+in+o > a.paced(a.ceilingTokens, now):
			refusal = a.refusal(now, true, a.usedTokens+in+o)
		case a.spec.Requests > 0 && a.usedRequests+1 > a.paced(a.ceilingRequests, now):
			refusal = a.refusal(now, false, a.usedRequests+1)
		}
	}
	if refusal != nil {
		for _, a := range m {
			a.refused++
			a.refusedTotal++
		}
		return refusal
	}
	t.valid = true
	for _, a := range m {
		in, o := a.counted(r.PromptTokens, out)
		a.usedTokens += in + o
		a.usedRequests++
		a.admittedTotal++
		t.add(reservation{acct: a, window: a.window, in: in, out: o})
	}
	return nil
}

// counted is what the budget counts of a request's input and output tokens.
func (a *account) counted(in, out int64) (int64, int64) {
	switch a.spec.Count {
	case CountInput:
		return in, 0
	case CountOutput:
		return 0, out
	}
	return in, out
}

// paced is what may be charged of ceiling by now: all of it, or with pacing (Spec.Burst) the
// part of it the window's elapsed fraction and the burst allow.
func (a *account) paced(ceiling int64, now time.Time) int64 {
	if a.spec.Burst <= 0 || a.spec.Burst >= 1 {
		return ceiling
	}
	f := float64(now.UnixMilli()-a.window)/float64(a.spec.Window.Milliseconds()) + a.spec.Burst
	return int64(min(f, 1) * float64(ceiling))
}

// refusal describes refusing a charge that would bring the account to need. Reset is the end of
// the window, or with pacing, when the pace allows need, if sooner.
func (a *account) refusal(now time.Time, tokens bool, need int64) *Refusal {
	end := time.UnixMilli(a.window).Add(a.spec.Window.Duration)
	r := &Refusal{Budget: a.spec.Name, Tokens: tokens, Reset: end.Sub(now), Window: a.spec.Window.Duration}
	ceiling, used := a.ceilingRequests, a.usedRequests
	r.Limit = a.spec.Requests
	if tokens {
		ceiling, used, r.Limit = a.ceilingTokens, a.usedTokens, a.spec.Tokens
	}
	r.Remaining = max(a.paced(ceiling, now)-used, 0)
	if p := a.spec.Burst; p > 0 && p < 1 && need <= ceiling && ceiling > 0 {
		f := float64(need)/float64(ceiling) - p
		at := time.UnixMilli(a.window).Add(time.Duration(f * float64(a.spec.Window.Duration)))
		if at.Before(end) {
			r.Reset = max(at.Sub(now), 0)
		}
	}
	return r
}

// match returns the accounts whose selectors match, in the ledger's scratch slice (the lock
// is held).
func (l *Ledger) match(at Attributes) []*account {
	m := l.scratch[:0]
	add := func(as []*account) {
		for _, a := range as {
			if a.spec.Selector.Matches(at) {
				m = append(m, a)
			}
		}
	}
	if at.Tenant != "" {
		add(l.tenant[at.Tenant])
	}
	add(l.model[at.Model])
	add(l.obj[at.Objective])
	add(l.pool[at.Pool])
	add(l.everything)
	l.scratch = m
	return m
}

// Settled is how a request ended, for Settle.
type Settled struct {
	// Responded is false when no response byte came (the request failed or was cancelled
	// before): its reservations are released.
	Responded bool
	// UsageKnown is true when the response reported its usage; then the charges become it.
	// Otherwise a responded request keeps its reservations.
	UsageKnown                 bool
	PromptTokens, OutputTokens int64
}

// Settle ends a ticket: each charge becomes what the request used. A charge of a window that
// has ended changes that window no more; what the request used beyond its reservation is then
// charged to the current window.
func (l *Ledger) Settle(t *Ticket, s Settled) {
	if !t.Held() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	defer func() { t.valid = false }()
	// Declarations changed since admission: accounts that stayed are the same objects, and
	// settling a replaced one, no longer reachable, does no harm.
	now := l.now()
	for i := 0; i < t.n; i++ {
		r := t.at(i)
		a := r.acct
		var in, out int64
		switch {
		case !s.Responded:
		case s.UsageKnown:
			in, out = a.counted(s.PromptTokens, s.OutputTokens)
		default:
			in, out = r.in, r.out
		}
		a.tokensTotal += uint64(in + out)
		a.roll(now)
		delta := in + out - r.in - r.out
		if delta > 0 {
			a.overdrawTotal += uint64(delta)
		}
		if r.window != a.window {
			if delta > 0 {
				a.usedTokens += delta
			}
			continue
		}
		a.usedTokens += delta
		if !s.Responded {
			a.usedRequests--
		}
	}
}

// Report returns each budget's usage for the hub, and restarts the demand's measure.
func (l *Ledger) Report() []Usage {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	dt := now.Sub(l.lastReport).Seconds()
	first := l.lastReport.IsZero()
	l.lastReport = now
	out := make([]Usage, 0, len(l.accts))
	for _, a := range l.accts {
		a.roll(now)
		if !first && dt > 0 {
			rate := float64(a.asked) / dt
			a.demand = demandSmoothing*rate + (1-demandSmoothing)*a.demand
		}
		a.asked = 0
		out = append(out, Usage{Name: a.spec.Name, Window: a.window, UsedTokens: a.usedTokens, UsedRequests: a.usedRequests,
			CeilingTokens: a.ceilingTokens, CeilingRequests: a.ceilingRequests, Demand: a.demand, Share: a.share, Refused: a.refused})
	}
	return out
}

// demandSmoothing weighs the last report interval's rate in the demand.
const demandSmoothing = 0.5

// State is one budget's state at this spoke, for metrics and status pages.
type State struct {
	Usage
	Spec                                                    Spec
	Granted                                                 bool
	AdmittedTotal, RefusedTotal, TokensTotal, OverdrawTotal uint64
}

// States returns every budget's state, by name.
func (l *Ledger) States() []State {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	out := make([]State, 0, len(l.accts))
	for _, a := range l.accts {
		a.roll(now)
		out = append(out, State{Spec: a.spec, Granted: a.granted, AdmittedTotal: a.admittedTotal, RefusedTotal: a.refusedTotal,
			TokensTotal: a.tokensTotal, OverdrawTotal: a.overdrawTotal,
			Usage: Usage{Name: a.spec.Name, Window: a.window, UsedTokens: a.usedTokens, UsedRequests: a.usedRequests,
				CeilingTokens: a.ceilingTokens, CeilingRequests: a.ceilingRequests, Demand: a.demand, Share: a.share, Refused: a.refused}})
	}
	return out
}

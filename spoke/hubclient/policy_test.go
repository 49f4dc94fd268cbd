package hubclient

import (
	"bytes"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
)

// stored returns the pools the export deltas received so far leave the hub with.
func (h *fakeHub) stored() map[fleet.PoolRef]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[fleet.PoolRef]bool{}
	for _, sd := range h.deltas {
		if sd.delta.GetReplaceAll() {
			clear(out)
		}
		for _, e := range sd.delta.GetUpserts() {
			out[fleetpb.PoolRefFrom(e.GetPool())] = true
		}
		for _, p := range sd.delta.GetRemoves() {
			delete(out, fleetpb.PoolRefFrom(p))
		}
	}
	return out
}

// upserted returns the pools the deltas of session (0: of every session) upserted.
func (h *fakeHub) upserted(session int) map[fleet.PoolRef]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[fleet.PoolRef]bool{}
	for _, sd := range h.deltas {
		if session == 0 || sd.session == session {
			for _, e := range sd.delta.GetUpserts() {
				out[fleetpb.PoolRefFrom(e.GetPool())] = true
			}
		}
	}
	return out
}

func pools(ps ...fleet.PoolRef) map[fleet.PoolRef]bool {
	out := map[fleet.PoolRef]bool{}
	for _, p := range ps {
		out[p] = true
	}
	return out
}

func exportsOf(ps ...fleet.PoolRef) []fleet.Export {
	var out []fleet.Export
	for _, p := range ps {
		out = append(out, fleet.Export{Pool: p, TargetPorts: []uint32{8000}})
	}
	return out
}

func capacityOf(ps ...fleet.PoolRef) []fleet.PoolCapacity {
	var out []fleet.PoolCapacity
	for _, p := range ps {
		out = append(out, fleet.PoolCapacity{Pool: p, ReadyEndpoints: 1, TotalEndpoints: 1})
	}
	return out
}

// wantStored waits until the hub holds exactly want.
func wantStored(t *testing.T, h *fakeHub, what string, want map[fleet.PoolRef]bool) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, what, testkit.True(func() bool { return maps.Equal(h.stored(), want) }))
}

// wantRefused checks RefusedExports: the pools and the rule of each.
func wantRefused(t *testing.T, c *Client, want map[fleet.PoolRef]string) {
	t.Helper()
	got := c.RefusedExports()
	if len(got) != len(want) {
		t.Fatalf("RefusedExports() = %v, want %v", got, want)
	}
	for p, rule := range want {
		if r, ok := got[p]; !ok || r.Rule != rule || r.Message == "" {
			t.Fatalf("RefusedExports()[%s] = %+v, want rule %q with a message (all: %v)", p, r, rule, got)
		}
	}
}

// fired waits for ch to be closed, failing the test after 10 s.
func fired(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10 s", what)
	}
}

var (
	poolA = fleet.PoolRef{Namespace: "default", Name: "a"}
	poolB = fleet.PoolRef{Namespace: "default", Name: "b"}
	poolC = fleet.PoolRef{Namespace: "default", Name: "c"}
	pool0 = fleet.PoolRef{Namespace: "default", Name: "0"}
	poolX = fleet.PoolRef{Namespace: "kube-system", Name: "x"}
)

// TestExportsTheHubWouldRefuseAreLeftOut: with the policy of the Welcome, a pool in a denied
// namespace and the pools beyond the cap (after the first ones in pool order) are never sent, nor
// is their capacity; RefusedExports says which and why, and RefusedChanged fires.
func TestExportsTheHubWouldRefuseAreLeftOut(t *testing.T) {
	h := startFakeHub(t)
	h.policy = fleet.ExportPolicy{DeniedNamespaces: []string{"kube-system"}, MaxExports: 2}
	c := h.client(t, "east", "east")
	changed := c.RefusedChanged()
	// Set before the first session, when the client knows no policy yet.
	c.SetExports(exportsOf(poolC, poolX, poolB, poolA))
	c.SetCapacity(capacityOf(poolA, poolB, poolC, poolX))
	if got := c.RefusedExports(); len(got) != 0 {
		t.Fatalf("RefusedExports() before any Welcome = %v, want none", got)
	}
	run(t, c)
	fired(t, changed, "RefusedChanged after the Welcome")
	wantRefused(t, c, map[fleet.PoolRef]string{poolC: fleet.RuleExportLimit, poolX: fleet.RuleNamespace})
	if msg := c.RefusedExports()[poolX].Message; !strings.Contains(msg, "--denied-export-namespaces") {
		t.Errorf("the refusal of %s says %q, want the hub's rule named", poolX, msg)
	}
	wantStored(t, h, "a and b exported", pools(poolA, poolB))
	testkit.Eventually(t, 10*time.Second, "a's and b's capacity", testkit.True(func() bool {
		_, caps, _ := h.seen()
		return slices.Contains(caps, poolA) && slices.Contains(caps, poolB)
	}))
	if up := h.upserted(0); up[poolC] || up[poolX] {
		t.Errorf("the client sent %v, which the hub refuses", up)
	}
	if _, caps, _ := h.seen(); slices.Contains(caps, poolC) || slices.Contains(caps, poolX) {
		t.Errorf("capacity reported for %v, which include left-out pools", caps)
	}

	// A pool that sorts first takes a place under the cap: the choice follows the pool order.
	changed = c.RefusedChanged()
	c.SetExports(exportsOf(poolC, poolX, poolB, poolA, pool0))
	fired(t, changed, "RefusedChanged once 0 takes b's place")
	wantRefused(t, c, map[fleet.PoolRef]string{poolB: fleet.RuleExportLimit, poolC: fleet.RuleExportLimit, poolX: fleet.RuleNamespace})
	wantStored(t, h, "0 and a exported, b withdrawn", pools(pool0, poolA))
	testkit.Eventually(t, 10*time.Second, "b's capacity withdrawn", testkit.True(func() bool {
		_, _, removed := h.seen()
		return slices.Contains(removed, poolB)
	}))

	// Back under the cap: nothing refused for it any more.
	changed = c.RefusedChanged()
	c.SetExports(exportsOf(poolA, poolX))
	fired(t, changed, "RefusedChanged back under the cap")
	wantRefused(t, c, map[fleet.PoolRef]string{poolX: fleet.RuleNamespace})
	wantStored(t, h, "a exported alone", pools(poolA))
	if sessions, _, _ := h.seen(); sessions != 1 {
		t.Errorf("%d sessions, want 1", sessions)
	}
}

// TestANewPolicyResendsTheWholeSet: a delta the hub did not store, recorded under an older
// policy, would break a new one; when the Welcome brings another policy the client resends the
// whole set under it instead, and a policy that allows more sends what it left out.
func TestANewPolicyResendsTheWholeSet(t *testing.T) {
	h := startFakeHub(t)
	c := h.client(t, "east", "east")
	c.SetExports(exportsOf(poolA))
	run(t, c)
	wantStored(t, h, "a exported", pools(poolA))
	c.SetExports(exportsOf(poolA, poolX)) // allowed by this hub: a delta upserting x
	wantStored(t, h, "a and x exported", pools(poolA, poolX))
	h.mu.Lock()
	// The hub stored only the first delta (a) and now denies kube-system.
	h.acked = h.deltas[0].delta.GetSeq()
	h.policy = fleet.ExportPolicy{DeniedNamespaces: []string{"kube-system"}}
	h.mu.Unlock()
	h.push <- nil
	testkit.Eventually(t, 10*time.Second, "a second session", testkit.True(func() bool {
		sessions, _, _ := h.seen()
		return sessions == 2
	}))
	wantStored(t, h, "a exported alone", pools(poolA))
	if up := h.upserted(2); up[poolX] {
		t.Errorf("the second session upserted %v: the delta recorded under the old policy was resent", up)
	}
	h.mu.Lock()
	last := h.deltas[len(h.deltas)-1]
	h.mu.Unlock()
	if last.session != 2 || !last.delta.GetReplaceAll() {
		t.Errorf("the second session's last delta is %v, want a replace_all", last.delta)
	}
	wantRefused(t, c, map[fleet.PoolRef]string{poolX: fleet.RuleNamespace})

	// A third session whose hub allows everything gets x back.
	changed := c.RefusedChanged()
	h.mu.Lock()
	h.acked, h.policy = 0, fleet.ExportPolicy{}
	h.mu.Unlock()
	h.push <- nil
	fired(t, changed, "RefusedChanged under a policy that allows everything")
	wantRefused(t, c, nil)
	wantStored(t, h, "a and x exported again", pools(poolA, poolX))
}

// lockedBuffer is a log destination the test reads while the client writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestLeftOutExportsAreLoggedOnce: a pool left out is logged once as a warning naming the pool
// and the hub's rule (all a spoke with the static source says of it), not again while it stays
// left out; a pool the policy allows again is logged as such.
func TestLeftOutExportsAreLoggedOnce(t *testing.T) {
	h := startFakeHub(t)
	logs := &lockedBuffer{}
	h.logger = slog.New(slog.NewTextHandler(logs, nil))
	h.policy = fleet.ExportPolicy{DeniedNamespaces: []string{"kube-system"}, MaxExports: 1}
	c := h.client(t, "east", "east")
	changed := c.RefusedChanged()
	c.SetExports(exportsOf(poolA, poolX))
	run(t, c)
	fired(t, changed, "RefusedChanged after the Welcome")
	wantStored(t, h, "a exported", pools(poolA))
	for range 3 {
		c.SetExports(exportsOf(poolA, poolX)) // the same set: nothing new to say
	}
	c.SetExports(exportsOf(poolX, poolB)) // a leaves, b takes its place
	wantStored(t, h, "b exported", pools(poolB))
	c.SetExports(exportsOf(poolA, poolX, poolB)) // a is back, b is beyond the cap
	wantStored(t, h, "a exported again", pools(poolA))
	c.SetExports(exportsOf(poolX, poolB)) // a leaves again: b is allowed again
	wantStored(t, h, "b exported again", pools(poolB))

	const leftOut = "export left out: the hub's export policy refuses it"
	var warnX, warnB int
	for _, line := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(line, leftOut) {
			continue
		}
		if !strings.Contains(line, "level=WARN") {
			t.Errorf("not a warning: %s", line)
		}
		switch {
		case strings.Contains(line, "pool=kube-system/x") && strings.Contains(line, "--denied-export-namespaces"):
			warnX++
		case strings.Contains(line, "pool=default/b") && strings.Contains(line, "--max-exports-per-cluster"):
			warnB++
		default:
			t.Errorf("unexpected warning: %s", line)
		}
	}
	if warnX != 1 || warnB != 1 {
		t.Errorf("%d warnings for kube-system/x and %d for default/b, want one each; logs:\n%s", warnX, warnB, logs)
	}
	if !slices.ContainsFunc(strings.Split(logs.String(), "\n"), func(line string) bool {
		return strings.Contains(line, "export no longer left out: the hub's export policy allows it") && strings.Contains(line, "pool=default/b")
	}) {
		t.Errorf("no log that default/b is exported again; logs:\n%s", logs)
	}
}

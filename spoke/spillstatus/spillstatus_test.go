package spillstatus

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/spill"
)

// decider is a fake spill decision.
type decider struct {
	state   spill.State
	policy  spill.Policy
	targets []spill.Remote
}

func (d decider) State() spill.State      { return d.state }
func (d decider) Policy() spill.Policy    { return d.policy }
func (d decider) Targets() []spill.Remote { return d.targets }

func TestHandler(t *testing.T) {
	west := spill.Remote{ClusterID: "us-west-1", Region: "us-west", Gateway: "10.0.1.1:80", Alive: true,
		Age: 120 * time.Millisecond, Saturation: 0.25, ReadyEndpoints: 3, QueueDepth: 1, RTT: 40 * time.Millisecond}
	eu := spill.Remote{ClusterID: "eu-west-1", Region: "eu-west", Gateway: "10.0.2.1:80", Age: 6 * time.Second, Saturated: true, Saturation: 1}
	for _, tc := range []struct {
		name       string
		d          decider
		candidates []spill.Remote
		golden     string
	}{{
		name: "spilling",
		d: decider{
			state:   spill.State{Spilling: true, Since: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC), LastTarget: "us-west-1", LastRegion: "us-west"},
			policy:  spill.DefaultPolicy(),
			targets: []spill.Remote{west},
		},
		candidates: []spill.Remote{eu, west},
		golden:     "testdata/spilling.golden.json",
	}, {
		name:   "no remote cluster",
		d:      decider{policy: spill.DefaultPolicy()},
		golden: "testdata/idle.golden.json",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := Handler(fleet.PoolRef{Namespace: "inference", Name: "chat"}, tc.d, func() []spill.Remote { return tc.candidates })
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/spill", nil))
			if rec.Code != http.StatusOK {
				t.Errorf("status %d, want 200", rec.Code)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(rec.Body.Bytes(), &fields); err != nil {
				t.Fatalf("body is not a JSON object: %v\n%s", err, rec.Body)
			}
			var keys []string
			for k := range fields {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if want := []string{"candidates", "policy", "pool", "state", "targets"}; !slices.Equal(keys, want) {
				t.Errorf("fields %q, want %q", keys, want)
			}
			testkit.Golden(t, tc.golden, rec.Body.Bytes())
		})
	}
}

// Package spillstatus serves the spoke's GET /spill: the spill state and policy of the pool the
// EPP serves, the remote clusters the spoke knows for it, and the ones a spilled request may go
// to now, best first. It is what an operator reads to see why requests spill or stay.
package spillstatus

import (
	"encoding/json"
	"net/http"

	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/spill"
)

// Decider is the pool's spill decision (a *spill.Decider).
type Decider interface {
	State() spill.State
	Policy() spill.Policy
	Targets() []spill.Remote
}

// Report is what GET /spill answers.
type Report struct {
	Pool       string         `json:"pool"`
	State      spill.State    `json:"state"`
	Policy     spill.Policy   `json:"policy"`
	Targets    []spill.Remote `json:"targets"`
	Candidates []spill.Remote `json:"candidates"`
}

// Handler answers every request with the Report of pool, as indented JSON.
func Handler(pool fleet.PoolRef, d Decider, candidates spill.Candidates) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		rep := Report{Pool: pool.String(), State: d.State(), Policy: d.Policy(), Targets: d.Targets(), Candidates: candidates()}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	})
}

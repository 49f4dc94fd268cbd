package faults

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Scenario is one scenario's entry in faults.json.
type Scenario struct {
	Scenario string `json:"scenario"`
	Passed   bool   `json:"passed"`
	// Figures are what the scenario measured, by name (seconds end in _s).
	Figures map[string]any `json:"figures"`
	// Notes say what the figures do not: a must-hold condition that could not be checked, say.
	Notes []string `json:"notes,omitempty"`

	// The top-level figures this scenario contributes to; nil when it measures none.
	falseDead    *int
	detect       *float64
	failover     *float64
	exportsLost  *int
	importsDel   *int
	failedBeyond *int
}

// Report is faults.json: one entry per scenario that ran and the top-level figures, each the
// worst (largest) value over the scenarios that measured it, null when none did.
type Report struct {
	Scenarios                    []*Scenario `json:"scenarios"`
	FalseDeadVerdicts            *int        `json:"false_dead_verdicts"`
	DetectSUnderLoss             *float64    `json:"detect_s_under_loss"`
	HubFailoverS                 *float64    `json:"hub_failover_s"`
	ExportsLost                  *int        `json:"exports_lost"`
	ImportsDeletedSpuriously     *int        `json:"imports_deleted_spuriously"`
	FailedRequestsBeyondInflight *int        `json:"failed_requests_beyond_inflight"`
	// Full is true for a run with the full durations (-faults.full).
	Full bool `json:"full"`
	// Left out names the scenarios of the table this run did not run, with why.
	LeftOut map[string]string `json:"left_out,omitempty"`
	Date    string            `json:"date"`
	Command string            `json:"command"`
	// DurationS is the wall time of the whole run.
	DurationS float64 `json:"duration_s"`
}

// recorder collects the scenarios of a test binary's run.
type recorder struct {
	mu        sync.Mutex
	scenarios []*Scenario
	leftOut   map[string]string
}

var results = &recorder{leftOut: map[string]string{}}

func (r *recorder) add(s *Scenario) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.scenarios = append(r.scenarios, s)
}

func (r *recorder) skip(scenario, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.leftOut[scenario] = why
}

// FalseDead records the scenario's count of false "dead" verdicts.
func (s *Scenario) FalseDead(n int) { s.Figures["false_dead_verdicts"] = n; s.falseDead = &n }

// Detect records a detection time under loss.
func (s *Scenario) Detect(d time.Duration) {
	v := round(d.Seconds())
	s.Figures["detect_s"] = v
	s.detect = &v
}

// Failover records a hub failover time.
func (s *Scenario) Failover(d time.Duration) {
	v := round(d.Seconds())
	s.Figures["hub_failover_s"] = v
	s.failover = &v
}

// ExportsLost records exports lost.
func (s *Scenario) ExportsLost(n int) { s.Figures["exports_lost"] = n; s.exportsLost = &n }

// ImportsDeleted records imports deleted while they should not have been.
func (s *Scenario) ImportsDeleted(n int) {
	s.Figures["imports_deleted_spuriously"] = n
	s.importsDel = &n
}

// FailedBeyondInflight records data-path requests that failed beyond those in flight on a killed
// process.
func (s *Scenario) FailedBeyondInflight(n int) {
	s.Figures["failed_requests_beyond_inflight"] = n
	s.failedBeyond = &n
}

func round(v float64) float64 { return float64(int(v*1000+0.5)) / 1000 }

func worstFloat(ss []*Scenario, get func(*Scenario) *float64) *float64 {
	var out *float64
	for _, s := range ss {
		if v := get(s); v != nil && (out == nil || *v > *out) {
			out = v
		}
	}
	return out
}

// report builds faults.json's content.
func (r *recorder) report(full bool, command string, took time.Duration) Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	ss := slices.Clone(r.scenarios)
	slices.SortStableFunc(ss, func(a, b *Scenario) int { return strings.Compare(a.Scenario, b.Scenario) })
	return Report{
		Scenarios:                    ss,
		FalseDeadVerdicts:            sumInt(ss, func(s *Scenario) *int { return s.falseDead }),
		DetectSUnderLoss:             worstFloat(ss, func(s *Scenario) *float64 { return s.detect }),
		HubFailoverS:                 worstFloat(ss, func(s *Scenario) *float64 { return s.failover }),
		ExportsLost:                  sumInt(ss, func(s *Scenario) *int { return s.exportsLost }),
		ImportsDeletedSpuriously:     sumInt(ss, func(s *Scenario) *int { return s.importsDel }),
		FailedRequestsBeyondInflight: sumInt(ss, func(s *Scenario) *int { return s.failedBeyond }),
		Full:                         full,
		LeftOut:                      r.leftOut,
		Date:                         time.Now().UTC().Format(time.RFC3339),
		Command:                      command,
		DurationS:                    round(took.Seconds()),
	}
}

// sumInt adds up a count over the scenarios that measured it (nil when none did).
func sumInt(ss []*Scenario, get func(*Scenario) *int) *int {
	var out *int
	for _, s := range ss {
		if v := get(s); v != nil {
			if out == nil {
				out = new(int)
			}
			*out += *v
		}
	}
	return out
}

// write writes the report as indented JSON to path.
func (r Report) write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

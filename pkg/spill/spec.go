package spill

import (
	"errors"
	"fmt"
	"time"
)

// PolicySpec is the written form of a policy: the spec of Spillway's SpillPolicy CRD and the
// `spill:` section of the EPP configuration file. Unset fields take DefaultPolicy's values.
type PolicySpec struct {
	EligiblePriorities *struct {
		Min *int `json:"min,omitempty"`
	} `json:"eligiblePriorities,omitempty"`
	TripMark      *float64 `json:"tripMark,omitempty"`
	ClearMark     *float64 `json:"clearMark,omitempty"`
	MinDwell      string   `json:"minDwell,omitempty"`
	TargetRegions []string `json:"targetRegions,omitempty"`
	Mode          Mode     `json:"mode,omitempty"`
	Failover      *struct {
		Standard bool `json:"standard,omitempty"`
	} `json:"failover,omitempty"`
	PrefillTokensPerSecond *float64 `json:"prefillTokensPerSecond,omitempty"`
	Freshness              string   `json:"freshness,omitempty"`
	Fallback               *struct {
		Pool  string `json:"pool,omitempty"`
		Model string `json:"model,omitempty"`
	} `json:"fallback,omitempty"`
	// PoolRef belongs to the CRD; the decision does not read it.
	PoolRef any `json:"poolRef,omitempty"`
}

// Policy applies the spec to the defaults and validates the result; the error names every
// problem.
func (s PolicySpec) Policy() (Policy, error) {
	p := DefaultPolicy()
	var errs []error
	if s.EligiblePriorities != nil && s.EligiblePriorities.Min != nil {
		p.MinPriority = *s.EligiblePriorities.Min
	}
	if s.TripMark != nil {
		p.TripMark = *s.TripMark
	}
	if s.ClearMark != nil {
		p.ClearMark = *s.ClearMark
	}
	for _, d := range []struct {
		name string
		in   string
		out  *time.Duration
	}{{"minDwell", s.MinDwell, &p.MinDwell}, {"freshness", s.Freshness, &p.Freshness}} {
		if d.in == "" {
			continue
		}
		v, err := time.ParseDuration(d.in)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", d.name, d.in, err))
			continue
		}
		*d.out = v
	}
	p.TargetRegions = s.TargetRegions
	if s.Mode != "" {
		p.Mode = s.Mode
	}
	if s.Failover != nil {
		p.FailoverStandard = s.Failover.Standard
	}
	if s.Fallback != nil {
		p.FallbackPool, p.FallbackModel = s.Fallback.Pool, s.Fallback.Model
	}
	if s.PrefillTokensPerSecond != nil {
		p.PrefillTokensPerSecond = *s.PrefillTokensPerSecond
	}
	errs = append(errs, p.Validate())
	if err := errors.Join(errs...); err != nil {
		return Policy{}, err
	}
	return p, nil
}

package epp

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/spillway-io/spillway/pkg/capacity"
	"github.com/spillway-io/spillway/pkg/epp/scheduler"
	"github.com/spillway-io/spillway/pkg/spill"
)

// Priority aliases of Spillway's configuration. GIE's InferenceObjective priority is an integer:
// higher is more important, below zero is sheddable, zero is the default.
const (
	PriorityCritical   = 100
	PriorityStandard   = 0
	PriorityBestEffort = -1
)

// ErrInvalidConfig marks a configuration that cannot be used.
var ErrInvalidConfig = errors.New("invalid EPP configuration")

// FileConfig is the YAML form of the EPP's configuration (--epp-config):
//
//	scorers:                       # GIE scorer names and weights
//	  queue-scorer: 2
//	  kv-cache-utilization-scorer: 2
//	  prefix-cache-scorer: 3
//	  lora-affinity-scorer: 1
//	fallbacks: 2                   # next-best endpoints after the pick
//	saturation: {queueDepth: 5, kvCacheUtilization: 0.8, staleness: 200ms}
//	maxBodyBytes: 8388608
//	prefixCache: {lruCapacityPerServer: 31250} # prefix blocks remembered per endpoint
//	retryAfter: 1s                 # Retry-After of a shed (429) answer
//	defaultPriority: Standard
//	objectives:                    # InferenceObjective name → priority, latency objective, cap
//	- {name: chat-critical, priority: Critical, ttft: 500ms}
//	- {name: batch, priority: BestEffort, maxShare: 0.25}
//	- {name: tuned, priority: 10, maxConcurrency: 16}
//	slotsPerEndpoint: 8            # requests an endpoint serves at once (maxShare's basis)
//	adapters: [sql-lora]           # models that are LoRA adapters of the pool's base model
//	models:                        # model routing by the body's "model"
//	- name: chat
//	  targets: [{model: chat-v1, weight: 90}, {model: chat-v2, weight: 10}]
//	  fallback: chat-small         # used when no target has a ready endpoint
//	  objective: chat-critical     # of a request for chat that names no objective
//	spill:                         # federated routing (docs/federation.md); SpillPolicy's spec
//	  eligiblePriorities: {min: 100}
//	  tripMark: 0.9
//	  clearMark: 0.7
//	  minDwell: 10s
type FileConfig struct {
	Scorers         map[string]float64 `json:"scorers,omitempty"`
	Fallbacks       *int               `json:"fallbacks,omitempty"`
	Saturation      *FileSaturation    `json:"saturation,omitempty"`
	MaxBodyBytes    int                `json:"maxBodyBytes,omitempty"`
	RetryAfter      string             `json:"retryAfter,omitempty"`
	DefaultPriority *PriorityValue     `json:"defaultPriority,omitempty"`
	Objectives      []FileObjective    `json:"objectives,omitempty"`
	Adapters        []string           `json:"adapters,omitempty"`
	Models          []ModelRoute       `json:"models,omitempty"`
	Spill           *spill.PolicySpec  `json:"spill,omitempty"`
	PrefixCache     *FilePrefixCache   `json:"prefixCache,omitempty"`
	FlowControl     *FileFlowControl   `json:"flowControl,omitempty"`
	// SlotsPerEndpoint is how many requests one endpoint serves at once (vLLM's
	// --max-num-seqs): an objective's maxShare is a share of the candidates' slots.
	SlotsPerEndpoint int `json:"slotsPerEndpoint,omitempty"`
}

// FileFlowControl turns flow control on (flow.go): while the pool is saturated, requests below
// holdBelow wait in the EPP (at most maxQueue of them, each at most timeout) and go, highest
// priority first, as the pool's requests end.
type FileFlowControl struct {
	Enabled   bool           `json:"enabled"`
	HoldBelow *PriorityValue `json:"holdBelow,omitempty"`
	// QueueDepth, when set, holds from when every candidate's waiting queue is at least this
	// (below the saturation detector's, so that the servers' queues stay short); the
	// saturation detector's queueDepth when zero.
	QueueDepth int    `json:"queueDepth,omitempty"`
	MaxQueue   int    `json:"maxQueue,omitempty"`
	Timeout    string `json:"timeout,omitempty"`
}

// FlowControl is flow control's validated settings.
type FlowControl struct {
	Enabled    bool
	HoldBelow  int
	QueueDepth int // 0: the saturation detector's
	MaxQueue   int
	Timeout    time.Duration
}

// FilePrefixCache sizes the prefix index as GIE's prefix-cache-scorer's parameter does: the
// blocks (64 bytes of prompt each) remembered per endpoint, best set to what a server's KV
// cache holds (its GPU blocks × block size in tokens × about 4 bytes a token ÷ 64).
type FilePrefixCache struct {
	LRUCapacityPerServer int `json:"lruCapacityPerServer,omitempty"`
}

// FileSaturation is the saturation detector's section.
type FileSaturation struct {
	QueueDepth         int     `json:"queueDepth,omitempty"`
	KVCacheUtilization float64 `json:"kvCacheUtilization,omitempty"`
	Staleness          string  `json:"staleness,omitempty"`
}

// FileObjective binds an InferenceObjective name to a priority, and optionally a latency
// objective and a capacity cap (objectives.go). Where the cluster's InferenceObjectives give the
// priorities, an entry's ttft and caps still apply to the objective of its name.
type FileObjective struct {
	Name     string        `json:"name"`
	Priority PriorityValue `json:"priority"`
	// TTFT is the time to first token the objective needs: an eligible request (the spill
	// policy's priorities) that would wait longer here spills to a cluster expected to meet
	// it, even before the pool trips; when none is, a sheddable request is shed.
	TTFT string `json:"ttft,omitempty"`
	// MaxConcurrency caps the objective's requests in flight in the pool.
	MaxConcurrency int `json:"maxConcurrency,omitempty"`
	// MaxShare caps them at a share (0, 1] of the slots of the endpoints that can take the
	// request (slotsPerEndpoint each). With both, the lower cap applies.
	MaxShare float64 `json:"maxShare,omitempty"`
}

// ObjectiveLimits are an objective's latency objective and capacity caps (0: none).
type ObjectiveLimits struct {
	TTFT           time.Duration
	MaxConcurrency int
	MaxShare       float64
}

// limits checks and returns the entry's latency objective and caps.
func (o FileObjective) limits() (ObjectiveLimits, error) {
	var l ObjectiveLimits
	var errs []error
	if o.TTFT != "" {
		d, err := time.ParseDuration(o.TTFT)
		if err != nil || d < time.Millisecond || d > 10*time.Minute {
			errs = append(errs, fmt.Errorf("ttft %q: want a duration from 1ms to 10m", o.TTFT))
		}
		l.TTFT = d
	}
	if o.MaxConcurrency < 0 || o.MaxConcurrency > 1_000_000 {
		errs = append(errs, fmt.Errorf("maxConcurrency %d: want 0..1000000", o.MaxConcurrency))
	}
	l.MaxConcurrency = o.MaxConcurrency
	if !(o.MaxShare >= 0 && o.MaxShare <= 1) {
		errs = append(errs, fmt.Errorf("maxShare %v: want (0, 1]", o.MaxShare))
	}
	l.MaxShare = o.MaxShare
	return l, errors.Join(errs...)
}

// PriorityValue is an integer or one of Critical, Standard, BestEffort.
type PriorityValue int

// UnmarshalJSON accepts an integer or an alias. Its error is a type error, which encoding/json
// completes with the field's path (defaultPriority, objectives.priority).
func (p *PriorityValue) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	switch strings.ToLower(s) {
	case "critical":
		*p = PriorityCritical
	case "standard":
		*p = PriorityStandard
	case "besteffort", "best-effort":
		*p = PriorityBestEffort
	default:
		n, err := strconv.Atoi(s)
		if err != nil {
			return &json.UnmarshalTypeError{Value: string(b) + " (want an integer or Critical, Standard, BestEffort)", Type: reflect.TypeFor[PriorityValue]()}
		}
		*p = PriorityValue(n)
	}
	return nil
}

// ModelRoute rewrites a requested model.
type ModelRoute struct {
	// Name is the model a client asks for.
	Name string `json:"name"`
	// Targets are the models it is sent as, chosen by weight; empty keeps the name.
	Targets []ModelTarget `json:"targets,omitempty"`
	// Fallback is the model used when no target has a ready endpoint.
	Fallback string `json:"fallback,omitempty"`
	// Objective is the objective of a request for this model that names none (no
	// x-gateway-inference-objective header): one route carries several models, each with its
	// own priority. An objective the EPP does not know counts as none.
	Objective string `json:"objective,omitempty"`
}

// ModelTarget is one weighted target.
type ModelTarget struct {
	Model  string `json:"model"`
	Weight int    `json:"weight"`
}

// Settings is the validated configuration.
type Settings struct {
	// ThresholdsSet is true when the file set the saturation section; WeightsSet when it set
	// the scorers.
	ThresholdsSet   bool
	WeightsSet      bool
	Weights         map[string]float64
	Fallbacks       int
	Thresholds      capacity.Thresholds
	MaxBodyBytes    int
	RetryAfter      time.Duration
	DefaultPriority int
	Objectives      map[string]int
	// PrefixBlocksPerEndpoint bounds the prefix index per endpoint; 0 is GIE's default, 31,250.
	PrefixBlocksPerEndpoint int
	Adapters                map[string]bool
	Models                  map[string]ModelRoute
	// Spill is the pool's spill policy when no SpillPolicy object names it.
	Spill spill.Policy
	// FlowControl holds lower priorities in the EPP while the pool is saturated (off unless
	// the file turns it on).
	FlowControl FlowControl
	// Limits are the objectives' latency objectives and capacity caps, by name.
	Limits           map[string]ObjectiveLimits
	SlotsPerEndpoint int
}

// DefaultSettings returns the configuration with no file.
func DefaultSettings() Settings {
	return Settings{
		Weights:      scheduler.DefaultWeights(),
		Fallbacks:    2,
		Thresholds:   capacity.DefaultThresholds(),
		MaxBodyBytes: 8 << 20,
		RetryAfter:   time.Second,
		Objectives:   map[string]int{},
		Limits:       map[string]ObjectiveLimits{},
		Adapters:     map[string]bool{},
		Models:       map[string]ModelRoute{},
		Spill:        spill.DefaultPolicy(),
		FlowControl:  FlowControl{HoldBelow: int(PriorityCritical), MaxQueue: 1024, Timeout: 30 * time.Second},
	}
}

// ParseConfig reads and checks a YAML configuration; the error names every problem.
func ParseConfig(data []byte) (Settings, error) {
	s := DefaultSettings()
	var f FileConfig
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return Settings{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	var errs []error
	if f.Scorers != nil {
		s.Weights, s.WeightsSet = f.Scorers, true
	}
	if _, err := scheduler.New(scheduler.Options{Weights: s.Weights}); err != nil {
		errs = append(errs, fmt.Errorf("scorers: %w", err))
	}
	if pc := f.PrefixCache; pc != nil {
		if pc.LRUCapacityPerServer < 1 || pc.LRUCapacityPerServer > 10_000_000 {
			errs = append(errs, fmt.Errorf("prefixCache.lruCapacityPerServer %d: want 1..10000000", pc.LRUCapacityPerServer))
		}
		s.PrefixBlocksPerEndpoint = pc.LRUCapacityPerServer
	}
	if f.Fallbacks != nil {
		if *f.Fallbacks < 0 || *f.Fallbacks > 16 {
			errs = append(errs, fmt.Errorf("fallbacks %d: want 0..16", *f.Fallbacks))
		}
		s.Fallbacks = *f.Fallbacks
	}
	if sat := f.Saturation; sat != nil {
		s.ThresholdsSet = true
		if sat.QueueDepth != 0 {
			s.Thresholds.QueueDepth = sat.QueueDepth
		}
		if sat.KVCacheUtilization != 0 {
			s.Thresholds.KVCacheUtilization = sat.KVCacheUtilization
		}
		if sat.Staleness != "" {
			d, err := time.ParseDuration(sat.Staleness)
			if err != nil || d <= 0 {
				errs = append(errs, fmt.Errorf("saturation.staleness %q: want a positive duration", sat.Staleness))
			}
			s.Thresholds.Staleness = d
		}
		if s.Thresholds.QueueDepth < 1 {
			errs = append(errs, fmt.Errorf("saturation.queueDepth %d: want at least 1", s.Thresholds.QueueDepth))
		}
		if kv := s.Thresholds.KVCacheUtilization; !(kv > 0 && kv <= 1) {
			errs = append(errs, fmt.Errorf("saturation.kvCacheUtilization %v: want (0, 1]", kv))
		}
	}
	if f.MaxBodyBytes != 0 {
		if f.MaxBodyBytes < 1024 || f.MaxBodyBytes > 256<<20 {
			errs = append(errs, fmt.Errorf("maxBodyBytes %d: want 1 KiB..256 MiB", f.MaxBodyBytes))
		}
		s.MaxBodyBytes = f.MaxBodyBytes
	}
	if f.RetryAfter != "" {
		d, err := time.ParseDuration(f.RetryAfter)
		if err != nil || d < time.Second {
			errs = append(errs, fmt.Errorf("retryAfter %q: want a duration of at least 1s", f.RetryAfter))
		}
		s.RetryAfter = d
	}
	if f.DefaultPriority != nil {
		s.DefaultPriority = int(*f.DefaultPriority)
	}
	for i, o := range f.Objectives {
		if o.Name == "" {
			errs = append(errs, fmt.Errorf("objectives[%d]: name is required", i))
			continue
		}
		if _, dup := s.Objectives[o.Name]; dup {
			errs = append(errs, fmt.Errorf("objectives[%d]: %q listed twice", i, o.Name))
		}
		s.Objectives[o.Name] = int(o.Priority)
		lim, err := o.limits()
		if err != nil {
			errs = append(errs, fmt.Errorf("objectives[%d] (%s): %w", i, o.Name, err))
		}
		if lim != (ObjectiveLimits{}) {
			s.Limits[o.Name] = lim
		}
		if lim.MaxShare > 0 && f.SlotsPerEndpoint == 0 {
			errs = append(errs, fmt.Errorf("objectives[%d] (%s): maxShare needs slotsPerEndpoint, the requests an endpoint serves at once", i, o.Name))
		}
	}
	if f.SlotsPerEndpoint < 0 || f.SlotsPerEndpoint > 1_000_000 {
		errs = append(errs, fmt.Errorf("slotsPerEndpoint %d: want 0..1000000", f.SlotsPerEndpoint))
	}
	s.SlotsPerEndpoint = f.SlotsPerEndpoint
	for _, a := range f.Adapters {
		s.Adapters[a] = true
	}
	for i, m := range f.Models {
		where := fmt.Sprintf("models[%d] (%s)", i, m.Name)
		if m.Name == "" {
			errs = append(errs, fmt.Errorf("%s: name is required", where))
		}
		if _, dup := s.Models[m.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: listed twice", where))
		}
		total, overflow := 0, false
		for j, t := range m.Targets {
			if t.Model == "" || t.Weight < 0 {
				errs = append(errs, fmt.Errorf("%s: targets[%d] needs a model and a weight >= 0", where, j))
			}
			// The weights' sum bounds a random draw per request: it must be positive and an int.
			if w := max(t.Weight, 0); w > math.MaxInt-total {
				overflow = true
			} else {
				total += w
			}
		}
		switch {
		case overflow:
			errs = append(errs, fmt.Errorf("%s: target weights add up to more than %d", where, math.MaxInt))
		case len(m.Targets) > 0 && total == 0:
			errs = append(errs, fmt.Errorf("%s: target weights add up to 0", where))
		}
		s.Models[m.Name] = m
	}
	if fc := f.FlowControl; fc != nil {
		s.FlowControl.Enabled = fc.Enabled
		if fc.HoldBelow != nil {
			s.FlowControl.HoldBelow = int(*fc.HoldBelow)
		}
		if fc.QueueDepth < 0 || fc.QueueDepth > 1_000_000 {
			errs = append(errs, fmt.Errorf("flowControl.queueDepth %d: want 0..1000000", fc.QueueDepth))
		}
		s.FlowControl.QueueDepth = fc.QueueDepth
		if fc.MaxQueue != 0 {
			if fc.MaxQueue < 1 || fc.MaxQueue > 1_000_000 {
				errs = append(errs, fmt.Errorf("flowControl.maxQueue %d: want 1..1000000", fc.MaxQueue))
			}
			s.FlowControl.MaxQueue = fc.MaxQueue
		}
		if fc.Timeout != "" {
			d, err := time.ParseDuration(fc.Timeout)
			if err != nil || d < 100*time.Millisecond || d > 10*time.Minute {
				errs = append(errs, fmt.Errorf("flowControl.timeout %q: want a duration from 100ms to 10m", fc.Timeout))
			}
			s.FlowControl.Timeout = d
		}
	}
	if f.Spill != nil {
		p, err := f.Spill.Policy()
		if err != nil {
			errs = append(errs, fmt.Errorf("spill: %w", err))
		}
		s.Spill = p
	}
	if err := errors.Join(errs...); err != nil {
		return Settings{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return s, nil
}

package epp

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/spillway-io/spillway/pkg/epp/scheduler"
)

// GIE's EndpointPickerConfig (inference.networking.x-k8s.io/v1alpha1, GIE v1.5.0's
// apix/config/v1alpha1), the file GIE's EPP takes with --config-file: Spillway's EPP reads the
// scorers and weights of its one scheduling profile, so that a GIE install can swap its EPP image
// for Spillway's and keep its configuration. docs/epp.md lists what it takes and refuses.
const (
	gieConfigAPIVersion = "inference.networking.x-k8s.io/v1alpha1"
	gieConfigKind       = "EndpointPickerConfig"
)

type gieConfig struct {
	APIVersion         string          `json:"apiVersion"`
	Kind               string          `json:"kind"`
	FeatureGates       []string        `json:"featureGates,omitempty"`
	Plugins            []giePlugin     `json:"plugins"`
	SchedulingProfiles []gieProfile    `json:"schedulingProfiles"`
	SaturationDetector *gieRef         `json:"saturationDetector,omitempty"`
	DataLayer          *gieDataLayer   `json:"dataLayer,omitempty"`
	FlowControl        json.RawMessage `json:"flowControl,omitempty"`
	Parser             *gieRef         `json:"parser,omitempty"`
}

type giePlugin struct {
	Name       string          `json:"name,omitempty"`
	Type       string          `json:"type"`
	Parameters json.RawMessage `json:"parameters,omitempty"`
}

type gieProfile struct {
	Name    string `json:"name"`
	Plugins []struct {
		PluginRef string   `json:"pluginRef"`
		Weight    *float64 `json:"weight,omitempty"`
	} `json:"plugins"`
}

type gieRef struct {
	PluginRef string `json:"pluginRef"`
}

type gieDataLayer struct {
	Sources []struct {
		PluginRef  string   `json:"pluginRef"`
		Extractors []gieRef `json:"extractors,omitempty"`
	} `json:"sources"`
}

// The plugin types of GIE's EPP that Spillway's implements: its four scorers, the picker of the
// best score, the one-profile handler, and the metrics source and extractor (the spoke's scraper).
const (
	gieMaxScorePicker   = "max-score-picker"
	gieSingleProfile    = "single-profile-handler"
	gieMetricsSource    = "metrics-data-source"
	gieMetricsExtractor = "core-metrics-extractor"
)

var gieScorers = []string{scheduler.QueueScorer, scheduler.KVCacheScorer, scheduler.PrefixCacheScorer, scheduler.LoRAScorer}

// ParseGIEConfig reads a GIE EndpointPickerConfig and returns the scorer weights of its
// scheduling profile (a scorer the profile names without a weight weighs 1, as in GIE). It
// refuses what Spillway's EPP does not implement, naming it: other plugin types, several
// profiles, flow control, a request parser, feature gates, a metrics source on another path.
func ParseGIEConfig(data []byte) (map[string]float64, error) {
	var c gieConfig
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("%w: EndpointPickerConfig: %w", ErrInvalidConfig, err)
	}
	if c.APIVersion != gieConfigAPIVersion || c.Kind != gieConfigKind {
		return nil, fmt.Errorf("%w: apiVersion %q kind %q: want %s %s", ErrInvalidConfig, c.APIVersion, c.Kind, gieConfigAPIVersion, gieConfigKind)
	}
	var errs []error
	types := map[string]string{} // plugin name → type
	var unknown []string
	for i, p := range c.Plugins {
		name := p.Name
		if name == "" {
			name = p.Type
		}
		if _, dup := types[name]; dup {
			errs = append(errs, fmt.Errorf("plugins[%d]: a second plugin named %q", i, name))
		}
		types[name] = p.Type
		switch {
		case slices.Contains(gieScorers, p.Type), p.Type == gieMaxScorePicker, p.Type == gieSingleProfile, p.Type == gieMetricsExtractor:
		case p.Type == gieMetricsSource:
			if err := checkMetricsSource(p.Parameters); err != nil {
				errs = append(errs, fmt.Errorf("plugins[%d] %s: %w", i, p.Type, err))
			}
		default:
			unknown = append(unknown, p.Type)
		}
	}
	if len(unknown) > 0 {
		errs = append(errs, fmt.Errorf("plugin types Spillway's EPP does not implement: %s (it implements %s, %s, %s, %s, %s)",
			strings.Join(unknown, ", "), strings.Join(gieScorers, ", "), gieMaxScorePicker, gieSingleProfile, gieMetricsSource, gieMetricsExtractor))
	}
	if len(c.FeatureGates) > 0 {
		errs = append(errs, fmt.Errorf("featureGates %v: none is implemented", c.FeatureGates))
	}
	if len(c.FlowControl) > 0 && string(c.FlowControl) != "null" {
		errs = append(errs, errors.New("flowControl: the EPP keeps no queue of its own (requests wait in the model servers')"))
	}
	if c.Parser != nil && c.Parser.PluginRef != "" {
		errs = append(errs, fmt.Errorf("parser %q: the EPP reads OpenAI completions and chat bodies only", c.Parser.PluginRef))
	}
	if c.SaturationDetector != nil && c.SaturationDetector.PluginRef != "" {
		errs = append(errs, fmt.Errorf("saturationDetector %q: the EPP's detector is configured by --epp-config's saturation section", c.SaturationDetector.PluginRef))
	}
	if c.DataLayer != nil {
		for _, s := range c.DataLayer.Sources {
			refs := []string{s.PluginRef}
			for _, e := range s.Extractors {
				refs = append(refs, e.PluginRef)
			}
			for _, r := range refs {
				if t, ok := types[r]; !ok || t != gieMetricsSource && t != gieMetricsExtractor {
					errs = append(errs, fmt.Errorf("dataLayer names %q: want a declared %s or %s", r, gieMetricsSource, gieMetricsExtractor))
				}
			}
		}
	}
	weights := map[string]float64{}
	switch len(c.SchedulingProfiles) {
	case 0:
		errs = append(errs, errors.New("schedulingProfiles: none; want one"))
	case 1:
		for _, ref := range c.SchedulingProfiles[0].Plugins {
			t, ok := types[ref.PluginRef]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("schedulingProfiles[0] names plugin %q, which plugins does not declare", ref.PluginRef))
			case slices.Contains(gieScorers, t):
				w := 1.0
				if ref.Weight != nil {
					w = *ref.Weight
				}
				if !(w >= 0) || math.IsInf(w, 0) {
					errs = append(errs, fmt.Errorf("schedulingProfiles[0] %s: weight %v must not be negative (nor infinite)", ref.PluginRef, w))
				}
				weights[t] += w
			case t == gieMaxScorePicker:
			default:
				errs = append(errs, fmt.Errorf("schedulingProfiles[0] names %s (%s), which is no scorer or picker", ref.PluginRef, t))
			}
		}
	default:
		errs = append(errs, fmt.Errorf("schedulingProfiles: %d profiles; Spillway's EPP schedules with one (no prefill/decode split)", len(c.SchedulingProfiles)))
	}
	for t, w := range weights {
		if math.IsInf(w, 0) {
			errs = append(errs, fmt.Errorf("schedulingProfiles[0]: %s's weights add up to %v", t, w))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: EndpointPickerConfig: %w", ErrInvalidConfig, err)
	}
	return weights, nil
}

// checkMetricsSource accepts a metrics-data-source that reads /metrics over HTTP, as the
// spoke's scraper does.
func checkMetricsSource(params json.RawMessage) error {
	if len(params) == 0 || string(params) == "null" {
		return nil
	}
	var p struct {
		Scheme             string `json:"scheme"`
		Path               string `json:"path"`
		InsecureSkipVerify *bool  `json:"insecureSkipVerify"`
	}
	if err := json.Unmarshal(params, &p); err != nil {
		return err
	}
	if p.Scheme != "" && p.Scheme != "http" {
		return fmt.Errorf("scheme %q: the spoke scrapes model servers over http", p.Scheme)
	}
	if p.Path != "" && p.Path != "/metrics" {
		return fmt.Errorf("path %q: the spoke reads each endpoint's metrics path from its InferencePool's Pods (default /metrics)", p.Path)
	}
	return nil
}

package epp

import (
	"errors"
	"maps"
	"math"
	"os"
	"strings"
	"testing"
)

// TestParseGIEConfig: GIE's default configuration gives its weights; what the EPP does not
// implement is refused, naming it.
func TestParseGIEConfig(t *testing.T) {
	page, err := os.ReadFile("testdata/gie-v1.5.0-default-plugins.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w, err := ParseGIEConfig(page)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]float64{"queue-scorer": 2, "kv-cache-utilization-scorer": 2, "prefix-cache-scorer": 3}; !maps.Equal(w, want) {
		t.Fatalf("weights %v, want GIE's %v", w, want)
	}
	const head = "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\n"
	// A named plugin, a scorer without a weight (1, as in GIE) and the picker.
	w, err = ParseGIEConfig([]byte(head + "plugins:\n- {name: lora, type: lora-affinity-scorer}\n- {type: queue-scorer}\n- {type: max-score-picker}\n" +
		"schedulingProfiles:\n- name: default\n  plugins:\n  - {pluginRef: lora}\n  - {pluginRef: queue-scorer, weight: 0.5}\n  - {pluginRef: max-score-picker}\n"))
	if err != nil || !maps.Equal(w, map[string]float64{"lora-affinity-scorer": 1, "queue-scorer": 0.5}) {
		t.Fatalf("weights %v, %v", w, err)
	}
	for _, tc := range []struct{ doc, want string }{
		{"apiVersion: v1\nkind: ConfigMap\n", `kind "ConfigMap"`},
		{head + "plugins:\n- {type: prefill-filter}\n- {type: decode-filter}\n- {type: queue-scorer}\nschedulingProfiles:\n- {name: default, plugins: [{pluginRef: queue-scorer}]}\n",
			"plugin types Spillway's EPP does not implement: prefill-filter, decode-filter"},
		{head + "plugins:\n- {type: queue-scorer}\nschedulingProfiles:\n- {name: prefill, plugins: [{pluginRef: queue-scorer}]}\n- {name: decode, plugins: [{pluginRef: queue-scorer}]}\n",
			"2 profiles"},
		{head + "plugins:\n- {type: queue-scorer}\nschedulingProfiles:\n- {name: default, plugins: [{pluginRef: kv}]}\n", `names plugin "kv"`},
		{head + "plugins:\n- {type: queue-scorer}\nschedulingProfiles:\n- {name: default, plugins: [{pluginRef: queue-scorer, weight: -1}]}\n", "must not be negative"},
		{head + "plugins:\n- {type: metrics-data-source, parameters: {path: /stats}}\nschedulingProfiles:\n- {name: default, plugins: []}\n", `path "/stats"`},
		{head + "plugins: []\nschedulingProfiles:\n- {name: default, plugins: []}\nflowControl: {maxRequests: 10}\n", "flowControl"},
		{head + "featureGates: [dataLayer]\nplugins: []\nschedulingProfiles:\n- {name: default, plugins: []}\n", "featureGates"},
		{head + "plugins: []\nschedulingProfiles: []\n", "none; want one"},
		{head + "plugins: []\nschedulingProfiles:\n- {name: default, plugins: []}\nsurprise: 1\n", "surprise"},
	} {
		_, err := ParseGIEConfig([]byte(tc.doc))
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an invalid-configuration error saying %q", tc.doc, err, tc.want)
		}
	}
}

// FuzzParseGIEConfig: any input gives weights that make a scheduler, or an invalid-configuration
// error; never a panic.
func FuzzParseGIEConfig(f *testing.F) {
	if page, err := os.ReadFile("testdata/gie-v1.5.0-default-plugins.yaml"); err == nil {
		f.Add(page)
	}
	f.Add([]byte("apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins: [{type: queue-scorer}]\nschedulingProfiles: [{name: d, plugins: [{pluginRef: queue-scorer, weight: 1e308}]}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := ParseGIEConfig(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v is not ErrInvalidConfig", err)
			}
			return
		}
		for name, v := range w {
			if !(v >= 0) || math.IsInf(v, 0) {
				t.Fatalf("weight %s = %v accepted", name, v)
			}
		}
	})
}

package epp

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pkg/epp/request"
	"github.com/spillway-io/spillway/pkg/epp/scheduler"
)

// badConfigs are configurations ParseConfig refuses, each with what its error must say: the
// field, and the value or the rule where that helps.
var badConfigs = []struct {
	name string
	yaml string
	want []string
}{
	{"unknown key", "bogus: 1", []string{`unknown field "bogus"`}},
	{"unknown key in a section", "saturation: {queueDeph: 3}", []string{`unknown field "queueDeph"`}},
	{"prefix index of no block", "prefixCache: {lruCapacityPerServer: 0}", []string{"prefixCache.lruCapacityPerServer 0"}},
	{"not a mapping", "- scorers", []string{"cannot unmarshal array", "FileConfig"}},
	{"unknown scorer", "scorers: {nope: 1}", []string{"scorers", `"nope"`}},
	{"negative scorer weight", "scorers: {queue-scorer: -1}", []string{"scorers", `"queue-scorer"`, "negative"}},
	{"scorer weight not a number", "scorers: {queue-scorer: high}", []string{"FileConfig.scorers"}},
	// YAML-to-JSON conversion refuses NaN before any field is known; the value is what it names.
	{"NaN scorer weight", "scorers: {queue-scorer: .nan}", []string{"NaN"}},
	{"negative fallbacks", "fallbacks: -1", []string{"fallbacks -1", "0..16"}},
	{"too many fallbacks", "fallbacks: 17", []string{"fallbacks 17", "0..16"}},
	{"fallbacks not a number", "fallbacks: two", []string{"FileConfig.fallbacks"}},
	{"queue depth below 1", "saturation: {queueDepth: -1}", []string{"saturation.queueDepth -1"}},
	{"KV-cache utilization above 1", "saturation: {kvCacheUtilization: 1.5}", []string{"saturation.kvCacheUtilization 1.5", "(0, 1]"}},
	{"negative KV-cache utilization", "saturation: {kvCacheUtilization: -0.5}", []string{"saturation.kvCacheUtilization -0.5"}},
	{"zero staleness", "saturation: {staleness: 0s}", []string{`saturation.staleness "0s"`, "positive"}},
	{"staleness not a duration", "saturation: {staleness: soon}", []string{`saturation.staleness "soon"`}},
	{"body limit too small", "maxBodyBytes: 10", []string{"maxBodyBytes 10", "1 KiB"}},
	{"body limit too large", "maxBodyBytes: 1e12", []string{"maxBodyBytes 1000000000000", "256 MiB"}},
	{"retry-after below 1s", "retryAfter: 10ms", []string{`retryAfter "10ms"`, "at least 1s"}},
	{"retry-after not a duration", "retryAfter: later", []string{`retryAfter "later"`}},
	{"flow control queue of none", "flowControl: {enabled: true, maxQueue: -1}", []string{"flowControl.maxQueue -1"}},
	{"flow control timeout too short", "flowControl: {enabled: true, timeout: 1ms}", []string{`flowControl.timeout "1ms"`}},
	{"flow control unknown field", "flowControl: {enabled: true, queue: 3}", []string{"unknown field"}},
	{"unknown priority name", "defaultPriority: urgent", []string{"FileConfig.defaultPriority", `"urgent"`, "Critical, Standard, BestEffort"}},
	{"fractional priority", "defaultPriority: 1.5", []string{"FileConfig.defaultPriority", "1.5"}},
	{"objective without a name", "objectives: [{priority: 1}]", []string{"objectives[0]", "name is required"}},
	{"objective with a bad priority", "objectives: [{name: a, priority: nope}]", []string{"FileObjective.objectives.priority", `"nope"`}},
	{"objective listed twice", "objectives: [{name: a}, {name: a}]", []string{"objectives[1]", `"a" listed twice`}},
	{"model route without a name", "models: [{targets: [{model: a, weight: 1}]}]", []string{"models[0]", "name is required"}},
	{"model route listed twice", "models: [{name: chat}, {name: chat}]", []string{"models[1] (chat)", "listed twice"}},
	{"negative target weight", "models: [{name: chat, targets: [{model: v1, weight: -1}]}]", []string{"models[0] (chat)", "targets[0]", "weight >= 0"}},
	{"target without a model", "models: [{name: chat, targets: [{weight: 1}]}]", []string{"models[0] (chat)", "targets[0]", "needs a model"}},
	{"target weights add up to 0", "models: [{name: chat, targets: [{model: v1, weight: 0}, {model: v2, weight: 0}]}]", []string{"models[0] (chat)", "add up to 0"}},
	{"target weights overflow", fmt.Sprintf("models: [{name: chat, targets: [{model: v1, weight: %d}, {model: v2, weight: 1}]}]", math.MaxInt),
		[]string{"models[0] (chat)", "add up to more than"}},
	{"spill trip mark above 1", "spill: {tripMark: 2}", []string{"spill", "tripMark 2"}},
	{"spill clear mark above the trip mark", "spill: {tripMark: 0.5, clearMark: 0.6}", []string{"spill", "clearMark 0.6"}},
	{"spill dwell not a duration", "spill: {minDwell: long}", []string{"spill", `minDwell "long"`}},
	{"unknown spill mode", "spill: {mode: Teleport}", []string{"spill", `mode "Teleport"`}},
	{"unknown spill key", "spill: {tripMarks: 0.5}", []string{`unknown field "tripMarks"`}},
	{"every problem at once", "fallbacks: 99\nretryAfter: 1ms\nobjectives: [{priority: 1}]", []string{"fallbacks 99", `retryAfter "1ms"`, "objectives[0]"}},
}

func TestParseConfigRejects(t *testing.T) {
	for _, tt := range badConfigs {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseConfig([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("accepted %q: %+v", tt.yaml, s)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %q does not wrap ErrInvalidConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestParseConfigAccepts(t *testing.T) {
	files, err := filepath.Glob("testdata/config/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatal("no configurations in testdata/config", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			s, err := ParseConfig(data)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkSettings(s); err != nil {
				t.Fatal(err)
			}
		})
	}
	s, err := ParseConfig(nil)
	if err != nil || !reflect.DeepEqual(s, DefaultSettings()) {
		t.Fatalf("no configuration: %+v, %v; want the defaults", s, err)
	}
	if s, err := ParseConfig([]byte("flowControl: {enabled: true, holdBelow: Standard, maxQueue: 10, timeout: 2s}\n")); err != nil ||
		s.FlowControl != (FlowControl{Enabled: true, HoldBelow: PriorityStandard, MaxQueue: 10, Timeout: 2 * time.Second}) {
		t.Fatalf("flowControl: %+v, %v", s.FlowControl, err)
	}
	if s, err := ParseConfig([]byte("prefixCache: {lruCapacityPerServer: 2048}\n")); err != nil || s.PrefixBlocksPerEndpoint != 2048 {
		t.Fatalf("prefixCache: %+v, %v", s.PrefixBlocksPerEndpoint, err)
	}
	s, err = ParseConfig([]byte("defaultPriority: BestEffort\nobjectives: [{name: tuned, priority: \"-7\"}, {name: vip, priority: critical}]\n" +
		"saturation: {queueDepth: 3}\nmodels: [{name: chat, targets: [{model: v1, weight: 0}, {model: v2, weight: 1}]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.DefaultPriority != PriorityBestEffort || s.Objectives["tuned"] != -7 || s.Objectives["vip"] != PriorityCritical ||
		!s.ThresholdsSet || s.Thresholds.QueueDepth != 3 || s.Thresholds.KVCacheUtilization != DefaultSettings().Thresholds.KVCacheUtilization {
		t.Fatalf("settings %+v", s)
	}
}

// FuzzParseConfig: ParseConfig never panics; what it refuses wraps ErrInvalidConfig and yields
// no settings; what it accepts keeps every promise the EPP relies on (checkSettings) and starts
// a server whose model routing draws only configured targets.
func FuzzParseConfig(f *testing.F) {
	files, _ := filepath.Glob("testdata/config/*.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, c := range badConfigs {
		f.Add([]byte(c.yaml))
	}
	for _, s := range []string{
		"", "null", "{}", "[]", "scorers: {}", "scorers: {queue-scorer: 0}", "fallbacks: 16", "fallbacks: 0",
		"saturation: {}", "saturation: {queueDepth: 1, kvCacheUtilization: 1, staleness: 1ns}",
		"maxBodyBytes: 1024", "maxBodyBytes: 268435456", "retryAfter: 1s", "defaultPriority: -1",
		"defaultPriority: best-effort", `defaultPriority: "42"`, "adapters: []", `adapters: [""]`,
		"models: [{name: a, targets: [{model: b, weight: 1}], fallback: a}]", "models: [{name: a, objective: b}]",
		"models: [{name: a, targets: [{model: b, weight: 4611686018427387904}, {model: c, weight: 4611686018427387903}]}]",
		"spill: {}", "spill: {eligiblePriorities: {min: 0}, prefillTokensPerSecond: 1}",
		"flowControl: {enabled: true, holdBelow: 5, maxQueue: 1, timeout: 100ms}",
		"slotsPerEndpoint: 2\nobjectives: [{name: a, priority: -1, ttft: 1ms, maxConcurrency: 1, maxShare: 1}]",
		"objectives: [{name: a, priority: 1, maxShare: NaN}]", "objectives: [{name: a, priority: 1, ttft: 11m}]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseConfig(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %q does not wrap ErrInvalidConfig", err)
			}
			if !reflect.DeepEqual(s, Settings{}) {
				t.Fatalf("settings %+v returned with error %v", s, err)
			}
			return
		}
		if err := checkSettings(s); err != nil {
			t.Fatalf("accepted %q: %v", data, err)
		}
		srv, err := New(Options{Pool: testPool, Settings: s, Datastore: fakeDatastore{}})
		if err != nil {
			t.Fatalf("accepted %q, but New refuses it: %v", data, err)
		}
		for name, r := range s.Models {
			for range 3 {
				x := &exchange{req: request.Request{Model: name}}
				srv.targetModel(x)
				if len(r.Targets) > 0 && !slices.ContainsFunc(r.Targets, func(tg ModelTarget) bool { return tg.Model == x.target && tg.Weight > 0 }) {
					t.Fatalf("model %q routed to %q, not a target of positive weight in %+v", name, x.target, r.Targets)
				}
			}
		}
	})
}

// checkSettings names what is wrong with settings ParseConfig accepted.
func checkSettings(s Settings) error {
	var errs []error
	if _, err := scheduler.New(scheduler.Options{Weights: s.Weights, Fallbacks: s.Fallbacks}); err != nil {
		errs = append(errs, err)
	}
	for n, w := range s.Weights {
		if !(w >= 0) || math.IsInf(w, 0) {
			errs = append(errs, fmt.Errorf("scorer %q weight %v", n, w))
		}
	}
	if s.Fallbacks < 0 || s.Fallbacks > 16 {
		errs = append(errs, fmt.Errorf("fallbacks %d", s.Fallbacks))
	}
	if th := s.Thresholds; th.QueueDepth < 1 || !(th.KVCacheUtilization > 0 && th.KVCacheUtilization <= 1) || th.Staleness <= 0 {
		errs = append(errs, fmt.Errorf("thresholds %+v", th))
	}
	if s.MaxBodyBytes < 1024 || s.MaxBodyBytes > 256<<20 {
		errs = append(errs, fmt.Errorf("maxBodyBytes %d", s.MaxBodyBytes))
	}
	if s.RetryAfter < time.Second {
		errs = append(errs, fmt.Errorf("retryAfter %v", s.RetryAfter))
	}
	if fc := s.FlowControl; fc.MaxQueue < 1 || fc.Timeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("flowControl %+v", fc))
	}
	if _, ok := s.Objectives[""]; ok {
		errs = append(errs, errors.New("an objective without a name"))
	}
	for name, l := range s.Limits {
		if _, ok := s.Objectives[name]; !ok || l.TTFT < 0 || l.TTFT > 10*time.Minute || l.MaxConcurrency < 0 ||
			!(l.MaxShare >= 0 && l.MaxShare <= 1) || (l.MaxShare > 0 && s.SlotsPerEndpoint < 1) {
			errs = append(errs, fmt.Errorf("objective %q limits %+v (slots per endpoint %d)", name, l, s.SlotsPerEndpoint))
		}
	}
	for name, r := range s.Models {
		if name == "" || r.Name != name {
			errs = append(errs, fmt.Errorf("model route %q named %q", name, r.Name))
		}
		total := 0
		for _, tg := range r.Targets {
			if tg.Model == "" || tg.Weight < 0 || tg.Weight > math.MaxInt-total {
				errs = append(errs, fmt.Errorf("model route %q: target %+v after weights adding up to %d", name, tg, total))
				break
			}
			total += tg.Weight
		}
		if len(r.Targets) > 0 && total <= 0 {
			errs = append(errs, fmt.Errorf("model route %q: target weights add up to %d", name, total))
		}
	}
	if err := s.Spill.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("spill: %w", err))
	}
	return errors.Join(errs...)
}

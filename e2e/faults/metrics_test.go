package faults

import "testing"

func TestMetricValue(t *testing.T) {
	page := "# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 42\ngo_goroutines_extra 7\n" +
		"spillway_hub_leader{hub=\"a\"} 1\nspillway_hub_leader{hub=\"b\"} 0\n"
	for name, want := range map[string]float64{"go_goroutines": 42, "spillway_hub_leader": 1} {
		got, err := metricValue(page, name)
		if err != nil || got != want {
			t.Errorf("%s = %v, %v; want %v", name, got, err, want)
		}
	}
	if _, err := metricValue(page, "absent_metric"); err == nil {
		t.Error("an absent metric read without error")
	}
	if _, err := metricValue("broken_metric{a=\"b\"} x\n", "broken_metric"); err == nil {
		t.Error("a sample that is no number read without error")
	}
}

func FuzzMetricValue(f *testing.F) {
	f.Add("go_goroutines 42\n", "go_goroutines")
	f.Add("m{a=\"}\"} 1\n", "m")
	f.Fuzz(func(t *testing.T, page, name string) {
		_, _ = metricValue(page, name)
	})
}

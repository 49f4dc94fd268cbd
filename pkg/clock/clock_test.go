package clock

import (
	"testing"
	"time"
)

func TestParseOffset(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, true},
		{"10s", 10 * time.Second, true},
		{"-10s", -10 * time.Second, true},
		{"ten", 0, false},
		{"10", 0, false},
	} {
		got, err := ParseOffset(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseOffset(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestNowShiftsWallClockOnly(t *testing.T) {
	old := offset
	t.Cleanup(func() { offset = old })
	offset = time.Hour
	a, wall := Now(), time.Now()
	if d := a.Sub(wall.Round(0)); d < 59*time.Minute || d > 61*time.Minute {
		t.Fatalf("Now is %v from the wall clock, want about an hour", d)
	}
	b := Now()
	if d := b.Sub(a); d < 0 || d > time.Minute {
		t.Fatalf("two readings of Now are %v apart, want a small positive duration", d)
	}
}

func FuzzParseOffset(f *testing.F) {
	for _, s := range []string{"", "10s", "-1h2m", "x", "1e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseOffset(s)
		if err != nil && d != 0 {
			t.Fatalf("ParseOffset(%q) = %v with error %v", s, d, err)
		}
	})
}

package kube

import (
	"testing"
	"time"
)

func TestRetryBackoffDoublesTo30sAndResets(t *testing.T) {
	b := newRetryBackoff()
	want := []time.Duration{
		250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second,
		8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second,
	}
	for i, w := range want {
		if got := b.NextBackOff(); got != w {
			t.Fatalf("wait %d: got %s, want %s", i+1, got, w)
		}
	}
	b.Reset()
	if got := b.NextBackOff(); got != 250*time.Millisecond {
		t.Fatalf("after a successful reconcile: got %s, want 250ms", got)
	}
}

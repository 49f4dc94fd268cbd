package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/localfleet"
)

func TestWaitForStopsWhenTheProcessExits(t *testing.T) {
	p, err := localfleet.StartProc(t.TempDir(), "true", "/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	err = waitFor(t.Context(), p, time.Minute, func() error { return os.ErrNotExist })
	if err == nil || !strings.Contains(err.Error(), "true exited") {
		t.Fatalf("err %v, want the exit", err)
	}
}

func TestWaitForReportsTheLastReason(t *testing.T) {
	p, err := localfleet.StartProc(t.TempDir(), "sleep", "/bin/sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	calls := 0
	if err := waitFor(t.Context(), p, time.Minute, func() error {
		if calls++; calls < 3 {
			return os.ErrNotExist
		}
		return nil
	}); err != nil || calls != 3 {
		t.Fatalf("err %v after %d calls, want ready at the third", err, calls)
	}
	err = waitFor(t.Context(), p, 500*time.Millisecond, func() error { return os.ErrPermission })
	if err == nil || !strings.Contains(err.Error(), "sleep not ready within 500ms: permission denied (see ") {
		t.Fatalf("err %v", err)
	}
}

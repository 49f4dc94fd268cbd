package app

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/spillway-io/spillway/hub/view"
)

// TestSlowProbeIsNotALostQuorum: one or two failed probes of etcd leave the view complete (a busy
// etcd answers late now and then, and lifting the mark sends every spoke a snapshot); the third
// in a row marks it incomplete, and the first probe that succeeds lifts the mark.
func TestSlowProbeIsNotALostQuorum(t *testing.T) {
	m := view.New()
	q := quorumMark{model: m, log: slog.New(slog.DiscardHandler)}
	slow := errors.New("context deadline exceeded")
	for _, step := range []struct {
		err            error
		wantIncomplete bool
	}{
		{slow, false}, {slow, false}, {nil, false}, // two failures, then an answer: never marked
		{slow, false}, {slow, false}, {slow, true}, {slow, true}, // three in a row: marked
		{nil, false}, // the first answer lifts it
	} {
		q.probed(step.err)
		if got := len(m.Incomplete()) > 0; got != step.wantIncomplete {
			t.Fatalf("after %d failures in a row: incomplete %v, want %v", q.failures, got, step.wantIncomplete)
		}
	}
}

package app

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/spillway-io/spillway/hub/view"
)

// TestSlowProbeIsNotALostQuorum: one or two failed probes of etcd leave the view complete (a busy
// etcd answers late now and then, and lifting the mark sends every spoke a snapshot); the third
// in a row marks it incomplete, and the first probe that succeeds lifts the mark.
func TestSlowProbeIsNotALostQuorum(t *testing.T) {
	m := view.New()
	q := newQuorum(m, slog.New(slog.DiscardHandler))
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

// TestReadinessOutlastsAnEtcdElection: /readyz says nothing of etcd until it has answered no read
// for quorumGrace (an etcd leader election answers none while it lasts), then the last probe's
// error; before any probe ended the caller must read etcd itself, and a hub whose etcd never
// answered is not ready from the first failed probe.
func TestReadinessOutlastsAnEtcdElection(t *testing.T) {
	now := time.Unix(1000, 0)
	q := newQuorum(view.New(), slog.New(slog.DiscardHandler))
	q.now = func() time.Time { return now }
	lost := errors.New("etcd quorum lost or etcd unreachable: context deadline exceeded")

	if probed, _ := q.readiness(); probed {
		t.Fatal("readiness before any probe: probed")
	}
	q.probed(lost)
	if _, err := q.readiness(); !errors.Is(err, lost) {
		t.Fatalf("etcd never answered: readiness %v, want %v", err, lost)
	}
	q.probed(nil)
	if probed, err := q.readiness(); !probed || err != nil {
		t.Fatalf("after an answer: probed %v, err %v", probed, err)
	}
	// An election: probes fail for less than quorumGrace, and the hub stays ready.
	for _, step := range []time.Duration{500 * time.Millisecond, 2 * time.Second, 2 * time.Second} {
		now = now.Add(step)
		q.probed(lost)
		_, err := q.readiness()
		switch since := now.Sub(time.Unix(1000, 0)); {
		case since < quorumGrace && err != nil:
			t.Fatalf("%s without an answer (less than %s): not ready: %v", since, quorumGrace, err)
		case since >= quorumGrace && !errors.Is(err, lost):
			t.Fatalf("%s without an answer: readiness %v, want %v", since, err, lost)
		}
	}
	q.probed(nil)
	if _, err := q.readiness(); err != nil {
		t.Fatalf("after etcd answered again: %v", err)
	}
}

package fleetpb

import (
	"slices"
	"testing"

	"github.com/spillway-io/spillway/pkg/fleet"
)

func TestHopKeysRoundTripKeepsOrderAndCopies(t *testing.T) {
	keys := []fleet.HopKey{{ID: "k2", Secret: []byte("new-secret")}, {ID: "k1", Secret: []byte("old-secret")}}
	m := HopKeys(keys)
	keys[0].Secret[0] = 'X' // the message does not share the caller's bytes
	got := HopKeysFrom(m)
	if len(got) != 2 || got[0].ID != "k2" || got[1].ID != "k1" || string(got[0].Secret) != "new-secret" || string(got[1].Secret) != "old-secret" {
		t.Fatalf("round trip = %+v, want k2 (new-secret) then k1 (old-secret)", got)
	}
	m.Keys[1].Secret[0] = 'X' // nor does the result share the message's
	if !slices.Equal(got[1].Secret, []byte("old-secret")) {
		t.Errorf("HopKeysFrom shares the message's bytes: %q", got[1].Secret)
	}
	if got := HopKeysFrom(nil); len(got) != 0 {
		t.Errorf("HopKeysFrom(nil) = %+v, want none", got)
	}
}

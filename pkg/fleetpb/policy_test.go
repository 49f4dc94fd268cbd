package fleetpb

import (
	"math"
	"testing"

	"github.com/spillway-io/spillway/pkg/fleet"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

func TestExportPolicyRoundTrip(t *testing.T) {
	p := fleet.ExportPolicy{AllowedNamespaces: []string{"default", "ml"}, DeniedNamespaces: []string{"kube-system"}, MaxExports: 7}
	w := &pb.Welcome{}
	SetExportPolicy(w, p)
	p.AllowedNamespaces[0] = "changed" // the message does not share the caller's slices
	got := ExportPolicyFrom(w)
	want := fleet.ExportPolicy{AllowedNamespaces: []string{"default", "ml"}, DeniedNamespaces: []string{"kube-system"}, MaxExports: 7}
	if !got.Equal(want) {
		t.Fatalf("round trip = %+v, want %+v", got, want)
	}
	if got := ExportPolicyFrom(nil); !got.Equal(fleet.ExportPolicy{}) {
		t.Errorf("ExportPolicyFrom(nil) = %+v, want the zero policy", got)
	}
	for _, tc := range []struct {
		max  int
		want uint32
	}{{-1, 0}, {0, 0}, {math.MaxUint32 + 1, math.MaxUint32}} {
		SetExportPolicy(w, fleet.ExportPolicy{MaxExports: tc.max})
		if w.GetMaxExports() != tc.want {
			t.Errorf("MaxExports %d sent as %d, want %d", tc.max, w.GetMaxExports(), tc.want)
		}
	}
}

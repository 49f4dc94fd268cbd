package ctl

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/testkit"
)

// TestCordon: an admin cordons a region and a cluster, `get clusters` shows it, uncordon lifts
// it; a viewer may not, a misspelt name cordons nothing, and a bad form is refused before the
// hub is asked.
func TestCordon(t *testing.T) {
	h := fleet(t)
	admin, viewer := hubtest.Admin(), hubtest.User("viewer")
	states := func() map[string]string {
		t.Helper()
		out, err := as(t, h, viewer, "get", "clusters", "--no-headers")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			got[f[0]] = f[3]
		}
		return got
	}
	want := func(what string, w map[string]string) {
		t.Helper()
		testkit.Eventually(t, 5*time.Second, what, func() error {
			if got := states(); fmt.Sprint(got) != fmt.Sprint(w) {
				return fmt.Errorf("states %v, want %v", got, w)
			}
			return nil
		})
	}

	out, err := as(t, h, admin, "cordon", "region", "eu-west")
	if err != nil || strings.TrimSpace(out) != "region eu-west cordoned (eu-west-1)" {
		t.Fatalf("cordon region: %v\n%s", err, out)
	}
	want("eu-west cordoned", map[string]string{"eu-west-1": "Alive,Cordoned", "us-east-1": "Alive"})
	if out, err := as(t, h, admin, "cordon", "cluster", "us-east-1", "-o", "json"); err != nil || !strings.Contains(out, `"clusters": [`) {
		t.Fatalf("cordon cluster -o json: %v\n%s", err, out)
	}
	want("both cordoned", map[string]string{"eu-west-1": "Alive,Cordoned", "us-east-1": "Alive,Cordoned"})
	if out, err := as(t, h, admin, "uncordon", "region", "eu-west"); err != nil || !strings.Contains(out, "region eu-west uncordoned") {
		t.Fatalf("uncordon region: %v\n%s", err, out)
	}
	want("eu-west uncordoned, us-east-1 still", map[string]string{"eu-west-1": "Alive", "us-east-1": "Alive,Cordoned"})

	for _, tc := range []struct {
		who  hubtest.Peer
		args []string
		want string
	}{
		{viewer, []string{"uncordon", "cluster", "us-east-1"}, "admin"},
		{admin, []string{"cordon", "cluster", "us-east-9"}, "no registered cluster is cluster us-east-9"},
		{admin, []string{"cordon", "region", "mars"}, "no registered cluster is region mars"},
		{admin, []string{"cordon", "region", "Mars.West"}, `region: "Mars.West"`},
		{admin, []string{"cordon", "us-east-1"}, `cordon takes cluster NAME or region NAME, got "us-east-1"`},
		{admin, []string{"cordon", "zone", "a"}, `cordon takes cluster NAME or region NAME, got "zone a"`},
	} {
		if out, err := as(t, h, tc.who, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q\n%s", tc.args, err, tc.want, out)
		}
	}
	want("the refusals changed nothing", map[string]string{"eu-west-1": "Alive", "us-east-1": "Alive,Cordoned"})
}

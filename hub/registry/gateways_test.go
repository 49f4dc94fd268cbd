package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

func TestNormalizeGatewayAddress(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.2:80":              "10.0.0.2:80",
		"10.0.0.2:0080":            "10.0.0.2:80",
		"Gateway.Example.COM.:443": "gateway.example.com:443",
		"[::ffff:10.0.0.2]:80":     "10.0.0.2:80",
		"[2001:DB8:0::1]:8443":     "[2001:db8::1]:8443",
		"not an address":           "not an address",
	} {
		if got := registry.NormalizeGatewayAddress(in); got != want {
			t.Errorf("NormalizeGatewayAddress(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzNormalizeGatewayAddress: the normal form of any address is its own normal form, and
// writing an address in upper or lower case does not change it.
func FuzzNormalizeGatewayAddress(f *testing.F) {
	for _, s := range []string{"10.0.0.2:0080", "Gateway.Example.COM.:443", "[::ffff:10.0.0.2]:80", "[fe80::1%ETH0]:80", "..:80", ":+80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := registry.NormalizeGatewayAddress(s)
		if again := registry.NormalizeGatewayAddress(n); again != n {
			t.Fatalf("%q normalises to %q, which normalises to %q", s, n, again)
		}
		if lower := registry.NormalizeGatewayAddress(strings.ToLower(s)); lower != n {
			t.Fatalf("%q normalises to %q, its lower case to %q", s, n, lower)
		}
		if up := strings.ToUpper(s); strings.ToLower(up) == strings.ToLower(s) && registry.NormalizeGatewayAddress(up) != n {
			t.Fatalf("%q normalises to %q, its upper case to %q", s, n, registry.NormalizeGatewayAddress(up))
		}
	})
}

// TestGatewayAddressHeldByOneCluster: a gateway address, however spelled, is registered by one
// cluster at a time; a cluster that moves, or whose record is collected after its removal,
// frees it; of clusters racing for one address, one gets it.
func TestGatewayAddressHeldByOneCluster(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 2 * time.Second})
	register := func(id, gw string) error {
		_, err := s.PutCluster(ctx, fleet.ClusterInfo{ID: id, Region: "r", GatewayAddress: gw})
		return err
	}
	taken := func(err error, owner string) bool {
		var te *registry.GatewayTakenError
		return errors.As(err, &te) && errors.Is(err, registry.ErrGatewayTaken) && te.Owner == owner
	}
	if err := register("a", "10.0.0.2:80"); err != nil {
		t.Fatal(err)
	}
	for _, gw := range []string{"10.0.0.2:80", "10.0.0.2:0080", "[::ffff:10.0.0.2]:80"} {
		if err := register("b", gw); !taken(err, "a") ||
			!strings.Contains(err.Error(), "cluster b may not register gateway address "+gw+": cluster a has it registered") {
			t.Fatalf("b registers %s, a's: %v; want a GatewayTakenError naming a", gw, err)
		}
	}
	if _, err := s.GetCluster(ctx, "b"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("b after the refusals: %v, want not registered", err)
	}
	if err := register("b", "10.0.0.3:80"); err != nil {
		t.Fatal(err)
	}
	if err := register("a", "10.0.0.2:80"); err != nil {
		t.Fatalf("a registers its own address again: %v", err)
	}
	// a moves: its old address is free, the new one is a's.
	if err := register("a", "10.0.0.9:80"); err != nil {
		t.Fatal(err)
	}
	if err := register("b", "10.0.0.2:80"); err != nil {
		t.Fatalf("b takes the address a left: %v", err)
	}
	if err := register("a", "10.0.0.2:80"); !taken(err, "b") {
		t.Fatalf("a goes back to the address b took: %v", err)
	}
	// Opening a session writes a's record again: it keeps a's address.
	if _, err := s.OpenSession(ctx, "a", "h", "i"); err != nil {
		t.Fatal(err)
	}
	if err := register("c", "10.0.0.9:80"); !taken(err, "a") {
		t.Fatalf("c takes a's address after a's session opened: %v", err)
	}

	// a is removed: once its record is collected, its address is free.
	rev, err := s.Revoke(ctx, "a", true, "admin")
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "a's session lease lapses", sessionGone(ctx, s, "a"))
	if done, err := s.CollectRemoved(ctx, rev); err != nil || !done {
		t.Fatalf("CollectRemoved: %v, %v", done, err)
	}
	if err := register("c", "10.0.0.9:80"); err != nil {
		t.Fatalf("c takes the address of the removed a: %v", err)
	}

	// Clusters racing for one address: one gets it.
	for i := range 5 {
		gw := fmt.Sprintf("10.0.1.%d:80", i)
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for j := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[j] = register(fmt.Sprintf("race-%d-%d", i, j), gw)
			}()
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, registry.ErrGatewayTaken):
				t.Fatal(err)
			}
		}
		if won != 1 {
			t.Fatalf("%d clusters registered %s at once, want 1: %v", won, gw, errs)
		}
	}
}

// TestIndexGateways: records written before the index existed get their entries, the cluster
// registered first keeping an address two of them hold.
func TestIndexGateways(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 2 * time.Second})
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, r := range []struct {
		id, gw     string
		registered time.Time
	}{
		{"old2", "10.1.1.1:80", at.Add(2 * time.Hour)},
		{"old1", "10.1.1.1:80", at.Add(time.Hour)},
		{"old3", "10.1.1.3:80", at},
	} {
		val, err := json.Marshal(registry.ClusterRecord{Info: fleet.ClusterInfo{ID: r.id, Region: "r", GatewayAddress: r.gw}, RegisteredAt: r.registered, LastSeen: r.registered})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, registry.DefaultPrefix+"clusters/"+r.id, string(val)); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // a second replica indexes too: nothing changes
		conflicts, err := s.IndexGateways(ctx)
		if err != nil || len(conflicts) != 1 || conflicts["old2"] != "old1" {
			t.Fatalf("IndexGateways: %v, %v; want old2's address held by old1", conflicts, err)
		}
	}
	for id, owner := range map[string]string{"new": "old1", "old2": "old1"} {
		_, err := s.PutCluster(ctx, fleet.ClusterInfo{ID: id, Region: "r", GatewayAddress: "10.1.1.1:80"})
		var te *registry.GatewayTakenError
		if !errors.As(err, &te) || te.Owner != owner {
			t.Fatalf("%s registers 10.1.1.1:80: %v, want it held by %s", id, err, owner)
		}
	}
	if _, err := s.PutCluster(ctx, fleet.ClusterInfo{ID: "new", Region: "r", GatewayAddress: "10.1.1.3:80"}); !errors.Is(err, registry.ErrGatewayTaken) {
		t.Fatalf("new registers old3's address: %v", err)
	}
	if _, err := s.PutCluster(ctx, fleet.ClusterInfo{ID: "old1", Region: "r", GatewayAddress: "10.1.1.1:80"}); err != nil {
		t.Fatalf("old1 registers its own address: %v", err)
	}
}

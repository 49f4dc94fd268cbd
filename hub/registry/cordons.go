package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// CordonScope says what a cordon covers.
type CordonScope string

// Cordon scopes.
const (
	CordonCluster CordonScope = "clusters"
	CordonRegion  CordonScope = "regions"
)

// Cordon keeps a cluster, or every cluster of a region, from being a spill target. It is stored
// at cordons/<scope>/<name>; its absence is the uncordoned state.
type Cordon struct {
	Scope CordonScope `json:"-"`
	Name  string      `json:"-"`
	// By names the admin who cordoned, At when.
	By string    `json:"by"`
	At time.Time `json:"at"`
}

// CordonKey is the State.Cordons key of a scope's name.
func CordonKey(scope CordonScope, name string) string { return string(scope) + "/" + name }

func (s *Store) cordonKey(scope CordonScope, name string) string {
	return s.prefix + "cordons/" + CordonKey(scope, name)
}

// SetCordon cordons (or, with cordoned false, uncordons) a cluster or a region, as admin by.
func (s *Store) SetCordon(ctx context.Context, scope CordonScope, name string, cordoned bool, by string) error {
	if scope != CordonCluster && scope != CordonRegion || name == "" {
		return fmt.Errorf("cordon of %s %q: %w", scope, name, ErrInvalid)
	}
	key := s.cordonKey(scope, name)
	if !cordoned {
		if _, err := s.cli.Delete(ctx, key); err != nil {
			return fmt.Errorf("lift the cordon of %s %q: %w", scope, name, err)
		}
		return nil
	}
	val, err := json.Marshal(Cordon{By: by, At: s.now().UTC()})
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, key, string(val)); err != nil {
		return fmt.Errorf("cordon %s %q: %w", scope, name, err)
	}
	return nil
}

// Cordoned reports whether a cluster of region is cordoned, by its own cordon or its region's.
func (st *State) Cordoned(cluster, region string) bool {
	if _, ok := st.Cordons[CordonKey(CordonCluster, cluster)]; ok {
		return true
	}
	_, ok := st.Cordons[CordonKey(CordonRegion, region)]
	return ok && region != ""
}

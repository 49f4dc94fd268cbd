package fleet

import (
	"fmt"
	"slices"
	"strings"
)

// Rules of an ExportRefusal.
const (
	// RuleNamespace refuses a pool for its namespace: denied, or not among the allowed ones.
	RuleNamespace = "namespace"
	// RuleExportLimit refuses a pool beyond the most pools one cluster may export.
	RuleExportLimit = "limit"
)

// ExportPolicy is what the hub lets a cluster export. The hub enforces it (a sync stream that
// breaks it ends) and announces it in its Welcome, so that a spoke leaves out what the hub would
// refuse instead of losing its session.
type ExportPolicy struct {
	// AllowedNamespaces, when not empty, are the only namespaces whose pools may be exported.
	AllowedNamespaces []string
	// DeniedNamespaces are namespaces whose pools may never be exported.
	DeniedNamespaces []string
	// MaxExports is the most pools one cluster may export; zero means no limit.
	MaxExports int
}

// Equal reports whether two policies have the same rules (the namespace lists in the same order).
func (p ExportPolicy) Equal(o ExportPolicy) bool {
	return p.MaxExports == o.MaxExports && slices.Equal(p.AllowedNamespaces, o.AllowedNamespaces) &&
		slices.Equal(p.DeniedNamespaces, o.DeniedNamespaces)
}

// ExportRefusal is why an ExportPolicy refuses a pool.
type ExportRefusal struct {
	// Rule is RuleNamespace or RuleExportLimit.
	Rule string
	// Message says which of the hub's rules refuses the pool, naming the hub's flag.
	Message string
}

// maxListedNamespaces bounds how many allowed namespaces a refusal's message lists.
const maxListedNamespaces = 8

// NamespaceRefusal says why pools of namespace ns may not be exported, "" when they may.
func (p ExportPolicy) NamespaceRefusal(ns string) string {
	switch {
	case slices.Contains(p.DeniedNamespaces, ns):
		return "namespace " + ns + " is denied for exports by the hub (--denied-export-namespaces)"
	case len(p.AllowedNamespaces) > 0 && !slices.Contains(p.AllowedNamespaces, ns):
		listed := p.AllowedNamespaces
		more := ""
		if len(listed) > maxListedNamespaces {
			listed, more = listed[:maxListedNamespaces], fmt.Sprintf(" and %d more", len(listed)-maxListedNamespaces)
		}
		return fmt.Sprintf("namespace %s is not among the hub's --allowed-export-namespaces (%s%s)", ns, strings.Join(listed, ", "), more)
	}
	return ""
}

// Apply splits exports into what the policy lets a cluster export and what it refuses, with why.
// Pools in a refused namespace are left out first; of the rest, beyond MaxExports, the first
// MaxExports in pool order (PoolRef.Compare) are kept, so that the choice is the same on every
// call and after a restart. kept is sorted by pool. A pool listed twice counts once, with its
// last export.
func (p ExportPolicy) Apply(exports []Export) (kept []Export, refused map[PoolRef]ExportRefusal) {
	byPool := make(map[PoolRef]Export, len(exports))
	for _, e := range exports {
		byPool[e.Pool] = e
	}
	all := make([]Export, 0, len(byPool))
	for _, e := range byPool {
		all = append(all, e)
	}
	slices.SortFunc(all, func(a, b Export) int { return a.Pool.Compare(b.Pool) })
	refused = map[PoolRef]ExportRefusal{}
	kept = make([]Export, 0, len(all))
	for _, e := range all {
		if why := p.NamespaceRefusal(e.Pool.Namespace); why != "" {
			refused[e.Pool] = ExportRefusal{Rule: RuleNamespace, Message: why}
			continue
		}
		kept = append(kept, e)
	}
	if p.MaxExports > 0 && len(kept) > p.MaxExports {
		msg := fmt.Sprintf("the hub accepts at most %d exports per cluster (--max-exports-per-cluster): this cluster exports the first %d of its pools in namespace/name order",
			p.MaxExports, p.MaxExports)
		for _, e := range kept[p.MaxExports:] {
			refused[e.Pool] = ExportRefusal{Rule: RuleExportLimit, Message: msg}
		}
		kept = kept[:p.MaxExports]
	}
	return kept, refused
}

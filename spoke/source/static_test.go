package source

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

const good = `pools:
- namespace: default
  name: chat
  export: true
  targetPorts: [8000, 8001]
  labels: {app: chat}
  models: [base, sql-lora]
  endpoints: [127.0.1.1, "127.0.1.2:9000", {address: "127.0.1.3:9000", models: [base]}]
- namespace: batch
  name: summarise
  engine: sglang
  targetPorts: [30000]
  endpoints: [10.0.0.7]
`

func TestParseStatic(t *testing.T) {
	pools, err := ParseStatic([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(pools) != 2 || pools[0].Ref.Namespace != "batch" || pools[1].Ref.Name != "chat" {
		t.Fatalf("pools not sorted by reference: %+v", pools)
	}
	chat := pools[1]
	var addrs []string
	for _, e := range chat.Endpoints {
		addrs = append(addrs, e.Address)
		if e.Engine != modelmetrics.EngineVLLM {
			t.Fatalf("default engine %q", e.Engine)
		}
	}
	if strings.Join(addrs, ",") != "127.0.1.1:8000,127.0.1.1:8001,127.0.1.2:9000,127.0.1.3:9000" {
		t.Fatalf("endpoints %v: an IP gets every target port, ip:port stays as given", addrs)
	}
	if strings.Join(chat.Endpoints[0].Models, ",") != "base,sql-lora" || strings.Join(chat.Endpoints[3].Models, ",") != "base" {
		t.Fatalf("models: pool-wide %v, per endpoint %v", chat.Endpoints[0].Models, chat.Endpoints[3].Models)
	}
	if pools[0].Endpoints[0].Engine != modelmetrics.EngineSGLang {
		t.Fatalf("engine of batch/summarise = %q", pools[0].Endpoints[0].Engine)
	}
	ex := Exports(pools)
	if len(ex) != 1 || ex[0].Pool != chat.Ref || len(ex[0].TargetPorts) != 2 {
		t.Fatalf("only the exported pool is exported: %+v", ex)
	}
}

func TestParseStaticRejects(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", "pools:\n- namespace: a\n  name: b\n  targetPorts: [1]\n  color: red\n", "unknown field"},
		{"bad namespace", "pools:\n- namespace: A_B\n  name: b\n  targetPorts: [1]\n", `namespace "A_B": a lowercase RFC 1123 label must consist of`},
		{"empty namespace", "pools:\n- name: b\n  targetPorts: [1]\n", `namespace "": a lowercase RFC 1123 label`},
		{"bad name", "pools:\n- namespace: a\n  name: b.c\n  targetPorts: [1]\n", `name "b.c": must not contain dots`},
		{"long name", "pools:\n- namespace: a\n  name: " + strings.Repeat("b", 64) + "\n  targetPorts: [1]\n", "must be no more than 63 characters"},
		{"no ports", "pools:\n- namespace: a\n  name: b\n", "targetPorts needs 1..8 ports"},
		{"port range", "pools:\n- namespace: a\n  name: b\n  targetPorts: [70000]\n", "out of range"},
		{"duplicate", "pools:\n- {namespace: a, name: b, targetPorts: [1]}\n- {namespace: a, name: b, targetPorts: [1]}\n", "listed twice"},
		{"bad endpoint", "pools:\n- {namespace: a, name: b, targetPorts: [1], endpoints: [host.example]}\n", "want an IP or ip:port"},
		{"bad engine", "pools:\n- {namespace: a, name: b, targetPorts: [1], engine: tgi}\n", "unknown engine type"},
		{"not yaml", "pools: [", "invalid pool file"},
		{"bad endpoint object", "pools:\n- {namespace: a, name: b, targetPorts: [1], endpoints: [{addr: 1.2.3.4}]}\n", "want an address or {address, models}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseStatic([]byte(tc.yaml))
			if !errors.Is(err, ErrInvalidFile) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidFile mentioning %q", err, tc.want)
			}
		})
	}
}

func TestStaticReloadKeepsLastGoodPools(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pools.yaml")
	if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := NewStatic(path, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	changed := s.Changed()
	if err := os.WriteFile(path, []byte("pools: ["), 0o644); err != nil {
		t.Fatal(err)
	}
	bump(t, path)
	if _, err := s.load(); err == nil {
		t.Fatal("a broken file was accepted")
	}
	if len(s.Pools()) != 2 {
		t.Fatalf("a broken file replaced the pools: %+v", s.Pools())
	}
	select {
	case <-changed:
		t.Fatal("a rejected file signalled a change")
	default:
	}
	if err := os.WriteFile(path, []byte("pools: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bump(t, path)
	if ok, err := s.load(); !ok || err != nil {
		t.Fatalf("reload: %v %v", ok, err)
	}
	<-changed
	if len(s.Pools()) != 0 {
		t.Fatalf("pools after reload: %+v", s.Pools())
	}
	if _, err := NewStatic(filepath.Join(t.TempDir(), "missing.yaml"), 0, nil); err == nil {
		t.Fatal("a missing file was accepted")
	}
}

func bump(t *testing.T, path string) {
	t.Helper()
	future := time.Now().Add(time.Duration(time.Now().UnixNano()%1000+1) * time.Second)
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseStatic(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("pools:\n- {namespace: a, name: b, targetPorts: [1], endpoints: ['::1', '[::1]:80']}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pools, err := ParseStatic(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidFile) {
				t.Fatalf("error without ErrInvalidFile: %v", err)
			}
			return
		}
		for _, p := range pools {
			if len(p.TargetPorts) == 0 || p.Ref.Name == "" {
				t.Fatalf("accepted an invalid pool %+v", p)
			}
			for _, e := range p.Endpoints {
				if e.Address == "" || e.Engine == "" {
					t.Fatalf("accepted an invalid endpoint %+v", e)
				}
			}
		}
	})
}

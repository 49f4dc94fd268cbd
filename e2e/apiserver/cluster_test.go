package apiserver

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestClusterServesTheAPI starts a real etcd and kube-apiserver, and uses them as tests will:
// RBAC is on (an unauthenticated request is refused), a Pod is created through the API and its
// status set by the test, as kwok does.
func TestClusterServesTheAPI(t *testing.T) {
	ctx, c := startTest(t, "test")

	resp, err := c.HTTPClient().Get(c.Host + "/api/v1/namespaces")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 && resp.StatusCode != 403 {
		t.Fatalf("anonymous list of namespaces: HTTP %d, want 401 or 403", resp.StatusCode)
	}
	if _, err := c.Kubectl(ctx, "create", "namespace", "demo"); err != nil {
		t.Fatal(err)
	}
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"vllm-0","namespace":"demo","labels":{"app":"vllm"}},
"spec":{"nodeName":"n","containers":[{"name":"vllm","image":"vllm"}]}}`
	if _, err := c.KubectlStdin(ctx, pod, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kubectl(ctx, "-n", "demo", "patch", "pod", "vllm-0", "--subresource=status", "--type=merge", "-p",
		`{"status":{"phase":"Running","podIP":"127.0.5.1","podIPs":[{"ip":"127.0.5.1"}],"conditions":[{"type":"Ready","status":"True"}]}}`); err != nil {
		t.Fatal(err)
	}
	out, err := c.Kubectl(ctx, "-n", "demo", "get", "pod", "vllm-0", "-o", "jsonpath={.status.podIP} {.status.conditions[0].status}")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(out)) != "127.0.5.1 True" {
		t.Fatalf("pod status %q", out)
	}
}

// TestStartRetriesATakenPort: a port chosen free and taken before etcd binds it costs one more
// attempt on other ports, not the start.
func TestStartRetriesATakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	attempts := 0
	pickPorts = func(ip string, n int) ([]int, error) {
		attempts++
		ports, err := freePorts(ip, n)
		if attempts == 1 && err == nil {
			ports[0] = takenPort // etcd's client port
		}
		return ports, err
	}
	defer func() { pickPorts = freePorts }()

	ctx, c := startTest(t, "retry")
	if attempts != 2 {
		t.Fatalf("%d attempts, want 2: the first on the taken port", attempts)
	}
	if strings.HasSuffix(c.Host, ":"+strconv.Itoa(takenPort)) {
		t.Fatalf("API server at %s, on the taken port", c.Host)
	}
	if _, err := c.Kubectl(ctx, "get", "namespaces"); err != nil {
		t.Fatal(err)
	}
}

// startTest starts a cluster on 127.0.0.1, stopped when the test ends, and returns it with a
// context for the test's calls.
func startTest(t *testing.T, name string) (context.Context, *Cluster) {
	t.Helper()
	bins, err := FindBins("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	c, err := Start(ctx, bins, t.TempDir(), name, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return ctx, c
}

package thinstream

import (
	"context"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// TestBothEndsAreThin: a connection dialed with Dial, and one accepted from Listen, carry the
// option (the accepted one inherits it from the listener); a plain connection does not.
func TestBothEndsAreThin(t *testing.T) {
	l, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dialed, err := Dial(context.Background(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	server := <-accepted
	defer server.Close()
	plain, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	<-accepted

	for name, c := range map[string]net.Conn{"dialed": dialed, "accepted": server} {
		if v := option(t, c); v != 1 {
			t.Errorf("%s connection: TCP_THIN_LINEAR_TIMEOUTS %d, want 1", name, v)
		}
	}
	if v := option(t, plain); v != 0 {
		t.Errorf("a plain connection: TCP_THIN_LINEAR_TIMEOUTS %d, want 0", v)
	}
}

func option(t *testing.T, c net.Conn) int {
	t.Helper()
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := raw.Control(func(fd uintptr) { v, gerr = get(int(fd)) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Skip(gerr)
	}
	return v
}

// TestDialOptionsLeaveProxiedTargetsToGRPC: with an HTTPS proxy in the environment, a target the
// proxy applies to gets no dialer of ours (gRPC's own dials through the proxy); one NO_PROXY
// excludes does.
func TestDialOptionsLeaveProxiedTargetsToGRPC(t *testing.T) {
	// http.ProxyFromEnvironment reads the environment once per process: this test runs again in a
	// child with the proxy set.
	if os.Getenv("THINSTREAM_PROXY_CHILD") == "" {
		if os.Getenv("HTTPS_PROXY") == "" && os.Getenv("https_proxy") == "" {
			if n := len(DialOptions("hub.example:8470")); n != 1 {
				t.Fatalf("no proxy: %d options, want the dialer", n)
			}
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestDialOptionsLeaveProxiedTargetsToGRPC$")
		cmd.Env = append(os.Environ(), "THINSTREAM_PROXY_CHILD=1", "HTTPS_PROXY=http://proxy.example:3128", "NO_PROXY=direct.example")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("with a proxy: %v\n%s", err, out)
		}
		return
	}
	if n := len(DialOptions("hub.example:8470")); n != 0 {
		t.Fatalf("proxied target: %d options, want none", n)
	}
	if n := len(DialOptions("direct.example:8470")); n != 1 {
		t.Fatalf("target excluded by NO_PROXY: %d options, want the dialer", n)
	}
}

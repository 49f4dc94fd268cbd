package ctl

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/hubtest"
)

func TestParseHubs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{in: "127.0.0.1:8472", want: []string{"127.0.0.1:8472"}},
		{in: "a:8472, b:8472", want: []string{"a:8472", "b:8472"}},
		{in: "[::1]:8472", want: []string{"[::1]:8472"}},
		{in: "", err: "--hub is empty"},
		{in: "a:8472,", err: "entry 2"},
		{in: "a", err: "want host:port"},
		{in: "a:x", err: "port"},
		{in: "a:1,a:1", err: "twice"},
	} {
		got, err := parseHubs(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseHubs(%q) = %v, %v; want an error mentioning %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parseHubs(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseHubs(f *testing.F) {
	for _, s := range []string{"a:1", "a:1,b:2", "[::1]:8472", ",", " x:65535 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hubs, err := parseHubs(s)
		if err != nil {
			return
		}
		for _, a := range hubs {
			if host, _, err := net.SplitHostPort(a); err != nil || host == "" {
				t.Fatalf("parseHubs(%q) gave %q, not host:port", s, a)
			}
		}
		if again, err := parseHubs(strings.Join(hubs, ",")); err != nil || !slices.Equal(again, hubs) {
			t.Fatalf("parseHubs(%q) = %v, its join parses as %v, %v", s, hubs, again, err)
		}
	})
}

// refused returns a loopback address where nothing listens.
func refused(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// With a replica down, every command still answers (whichever replica the random order asks
// first), once; with every replica down, the error names each one.
func TestHubListFailsOver(t *testing.T) {
	h := hubtest.Start(t, 10*time.Second)
	creds := h.CredentialsDir(hubtest.Admin())
	down := refused(t)
	for range 6 {
		out, err := run(t, "--hub", down+","+h.AdminAddr, "--credentials-dir", creds, "--timeout", "5s", "whoami")
		if err != nil {
			t.Fatalf("whoami with one replica down: %v", err)
		}
		if n := strings.Count(out, "spiffe://spillway.test/user/admin"); n != 1 {
			t.Fatalf("whoami printed %d answers, want 1:\n%s", n, out)
		}
	}
	other := refused(t)
	_, err := run(t, "--hub", down+","+other, "--credentials-dir", creds, "--timeout", "5s", "whoami")
	if err == nil {
		t.Fatal("whoami with every replica down succeeded")
	}
	for _, a := range []string{down, other} {
		if !strings.Contains(err.Error(), "ask hub "+a+": unavailable") {
			t.Errorf("the error does not say why %s failed:\n%v", a, err)
		}
	}
}

// An answer is final: a replica that refuses the command is not second-guessed by another.
func TestHubListStopsAtARefusal(t *testing.T) {
	a := hubtest.Start(t, 10*time.Second)
	b := hubtest.Start(t, 10*time.Second)
	viewer := a.CredentialsDir(hubtest.User("alice"))
	// b's CA did not issue alice's certificate: were b asked after a's refusal, its own error
	// would join the message.
	for range 6 {
		_, err := run(t, "--hub", a.AdminAddr+","+b.AdminAddr, "--credentials-dir", viewer, "--timeout", "5s", "tokens", "create", "--cluster", "east")
		if err == nil {
			t.Fatal("a viewer created a token")
		}
		if !strings.Contains(err.Error(), "needs the admin role") {
			t.Fatalf("the error does not name the role the command needs:\n%v", err)
		}
		// b may have been asked first (and failed to verify alice); never after a's answer.
		msg := err.Error()
		if ia, ib := strings.Index(msg, "hub "+a.AdminAddr+" refused"), strings.Index(msg, "hub "+b.AdminAddr); ib > ia {
			t.Fatalf("replica b was asked after a's refusal:\n%v", err)
		}
	}
}

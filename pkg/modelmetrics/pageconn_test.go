package modelmetrics

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const testPage = "vllm:num_requests_waiting 3\nvllm:kv_cache_usage_perc 0.25\n"

// rawServer answers every request on a connection with answer(n), n counting requests across
// connections, and closes the connection after it when closeAfter is set.
func rawServer(t *testing.T, closeAfter bool, answer func(n int) string) (addr string, conns *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	conns = &atomic.Int32{}
	var n atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					if _, err := c.Write([]byte(answer(int(n.Add(1))))); err != nil || closeAfter {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String(), conns
}

func ok(body string) string {
	return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

func TestPageConnAnswers(t *testing.T) {
	chunked := func(body string) string {
		half := len(body) / 2
		return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
			strconv.FormatInt(int64(half), 16) + "\r\n" + body[:half] + "\r\n" +
			strconv.FormatInt(int64(len(body)-half), 16) + "\r\n" + body[half:] + "\r\n0\r\n\r\n"
	}
	for _, tc := range []struct {
		name       string
		closeAfter bool
		answer     func(n int) string
		wantErr    string // empty: every get returns testPage
		wantConns  int32
	}{
		{name: "content-length, kept alive", answer: func(int) string { return ok(testPage) }, wantConns: 1},
		{name: "chunked, kept alive", answer: func(int) string { return chunked(testPage) }, wantConns: 1},
		{name: "connection close", closeAfter: true, wantConns: 3, answer: func(int) string {
			return "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(testPage)) + "\r\n\r\n" + testPage
		}},
		// The server drops each connection after answering without saying so: the next request on
		// it fails before any answer and is sent again on a new connection.
		{name: "closed while idle", closeAfter: true, answer: func(int) string { return ok(testPage) }, wantConns: 3},
		{name: "server error", answer: func(int) string { return "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n" }, wantErr: "HTTP 503"},
		{name: "truncated body", closeAfter: true, answer: func(int) string {
			return "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + testPage
		}, wantErr: "unexpected EOF"},
		{name: "not HTTP", closeAfter: true, answer: func(int) string { return "SSH-2.0-OpenSSH\r\n" }, wantErr: "malformed HTTP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, conns := rawServer(t, tc.closeAfter, tc.answer)
			c := newPageConn(addr, "")
			defer c.close()
			for i := range 3 {
				page, err := c.get(context.Background(), nil, 2*time.Second)
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "http://"+addr+"/metrics") {
						t.Fatalf("get %d: %q, %v; want an error naming the page and %q", i, page, err, tc.wantErr)
					}
					continue
				}
				if err != nil || string(page) != testPage {
					t.Fatalf("get %d: %q, %v", i, page, err)
				}
			}
			if tc.wantConns != 0 && conns.Load() != tc.wantConns {
				t.Fatalf("%d connections for 3 pages, want %d", conns.Load(), tc.wantConns)
			}
		})
	}
}

func TestPageConnLimitsAndStops(t *testing.T) {
	big := strings.Repeat("# padding line of a page far too large for any model server\n", maxPageBytes/60+10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			_, _ = w.Write([]byte(big))
		case "/hang":
			<-r.Context().Done()
		}
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()

	c := newPageConn(addr, "/big")
	if _, err := c.get(context.Background(), nil, 5*time.Second); err == nil || !strings.Contains(err.Error(), "page larger than") {
		t.Fatalf("huge page: %v", err)
	}
	c.close()

	c = newPageConn(addr, "/hang")
	start := time.Now()
	if _, err := c.get(context.Background(), nil, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("hanging page: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("timeout of 200ms took %v", d)
	}

	// abort (the scrape loop stopping) ends a scrape in flight long before its deadline.
	ctx, cancel := context.WithCancel(context.Background())
	defer context.AfterFunc(ctx, c.abort)()
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	if _, err := c.get(ctx, nil, time.Minute); err == nil {
		t.Fatal("aborted scrape succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("abort took %v", d)
	}
	if _, err := c.get(ctx, nil, time.Minute); err == nil {
		t.Fatal("scrape after abort succeeded")
	}
	c.close()

	if ValidPath("/metrics?x=1") != true || ValidPath("metrics") || ValidPath("/a b") || ValidPath("/a\r\nHost: x") {
		t.Fatal("ValidPath accepts or refuses the wrong paths")
	}
}

package modelmetrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// pageConn reads one endpoint's metrics page over a kept-alive HTTP/1.1 connection of its own.
//
// The scrape loop owns it and does the whole exchange on its own goroutine: it writes a request
// prepared once and reads the response with readResponse (status line, the headers it needs,
// Content-Length, chunked or read-to-close bodies). An http.Client would add, per connection, a
// reader and a writer goroutine and a hand-off between them and the caller on every scrape; at
// 2,000 scrapes a second those hand-offs cost more than the parse (docs/benchmarks.md).
type pageConn struct {
	addr, path string
	req        []byte

	mu      sync.Mutex // guards conn and aborted against abort
	conn    net.Conn
	aborted bool
	br      *bufio.Reader
}

// errAborted means the scrape loop is stopping.
var errAborted = errors.New("scraper stopped")

func newPageConn(addr, path string) *pageConn {
	if path == "" {
		path = "/metrics"
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr +
		"\r\nUser-Agent: spillway-spoke\r\nAccept: text/plain;version=0.0.4\r\n\r\n"
	return &pageConn{addr: addr, path: path, req: []byte(req)}
}

func (c *pageConn) url() string { return "http://" + c.addr + c.path }

// ValidPath reports whether a metrics page path can go into a request line as it is.
func ValidPath(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] >= 0x7f {
			return false
		}
	}
	return true
}

// get appends the page to buf. A failure closes the connection; the next get dials again. A
// request on a kept-alive connection that the server closed meanwhile is sent once more on a
// new one, as net/http does for idempotent requests.
func (c *pageConn) get(ctx context.Context, buf []byte, timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	reused := c.conn != nil
	out, sent, err := c.roundTrip(ctx, buf, deadline)
	if err != nil && reused && !sent && ctx.Err() == nil {
		c.close()
		out, _, err = c.roundTrip(ctx, buf, deadline)
	}
	if err != nil {
		c.close()
		return out, fmt.Errorf("scrape %s: %w", c.url(), err)
	}
	return out, nil
}

// roundTrip sends the request and reads the page. sent reports whether any of the response
// arrived: until then, a failure on a reused connection is the server having closed it.
func (c *pageConn) roundTrip(ctx context.Context, buf []byte, deadline time.Time) (_ []byte, sent bool, _ error) {
	if err := c.dial(ctx, deadline); err != nil {
		return buf, false, err
	}
	// The request is a few hundred bytes on an idle connection: its write never waits for the
	// peer, so the deadline guards the read alone, one timer per scrape instead of two.
	if err := c.conn.SetReadDeadline(deadline); err != nil {
		return buf, false, err
	}
	// abort may have run before the deadline above replaced its own.
	if ctx.Err() != nil {
		return buf, false, errAborted
	}
	if _, err := c.conn.Write(c.req); err != nil {
		return buf, false, err
	}
	if _, err := c.br.Peek(1); err != nil {
		return buf, false, err
	}
	start := len(buf)
	buf, code, closing, err := readResponse(c.br, buf, maxPageBytes)
	if err != nil {
		return buf, true, err
	}
	// A bad or huge answer fails the scrape, and the connection is dropped with it (get).
	if code != http.StatusOK {
		return buf[:start], true, &httpStatusError{code: code}
	}
	if len(buf)-start > maxPageBytes {
		return buf, true, errTooLarge
	}
	if closing {
		c.close()
	}
	return buf, true, nil
}

func (c *pageConn) dial(ctx context.Context, deadline time.Time) error {
	if c.conn != nil {
		return nil
	}
	d := net.Dialer{Deadline: deadline}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		_ = conn.Close()
		return errAborted
	}
	c.conn = conn
	if c.br == nil {
		c.br = bufio.NewReaderSize(conn, 4096)
	} else {
		c.br.Reset(conn)
	}
	return nil
}

// abort makes a scrape in flight fail at once and any later one fail without dialling.
func (c *pageConn) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aborted = true
	if c.conn != nil {
		_ = c.conn.SetDeadline(time.Unix(1, 0))
	}
}

func (c *pageConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

// readAll appends r to buf, reusing its capacity.
func readAll(buf []byte, r io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

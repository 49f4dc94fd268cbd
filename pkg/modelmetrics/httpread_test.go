package modelmetrics

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\nTrailer: t\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end",
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy",
	"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nCONNECTION: Close\r\n\r\nabc",
	"HTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
}

// TestReadResponse reads what metrics endpoints answer, as net/http reads it.
func TestReadResponse(t *testing.T) {
	for _, in := range responseSeeds {
		body, code, closing, err := readResponse(bufio.NewReader(strings.NewReader(in)), nil, 1<<20)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(in)), nil)
		if err != nil {
			t.Fatalf("%q: net/http: %v", in, err)
		}
		want, _ := io.ReadAll(resp.Body)
		if code != resp.StatusCode || !bytes.Equal(body, want) || closing != resp.Close && resp.ContentLength >= 0 {
			t.Errorf("%q: code %d body %q closing %v; net/http: %d %q %v", in, code, body, closing, resp.StatusCode, want, resp.Close)
		}
	}
	for _, bad := range []string{
		"HTTP/2 200 OK\r\n\r\n",
		"HTTP/1.1 20 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"HTTP/1.1 200 OK\r\n" + strings.Repeat("X-A: b\r\n", maxHeaders+2) + "\r\n",
	} {
		if _, _, _, err := readResponse(bufio.NewReader(strings.NewReader(bad)), nil, 1<<20); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, _, _, err := readResponse(bufio.NewReader(strings.NewReader(responseSeeds[0])), nil, 4); !errors.Is(err, errTooLarge) {
		t.Errorf("a body over the limit: %v, want errTooLarge", err)
	}
}

// FuzzReadResponseAgrees: on any input, readResponse does not panic, and a 200 it reads has the
// body net/http reads.
func FuzzReadResponseAgrees(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		body, code, _, err := readResponse(bufio.NewReader(bytes.NewReader(in)), nil, 1<<20)
		if err != nil || code != 200 {
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(in)), nil)
		if err != nil {
			return // net/http is stricter on some headers this reader does not look at
		}
		want, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			return
		}
		if !bytes.Equal(body, want) {
			t.Fatalf("body %q, net/http reads %q", body, want)
		}
	})
}

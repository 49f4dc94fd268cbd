package modelmetrics

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
)

// A page's response is read by readResponse rather than net/http's ReadResponse: that builds a
// Response, a Header map and canonical header names on every scrape, which at 2,000 scrapes a
// second is a measurable share of the spoke's idle CPU (docs/benchmarks.md). It reads what a
// metrics endpoint answers, HTTP/1.x: the status line, the headers it needs (Content-Length,
// Transfer-Encoding: chunked, Connection: close) and the body, chunked, sized or read to the
// close. FuzzReadResponseAgrees holds it to net/http's reading of the same bytes.

// errMalformedResponse wraps what does not parse as an HTTP/1.x response.
var errMalformedResponse = errors.New("malformed HTTP response")

// maxHeaderLine bounds a status or header line, maxHeaders their number.
const (
	maxHeaderLine = 8 << 10
	maxHeaders    = 128
)

// readResponse reads one response from br and appends its body to buf (at most limit bytes
// plus one, so that the caller sees a body over the limit). It returns the status code and
// whether the server closes the connection after it.
func readResponse(br *bufio.Reader, buf []byte, limit int) (_ []byte, code int, closing bool, err error) {
	line, err := readLine(br)
	if err != nil {
		return buf, 0, true, err
	}
	major, minor, code, err := statusLine(line)
	if err != nil {
		return buf, 0, true, err
	}
	closing = major == 1 && minor == 0 // HTTP/1.0 closes unless kept alive
	length, chunked := -1, false
	for n := 0; ; n++ {
		if n > maxHeaders {
			return buf, code, true, fmt.Errorf("%w: more than %d headers", errMalformedResponse, maxHeaders)
		}
		line, err := readLine(br)
		if err != nil {
			return buf, code, true, err
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 || bytes.ContainsAny(name, " \t") {
			return buf, code, true, fmt.Errorf("%w: header line %q", errMalformedResponse, truncate(line))
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			v, ok := parseUint(value, 10)
			if !ok || (length >= 0 && v != length) {
				return buf, code, true, fmt.Errorf("%w: Content-Length %q", errMalformedResponse, value)
			}
			length = v
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			if !bytes.EqualFold(value, []byte("chunked")) {
				return buf, code, true, fmt.Errorf("%w: Transfer-Encoding %q", errMalformedResponse, value)
			}
			chunked = true
		case bytes.EqualFold(name, []byte("Connection")):
			for _, tok := range bytes.Split(value, []byte(",")) {
				switch tok = bytes.TrimSpace(tok); {
				case bytes.EqualFold(tok, []byte("close")):
					closing = true
				case bytes.EqualFold(tok, []byte("keep-alive")) && minor == 0:
					closing = false
				}
			}
		}
	}
	switch {
	case code == 204 || code == 304 || code/100 == 1:
		return buf, code, closing, nil
	case chunked:
		buf, err = readChunked(br, buf, limit)
		return buf, code, closing || err != nil, err
	case length >= 0:
		if length > limit {
			return buf, code, true, errTooLarge
		}
		buf, err = readN(br, buf, length)
		return buf, code, closing || err != nil, err
	}
	// Neither sized nor chunked: the body ends with the connection.
	buf, err = readAll(buf, io.LimitReader(br, int64(limit)+1))
	return buf, code, true, err
}

// statusLine parses "HTTP/1.x NNN reason".
func statusLine(line []byte) (major, minor, code int, err error) {
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' || line[7] < '0' || line[7] > '9' ||
		(len(line) > 12 && line[12] != ' ') {
		return 0, 0, 0, fmt.Errorf("%w: status line %q", errMalformedResponse, truncate(line))
	}
	c, ok := parseUint(line[9:12], 10)
	if !ok || c < 100 {
		return 0, 0, 0, fmt.Errorf("%w: status line %q", errMalformedResponse, truncate(line))
	}
	return 1, int(line[7] - '0'), c, nil
}

// parseUint parses a decimal or hexadecimal number of at most 15 digits (no sign, no prefix)
// without the allocation of strconv's parsers, whose errors keep the text.
func parseUint(b []byte, base int) (int, bool) {
	if len(b) == 0 || len(b) > 15 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		var d int
		switch {
		case c >= '0' && c <= '9':
			d = int(c - '0')
		case base == 16 && c >= 'a' && c <= 'f':
			d = int(c-'a') + 10
		case base == 16 && c >= 'A' && c <= 'F':
			d = int(c-'A') + 10
		default:
			return 0, false
		}
		n = n*base + d
	}
	return n, true
}

// readLine reads a line without its CRLF (or LF); the slice is valid until the next read.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxHeaderLine {
		return nil, fmt.Errorf("%w: line longer than %d bytes", errMalformedResponse, br.Size())
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// readN appends exactly n bytes of br to buf.
func readN(br *bufio.Reader, buf []byte, n int) ([]byte, error) {
	start := len(buf)
	buf = slices.Grow(buf, n)[:start+n]
	if _, err := io.ReadFull(br, buf[start:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return buf[:start], err
	}
	return buf, nil
}

// readChunked appends a chunked body to buf, at most limit bytes plus one, and reads the
// trailers that end it.
func readChunked(br *bufio.Reader, buf []byte, limit int) ([]byte, error) {
	start := len(buf)
	for {
		line, err := readLine(br)
		if err != nil {
			return buf, err
		}
		size, _, _ := bytes.Cut(line, []byte(";")) // chunk extensions are ignored
		n, ok := parseUint(bytes.TrimSpace(size), 16)
		if !ok {
			return buf, fmt.Errorf("%w: chunk size %q", errMalformedResponse, truncate(line))
		}
		if n == 0 {
			break
		}
		if len(buf)-start+n > limit {
			return buf, errTooLarge
		}
		if buf, err = readN(br, buf, n); err != nil {
			return buf, err
		}
		if line, err = readLine(br); err != nil || len(line) != 0 {
			if err == nil {
				err = fmt.Errorf("%w: no CRLF after a chunk", errMalformedResponse)
			}
			return buf, err
		}
	}
	for {
		line, err := readLine(br)
		if err != nil {
			return buf, err
		}
		if len(line) == 0 {
			return buf, nil
		}
	}
}

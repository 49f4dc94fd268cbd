package request

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// decodeFast reads the fields Parse needs in one pass over a body of the usual shape, validating
// the whole document as JSON on the way; ok is false for anything it is not sure to read exactly
// as encoding/json would (a syntax error, a field of another type, a key that differs from a
// field name only in case, a duplicate field, content given as parts, ...), and the caller then
// decodes with encoding/json, which also words the errors. FuzzDecodeFastAgrees holds the two
// side by side.
//
// encoding/json validates the document in one pass and decodes it in a second, by reflection;
// for the 2 KB chat bodies of the benchmarks that was half of the Endpoint Picker's scheduling
// time.
func decodeFast(data []byte) (b body, ok bool) {
	d := decoder{data: data}
	d.ws()
	if !d.object(func(key []byte) bool {
		switch string(key) {
		case "model":
			if b.Model != nil {
				return false
			}
			if d.peek() == 'n' {
				return d.null()
			}
			s, ok := d.str()
			b.Model = &s
			return ok
		case "stream":
			return !d.seen(&d.stream) && d.boolean(&b.Stream)
		case "stream_options":
			if d.seen(&d.streamOptions) {
				return false
			}
			if d.peek() == 'n' {
				return d.null()
			}
			var so struct {
				IncludeUsage bool `json:"include_usage"`
			}
			var seen bool
			b.StreamOptions = &so
			return d.object(func(key []byte) bool {
				if string(key) == "include_usage" {
					return !d.seen(&seen) && d.boolean(&so.IncludeUsage)
				}
				return !strings.EqualFold(string(key), "include_usage") && d.skip(0)
			})
		case "max_tokens", "max_completion_tokens":
			f := &b.MaxTokens
			if string(key) == "max_completion_tokens" {
				f = &b.MaxCompletionTokens
			}
			if *f != nil {
				return false
			}
			start := d.i
			if !d.skip(0) {
				return false
			}
			*f = json.RawMessage(data[start:d.i])
			return true
		case "prompt":
			if b.Prompt != nil {
				return false
			}
			start := d.i
			if !d.skip(0) {
				return false
			}
			b.Prompt = json.RawMessage(data[start:d.i])
			return true
		case "messages":
			if d.seen(&d.messages) {
				return false
			}
			if d.peek() == 'n' {
				return d.null()
			}
			b.Messages = []message{}
			return d.array(func() bool {
				var m message
				var role, content bool
				if !d.object(func(key []byte) bool {
					switch string(key) {
					case "role":
						if d.seen(&role) {
							return false
						}
						var ok bool
						m.Role, ok = d.str()
						return ok
					case "content":
						if d.seen(&content) {
							return false
						}
						if d.peek() == 'n' {
							return d.null()
						}
						var ok bool
						m.Content.text, ok = d.str()
						return ok
					}
					return !strings.EqualFold(string(key), "role") && !strings.EqualFold(string(key), "content") && d.skip(0)
				}) {
					return false
				}
				b.Messages = append(b.Messages, m)
				return true
			})
		}
		for _, f := range []string{"model", "stream", "stream_options", "prompt", "messages", "max_tokens", "max_completion_tokens"} {
			if strings.EqualFold(string(key), f) {
				return false
			}
		}
		return d.skip(0)
	}) {
		return body{}, false
	}
	d.ws()
	return b, d.i == len(data)
}

// maxDepth bounds the nesting the fast path follows; deeper documents go to encoding/json.
const maxDepth = 64

type decoder struct {
	data []byte
	i    int
	// which top-level fields were read, to refuse duplicates (encoding/json would merge them)
	stream, streamOptions, messages bool
}

func (d *decoder) ws() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *decoder) peek() byte {
	if d.i < len(d.data) {
		return d.data[d.i]
	}
	return 0
}

// seen marks a field read and reports whether it had been already.
func (d *decoder) seen(f *bool) bool {
	was := *f
	*f = true
	return was
}

// object reads an object, calling member with the cursor on each member's value; member reads
// the value. Keys are plain ASCII strings without escapes, or the fast path gives up.
func (d *decoder) object(member func(key []byte) bool) bool {
	return d.list('{', '}', func() bool {
		raw, plain := d.rawString()
		if raw == nil || !plain {
			return false
		}
		d.ws()
		if d.peek() != ':' {
			return false
		}
		d.i++
		d.ws()
		return member(raw[1 : len(raw)-1])
	})
}

// array reads an array, calling elem with the cursor on each element.
func (d *decoder) array(elem func() bool) bool { return d.list('[', ']', elem) }

// list reads open, items separated by commas, and close; item reads one item.
func (d *decoder) list(open, close byte, item func() bool) bool {
	if d.peek() != open {
		return false
	}
	d.i++
	d.ws()
	if d.peek() == close {
		d.i++
		return true
	}
	for {
		if !item() {
			return false
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.i++
			d.ws()
		case close:
			d.i++
			return true
		default:
			return false
		}
	}
}

// rawString reads a string token, quotes included. plain reports that it is ASCII without
// escapes, so that its text is the bytes between the quotes. nil means it is not a valid string.
func (d *decoder) rawString() (raw []byte, plain bool) {
	if d.peek() != '"' {
		return nil, false
	}
	start := d.i
	plain = true
	for i := d.i + 1; i < len(d.data); i++ {
		c := d.data[i]
		switch {
		case c == '"':
			d.i = i + 1
			return d.data[start:d.i], plain
		case c < 0x20:
			return nil, false
		case c >= 0x80:
			plain = false
		case c == '\\':
			plain = false
			if i+1 >= len(d.data) {
				return nil, false
			}
			switch d.data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+5 >= len(d.data) || !isHex(d.data[i+2:i+6]) {
					return nil, false
				}
				i += 5
			default:
				return nil, false
			}
		}
	}
	return nil, false
}

// str reads a string value. Text that needs decoding (escapes, or bytes that are not valid
// UTF-8 and become U+FFFD) is decoded by encoding/json.
func (d *decoder) str() (string, bool) {
	raw, plain := d.rawString()
	if raw == nil {
		return "", false
	}
	text := raw[1 : len(raw)-1]
	if plain || (bytes.IndexByte(text, '\\') < 0 && utf8.Valid(text)) {
		return string(text), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

func (d *decoder) boolean(v *bool) bool {
	switch {
	case d.lit("true"):
		*v = true
	case d.lit("false"):
		*v = false
	case d.lit("null"):
	default:
		return false
	}
	return true
}

func (d *decoder) null() bool { return d.lit("null") }

func (d *decoder) lit(s string) bool {
	if len(d.data)-d.i >= len(s) && string(d.data[d.i:d.i+len(s)]) == s {
		d.i += len(s)
		return true
	}
	return false
}

// skip validates and passes over any value.
func (d *decoder) skip(depth int) bool {
	if depth > maxDepth {
		return false
	}
	switch c := d.peek(); {
	case c == '{':
		return d.object(func([]byte) bool { return d.skip(depth + 1) })
	case c == '[':
		return d.array(func() bool { return d.skip(depth + 1) })
	case c == '"':
		raw, _ := d.rawString()
		return raw != nil
	case c == 't':
		return d.lit("true")
	case c == 'f':
		return d.lit("false")
	case c == 'n':
		return d.lit("null")
	default:
		return d.number()
	}
}

// number reads -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *decoder) number() bool {
	i := d.i
	if i < len(d.data) && d.data[i] == '-' {
		i++
	}
	switch {
	case i < len(d.data) && d.data[i] == '0':
		i++
	case i < len(d.data) && d.data[i] >= '1' && d.data[i] <= '9':
		i = digits(d.data, i)
	default:
		return false
	}
	if i < len(d.data) && d.data[i] == '.' {
		j := digits(d.data, i+1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(d.data) && (d.data[i] == 'e' || d.data[i] == 'E') {
		i++
		if i < len(d.data) && (d.data[i] == '+' || d.data[i] == '-') {
			i++
		}
		j := digits(d.data, i)
		if j == i {
			return false
		}
		i = j
	}
	d.i = i
	return true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

func isHex(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

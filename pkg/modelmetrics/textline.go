package modelmetrics

import (
	"bytes"
	"errors"
	"strconv"
	"unicode/utf8"
)

// parseLine reads one sample line of the Prometheus text format whose metric name, wanted[fam],
// the caller has matched, and appends it to p.series with its labels in p.pairs:
//
//	name [ "{" [ label "=" "\"" value "\"" { "," label "=" "\"" value "\"" } [ "," ] ] "}" ] value [ timestamp ]
//
// where a label name may be quoted, with blanks (spaces and tabs) allowed between the parts,
// label values escaped with \\, \" and \n, and label names unique. Every line it accepts,
// prometheus/common's text parser accepts as an untyped sample with the same labels and value
// (FuzzParseLineAgrees), and every line that parser's writer produces, it reads back
// (FuzzParseLineReadsWrittenLines); it costs a small fraction of that parser, which builds a
// protobuf family per line. The labels point into line: they are valid until the next Parse.
func (p *Parser) parseLine(line []byte, fam int) error {
	lo := len(p.pairs)
	v, err := p.sample(line[len(p.wanted[fam]):], lo)
	if err != nil {
		return err // Parse fails with it; p.pairs is reset by the next Parse
	}
	p.series = append(p.series, series{family: fam, lo: lo, hi: len(p.pairs), value: v})
	return nil
}

// sample reads what follows the metric name: labels (appended to p.pairs), the value and an
// optional timestamp.
func (p *Parser) sample(s []byte, lo int) (float64, error) {
	s = skipBlank(s)
	if len(s) > 0 && s[0] == '{' {
		var err error
		if s, err = p.labels(s[1:], lo); err != nil {
			return 0, err
		}
		s = skipBlank(s)
	}
	tok, s := token(s)
	if len(tok) == 0 {
		return 0, errors.New("no sample value")
	}
	v, err := parseValue(tok)
	if err != nil {
		return 0, err
	}
	// Anything after the value is a blank and a timestamp, and nothing after that.
	if len(s) > 0 {
		ts, rest := token(skipBlank(s))
		if _, err := strconv.ParseInt(string(ts), 10, 64); err != nil {
			return 0, errors.New("invalid timestamp")
		}
		if len(rest) > 0 {
			return 0, errors.New("spurious text after the timestamp")
		}
	}
	return v, nil
}

// labels reads label pairs after the opening brace up to the closing one, and returns the rest.
func (p *Parser) labels(s []byte, lo int) ([]byte, error) {
	for {
		s = skipBlank(s)
		if len(s) == 0 {
			return nil, errors.New("unterminated label set")
		}
		if s[0] == '}' {
			return s[1:], nil
		}
		// A name may be quoted (the UTF-8 form of the format); quoted or not, it must be a legacy
		// name, so no escape sequence can occur in a valid one.
		quoted := s[0] == '"'
		if quoted {
			s = s[1:]
		}
		n := labelNameLen(s)
		if n == 0 || (quoted && (n == len(s) || s[n] != '"')) {
			return nil, errors.New("invalid label name")
		}
		name := s[:n]
		if quoted {
			s = s[1:]
		}
		if string(name) == "__name__" {
			return nil, errors.New("label name __name__ is reserved")
		}
		for _, l := range p.pairs[lo:] {
			if bytes.Equal(l.name, name) {
				return nil, errors.New("duplicate label name")
			}
		}
		s = skipBlank(s[n:])
		if len(s) == 0 || s[0] != '=' {
			return nil, errors.New("expected '=' after a label name")
		}
		s = skipBlank(s[1:])
		if len(s) == 0 || s[0] != '"' {
			return nil, errors.New("expected '\"' to start a label value")
		}
		val, rest, err := labelValue(s[1:])
		if err != nil {
			return nil, err
		}
		p.pairs = append(p.pairs, labelPair{name: name, value: val})
		s = skipBlank(rest)
		switch {
		case len(s) == 0:
			return nil, errors.New("unterminated label set")
		case s[0] == ',':
			s = s[1:]
		case s[0] == '}':
			return s[1:], nil
		default:
			return nil, errors.New("expected ',' or '}' after a label value")
		}
	}
}

// labelValue reads a label value up to its closing quote. A value without escapes is returned
// in place; one with escapes is copied.
func labelValue(s []byte) (val, rest []byte, err error) {
	end := -1
	escaped := false
	for i, c := range s {
		if c == '\\' {
			escaped = true
			end = i
			break
		}
		if c == '"' {
			end = i
			break
		}
	}
	if end < 0 {
		return nil, nil, errors.New("unterminated label value")
	}
	if !escaped {
		val, rest = s[:end], s[end+1:]
	} else {
		buf := append([]byte(nil), s[:end]...)
		i := end
		for {
			if i >= len(s) {
				return nil, nil, errors.New("unterminated label value")
			}
			c := s[i]
			if c == '"' {
				break
			}
			if c == '\\' {
				if i+1 >= len(s) {
					return nil, nil, errors.New("unterminated label value")
				}
				switch s[i+1] {
				case '\\', '"':
					buf = append(buf, s[i+1])
				case 'n':
					buf = append(buf, '\n')
				default:
					return nil, nil, errors.New("invalid escape sequence in a label value")
				}
				i += 2
				continue
			}
			buf = append(buf, c)
			i++
		}
		val, rest = buf, s[i+1:]
	}
	if !utf8.Valid(val) {
		return nil, nil, errors.New("label value is not valid UTF-8")
	}
	return val, rest, nil
}

// parseValue reads a sample value as prometheus/common does: Go's float syntax (with Inf and NaN)
// without hexadecimal exponents or digit separators.
func parseValue(tok []byte) (float64, error) {
	if bytes.ContainsAny(tok, "pP_") {
		return 0, errors.New("invalid sample value")
	}
	v, err := strconv.ParseFloat(string(tok), 64)
	if err != nil {
		return 0, errors.New("invalid sample value")
	}
	return v, nil
}

// labelNameLen is the length of the legacy label name ([a-zA-Z_][a-zA-Z0-9_]*) at the start of s.
func labelNameLen(s []byte) int {
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return i
		}
	}
	return len(s)
}

// token splits off the text up to the next blank.
func token(s []byte) (tok, rest []byte) {
	for i, c := range s {
		if c == ' ' || c == '\t' {
			return s[:i], s[i:]
		}
	}
	return s, nil
}

func skipBlank(s []byte) []byte {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	return s
}

// truncate shortens a line for an error message.
func truncate(line []byte) []byte {
	if len(line) > 120 {
		return append(line[:117:117], "..."...)
	}
	return line
}

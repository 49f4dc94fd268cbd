// Package request reads the OpenAI request bodies the Endpoint Picker routes: completions and chat
// completions. It extracts what scheduling needs (model, the prompt text for prefix affinity,
// streaming) and rewrites the model when model routing says so.
package request

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrInvalid marks a body that is not a valid request; the EPP answers 400.
var ErrInvalid = errors.New("invalid request body")

// Kind is the API a request calls.
type Kind int

// Kinds.
const (
	Completions Kind = iota + 1
	ChatCompletions
)

func (k Kind) String() string {
	if k == ChatCompletions {
		return "chat-completions"
	}
	return "completions"
}

// Request is what the scheduler needs from a body.
type Request struct {
	Kind  Kind
	Model string
	// Prompt is the text whose prefix decides cache affinity: the prompt of a completion, or the
	// chat messages in order (role and content) of a chat completion.
	Prompt string
	Stream bool
	// IncludeUsage is stream_options.include_usage: a streamed response then ends with usage.
	IncludeUsage bool
	// MaxTokens is max_completion_tokens, else max_tokens: the most output tokens the request
	// may use; 0 when it states none (or not as a whole number).
	MaxTokens int64
}

type body struct {
	Model         *string         `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Messages      []message       `json:"messages"`
	Stream        bool            `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	// Kept raw: a value that is no whole number is not an error, the request states no limit.
	MaxTokens           json.RawMessage `json:"max_tokens"`
	MaxCompletionTokens json.RawMessage `json:"max_completion_tokens"`
}

// wholeNumber reads a JSON number that is a whole number from 0 up; 0 otherwise.
func wholeNumber(raw json.RawMessage) int64 {
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

type message struct {
	Role    string  `json:"role"`
	Content content `json:"content"`
}

// content is a message's text: a string, or a list of parts whose texts are joined. Decoding it
// in place keeps a request to one pass over its bytes.
type content struct {
	text string
	err  error
}

func (c *content) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) >= 2 && b[0] == '"' && bytes.IndexByte(b, '\\') < 0 && utf8.Valid(b):
		// No escapes, valid UTF-8: the text is the bytes between the quotes. Otherwise
		// encoding/json reads it, replacing invalid bytes with U+FFFD as it does for every field.
		c.text = string(b[1 : len(b)-1])
		return nil
	case len(b) > 0 && b[0] == '"':
		return json.Unmarshal(b, &c.text)
	case string(b) == "null":
		return nil // assistant messages with tool calls carry no content
	}
	var parts []struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		c.err = errors.New("must be a string or a list of content parts")
		return nil // reported with the message's index
	}
	var sb strings.Builder
	for _, p := range parts {
		sb.WriteString(p.Text)
	}
	c.text = sb.String()
	return nil
}

// Parse reads a body. path is the request's :path; when it names neither API, the body's fields
// decide (messages → chat completions, prompt → completions).
func Parse(path string, data []byte) (Request, error) {
	b, ok := decodeFast(data)
	if !ok {
		b = body{}
		if err := json.Unmarshal(data, &b); err != nil {
			var syn *json.SyntaxError
			if errors.As(err, &syn) && strings.Contains(err.Error(), "after top-level value") {
				return Request{}, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalid)
			}
			return Request{}, fmt.Errorf("%w: not JSON: %v", ErrInvalid, err)
		}
	}
	return parsed(path, b)
}

// parsed checks a decoded body and reads the request from it.
func parsed(path string, b body) (Request, error) {
	if b.Model == nil || strings.TrimSpace(*b.Model) == "" {
		return Request{}, fmt.Errorf("%w: \"model\" is required", ErrInvalid)
	}
	r := Request{Model: *b.Model, Stream: b.Stream, MaxTokens: wholeNumber(b.MaxCompletionTokens)}
	if r.MaxTokens == 0 {
		r.MaxTokens = wholeNumber(b.MaxTokens)
	}
	if b.StreamOptions != nil {
		r.IncludeUsage = b.StreamOptions.IncludeUsage
	}
	p := path
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	switch {
	case strings.HasSuffix(p, "/chat/completions"):
		r.Kind = ChatCompletions
	case strings.HasSuffix(p, "/completions"):
		r.Kind = Completions
	case b.Messages != nil:
		r.Kind = ChatCompletions
	default:
		r.Kind = Completions
	}
	var err error
	if r.Kind == ChatCompletions {
		r.Prompt, err = chatPrompt(b.Messages)
	} else {
		r.Prompt, err = completionPrompt(b.Prompt)
	}
	if err != nil {
		return Request{}, err
	}
	return r, nil
}

func completionPrompt(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", fmt.Errorf("%w: \"prompt\" is required for completions", ErrInvalid)
	}
	d := decoder{data: raw}
	if s, ok := d.str(); ok && d.i == len(raw) {
		return s, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil && len(list) > 0 {
		return strings.Join(list, "\n"), nil
	}
	// Token-ID prompts are valid OpenAI input; their text is their JSON form.
	var ids []int64
	if err := json.Unmarshal(raw, &ids); err == nil && len(ids) > 0 {
		return string(raw), nil
	}
	return "", fmt.Errorf("%w: \"prompt\" must be a string, a list of strings or token IDs", ErrInvalid)
}

func chatPrompt(msgs []message) (string, error) {
	if len(msgs) == 0 {
		return "", fmt.Errorf("%w: \"messages\" must be a non-empty list for chat completions", ErrInvalid)
	}
	size := 0
	for _, m := range msgs {
		size += len(m.Role) + len(m.Content.text) + 3
	}
	var b strings.Builder
	b.Grow(size)
	for i, m := range msgs {
		if m.Role == "" {
			return "", fmt.Errorf("%w: messages[%d].role is required", ErrInvalid, i)
		}
		if m.Content.err != nil {
			return "", fmt.Errorf("%w: messages[%d].content: %v", ErrInvalid, i, m.Content.err)
		}
		b.WriteString(m.Role)
		b.WriteString(": ")
		b.WriteString(m.Content.text)
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// WithModel returns the body with its top-level "model" replaced. The other fields keep their
// bytes; their order may change.
func WithModel(data []byte, model string) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	m, err := json.Marshal(model)
	if err != nil {
		return nil, err
	}
	fields["model"] = m
	return json.Marshal(fields)
}

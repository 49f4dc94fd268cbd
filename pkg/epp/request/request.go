// Package request reads the OpenAI request bodies the Endpoint Picker routes: completions and chat
// completions. It extracts what scheduling needs (model, the prompt text for prefix affinity,
// streaming) and rewrites the model when model routing says so.
package request

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
}

type body struct {
	Model         *string          `json:"model"`
	Prompt        json.RawMessage  `json:"prompt"`
	Messages      []message        `json:"messages"`
	Stream        bool             `json:"stream"`
	StreamOptions *json.RawMessage `json:"stream_options"`
}

type message struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// Parse reads a body. path is the request's :path; when it names neither API, the body's fields
// decide (messages → chat completions, prompt → completions).
func Parse(path string, data []byte) (Request, error) {
	var b body
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&b); err != nil {
		return Request{}, fmt.Errorf("%w: not JSON: %v", ErrInvalid, err)
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) > 0 {
		return Request{}, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalid)
	}
	if b.Model == nil || strings.TrimSpace(*b.Model) == "" {
		return Request{}, fmt.Errorf("%w: \"model\" is required", ErrInvalid)
	}
	r := Request{Model: *b.Model, Stream: b.Stream}
	if b.StreamOptions != nil {
		var so struct {
			IncludeUsage bool `json:"include_usage"`
		}
		if err := json.Unmarshal(*b.StreamOptions, &so); err != nil {
			return Request{}, fmt.Errorf("%w: stream_options: %v", ErrInvalid, err)
		}
		r.IncludeUsage = so.IncludeUsage
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
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
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
	var b strings.Builder
	for i, m := range msgs {
		if m.Role == "" {
			return "", fmt.Errorf("%w: messages[%d].role is required", ErrInvalid, i)
		}
		b.WriteString(m.Role)
		b.WriteString(": ")
		if err := contentText(&b, m.Content); err != nil {
			return "", fmt.Errorf("%w: messages[%d].content: %v", ErrInvalid, i, err)
		}
		b.WriteByte('\n')
	}
	return b.String(), nil
}

func contentText(b *strings.Builder, raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil // assistant messages with tool calls carry no content
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		b.WriteString(s)
		return nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return errors.New("must be a string or a list of content parts")
	}
	for _, p := range parts {
		b.WriteString(p.Text)
	}
	return nil
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

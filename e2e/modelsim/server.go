package modelsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// maxBodyBytes bounds a request body.
const maxBodyBytes = 4 << 20

// EndpointHeader names the endpoint that served a response, so that load generators can tell
// where a request landed.
const EndpointHeader = "X-Modelsim-Endpoint"

// Server serves one engine's OpenAI-compatible API and /metrics.
type Server struct {
	engine  *Engine
	address string
	mux     *http.ServeMux
	ids     atomic.Uint64
}

// NewServer returns the HTTP handler of an engine; address is reported in EndpointHeader.
func NewServer(e *Engine, address string) *Server {
	s := &Server{engine: e, address: address, mux: http.NewServeMux()}
	s.mux.HandleFunc("POST /v1/completions", s.completions)
	s.mux.HandleFunc("POST /v1/chat/completions", s.chatCompletions)
	s.mux.HandleFunc("GET /v1/models", s.models)
	s.mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	s.mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) { e.metrics.serve(e, w, r) })
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	rw.Header().Set(EndpointHeader, s.address)
	s.mux.ServeHTTP(rw, r)
	if rw.status/100 == 2 { // the page has series for successful requests of the API handlers only
		s.engine.metrics.http(r.URL.Path, time.Since(start).Seconds(), int(max(r.ContentLength, 0)), rw.bytes)
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *statusWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// CompletionRequest is the part of an OpenAI completions request the simulator reads.
type CompletionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	MaxTokens     int             `json:"max_tokens"`
	Stream        bool            `json:"stream"`
	StreamOptions *StreamOptions  `json:"stream_options,omitempty"`
}

// ChatRequest is the part of an OpenAI chat completions request the simulator reads.
type ChatRequest struct {
	Model               string         `json:"model"`
	Messages            []ChatMessage  `json:"messages"`
	MaxTokens           int            `json:"max_tokens"`
	MaxCompletionTokens int            `json:"max_completion_tokens"`
	Stream              bool           `json:"stream"`
	StreamOptions       *StreamOptions `json:"stream_options,omitempty"`
}

// ChatMessage is one chat message; content may be a string or a list of parts.
type ChatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// StreamOptions of a streamed request.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// Usage is the token usage of a response, with the prompt tokens found in the prefix cache in
// prompt_tokens_details.cached_tokens, as OpenAI's API and vLLM (--enable-prompt-tokens-details)
// report them.
type Usage struct {
	PromptTokens        int                 `json:"prompt_tokens"`
	CompletionTokens    int                 `json:"completion_tokens"`
	TotalTokens         int                 `json:"total_tokens"`
	PromptTokensDetails PromptTokensDetails `json:"prompt_tokens_details"`
}

// PromptTokensDetails breaks the prompt tokens down.
type PromptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	var req CompletionRequest
	if !decode(w, r, &req) {
		return
	}
	prompt, err := promptText(req.Prompt)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.generate(w, r, false, req.Model, prompt, req.MaxTokens, req.Stream, req.StreamOptions)
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	var req ChatRequest
	if !decode(w, r, &req) {
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "messages must not be empty")
		return
	}
	var b strings.Builder
	for _, m := range req.Messages {
		text, err := contentText(m.Content)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		b.WriteString(m.Role)
		b.WriteString(": ")
		b.WriteString(text)
		b.WriteString("\n")
	}
	maxTokens := req.MaxCompletionTokens
	if maxTokens == 0 {
		maxTokens = req.MaxTokens
	}
	s.generate(w, r, true, req.Model, b.String(), maxTokens, req.Stream, req.StreamOptions)
}

func (s *Server) generate(w http.ResponseWriter, r *http.Request, chat bool, model, prompt string, maxTokens int, stream bool, so *StreamOptions) {
	if model == "" {
		writeError(w, http.StatusBadRequest, "model is required")
		return
	}
	if maxTokens < 0 {
		writeError(w, http.StatusBadRequest, "max_tokens must not be negative")
		return
	}
	id := fmt.Sprintf("cmpl-%s-%d", strings.ReplaceAll(s.address, ":", "-"), s.ids.Add(1))
	created := time.Now().Unix()
	object := "text_completion"
	if chat {
		object = "chat.completion"
	}
	req := Request{Model: model, Prompt: prompt, MaxTokens: maxTokens}

	if !stream {
		var text strings.Builder
		res, err := s.engine.Generate(r.Context(), req, func(t Token) error { text.WriteString(t.Text); return nil })
		if err != nil {
			writeGenerateError(w, err)
			return
		}
		choice := map[string]any{"index": 0, "finish_reason": res.FinishReason}
		if chat {
			choice["message"] = map[string]any{"role": "assistant", "content": text.String()}
		} else {
			choice["text"] = text.String()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": id, "object": object, "created": created, "model": model,
			"choices": []any{choice}, "usage": usage(res),
		})
		return
	}

	flusher, _ := w.(http.Flusher)
	started := false
	chunkObject := object
	if chat {
		chunkObject = "chat.completion.chunk"
	}
	send := func(v any) error {
		if !started {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	first := true
	res, err := s.engine.Generate(r.Context(), req, func(t Token) error {
		choice := map[string]any{"index": 0, "finish_reason": nil}
		if chat {
			delta := map[string]any{"content": t.Text}
			if first {
				delta["role"] = "assistant"
			}
			choice["delta"] = delta
		} else {
			choice["text"] = t.Text
		}
		first = false
		return send(map[string]any{"id": id, "object": chunkObject, "created": created, "model": model, "choices": []any{choice}})
	})
	if err != nil {
		if !started {
			writeGenerateError(w, err)
		}
		return
	}
	final := map[string]any{"index": 0, "finish_reason": res.FinishReason}
	if chat {
		final["delta"] = map[string]any{}
	} else {
		final["text"] = ""
	}
	if send(map[string]any{"id": id, "object": chunkObject, "created": created, "model": model, "choices": []any{final}}) != nil {
		return
	}
	if so != nil && so.IncludeUsage {
		if send(map[string]any{"id": id, "object": chunkObject, "created": created, "model": model, "choices": []any{}, "usage": usage(res)}) != nil {
			return
		}
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
	if flusher != nil {
		flusher.Flush()
	}
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	var data []any
	for _, m := range s.engine.Models() {
		entry := map[string]any{"id": m, "object": "model", "owned_by": "modelsim", "max_model_len": s.engine.cfg.MaxModelLen}
		if m != s.engine.cfg.Model {
			entry["parent"] = s.engine.cfg.Model
		}
		data = append(data, entry)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data})
}

func usage(r Result) Usage {
	return Usage{PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens, TotalTokens: r.PromptTokens + r.CompletionTokens,
		PromptTokensDetails: PromptTokensDetails{CachedTokens: r.CachedTokens}}
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

func promptText(raw json.RawMessage) (string, error) {
	if len(raw) == 0 {
		return "", errors.New("prompt is required")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil && len(list) > 0 {
		return strings.Join(list, "\n"), nil
	}
	return "", errors.New("prompt must be a string or a non-empty list of strings")
}

func contentText(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("message content must be a string or a list of parts")
	}
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

func writeGenerateError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrUnknownModel):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrPromptTooLong):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		// The client went away; nobody reads this.
		writeError(w, 499, err.Error())
	}
}

// writeError writes an OpenAI-style error body.
func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	typ := "BadRequestError"
	if code == http.StatusNotFound {
		typ = "NotFoundError"
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "code": code}})
}

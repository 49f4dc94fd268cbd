package request

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, path, body string
		want             Request
	}{
		{"completion", "/v1/completions", `{"model":"m","prompt":"hello","max_tokens":3}`,
			Request{Kind: Completions, Model: "m", Prompt: "hello", MaxTokens: 3}},
		{"max_completion_tokens first", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":3,"max_completion_tokens":9}`,
			Request{Kind: ChatCompletions, Model: "m", Prompt: "user: x\n", MaxTokens: 9}},
		{"max_tokens not whole", "/v1/completions", `{"model":"m","prompt":"x","max_tokens":2.5}`,
			Request{Kind: Completions, Model: "m", Prompt: "x"}},
		{"max_tokens negative", "/v1/completions", `{"model":"m","prompt":"x","max_tokens":-4}`,
			Request{Kind: Completions, Model: "m", Prompt: "x"}},
		{"completion list", "/v1/completions", `{"model":"m","prompt":["a","b"]}`,
			Request{Kind: Completions, Model: "m", Prompt: "a\nb"}},
		{"token ids", "/v1/completions", `{"model":"m","prompt":[1,2,3]}`,
			Request{Kind: Completions, Model: "m", Prompt: "[1,2,3]"}},
		{"chat", "/v1/chat/completions?x=1", `{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,"stream_options":{"include_usage":true}}`,
			Request{Kind: ChatCompletions, Model: "m", Prompt: "system: be brief\nuser: hi\n", Stream: true, IncludeUsage: true}},
		{"chat by fields", "/generate", `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null}]}`,
			Request{Kind: ChatCompletions, Model: "m", Prompt: "user: x\nassistant: \n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.path, []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("Parse = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ name, path, body, want string }{
		{"not json", "/v1/completions", `{"model":`, "not JSON"},
		{"no model", "/v1/completions", `{"prompt":"x"}`, `"model" is required`},
		{"blank model", "/v1/completions", `{"model":" ","prompt":"x"}`, `"model" is required`},
		{"no prompt", "/v1/completions", `{"model":"m"}`, `"prompt" is required`},
		{"bad prompt", "/v1/completions", `{"model":"m","prompt":{"a":1}}`, `"prompt" must be`},
		{"no messages", "/v1/chat/completions", `{"model":"m","messages":[]}`, `"messages" must be a non-empty list`},
		{"no role", "/v1/chat/completions", `{"model":"m","messages":[{"content":"x"}]}`, "messages[0].role"},
		{"bad content", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":5}]}`, "messages[0].content"},
		{"two objects", "/v1/completions", `{"model":"m","prompt":"x"}{}`, "trailing data"},
		{"stray brace", "/v1/completions", `{"model":"m","prompt":"x"}}`, "trailing data"},
		{"array", "/v1/completions", `[1]`, "not JSON"},
		{"model not string", "/v1/completions", `{"model":5,"prompt":"x"}`, "not JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.path, []byte(tc.body))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
}

func TestWithModel(t *testing.T) {
	out, err := WithModel([]byte(`{"model":"chat","prompt":"x","max_tokens":7}`), "llama-v2")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	if m["model"] != "llama-v2" || m["prompt"] != "x" || m["max_tokens"] != float64(7) {
		t.Fatalf("rewritten body %s", out)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("/v1/completions", []byte(`{"model":"m","prompt":"hello"}`))
	f.Add("/v1/chat/completions", []byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,"stream_options":{"include_usage":true}}`))
	f.Add("/x", []byte(`{"model":"m","prompt":[1,2]}`))
	f.Fuzz(func(t *testing.T, path string, data []byte) {
		r, err := Parse(path, data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error without ErrInvalid: %v", err)
			}
			return
		}
		if strings.TrimSpace(r.Model) == "" || (r.Kind != Completions && r.Kind != ChatCompletions) {
			t.Fatalf("accepted %+v", r)
		}
		out, err := WithModel(data, "other")
		if err != nil {
			t.Fatalf("a parsed body cannot be rewritten: %v", err)
		}
		r2, err := Parse(path, out)
		if err != nil || r2.Model != "other" || r2.Prompt != r.Prompt || r2.Stream != r.Stream {
			t.Fatalf("rewrite changed the request: %+v → %+v (%v)", r, r2, err)
		}
	})
}

func BenchmarkParseChat(b *testing.B) {
	body := []byte(`{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":16,"messages":[{"role":"system","content":"` +
		strings.Repeat("You are a benchmark assistant. ", 70) + `"},{"role":"user","content":"question 1"}]}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for i := 0; i < b.N; i++ {
		if _, err := Parse("/v1/chat/completions", body); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecodeFastAgrees holds the fast decoder to encoding/json: whatever body it reads,
// encoding/json reads without error and into the same fields.
func FuzzDecodeFastAgrees(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","prompt":"hello"}`,
		`{"model":"m","messages":[{"role":"system","content":"a\nb \u00e9 \ud83d\ude00"},{"role":"user","content":null,"name":"x"}],"stream":true,"stream_options":{"include_usage":true,"x":[1,2.5e-3,{}]}}`,
		` {"model":null,"Model":"m","prompt":[1,2],"n":-0.5,"x":{"y":[true,false,null]}} `,
		`{"model":"m","messages":null,"stream":null,"stream_options":null}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
		`{"model":"m","prompt":"x","prompt":"y"}`, `{"model":"\xff","prompt":"x"}`, `{"model":"m","a":01}`,
		`{"model":"m","stream":"yes"}`, `{"model":"m"}  {}`, `{"model":"m","Stream":true}`,
		// Invalid UTF-8 (a Go string, so that the bytes are raw): read as U+FFFD on both paths.
		"{\"model\":\"\xff\",\"prompt\":\"x\"}", "{\"messages\":[{\"content\":\"\x8e\"}]}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := decodeFast(data)
		if !ok {
			return
		}
		var std body
		if err := json.Unmarshal(data, &std); err != nil {
			t.Fatalf("%q: the fast decoder read it, encoding/json refuses it: %v", data, err)
		}
		if (fast.Model == nil) != (std.Model == nil) || (fast.Model != nil && *fast.Model != *std.Model) {
			t.Fatalf("%q: model %v vs %v", data, fast.Model, std.Model)
		}
		if !bytes.Equal(fast.Prompt, std.Prompt) || fast.Stream != std.Stream {
			t.Fatalf("%q: prompt %q stream %v vs %q %v", data, fast.Prompt, fast.Stream, std.Prompt, std.Stream)
		}
		if (fast.StreamOptions == nil) != (std.StreamOptions == nil) || (fast.StreamOptions != nil && *fast.StreamOptions != *std.StreamOptions) {
			t.Fatalf("%q: stream_options %v vs %v", data, fast.StreamOptions, std.StreamOptions)
		}
		if (fast.Messages == nil) != (std.Messages == nil) || len(fast.Messages) != len(std.Messages) {
			t.Fatalf("%q: messages %v vs %v", data, fast.Messages, std.Messages)
		}
		for i := range fast.Messages {
			f, s := fast.Messages[i], std.Messages[i]
			if f.Role != s.Role || f.Content.text != s.Content.text || s.Content.err != nil {
				t.Fatalf("%q: message %d %+v vs %+v", data, i, f, s)
			}
		}
	})
}

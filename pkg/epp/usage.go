package epp

import (
	"bytes"
	"encoding/json"
)

// maxUsageBuffer bounds what the usage reader keeps of a non-streamed response or of one SSE line.
const maxUsageBuffer = 1 << 20

// Usage is the token usage of a response.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// usageReader finds the usage of an OpenAI response as its body streams by: in a JSON body at the
// end, in an SSE stream in the (last) event that carries one, whatever the chunking.
type usageReader struct {
	sse   bool
	buf   []byte
	found bool
	usage Usage
	over  bool
}

func (u *usageReader) write(chunk []byte) {
	if u.over {
		return
	}
	if !u.sse {
		if len(u.buf)+len(chunk) > maxUsageBuffer {
			u.over, u.buf = true, nil
			return
		}
		u.buf = append(u.buf, chunk...)
		return
	}
	u.buf = append(u.buf, chunk...)
	for {
		i := bytes.IndexByte(u.buf, '\n')
		if i < 0 {
			break
		}
		u.line(u.buf[:i])
		u.buf = u.buf[i+1:]
	}
	if len(u.buf) > maxUsageBuffer {
		u.over, u.buf = true, nil
	}
	// Keep the unread tail at the front so the buffer does not grow with the stream.
	u.buf = append(u.buf[:0:0], u.buf...)
}

func (u *usageReader) line(l []byte) {
	l = bytes.TrimRight(l, "\r")
	data, ok := bytes.CutPrefix(l, []byte("data:"))
	if !ok || !bytes.Contains(data, []byte(`"usage"`)) {
		return
	}
	u.parse(bytes.TrimSpace(data))
}

func (u *usageReader) parse(b []byte) {
	var v struct {
		Usage *struct {
			PromptTokens     *int `json:"prompt_tokens"`
			CompletionTokens *int `json:"completion_tokens"`
			InputTokens      *int `json:"input_tokens"`
			OutputTokens     *int `json:"output_tokens"`
		} `json:"usage"`
	}
	if json.Unmarshal(b, &v) != nil || v.Usage == nil {
		return
	}
	in, out := v.Usage.PromptTokens, v.Usage.CompletionTokens
	if in == nil {
		in = v.Usage.InputTokens
	}
	if out == nil {
		out = v.Usage.OutputTokens
	}
	if in == nil && out == nil {
		return
	}
	u.found = true
	u.usage = Usage{}
	if in != nil && *in >= 0 {
		u.usage.PromptTokens = *in
	}
	if out != nil && *out >= 0 {
		u.usage.CompletionTokens = *out
	}
}

// done finishes the body and reports the usage, if any was found.
func (u *usageReader) done() (Usage, bool) {
	if !u.sse && !u.over {
		u.parse(u.buf)
	} else if u.sse && len(u.buf) > 0 {
		u.line(u.buf)
	}
	u.buf = nil
	return u.usage, u.found
}

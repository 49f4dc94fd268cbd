package epp

import "testing"

func TestUsageReader(t *testing.T) {
	stream := "data: {\"choices\":[{\"text\":\" a\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":4,\"total_tokens\":16}}\n\ndata: [DONE]\n\n"
	for _, size := range []int{1, 3, 7, 64, len(stream)} {
		u := &usageReader{sse: true}
		for i := 0; i < len(stream); i += size {
			u.write([]byte(stream[i:min(i+size, len(stream))]))
		}
		got, ok := u.done()
		if !ok || got != (Usage{PromptTokens: 12, CompletionTokens: 4}) {
			t.Fatalf("chunks of %d: usage %+v %v", size, got, ok)
		}
	}
	u := &usageReader{}
	u.write([]byte(`{"id":"x","usage":{"input_tokens":3,`))
	u.write([]byte(`"output_tokens":9}}`))
	if got, ok := u.done(); !ok || got != (Usage{PromptTokens: 3, CompletionTokens: 9}) {
		t.Fatalf("JSON body: %+v %v", got, ok)
	}
	u = &usageReader{sse: true}
	u.write([]byte("data: {\"usage\":null}\n\n"))
	if _, ok := u.done(); ok {
		t.Fatal("null usage reported as found")
	}
}

func FuzzUsageReader(f *testing.F) {
	f.Add([]byte("data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n"), true, uint8(3))
	f.Add([]byte(`{"usage":{"prompt_tokens":-5}}`), false, uint8(1))
	f.Fuzz(func(t *testing.T, body []byte, sse bool, size uint8) {
		u := &usageReader{sse: sse}
		step := int(size) + 1
		for i := 0; i < len(body); i += step {
			u.write(body[i:min(i+step, len(body))])
		}
		got, _ := u.done()
		if got.PromptTokens < 0 || got.CompletionTokens < 0 {
			t.Fatalf("negative usage %+v", got)
		}
	})
}

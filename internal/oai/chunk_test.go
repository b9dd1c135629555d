package oai

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// Typical vLLM chunks (VLLM-FACTS §3), as the benchmarks and tests use them.
const (
	vllmChatRole = `{"id":"chatcmpl-b3f1c2d4e5f60718293a4b5c6d7e8f90","object":"chat.completion.chunk","created":1718000000,"model":"Qwen/Qwen2.5-7B-Instruct","prompt_token_ids":null,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens":128,"total_tokens":128,"completion_tokens":0}}`
	vllmChat     = `{"id":"chatcmpl-b3f1c2d4e5f60718293a4b5c6d7e8f90","object":"chat.completion.chunk","created":1718000000,"model":"Qwen/Qwen2.5-7B-Instruct","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null,"token_ids":null}],"usage":{"prompt_tokens":128,"total_tokens":170,"completion_tokens":42}}`
	vllmChatEnd  = `{"id":"chatcmpl-b3f1c2d4e5f60718293a4b5c6d7e8f90","object":"chat.completion.chunk","created":1718000000,"model":"Qwen/Qwen2.5-7B-Instruct","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null}],"usage":{"prompt_tokens":128,"total_tokens":384,"completion_tokens":256}}`
	vllmCompl    = `{"id":"cmpl-b3f1c2d4e5f60718293a4b5c6d7e8f90","object":"text_completion","created":1718000000,"model":"Qwen/Qwen2.5-7B-Instruct","choices":[{"index":0,"text":" city","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":{"prompt_tokens":128,"total_tokens":170,"completion_tokens":42}}`
	vllmUsage    = `{"id":"chatcmpl-b3f1c2d4e5f60718293a4b5c6d7e8f90","object":"chat.completion.chunk","created":1718000000,"model":"Qwen/Qwen2.5-7B-Instruct","choices":[],"usage":{"prompt_tokens":128,"total_tokens":384,"completion_tokens":256,"prompt_tokens_details":{"cached_tokens":96}}}`
	vllmError    = `{"error": {"message": "boom", "type": "BadRequestError", "param": null, "code": 400}}`
	vllmErrorOld = `{"object": "error", "message": "old boom", "type": "BadRequestError", "param": null, "code": 400}`
)

// want is what scanChunk should extract, computed independently.
type want struct {
	content, reasoning  bool
	nChoices            int
	finish              string
	usage               bool
	prompt, completion  int
	cached              int
	hasCached           bool
	errField, errObject bool
}

func got(c *chunkScan) want {
	var buf [64]byte
	return want{
		content: c.content, reasoning: c.reasoning, nChoices: c.nChoices,
		finish: string(appendUnescaped(buf[:0], c.finish, true, len(buf))),
		usage:  c.usage, prompt: c.prompt, completion: c.completion, cached: c.cached, hasCached: c.hasCached,
		errField: c.errField, errObject: c.errObject,
	}
}

// oracle computes want with encoding/json: decode into maps (exact keys,
// the last of duplicate keys wins), strings count when non-empty, numbers
// when they parse as int64.
func oracle(t testing.TB, data []byte) want {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("oracle decode of valid JSON: %v", err)
	}
	var w want
	m, ok := v.(map[string]any)
	if !ok {
		return w
	}
	str := func(v any) string { s, _ := v.(string); return s }
	num := func(v any) (int, bool) {
		n, ok := v.(json.Number)
		if !ok {
			return 0, false
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			return 0, false
		}
		return int(i), true
	}
	if arr, ok := m["choices"].([]any); ok {
		w.nChoices = len(arr)
		for _, el := range arr {
			ch, ok := el.(map[string]any)
			if !ok {
				continue
			}
			if str(ch["text"]) != "" {
				w.content = true
			}
			for _, k := range []string{"delta", "message"} {
				if d, ok := ch[k].(map[string]any); ok {
					w.content = w.content || str(d["content"]) != ""
					w.reasoning = w.reasoning || str(d["reasoning_content"]) != "" || str(d["reasoning"]) != ""
				}
			}
			if f := str(ch["finish_reason"]); f != "" {
				w.finish = f
			}
		}
	}
	if u, ok := m["usage"].(map[string]any); ok {
		w.usage = true
		w.prompt, _ = num(u["prompt_tokens"])
		w.completion, _ = num(u["completion_tokens"])
		if det, ok := u["prompt_tokens_details"].(map[string]any); ok {
			w.cached, w.hasCached = num(det["cached_tokens"])
		}
	}
	if e, ok := m["error"]; ok && e != nil {
		w.errField = true
	}
	w.errObject = str(m["object"]) == "error"
	return w
}

func TestScanChunk(t *testing.T) {
	tests := []struct {
		name        string
		data        string
		want        want
		wantPreview string
	}{
		{"chat role chunk", vllmChatRole, want{nChoices: 1, usage: true, prompt: 128}, ""},
		{"chat content", vllmChat, want{content: true, nChoices: 1, usage: true, prompt: 128, completion: 42}, " token"},
		{"chat finish", vllmChatEnd, want{nChoices: 1, finish: "length", usage: true, prompt: 128, completion: 256}, ""},
		{"completion", vllmCompl, want{content: true, nChoices: 1, usage: true, prompt: 128, completion: 42}, " city"},
		{"final usage with cached", vllmUsage, want{usage: true, prompt: 128, completion: 256, cached: 96, hasCached: true}, ""},
		{"error chunk", vllmError, want{errField: true}, ""},
		{"old error chunk", vllmErrorOld, want{errObject: true}, ""},
		{"escaped quote does not end the string", `{"choices":[{"delta":{"content":"a\"},\"usage\":{\"prompt_tokens\":9}"}}]}`,
			want{content: true, nChoices: 1}, `a"},"usage":{"prompt_tokens":9}`},
		{"escaped NUL is content", `{"choices":[{"text":"\u0000"}]}`, want{content: true, nChoices: 1}, "\x00"},
		{"escapes unescaped in preview", `{"choices":[{"text":"\"q\"\n\u00e9\ud83d\ude00\ud800x\\\/"}]}`,
			want{content: true, nChoices: 1}, "\"q\"\né😀\uFFFDx\\/"},
		{"empty content is no token", `{"choices":[{"delta":{"content":""}}]}`, want{nChoices: 1}, ""},
		{"null content is no token", `{"choices":[{"delta":{"content":null}}]}`, want{nChoices: 1}, ""},
		{"reasoning_content", `{"choices":[{"delta":{"reasoning_content":"hm"}}]}`, want{reasoning: true, nChoices: 1}, ""},
		{"reasoning", `{"choices":[{"delta":{"reasoning":"hm","content":null}}]}`, want{reasoning: true, nChoices: 1}, ""},
		{"non-streaming message", `{"choices":[{"message":{"role":"assistant","content":"whole"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":5}}`,
			want{content: true, nChoices: 1, finish: "stop", usage: true, prompt: 3, completion: 5}, "whole"},
		{"whitespace everywhere", " { \"choices\" : [ { \"text\" : \"x\" } ] , \"usage\" : { \"completion_tokens\" : 7 } } \n",
			want{content: true, nChoices: 1, usage: true, completion: 7}, "x"},
		{"escaped keys match", `{"ch\u006fices":[{"t\u0065xt":"x"}]}`, want{content: true, nChoices: 1}, "x"},
		{"keys are case-sensitive", `{"Choices":[{"text":"x"}]}`, want{}, ""},
		{"nested unknown values skipped", `{"x":{"choices":[{"text":"no"}]},"y":[[],{},[{"a":[1,-2.5e3,true,false,null]}]],"choices":[]}`, want{}, ""},
		{"usage null", `{"choices":[{"text":"a"}],"usage":null}`, want{content: true, nChoices: 1}, "a"},
		{"non-integer usage is 0", `{"usage":{"prompt_tokens":1.5,"completion_tokens":1e2}}`, want{usage: true}, ""},
		{"huge usage is 0", `{"usage":{"completion_tokens":99999999999999999999}}`, want{usage: true}, ""},
		{"negative usage", `{"usage":{"completion_tokens":-3}}`, want{usage: true, completion: -3}, ""},
		{"error null is not an error", `{"error":null,"choices":[]}`, want{}, ""},
		{"duplicate keys: last wins", `{"choices":[{"text":"a"}],"choices":[{"text":""}]}`, want{nChoices: 1}, "a"},
		{"top-level array", `[1,2]`, want{}, ""},
		{"top-level null", `null`, want{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pv []byte
			c := chunkScan{preview: &pv}
			if err := c.scan([]byte(tt.data)); err != nil {
				t.Fatalf("scan: %v", err)
			}
			if g := got(&c); g != tt.want {
				t.Errorf("got  %+v\nwant %+v", g, tt.want)
			}
			if o := oracle(t, []byte(tt.data)); o != tt.want {
				t.Errorf("oracle disagrees with the table: %+v", o)
			}
			if string(pv) != tt.wantPreview {
				t.Errorf("preview %q, want %q", pv, tt.wantPreview)
			}
		})
	}
}

func TestScanChunkRejectsInvalidJSON(t *testing.T) {
	for _, s := range []string{
		``, ` `, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":1}x`, `{"a":1}{}`, `{"choices":[{"text":"a"}]`,
		`{"choices":[{"text":"a}]}`, `{"choices":[{"text":"a\x"}]}`, `{"choices":[{"text":"\u12"}]}`,
		"{\"choices\":[{\"text\":\"a\x01\"}]}", `{"usage":{"completion_tokens":01}}`, `{"usage":{"completion_tokens":-}}`,
		`{"usage":{"completion_tokens":1.}}`, `{"usage":{"completion_tokens":1e}}`, `{"a":tru}`, `{"a":nul}`,
		`{"a":[1 2]}`, `{"a":[1,]}`, `{"a":{"b" 1}}`, `{"a":]`, `{'a':1}`, `{"a":1]`, `[1}`,
		strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1),
		`{"x":` + strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth) + `}`,
	} {
		if json.Valid([]byte(s)) {
			t.Fatalf("test input %q is valid JSON", s)
		}
		var c chunkScan
		if err := c.scan([]byte(s)); err == nil {
			t.Errorf("scan(%q) = nil, want a syntax error", clip([]byte(s), 60))
		}
	}
	deep := `{"x":` + strings.Repeat("[", maxJSONDepth-1) + strings.Repeat("]", maxJSONDepth-1) + `}`
	var c chunkScan
	if err := c.scan([]byte(deep)); err != nil || !json.Valid([]byte(deep)) {
		t.Errorf("nesting at the limit: scan %v, json.Valid %v; want both to accept", err, json.Valid([]byte(deep)))
	}
}

func TestScanChunkAllocatesNothing(t *testing.T) {
	pv := make([]byte, 0, previewBytes+utf8.UTFMax)
	c := chunkScan{preview: &pv}
	for _, s := range []string{vllmChatRole, vllmChat, vllmChatEnd, vllmCompl, vllmUsage} {
		data := []byte(s)
		if n := testing.AllocsPerRun(100, func() {
			pv = pv[:0]
			if err := c.scan(data); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("scan(%.40s…) allocates %v times, want 0", s, n)
		}
	}
}

// FuzzScanChunk checks the scanner against encoding/json: it accepts
// exactly what json.Valid accepts, and on valid input it makes the same
// content, reasoning, usage and error decisions as a map-based decode.
func FuzzScanChunk(f *testing.F) {
	for _, s := range []string{vllmChatRole, vllmChat, vllmChatEnd, vllmCompl, vllmUsage, vllmError, vllmErrorOld,
		`{"choices":[{"text":"\u0000\"\\"},{"delta":{"reasoning":"r"}},5,null],"usage":{"prompt_tokens_details":{"cached_tokens":null}}}`,
		`{"choices":[{"text":"a"}],"choices":{"x":1},"usage":{"completion_tokens":1},"usage":3}`,
		`{"\u0063hoices":[{"delta":{"content":"\ud800"}}],"object":"\u0065rror","error":null}`,
		`[{"a":[[[{}]]]},"x",-0.5e-3]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var pv []byte
		c := chunkScan{preview: &pv}
		err := c.scan(data)
		if valid := json.Valid(data); valid != (err == nil) {
			t.Fatalf("scan error %v, json.Valid %v", err, valid)
		}
		if len(pv) > previewBytes {
			t.Fatalf("preview has %d bytes", len(pv))
		}
		if err != nil {
			return
		}
		g, w := got(&c), oracle(t, data)
		if !utf8.ValidString(w.finish) || strings.ContainsRune(w.finish, utf8.RuneError) || len(w.finish) > 32 {
			g.finish, w.finish = "", "" // invalid UTF-8 is replaced by encoding/json, kept raw here
		}
		if g != w {
			t.Fatalf("scan   %+v\noracle %+v", g, w)
		}
	})
}

package sim

import (
	"bytes"
	"testing"
)

// marshalEvents returns the SSE event of the plain token chunk as marshal
// encodes it, for a completion and a chat stream.
func marshalEvents(id, model, text string, created int64) (completion, chat []byte) {
	completion = appendSSE(nil, marshal(completionChunk{
		ID: id, Object: "text_completion", Created: created, Model: model,
		Choices: []completionChunkChoice{{Text: text, Logprobs: jsonNull, StopReason: jsonNull, PromptTokenIDs: jsonNull, TokenIDs: jsonNull}},
	}))
	chat = appendSSE(nil, marshal(chatChunk{
		ID: id, Object: "chat.completion.chunk", Created: created, Model: model,
		Choices: []chatChunkChoice{{Delta: chatDelta{Content: &text}, Logprobs: jsonNull, TokenIDs: jsonNull}},
	}))
	return completion, chat
}

// templateEvents returns the same events through chunkTemplate, or nil
// where the template refused the ID or model.
func templateEvents(id, model, text string, created int64) (completion, chat []byte) {
	s := chunkSentinel
	if t := newChunkTemplate(marshalEvents0(id, model, s, created, false)); t.ok() {
		completion = t.appendEvent(nil, text)
	}
	if t := newChunkTemplate(marshalEvents0(id, model, s, created, true)); t.ok() {
		chat = t.appendEvent(nil, text)
	}
	return completion, chat
}

// marshalEvents0 is one of marshalEvents' chunks without the SSE framing.
func marshalEvents0(id, model, text string, created int64, chat bool) []byte {
	c, h := marshalEvents(id, model, text, created)
	ev := c
	if chat {
		ev = h
	}
	return bytes.TrimSuffix(bytes.TrimPrefix(ev, sseData), sseEnd)
}

// TestChunkTemplateMatchesMarshal checks that the streamed token chunk
// built from the template is byte for byte what encoding/json writes, for
// texts that need no escaping and texts that do.
func TestChunkTemplateMatchesMarshal(t *testing.T) {
	tests := []struct {
		name, id, model, text string
	}{
		{"plain word", "cmpl-abc", "Qwen/Qwen2.5-1.5B-Instruct", " hello"},
		{"empty text", "cmpl-abc", "m", ""},
		{"quote and backslash", "cmpl-abc", "m", `say "hi" \ bye`},
		{"html characters", "cmpl-abc", "m", "<a href='x'>&amp;</a>"},
		{"control characters", "cmpl-abc", "m", "line\nnext\ttab\r\x00\x1f\b\f"},
		{"unicode", "cmpl-abc", "m", "héllo wörld 你好 \u2028\u2029 😀"},
		{"invalid utf-8", "cmpl-abc", "m", "bad \xff\xfe byte"},
		{"model needing escapes", "cmpl-\"q\"", "org/mo\\del<>", " x"},
		{"sentinel in the text", "cmpl-abc", "m", chunkSentinel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantC, wantH := marshalEvents(tt.id, tt.model, tt.text, 1733300000)
			gotC, gotH := templateEvents(tt.id, tt.model, tt.text, 1733300000)
			if !bytes.Equal(gotC, wantC) {
				t.Errorf("completion chunk:\n got %q\nwant %q", gotC, wantC)
			}
			if !bytes.Equal(gotH, wantH) {
				t.Errorf("chat chunk:\n got %q\nwant %q", gotH, wantH)
			}
		})
	}
}

// TestChunkTemplateRefusesSentinelInModel checks that a served model name
// containing the sentinel disables the template rather than corrupting the
// chunk.
func TestChunkTemplateRefusesSentinelInModel(t *testing.T) {
	if got := newChunkTemplate(marshalEvents0("cmpl-1", chunkSentinel, chunkSentinel, 1, false)); got.ok() {
		t.Fatalf("template accepted a model name containing the sentinel: prefix %q", got.prefix)
	}
}

// FuzzChunkTemplate checks the template against encoding/json for any
// text, ID and model name: the bytes must match wherever the template is
// used.
func FuzzChunkTemplate(f *testing.F) {
	f.Add("cmpl-1", "Qwen/Qwen2.5-1.5B-Instruct", " token", int64(1733300000))
	f.Add("cmpl-\"", "m<>&", "\x00\xff\u2028", int64(-1))
	f.Fuzz(func(t *testing.T, id, model, text string, created int64) {
		wantC, wantH := marshalEvents(id, model, text, created)
		gotC, gotH := templateEvents(id, model, text, created)
		if gotC != nil && !bytes.Equal(gotC, wantC) {
			t.Errorf("completion chunk:\n got %q\nwant %q", gotC, wantC)
		}
		if gotH != nil && !bytes.Equal(gotH, wantH) {
			t.Errorf("chat chunk:\n got %q\nwant %q", gotH, wantH)
		}
	})
}

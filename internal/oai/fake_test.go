package oai

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sse writes Server-Sent Events to a fake server's response.
type sse struct {
	w http.ResponseWriter
}

func startSSE(w http.ResponseWriter) *sse {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	return &sse{w: w}
}

// raw writes s as is and flushes it.
func (s *sse) raw(str string) {
	_, _ = io.WriteString(s.w, str)
	s.w.(http.Flusher).Flush()
}

// data writes one data event.
func (s *sse) data(payload string) { s.raw("data: " + payload + "\n\n") }

func (s *sse) done() { s.data("[DONE]") }

// usageJSONText returns a usage object with cumulative completion tokens.
func usageJSONText(prompt, completion int) string {
	return fmt.Sprintf(`{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}`, prompt, prompt+completion, completion)
}

// chatRole is vLLM's role-only first chat chunk; cum < 0 leaves usage out.
func chatRole(cum int) string {
	return chatChunkJSON(`{"role":"assistant","content":""}`, cum)
}

// chatContent is a chat content chunk; cum < 0 leaves usage out.
func chatContent(text string, cum int) string {
	b, _ := json.Marshal(map[string]string{"content": text})
	return chatChunkJSON(string(b), cum)
}

func chatChunkJSON(delta string, cum int) string {
	s := `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":` + delta + `,"logprobs":null,"finish_reason":null}]`
	if cum >= 0 {
		s += `,"usage":` + usageJSONText(7, cum)
	}
	return s + "}"
}

// completionText is a completions chunk; cum < 0 gives "usage":null.
func completionText(text string, cum int) string {
	b, _ := json.Marshal(text)
	u := "null"
	if cum >= 0 {
		u = usageJSONText(7, cum)
	}
	return `{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":` + string(b) + `,"logprobs":null,"finish_reason":null,"stop_reason":null}],"usage":` + u + `}`
}

// finalUsage is the include_usage chunk with empty choices.
func finalUsage(prompt, completion int) string {
	return `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":` + usageJSONText(prompt, completion) + `}`
}

// fakeServer is an httptest server that counts requests and tracks how many
// run at once.
type fakeServer struct {
	*httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	open     int
	maxOpen  int
	bodies   []map[string]any
}

func newFakeServer(t testing.TB, h func(w http.ResponseWriter, r *http.Request)) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		f.open++
		f.maxOpen = max(f.maxOpen, f.open)
		f.bodies = append(f.bodies, body)
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			f.open--
			f.mu.Unlock()
		}()
		h(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

// streamTokens is a handler that streams n chat tokens with continuous usage,
// gap apart, then the usage chunk and [DONE].
func streamTokens(n int, gap time.Duration) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		s := startSSE(w)
		s.data(chatRole(0))
		for i := 1; i <= n; i++ {
			if gap > 0 {
				select {
				case <-time.After(gap):
				case <-r.Context().Done():
					return
				}
			}
			s.data(chatContent(fmt.Sprintf("t%d ", i), i))
		}
		s.data(finalUsage(7, n))
		s.done()
	}
}

// refusedURL returns a URL on which nothing listens.
func refusedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func chatReq(base string) Request {
	return Request{BaseURL: base, API: APIChat, Model: "m", Prompt: "hi", MaxTokens: 16, Stream: true}
}

func must(t *testing.T, ok bool, format string, a ...any) {
	t.Helper()
	if !ok {
		t.Fatalf(format, a...)
	}
}

func wantOK(t *testing.T, r Result) {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("request failed: %v (body %q)", r.Err, r.Err.Body)
	}
}

// newClient returns a Client for cfg, closed when the test ends, or fails
// the test when cfg is refused.
func newClient(tb testing.TB, cfg Config) *Client {
	tb.Helper()
	c, err := NewClient(cfg)
	if err != nil {
		tb.Fatalf("NewClient(%+v): %v", cfg, err)
	}
	tb.Cleanup(c.Close)
	return c
}

package agent

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/internal/hdr"
)

// BenchmarkParseChunk measures the per-chunk cost: one SSE line of a chat
// content chunk with continuous usage, as vLLM sends it.
func BenchmarkParseChunk(b *testing.B) {
	line := []byte("data: " + chatContent(" token", 42) + "\n")
	r := Result{Send: time.Now(), CachedTokens: -1, Marks: make([]Mark, 0, 1024)}
	s := stream{r: &r, maxLine: defaultMaxLine}
	now := time.Now()
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if len(r.Marks) == cap(r.Marks) {
			r.Marks = r.Marks[:0]
		}
		if s.line(now, trimEOL(line)) {
			b.Fatal("stream ended")
		}
	}
	if r.Err != nil {
		b.Fatal(r.Err)
	}
}

// BenchmarkStream measures one whole streamed request of 1000 tokens from a
// local SSE server that writes as fast as it can, including recording the
// metrics. It reports the client-side cost per token.
func BenchmarkStream(b *testing.B) {
	const tokens = 1000
	var body strings.Builder
	body.WriteString("data: " + chatRole(0) + "\n\n")
	for i := 1; i <= tokens; i++ {
		body.WriteString("data: " + chatContent(" tok", i) + "\n\n")
	}
	body.WriteString("data: " + finalUsage(7, tokens) + "\n\ndata: [DONE]\n\n")
	payload := body.String()
	f := newFakeServer(b, func(w http.ResponseWriter, r *http.Request) {
		startSSE(w).raw(payload)
	})
	c := NewClient(ClientConfig{MaxConns: 1})
	defer c.Close()
	set := newSet()
	req := chatReq(f.URL)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		r := c.Do(context.Background(), req)
		if r.Err != nil || r.OutputTokens != tokens {
			b.Fatalf("err %v, tokens %d", r.Err, r.OutputTokens)
		}
		recordMetrics(set, &r)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tokens), "ns/token")
	_ = set.Get(hdr.ITL).Count()
}

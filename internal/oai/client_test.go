package oai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
	"github.com/ttftlab/ttftlab/internal/ssebench"
)

func TestChatRoleChunkDoesNotEndTTFT(t *testing.T) {
	const pause = 150 * time.Millisecond
	f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
		s := oaitest.StartSSE(w)
		s.Data(oaitest.ChatRole(0))
		time.Sleep(pause)
		s.Data(oaitest.ChatContent("Hello", 1))
		s.Data(oaitest.ChatContent(" world", 2))
		s.Data(oaitest.ChatChunk(`{"content":""}`, 3)) // finish chunk: no text
		s.Data(oaitest.FinalUsage(7, 3))
		s.Done()
	})
	c := newClient(t, Config{})
	defer c.Close()
	r := c.Do(context.Background(), chatReq(f.URL))
	wantOK(t, r)

	if got := r.FirstChunk.Sub(r.Send); got >= pause {
		t.Errorf("first chunk at %v, want before the %v pause", got, pause)
	}
	if got := r.TTFT(); got < pause {
		t.Errorf("TTFT = %v, want ≥ %v: the role-only chunk must not count as a token", got, pause)
	}
	must(t, r.FirstToken.After(r.FirstChunk), "FirstToken %v not after FirstChunk %v", r.FirstToken, r.FirstChunk)
	must(t, !r.Last.Before(r.FirstToken), "Last before FirstToken")
	must(t, !r.Done.Before(r.Last), "Done before Last")
	if r.OutputTokens != 3 || r.PromptTokens != 7 || r.UsageSource != UsageContinuous {
		t.Errorf("tokens out=%d prompt=%d source=%q, want 3, 7, continuous", r.OutputTokens, r.PromptTokens, r.UsageSource)
	}
	if r.Preview != "Hello world" {
		t.Errorf("Preview = %q, want %q", r.Preview, "Hello world")
	}
	if r.Chunks != 5 {
		t.Errorf("Chunks = %d, want 5", r.Chunks)
	}
	if r.CachedTokens != -1 {
		t.Errorf("CachedTokens = %d, want -1 when absent", r.CachedTokens)
	}
	if len(r.Marks) != 2 {
		t.Fatalf("Marks = %+v, want 2 token-bearing chunks", r.Marks)
	}

	body := f.Bodies()[0]
	so, _ := body["stream_options"].(map[string]any)
	if body["stream"] != true || so["include_usage"] != true || so["continuous_usage_stats"] != true {
		t.Errorf("request body = %v, want stream with include_usage and continuous_usage_stats", body)
	}
	if _, ok := body["messages"]; !ok {
		t.Errorf("chat request body has no messages: %v", body)
	}
}

func TestCompletionsTTFT(t *testing.T) {
	const pause = 80 * time.Millisecond
	var path string
	f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		s := oaitest.StartSSE(w)
		time.Sleep(pause)
		s.Data(oaitest.CompletionText(" Paris", -1))
		s.Data(oaitest.CompletionText(" is", -1))
		s.Data(`{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":5,"total_tokens":7,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}`)
		s.Done()
	})
	c := newClient(t, Config{})
	defer c.Close()
	req := chatReq(f.URL + "/v1/")
	req.API = APICompletions
	r := c.Do(context.Background(), req)
	wantOK(t, r)
	if path != "/v1/completions" {
		t.Errorf("path = %q, want /v1/completions (base URL with /v1/ must be normalised)", path)
	}
	if r.TTFT() < pause {
		t.Errorf("TTFT = %v, want ≥ %v", r.TTFT(), pause)
	}
	if r.FirstChunk != r.FirstToken {
		t.Errorf("completions have no role chunk: FirstChunk %v != FirstToken %v", r.FirstChunk, r.FirstToken)
	}
	if r.UsageSource != UsageFinal || r.OutputTokens != 2 || r.PromptTokens != 5 || r.CachedTokens != 4 {
		t.Errorf("source=%q out=%d prompt=%d cached=%d, want final, 2, 5, 4", r.UsageSource, r.OutputTokens, r.PromptTokens, r.CachedTokens)
	}
	if r.Preview != " Paris is" {
		t.Errorf("Preview = %q", r.Preview)
	}
}

func TestContinuousUsageSplitsITL(t *testing.T) {
	f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
		s := oaitest.StartSSE(w)
		s.Data(oaitest.ChatRole(0))
		s.Data(oaitest.ChatContent("a", 1))
		time.Sleep(60 * time.Millisecond)
		s.Data(oaitest.ChatContent("bcd", 4)) // three tokens in one chunk
		s.Data(oaitest.FinalUsage(7, 4))
		s.Done()
	})
	c := newClient(t, Config{})
	defer c.Close()
	var streamed atomic.Uint64
	req := chatReq(f.URL)
	req.Streamed = &streamed
	r := c.Do(context.Background(), req)
	wantOK(t, r)
	if len(r.Marks) != 2 || r.Marks[0].Tokens != 1 || r.Marks[1].Tokens != 3 {
		t.Fatalf("Marks = %+v, want tokens 1 then 3", r.Marks)
	}
	tpot, ok := r.TPOT()
	if want := r.Last.Sub(r.FirstToken) / 3; !ok || tpot != want {
		t.Errorf("TPOT = %v, %v; want %v", tpot, ok, want)
	}
	if got := streamed.Load(); got != 4 {
		t.Errorf("Streamed counted %d tokens, want 4 (1 + 3, as the marks)", got)
	}
	if r.OutputTokens != 4 || r.UsageSource != UsageContinuous {
		t.Errorf("OutputTokens %d from %q, want 4 from %q", r.OutputTokens, r.UsageSource, UsageContinuous)
	}
}

func TestTokenCountingFallbacks(t *testing.T) {
	tests := []struct {
		name       string
		chunks     []string
		wantSource string
		wantOut    int
	}{
		{
			name:       "no usage counts one token per content chunk",
			chunks:     []string{oaitest.ChatRole(-1), oaitest.ChatContent("a", -1), oaitest.ChatContent("b", -1), oaitest.ChatContent("", -1), oaitest.ChatContent("c", -1)},
			wantSource: UsageCounted,
			wantOut:    3,
		},
		{
			name:       "final usage only",
			chunks:     []string{oaitest.ChatRole(-1), oaitest.ChatContent("ab", -1), oaitest.ChatContent("cd", -1), oaitest.FinalUsage(7, 4)},
			wantSource: UsageFinal,
			wantOut:    4,
		},
		{
			name:       "continuous usage",
			chunks:     []string{oaitest.ChatRole(0), oaitest.ChatContent("ab", 2), oaitest.ChatContent("cd", 4), oaitest.FinalUsage(7, 4)},
			wantSource: UsageContinuous,
			wantOut:    4,
		},
		{
			name:       "completions without usage",
			chunks:     []string{oaitest.CompletionText("x", -1), oaitest.CompletionText("y", -1)},
			wantSource: UsageCounted,
			wantOut:    2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
				s := oaitest.StartSSE(w)
				for _, c := range tt.chunks {
					s.Data(c)
				}
				s.Done()
			})
			c := newClient(t, Config{})
			defer c.Close()
			r := c.Do(context.Background(), chatReq(f.URL))
			wantOK(t, r)
			if r.UsageSource != tt.wantSource || r.OutputTokens != tt.wantOut {
				t.Errorf("source %q, out %d; want %q, %d", r.UsageSource, r.OutputTokens, tt.wantSource, tt.wantOut)
			}
			if tt.wantSource != UsageContinuous {
				for _, m := range r.Marks {
					if m.Tokens != 1 {
						t.Errorf("mark %+v: want 1 token per chunk without continuous usage", m)
					}
				}
			}
		})
	}
}

func TestSSEFraming(t *testing.T) {
	tests := []struct {
		name string
		raw  string
	}{
		{"CRLF line endings", "data: " + oaitest.ChatRole(0) + "\r\n\r\ndata: " + oaitest.ChatContent("hi", 1) + "\r\n\r\ndata: [DONE]\r\n\r\n"},
		{"comments, event and id lines", ": keep-alive\n\nevent: message\nid: 1\ndata: " + oaitest.ChatContent("hi", 1) + "\n\nretry: 10\n:\ndata: [DONE]\n\n"},
		{"no space after colon, no blank lines", "data:" + oaitest.ChatContent("hi", 1) + "\ndata:[DONE]\n"},
		{"[DONE] without trailing newline", "data: " + oaitest.ChatContent("hi", 1) + "\n\ndata: [DONE]"},
		{"unknown lines ignored", "garbage line\n\ndata: " + oaitest.ChatContent("hi", 1) + "\n\ndata: [DONE]\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
				oaitest.StartSSE(w).Raw(tt.raw)
			})
			c := newClient(t, Config{})
			defer c.Close()
			r := c.Do(context.Background(), chatReq(f.URL))
			wantOK(t, r)
			if r.Preview != "hi" || r.FirstToken.IsZero() {
				t.Errorf("Preview %q FirstToken %v, want hi and set", r.Preview, r.FirstToken)
			}
		})
	}
}

func TestLongSSELine(t *testing.T) {
	big := strings.Repeat("x", 4<<20)
	f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
		s := oaitest.StartSSE(w)
		s.Data(oaitest.ChatRole(0))
		s.Data(oaitest.ChatContent(big, 1))
		s.Data(oaitest.ChatContent("y", 2))
		s.Done()
	})
	c := newClient(t, Config{})
	defer c.Close()
	r := c.Do(context.Background(), chatReq(f.URL))
	wantOK(t, r)
	if len(r.Marks) != 2 || r.OutputTokens != 2 {
		t.Errorf("marks %d, out %d; want 2, 2", len(r.Marks), r.OutputTokens)
	}
	if len(r.Preview) != previewBytes {
		t.Errorf("Preview length %d, want %d", len(r.Preview), previewBytes)
	}
}

func TestReasoningTrackedSeparately(t *testing.T) {
	f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
		s := oaitest.StartSSE(w)
		s.Data(oaitest.ChatRole(0))
		s.Data(oaitest.ChatChunk(`{"reasoning_content":"think"}`, 1))
		time.Sleep(50 * time.Millisecond)
		s.Data(oaitest.ChatContent("answer", 2))
		s.Done()
	})
	c := newClient(t, Config{})
	defer c.Close()
	r := c.Do(context.Background(), chatReq(f.URL))
	wantOK(t, r)
	must(t, !r.FirstReasoning.IsZero() && r.FirstReasoning.Before(r.FirstToken), "FirstReasoning %v should precede FirstToken %v", r.FirstReasoning, r.FirstToken)
	if r.Preview != "answer" {
		t.Errorf("Preview = %q, want only content", r.Preview)
	}
	if tpot, ok := r.TPOT(); !ok || tpot != r.Last.Sub(r.FirstReasoning) {
		t.Errorf("TPOT = %v, %v; want Last − FirstReasoning", tpot, ok)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name       string
		handler    func(w http.ResponseWriter, r *http.Request)
		url        string // overrides the fake server
		cfg        Config
		ctx        func() (context.Context, context.CancelFunc)
		wantKind   string
		wantClass  string
		wantDetail string
		wantBody   string
		maxElapsed time.Duration
	}{
		{
			name: "mid-stream error chunk (0.10.1+)",
			handler: func(w http.ResponseWriter, r *http.Request) {
				s := oaitest.StartSSE(w)
				s.Data(oaitest.ChatRole(0))
				s.Data(oaitest.ChatContent("a", 1))
				s.Data(`{"error": {"message": "boom", "type": "BadRequestError", "param": null, "code": 400}}`)
				s.Done()
			},
			wantKind: KindStreamError, wantClass: KindStreamError, wantDetail: "boom", wantBody: `"boom"`,
		},
		{
			name: "mid-stream error chunk (old shape)",
			handler: func(w http.ResponseWriter, r *http.Request) {
				s := oaitest.StartSSE(w)
				s.Data(oaitest.ChatRole(0))
				s.Data(`{"object": "error", "message": "old boom", "type": "BadRequestError", "param": null, "code": 400}`)
				s.Done()
			},
			wantKind: KindStreamError, wantClass: KindStreamError, wantDetail: "old boom",
		},
		{
			name: "EOF without [DONE]",
			handler: func(w http.ResponseWriter, r *http.Request) {
				s := oaitest.StartSSE(w)
				s.Data(oaitest.ChatContent("a", 1))
			},
			wantKind: KindTruncated, wantClass: KindTruncated,
		},
		{
			name: "connection cut mid-stream",
			handler: func(w http.ResponseWriter, r *http.Request) {
				s := oaitest.StartSSE(w)
				s.Data(oaitest.ChatContent("a", 1))
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
			},
			wantKind: KindTruncated, wantClass: KindTruncated,
		},
		{
			name: "connection closed before headers",
			handler: func(w http.ResponseWriter, r *http.Request) {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
			},
			wantKind: KindConnectionReset, wantClass: KindConnectionReset,
		},
		{
			name: "500 keeps the body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusInternalServerError)
				_, _ = w.Write([]byte(`{"error":{"message":"engine dead","type":"InternalServerError","param":null,"code":500}}`))
			},
			wantKind: "http_500", wantClass: KindHTTP5xx, wantDetail: "engine dead", wantBody: "engine dead",
		},
		{
			name: "400 old body shape",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"object":"error","message":"This model's maximum context length is 4096 tokens.","type":"BadRequestError","param":null,"code":400}`))
			},
			wantKind: "http_400", wantClass: KindHTTP4xx, wantDetail: "maximum context length",
		},
		{
			name: "401 string error",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = w.Write([]byte(`{"error":"Unauthorized"}`))
			},
			wantKind: "http_401", wantClass: KindHTTP4xx, wantDetail: "Unauthorized",
		},
		{
			name: "error body truncated to 1 KiB",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusBadGateway)
				_, _ = w.Write([]byte(strings.Repeat("z", 10000)))
			},
			wantKind: "http_502", wantClass: KindHTTP5xx, wantBody: strings.Repeat("z", maxErrorBody),
		},
		{
			name: "malformed JSON chunk",
			handler: func(w http.ResponseWriter, r *http.Request) {
				s := oaitest.StartSSE(w)
				s.Data(`{"choices":[{"delta":{"content":"a"}`)
				s.Done()
			},
			wantKind: KindMalformedJSON, wantClass: KindMalformedJSON, wantBody: `{"choices"`,
		},
		{
			name:     "connection refused",
			url:      "refused",
			wantKind: KindConnectRefused, wantClass: KindConnectRefused,
		},
		{
			name: "TTFT timeout",
			handler: func(w http.ResponseWriter, r *http.Request) {
				s := oaitest.StartSSE(w)
				s.Data(oaitest.ChatRole(0))
				select {
				case <-time.After(5 * time.Second):
				case <-r.Context().Done():
				}
			},
			cfg:        Config{TTFTTimeout: 100 * time.Millisecond},
			wantKind:   KindTimeoutTTFT,
			wantClass:  KindTimeoutTTFT,
			maxElapsed: 2 * time.Second,
		},
		{
			name:       "total timeout after tokens",
			handler:    oaitest.StreamTokens(100, 20*time.Millisecond),
			cfg:        Config{TTFTTimeout: time.Second, Timeout: 150 * time.Millisecond},
			wantKind:   KindTimeoutTotal,
			wantClass:  KindTimeoutTotal,
			maxElapsed: 2 * time.Second,
		},
		{
			name:    "caller cancels",
			handler: oaitest.StreamTokens(100, 20*time.Millisecond),
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 100*time.Millisecond)
			},
			wantKind:   KindCanceled,
			wantClass:  KindCanceled,
			maxElapsed: 2 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := tt.url
			if url == "refused" {
				url = oaitest.RefusedURL(t)
			} else {
				url = oaitest.NewServer(t, tt.handler).URL
			}
			ctx, cancel := context.WithCancel(context.Background())
			if tt.ctx != nil {
				ctx, cancel = tt.ctx()
			}
			defer cancel()
			c := newClient(t, tt.cfg)
			defer c.Close()
			start := time.Now()
			r := c.Do(ctx, chatReq(url))
			elapsed := time.Since(start)
			if r.Err == nil {
				t.Fatalf("Do succeeded, want %s", tt.wantKind)
			}
			if r.Err.Kind != tt.wantKind || r.Err.Class != tt.wantClass {
				t.Errorf("kind %q class %q, want %q %q (err: %v)", r.Err.Kind, r.Err.Class, tt.wantKind, tt.wantClass, r.Err)
			}
			if !strings.Contains(r.Err.Detail, tt.wantDetail) {
				t.Errorf("detail %q, want it to contain %q", r.Err.Detail, tt.wantDetail)
			}
			if !strings.Contains(r.Err.Body, tt.wantBody) || len(r.Err.Body) > maxErrorBody {
				t.Errorf("body %q (%d bytes), want ≤1 KiB containing %q", clip([]byte(r.Err.Body), 80), len(r.Err.Body), tt.wantBody)
			}
			if tt.maxElapsed > 0 && elapsed > tt.maxElapsed {
				t.Errorf("took %v, want ≤ %v", elapsed, tt.maxElapsed)
			}
			if r.Done.IsZero() {
				t.Errorf("Done not set on failure")
			}
		})
	}
}

func TestKeepAliveReusesConnection(t *testing.T) {
	f := oaitest.NewServer(t, oaitest.StreamTokens(3, 0))
	c := newClient(t, Config{MaxConns: 1})
	defer c.Close()
	for i := range 3 {
		r := c.Do(context.Background(), chatReq(f.URL))
		wantOK(t, r)
		if i > 0 && !r.Reused {
			t.Errorf("request %d dialled a new connection; want the keep-alive one", i)
		}
		if r.Wrote <= 0 || r.Connected > r.Wrote {
			t.Errorf("request %d: Connected %v, Wrote %v; want 0 ≤ Connected ≤ Wrote, Wrote > 0", i, r.Connected, r.Wrote)
		}
	}
}

func TestNonStreamingJSONBody(t *testing.T) {
	f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"total_tokens":8,"completion_tokens":5}}`))
	})
	c := newClient(t, Config{})
	defer c.Close()
	r := c.Do(context.Background(), chatReq(f.URL)) // asked to stream, got JSON
	wantOK(t, r)
	if r.Preview != "whole" || r.OutputTokens != 5 || r.UsageSource != UsageFinal || r.FinishReason != "length" {
		t.Errorf("got preview %q out %d source %q finish %q", r.Preview, r.OutputTokens, r.UsageSource, r.FinishReason)
	}
	if r.TTFT() != r.E2E() {
		t.Errorf("TTFT %v != E2E %v for a non-streamed body", r.TTFT(), r.E2E())
	}
}

func TestModels(t *testing.T) {
	f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/models" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`{"object":"list","data":[{"id":"qwen","object":"model","owned_by":"vllm"}]}`))
	})
	c := newClient(t, Config{})
	defer c.Close()
	ids, err := c.Models(context.Background(), f.URL+"/v1", "")
	if err != nil || len(ids) != 1 || ids[0] != "qwen" {
		t.Fatalf("Models = %v, %v; want [qwen]", ids, err)
	}
}

func TestBadRequestNeverSends(t *testing.T) {
	for _, tr := range []string{TransportH1, TransportNetHTTP} {
		t.Run("transport="+tr, func(t *testing.T) {
			c := newClient(t, Config{Transport: tr})
			for _, req := range []Request{
				{BaseURL: "ftp://x", Stream: true},
				{BaseURL: "http://127.0.0.1:1", API: "embeddings", Stream: true},
				{BaseURL: "http://bad host:1", Stream: true},
				{BaseURL: "http://127.0.0.1:1", Stream: true, Headers: map[string]string{"X-Bad": "a\r\nb"}},
				{BaseURL: "http://127.0.0.1:1", Stream: true, ExtraBody: map[string]any{"x": func() {}}},
			} {
				r := c.Do(context.Background(), req)
				if r.Err == nil || r.Err.Kind != KindOther || !r.Send.IsZero() {
					t.Errorf("Do(%+v) = %v, Send %v; want kind other before sending", req, r.Err, r.Send)
				}
			}
		})
	}
}

// FuzzStream feeds arbitrary bytes to the SSE reader: it must never panic,
// and must always end with Done set and either [DONE] or an error.
func FuzzStream(f *testing.F) {
	f.Add([]byte("data: " + oaitest.ChatRole(0) + "\n\ndata: " + oaitest.ChatContent("hi", 1) + "\n\ndata: [DONE]\n\n"))
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":null}}],\"usage\":{\"completion_tokens\":-5}}\n"))
	f.Add([]byte("data: {\"error\": 3}\n"))
	f.Add([]byte("data: [1,2]\n:x\r\nevent: error\ndata: {}\n"))
	f.Add([]byte("data: {\"choices\":[{\"text\":\"\\ud800\"}],\"usage\":{\"completion_tokens\":99999999999}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := Result{Send: time.Now(), CachedTokens: -1}
		s := stream{r: &r, maxLine: 1 << 20}
		small := make([]byte, 16)
		lr := &lineReader{rd: strings.NewReader(string(b)), small: small, buf: small, max: 1 << 20}
		done := s.read(context.Background(), lr)
		if r.Done.IsZero() {
			t.Fatalf("Done not set")
		}
		if !done && r.Err == nil {
			t.Fatalf("stream ended without [DONE] and without error")
		}
		var e *Error
		if r.Err != nil && !errors.As(error(r.Err), &e) {
			t.Fatalf("bad error %v", r.Err)
		}
	})
}

func TestRequestBodyMergesExtraBodyAndHeaders(t *testing.T) {
	var gotBody map[string]any
	var gotHeader string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHeader = r.Header.Get("X-Tenant")
		_ = json.NewDecoder(r.Body).Decode(&gotBody)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: [DONE]\n\n")
	}))
	defer srv.Close()
	c := newClient(t, Config{MaxConns: 1})
	defer c.Close()
	res := c.Do(context.Background(), Request{BaseURL: srv.URL, API: APICompletions, Model: "m", Prompt: "p", MaxTokens: 4, Stream: true,
		Headers: map[string]string{"X-Tenant": "t1"}, ExtraBody: map[string]any{"min_tokens": 4, "temperature": 0.5}})
	if !res.OK() {
		t.Fatalf("request failed: %v", res.Err)
	}
	if gotHeader != "t1" {
		t.Errorf("X-Tenant = %q, want t1", gotHeader)
	}
	if gotBody["min_tokens"] != float64(4) || gotBody["temperature"] != 0.5 || gotBody["model"] != "m" {
		t.Errorf("body = %v, want extra keys merged over the built ones", gotBody)
	}
}

// TestPoolSizedToConcurrency proves there is no dial per request: the
// server counts the connections it accepts, and 8 workers sending 25
// requests each over a client with MaxConns 8 must open at most 8.
func TestPoolSizedToConcurrency(t *testing.T) {
	srv, err := ssebench.Start(ssebench.Config{Tokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const workers, each = 8, 25
	c := newClient(t, Config{MaxConns: workers})
	defer c.Close()
	var wg sync.WaitGroup
	var reused, failed atomic.Int64
	for range workers {
		wg.Go(func() {
			for range each {
				r := c.Do(context.Background(), chatReq(srv.URL))
				if r.Err != nil || r.OutputTokens != 5 {
					failed.Add(1)
				}
				if r.Reused {
					reused.Add(1)
				}
				r.Release()
			}
		})
	}
	wg.Wait()
	st := srv.Stats()
	if failed.Load() != 0 || st.Streams != workers*each {
		t.Fatalf("%d failed, %d streams served; want 0 and %d", failed.Load(), st.Streams, workers*each)
	}
	if st.Conns > workers {
		t.Errorf("server accepted %d connections for %d requests; want at most %d (one per worker)", st.Conns, workers*each, workers)
	}
	if want := int64(workers*each) - st.Conns; reused.Load() < want {
		t.Errorf("%d requests reused a connection, want at least %d", reused.Load(), want)
	}
}

func TestReleaseReusesMarks(t *testing.T) {
	srv, err := ssebench.Start(ssebench.Config{Tokens: 40})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := newClient(t, Config{MaxConns: 1})
	defer c.Close()
	r := c.Do(context.Background(), chatReq(srv.URL))
	wantOK(t, r)
	if len(r.Marks) != 40 || r.OutputTokens != 40 {
		t.Fatalf("marks %d, tokens %d; want 40, 40", len(r.Marks), r.OutputTokens)
	}
	r.Release()
	if r.Marks != nil {
		t.Errorf("Marks not cleared by Release")
	}
	r.Release() // a second call is harmless
}

func TestCancelStopsStream(t *testing.T) {
	srv, err := ssebench.Start(ssebench.Config{Tokens: 100, HoldAfter: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := newClient(t, Config{})
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for srv.Stats().Held == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	r := c.Do(ctx, chatReq(srv.URL))
	if r.Err == nil || r.Err.Kind != KindCanceled || len(r.Marks) > 3 {
		t.Fatalf("err %v, marks %d; want canceled within the first 3 marks", r.Err, len(r.Marks))
	}
	// The server notices the closed connection when it writes again; a
	// connection kept open would instead wait for its next request.
	srv.Release()
	deadline := time.Now().Add(2 * time.Second)
	for srv.Stats().OpenConns != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("connection still open after cancel: %+v", srv.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBadContentType(t *testing.T) {
	page := "<!DOCTYPE html>\n<html>\n\t<head><title>502 Bad Gateway</title></head>\x00\x1b[31m\n<body>" + strings.Repeat("nginx ", 100) + "</body></html>"
	tests := []struct {
		name        string
		contentType []string // nil: no Content-Type header at all
		body        string
		wantDetail  []string
		wantBody    string
	}{
		{"an HTML page with 200", []string{"text/html; charset=utf-8"}, page,
			[]string{"Content-Type text/html; charset=utf-8 is not text/event-stream", `body starts "<!DOCTYPE html> <html> <head><title>502 Bad Gateway</title></head> [31m <body>nginx`},
			"<!DOCTYPE html> <html> <head><title>502 Bad Gateway</title></head> [31m <body>nginx nginx"},
		{"plain text", []string{"text/plain"}, "data: {}\n\n", []string{"Content-Type text/plain is not"}, "data: {}"},
		{"no Content-Type", nil, "", []string{"Content-Type none is not"}, ""},
	}
	for _, tr := range []string{TransportH1, TransportNetHTTP} {
		for _, tt := range tests {
			t.Run(tr+"/"+tt.name, func(t *testing.T) {
				f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
					w.Header()["Content-Type"] = tt.contentType
					w.WriteHeader(http.StatusOK)
					_, _ = io.WriteString(w, tt.body)
				})
				c := newClient(t, Config{Transport: tr})
				defer c.Close()
				r := c.Do(context.Background(), chatReq(f.URL))
				if r.Err == nil || r.Err.Kind != KindBadContentType || r.Err.Class != KindBadContentType {
					t.Fatalf("Do = %+v, want kind %s", r.Err, KindBadContentType)
				}
				for _, want := range tt.wantDetail {
					if !strings.Contains(r.Err.Detail, want) {
						t.Errorf("detail %q lacks %q", r.Err.Detail, want)
					}
				}
				if !strings.HasPrefix(r.Err.Body, tt.wantBody) || len(r.Err.Body) > excerptBytes || strings.ContainsAny(r.Err.Body, "\n\t\x00\x1b") {
					t.Errorf("body excerpt %q (%d bytes), want one sanitized line of ≤ %d bytes starting %q", r.Err.Body, len(r.Err.Body), excerptBytes, tt.wantBody)
				}
				if r.Header.IsZero() || r.Done.IsZero() || r.Status != http.StatusOK {
					t.Errorf("header %v done %v status %d, want both set and 200", r.Header, r.Done, r.Status)
				}
			})
		}
	}
}

func TestSanitizeExcerpt(t *testing.T) {
	tests := []struct {
		name string
		in   string
		n    int
		want string
	}{
		{"white space collapses", "a \r\n\t b", 10, "a b"},
		{"leading and trailing space go", "\n\n a \n", 10, "a"},
		{"control characters become space", "a\x00\x07b\u0085c", 10, "a b c"},
		{"invalid UTF-8 is replaced", "a\xffb", 10, "a\uFFFDb"},
		{"cut at n bytes, never mid-rune", "ab€€", 4, "ab"},
		{"empty stays empty", "", 10, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sanitizeExcerpt([]byte(tt.in), tt.n); got != tt.want {
				t.Errorf("sanitizeExcerpt(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
			}
		})
	}
}

func FuzzSanitizeExcerpt(f *testing.F) {
	f.Add([]byte("<html>\n<body>x</body>"), 200)
	f.Add([]byte("\xff\xfe\x00"), 3)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		n = n%1000 + 1
		if n < 1 {
			n = -n + 1
		}
		got := sanitizeExcerpt(b, n)
		if len(got) > n || !utf8.ValidString(got) || strings.ContainsAny(got, "\n\r\t\x00") || strings.HasPrefix(got, " ") || strings.Contains(got, "  ") {
			t.Errorf("sanitizeExcerpt(%q, %d) = %q: want ≤ n bytes of valid UTF-8 on one line, single spaces", b, n, got)
		}
	})
}

package oai

import (
	"testing"
)

// The fake server, its SSE chunks and scripted handlers live in
// internal/oai/oaitest, shared with the tests of the packages built on oai.

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

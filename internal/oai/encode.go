package oai

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
)

// API names accepted in Request.API and Target.API.
const (
	APICompletions = "completions"
	APIChat        = "chat"
)

// Request is one completion request.
type Request struct {
	// BaseURL is the server's base URL, with or without a trailing /v1.
	BaseURL string
	// API is APICompletions or APIChat; empty means APIChat.
	API         string
	Model       string
	Prompt      string
	MaxTokens   int
	IgnoreEOS   bool
	Temperature float64
	// Stream asks for SSE streaming; measurements always stream. Without it
	// the whole body arrives at once and TTFT equals E2E.
	Stream bool
	APIKey string
	// Headers are added to the request (after Content-Type and Authorization,
	// so they can override them).
	Headers map[string]string
	// ExtraBody is merged into the JSON body; its keys win over the built
	// ones (for example "min_tokens" or a different "temperature").
	ExtraBody map[string]any
	// Streamed, when set, gets each token-bearing chunk's tokens added as
	// the chunk arrives, counted as the ITL marks count them, so that a
	// caller can count tokens of requests still in flight. One atomic add
	// per chunk; no allocation.
	Streamed *atomic.Uint64
}

// normalizeBase trims a trailing slash and /v1 from a base URL and checks
// that it is an absolute http(s) URL.
func normalizeBase(base string) (string, error) {
	b := strings.TrimRight(strings.TrimSpace(base), "/")
	b = strings.TrimSuffix(b, "/v1")
	if !strings.HasPrefix(b, "http://") && !strings.HasPrefix(b, "https://") {
		return "", fmt.Errorf("base URL %q is not an http(s) URL: use a URL such as http://127.0.0.1:8000", base)
	}
	return b, nil
}

func endpoint(base, api string) (string, error) {
	b, err := normalizeBase(base)
	if err != nil {
		return "", err
	}
	switch api {
	case APIChat, "":
		return b + "/v1/chat/completions", nil
	case APICompletions:
		return b + "/v1/completions", nil
	}
	return "", fmt.Errorf("api %q is unknown: use %q or %q", api, APIChat, APICompletions)
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type streamOptions struct {
	IncludeUsage         bool `json:"include_usage"`
	ContinuousUsageStats bool `json:"continuous_usage_stats"`
}

type requestJSON struct {
	Model         string         `json:"model"`
	Prompt        *string        `json:"prompt,omitempty"`
	Messages      []chatMessage  `json:"messages,omitempty"`
	MaxTokens     int            `json:"max_tokens,omitempty"`
	Temperature   float64        `json:"temperature"`
	IgnoreEOS     bool           `json:"ignore_eos,omitempty"`
	Stream        bool           `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options,omitempty"`
}

func requestBody(req Request) ([]byte, error) {
	j := requestJSON{
		Model:       req.Model,
		MaxTokens:   req.MaxTokens,
		Temperature: req.Temperature,
		IgnoreEOS:   req.IgnoreEOS,
		Stream:      req.Stream,
	}
	if req.API == APICompletions {
		p := req.Prompt
		j.Prompt = &p
	} else {
		j.Messages = []chatMessage{{Role: "user", Content: req.Prompt}}
	}
	if req.Stream {
		j.StreamOptions = &streamOptions{IncludeUsage: true, ContinuousUsageStats: true}
	}
	b, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	if len(req.ExtraBody) == 0 {
		return b, nil
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	for k, v := range req.ExtraBody {
		m[k] = v
	}
	if b, err = json.Marshal(m); err != nil {
		return nil, fmt.Errorf("encode request with extra body: %w", err)
	}
	return b, nil
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue reports whether s has no CR, LF, NUL or other control
// character but tab.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\r' || c == '\n' || c == 0 || (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// checkHeader returns an error when name or value cannot be sent as an
// HTTP/1.1 header field.
func checkHeader(name, value string) error {
	if !validHeaderName(name) {
		return fmt.Errorf("invalid header field name %q", name)
	}
	if !validHeaderValue(value) {
		return fmt.Errorf("invalid header field value for %q", name)
	}
	return nil
}

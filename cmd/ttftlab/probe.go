package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/internal/oai"
)

const defaultProbePrompt = "Explain what time-to-first-token measures in one paragraph."

// probeOutput is the one JSON line `ttftlab probe` prints. Times are in
// seconds from the request being sent, except wall_s, which covers the whole
// command (model lookup and connecting included). A null time did not
// happen.
type probeOutput struct {
	WallS         float64  `json:"wall_s"`
	TTFTS         *float64 `json:"ttft_s"`
	E2ES          *float64 `json:"e2e_s"`
	FirstByteS    *float64 `json:"first_byte_s"`
	FirstChunkS   *float64 `json:"first_chunk_s"`
	PromptTokens  int      `json:"prompt_tokens"`
	OutputTokens  int      `json:"output_tokens"`
	TotalTokens   int      `json:"total_tokens"`
	CachedTokens  *int     `json:"cached_tokens,omitempty"`
	UsageSource   string   `json:"usage_source"`
	Chunks        int      `json:"chunks"`
	FinishReason  string   `json:"finish_reason,omitempty"`
	Model         string   `json:"model"`
	API           string   `json:"api"`
	OutputPreview string   `json:"output_preview"`
	Error         string   `json:"error,omitempty"`
	ErrorKind     string   `json:"error_kind,omitempty"`
	ErrorBody     string   `json:"error_body,omitempty"`
}

// runProbe streams one request to an OpenAI-compatible server and prints
// its timings as one JSON line on stdout. A failed request still prints the
// line, with an error field, and returns an error.
func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	start := time.Now()
	fs := newFlagSet("probe", stderr)
	var (
		base      = fs.String("url", "", "server base URL, for example http://127.0.0.1:8000 (a trailing /v1 is fine)")
		model     = fs.String("model", "", "model name; may be left out when /v1/models lists exactly one")
		prompt    = fs.String("prompt", defaultProbePrompt, "prompt text")
		maxTokens = fs.Int("max-tokens", 64, "max_tokens to request")
		api       = fs.String("api", oai.APIChat, "API: chat or completions")
		apiKey    = fs.String("api-key", "", "bearer token for the server, if it needs one")
		timeout   = fs.Duration("timeout", 2*time.Minute, "limit for the whole request")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("probe: %w (see ttftlab probe -h)", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("probe: unexpected argument %q: pass options as flags, for example --url http://127.0.0.1:8000", fs.Arg(0))
	}
	if err := checkProbeFlags(*base, *api, *maxTokens, *timeout); err != nil {
		return fmt.Errorf("probe: %w", err)
	}

	client, err := oai.NewClient(oai.Config{
		MaxConns:       1,
		ConnectTimeout: min(10*time.Second, *timeout),
		Timeout:        *timeout,
	})
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer client.Close()

	if *model == "" {
		ids, err := client.Models(ctx, *base, *apiKey)
		if err != nil {
			return fmt.Errorf("probe: --model not given and the model list is unavailable: %w", err)
		}
		if len(ids) != 1 {
			return fmt.Errorf("probe: --model not given and the server lists %d models (%s): pass --model", len(ids), strings.Join(ids, ", "))
		}
		*model = ids[0]
	}

	res := client.Do(ctx, oai.Request{
		BaseURL:   *base,
		API:       *api,
		Model:     *model,
		Prompt:    *prompt,
		MaxTokens: *maxTokens,
		Stream:    true,
		APIKey:    *apiKey,
	})
	out := probeOutput{
		WallS:         time.Since(start).Seconds(),
		PromptTokens:  res.PromptTokens,
		OutputTokens:  res.OutputTokens,
		TotalTokens:   res.PromptTokens + res.OutputTokens,
		UsageSource:   res.UsageSource,
		Chunks:        res.Chunks,
		FinishReason:  res.FinishReason,
		Model:         *model,
		API:           *api,
		OutputPreview: res.Preview,
	}
	since := func(t time.Time) *float64 {
		if t.IsZero() || res.Send.IsZero() {
			return nil
		}
		s := t.Sub(res.Send).Seconds()
		return &s
	}
	out.TTFTS = since(res.FirstToken)
	out.FirstByteS = since(res.Header)
	out.FirstChunkS = since(res.FirstChunk)
	if !res.Send.IsZero() {
		e := res.E2E().Seconds()
		out.E2ES = &e
	}
	if res.CachedTokens >= 0 {
		out.CachedTokens = &res.CachedTokens
	}
	if res.Err != nil {
		out.Error = res.Err.Error()
		out.ErrorKind = res.Err.Kind
		out.ErrorBody = res.Err.Body
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("probe: write result: %w", err)
	}
	if res.Err != nil {
		return fmt.Errorf("probe: request to %s failed: %w", *base, res.Err)
	}
	return nil
}

// checkProbeFlags validates the flags and names the fix.
func checkProbeFlags(base, api string, maxTokens int, timeout time.Duration) error {
	if base == "" {
		return errors.New("--url is required: pass the server's base URL, for example --url http://127.0.0.1:8000")
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url %q is not an absolute http(s) URL: use for example --url http://127.0.0.1:8000", base)
	}
	if api != oai.APIChat && api != oai.APICompletions {
		return fmt.Errorf("--api %q is unknown: use --api chat or --api completions", api)
	}
	if maxTokens < 1 {
		return fmt.Errorf("--max-tokens %d is invalid: set --max-tokens ≥ 1", maxTokens)
	}
	if timeout <= 0 {
		return fmt.Errorf("--timeout %v is invalid: set a positive duration such as --timeout 2m", timeout)
	}
	return nil
}

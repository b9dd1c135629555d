package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/agent"
	"github.com/ttftlab/ttftlab/internal/oai"
)

const defaultProbePrompt = "Explain what time-to-first-token measures in one paragraph."

// probeOutput is the one JSON line `ttftlab probe` prints. Times are in
// seconds from the request being sent, except wall_s, which covers the whole
// command (model lookup and connecting included). A null time did not
// happen.
type probeOutput struct {
	WallS        float64  `json:"wall_s"`
	TTFTS        *float64 `json:"ttft_s"`
	E2ES         *float64 `json:"e2e_s"`
	FirstByteS   *float64 `json:"first_byte_s"`
	FirstChunkS  *float64 `json:"first_chunk_s"`
	PromptTokens int      `json:"prompt_tokens"`
	OutputTokens int      `json:"output_tokens"`
	TotalTokens  int      `json:"total_tokens"`
	CachedTokens *int     `json:"cached_tokens,omitempty"`
	UsageSource  string   `json:"usage_source"`
	Chunks       int      `json:"chunks"`
	FinishReason string   `json:"finish_reason,omitempty"`
	Model        string   `json:"model"`
	API          string   `json:"api"`
	// Transport is the HTTP client; FirstTokenClock the clock the first
	// token was stamped with (absent when none came).
	Transport       string `json:"transport"`
	FirstTokenClock string `json:"first_token_clock,omitempty"`
	OutputPreview   string `json:"output_preview"`
	Error           string `json:"error,omitempty"`
	ErrorKind       string `json:"error_kind,omitempty"`
	ErrorBody       string `json:"error_body,omitempty"`
}

// runProbe streams one request to an OpenAI-compatible server and prints
// its timings as one JSON line on stdout. A failed request still prints the
// line, with an error field, and returns an error.
func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	start := time.Now()
	fs := newFlagSet("probe", stderr)
	// One request: the agent's spec of a closed loop of one, whose rules
	// (Spec.Validate) are the probe's.
	spec := agent.Spec{Concurrency: 1, Requests: 1}
	t, w := &spec.Target, &spec.Workload
	fs.StringVar(&t.BaseURL, "url", "", "server base URL, for example http://127.0.0.1:8000 (a trailing /v1 is fine)")
	fs.StringVar(&t.Model, "model", "", "model name; may be left out when /v1/models lists exactly one")
	fs.StringVar(&w.Prompt, "prompt", defaultProbePrompt, "prompt text")
	fs.IntVar(&w.MaxTokens, "max-tokens", 64, "max_tokens to request")
	fs.StringVar(&t.API, "api", oai.APIChat, "API: chat or completions")
	fs.StringVar(&t.APIKey, "api-key", "", "bearer token for the server, if it needs one")
	fs.DurationVar(&spec.Timeout, "timeout", 2*time.Minute, "limit for the whole request")
	tf := registerClientFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("probe: %w (see ttftlab probe -h)", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("probe: unexpected argument %q: pass options as flags, for example --url http://127.0.0.1:8000", fs.Arg(0))
	}
	if err := tf.apply(t); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	if err := checkProbeSpec(spec); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	base, model, api, timeout := t.BaseURL, t.Model, t.API, spec.Timeout
	tlsCfg, err := t.TLSConfig()
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}

	client, err := oai.NewClient(oai.Config{
		MaxConns:       1,
		ConnectTimeout: min(10*time.Second, timeout),
		Timeout:        timeout,
		TLS:            tlsCfg,
		Transport:      t.Transport,
		RxTimestamps:   t.FirstTokenClock,
	})
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer client.Close()

	if model == "" {
		ids, err := client.Models(ctx, base, t.APIKey)
		if err != nil {
			return fmt.Errorf("probe: --model not given and the model list is unavailable: %w", err)
		}
		if len(ids) != 1 {
			return fmt.Errorf("probe: --model not given and the server lists %d models (%s): pass --model", len(ids), strings.Join(ids, ", "))
		}
		model = ids[0]
	}

	res := client.Do(ctx, oai.Request{
		BaseURL:   base,
		API:       api,
		Model:     model,
		Prompt:    w.Prompt,
		MaxTokens: w.MaxTokens,
		Stream:    true,
		APIKey:    t.APIKey,
	})
	out := probeOutput{
		WallS:           time.Since(start).Seconds(),
		PromptTokens:    res.PromptTokens,
		OutputTokens:    res.OutputTokens,
		TotalTokens:     res.PromptTokens + res.OutputTokens,
		UsageSource:     res.UsageSource,
		Chunks:          res.Chunks,
		FinishReason:    res.FinishReason,
		Model:           model,
		API:             api,
		OutputPreview:   res.Preview,
		Transport:       t.Transport,
		FirstTokenClock: res.FirstTokenClock,
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
		return fmt.Errorf("probe: request to %s failed: %w", base, res.Err)
	}
	return nil
}

// probeFlagNames maps agent.Spec's fields to probe's flags.
func probeFlagNames() flagNames {
	return flagNames{
		"target.base_url": "--url", "target.model": "--model", "target.api": "--api",
		"target.transport": "--http-transport", "target.first_token_clock": "--first-token-clock",
		"workload.prompt": "--prompt", "workload.max_tokens": "--max-tokens", "timeout": "--timeout",
	}
}

// checkProbeSpec validates the probe's spec with the agent's rules, named
// by flag. A --timeout of 0 (to the library, "the default") is refused.
func checkProbeSpec(spec agent.Spec) error {
	if spec.Timeout == 0 {
		return errors.New("--timeout 0s is invalid: set a positive duration such as --timeout 2m")
	}
	if spec.Target.Model == "" {
		spec.Target.Model = "-" // looked up later
	}
	return probeFlagNames().rename(spec.Validate())
}

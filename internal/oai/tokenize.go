package oai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// ErrNoTokenize is wrapped by Tokenize's error when the server has no
// /tokenize endpoint (404, 405 or 501): not vLLM, or a vLLM behind a proxy
// that does not pass it. Callers then fall back to the usage numbers.
var ErrNoTokenize = errors.New("server has no /tokenize")

// maxTokenizeBody bounds a /tokenize response: the ids of a 1M-token prompt
// take under 8 MiB of JSON.
const maxTokenizeBody = 16 << 20

// maxTokenizeCount bounds the count a /tokenize response may claim.
const maxTokenizeCount = 1 << 26

// Tokenize asks the server how many tokens prompt is, as a request of api
// (APIChat or APICompletions) for model would be charged: for chat the
// prompt is one user message rendered with the chat template and its
// generation prompt, for completions the plain prompt with the server's
// default special tokens. It uses vLLM's POST /tokenize, whose request is
// {"model", "prompt"} or {"model", "messages"} and whose response is
// {"count", "max_model_len", "tokens", "token_strs"}. The response is
// untrusted and is validated (see ParseTokenizeResponse). A server without
// the endpoint gives an error wrapping ErrNoTokenize.
func (c *Client) Tokenize(ctx context.Context, baseURL, apiKey, model, api, prompt string) (int, error) {
	base, err := normalizeBase(baseURL)
	if err != nil {
		return 0, err
	}
	if c.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	body := map[string]any{"model": model}
	switch api {
	case APIChat, "":
		body["messages"] = []chatMessage{{Role: "user", Content: prompt}}
	case APICompletions:
		body["prompt"] = prompt
	default:
		return 0, fmt.Errorf("tokenize: api %q is unknown: use %q or %q", api, APIChat, APICompletions)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return 0, fmt.Errorf("tokenize: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/tokenize", bytes.NewReader(b))
	if err != nil {
		return 0, fmt.Errorf("tokenize: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("tokenize: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return 0, fmt.Errorf("tokenize: %s/tokenize answered %d: %w", base, resp.StatusCode, ErrNoTokenize)
	default:
		return 0, fmt.Errorf("tokenize: %w", httpError(resp.StatusCode, resp.Body))
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenizeBody+1))
	if err != nil {
		return 0, fmt.Errorf("tokenize: read %s/tokenize: %w", base, err)
	}
	if len(raw) > maxTokenizeBody {
		return 0, fmt.Errorf("tokenize: %s/tokenize answered more than %d MiB: not a tokenize response", base, maxTokenizeBody>>20)
	}
	n, err := ParseTokenizeResponse(raw)
	if err != nil {
		return 0, fmt.Errorf("tokenize: %s/tokenize: %w", base, err)
	}
	return n, nil
}

// ParseTokenizeResponse reads a /tokenize response body and returns its
// token count. The body must be one JSON object with an integer "count" in
// [0, 2^26]; when "tokens" is present it must be an array of integers of
// that length. It never panics; the error says what is wrong.
func ParseTokenizeResponse(b []byte) (int, error) {
	var resp struct {
		Count  *json.Number      `json:"count"`
		Tokens []json.RawMessage `json:"tokens"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&resp); err != nil {
		return 0, fmt.Errorf("response is not a tokenize object (%w): want {\"count\": N, \"tokens\": [...]}", err)
	}
	if dec.More() {
		return 0, errors.New("response has data after its JSON object")
	}
	if resp.Count == nil {
		return 0, errors.New("response has no \"count\": want {\"count\": N, \"tokens\": [...]}")
	}
	n, err := resp.Count.Int64()
	if err != nil || n < 0 || n > maxTokenizeCount {
		return 0, fmt.Errorf("response count %s is not a token count in [0, %d]", clipString(resp.Count.String(), 40), maxTokenizeCount)
	}
	if resp.Tokens != nil {
		if int64(len(resp.Tokens)) != n {
			return 0, fmt.Errorf("response count %d disagrees with its %d tokens", n, len(resp.Tokens))
		}
		for i, t := range resp.Tokens {
			var id int64
			if err := json.Unmarshal(t, &id); err != nil || id < 0 {
				return 0, fmt.Errorf("response token %d (%s) is not a token id", i, clipString(string(t), 40))
			}
		}
	}
	return int(n), nil
}

func clipString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

package gpunode

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode"
)

// resetTimeout bounds POST /reset_prefix_cache: the engine answers once
// its scheduler has handled the request, within a step.
const resetTimeout = 10 * time.Second

// maxResetBody is how much of the engine's answer to a reset is kept.
const maxResetBody = 512

// ResetResult is the engine's answer to POST /reset_prefix_cache. It is not
// proof of a reset: vLLM answers 200 whether or not it reset the cache
// (vllm-project/vllm#12284), so the caller checks the metrics.
type ResetResult struct {
	HTTPStatus int
	// Body is the start of the answer, with control characters replaced.
	Body string
}

// ResetPrefixCache asks the running engine to drop its prefix cache.
func (n *Node) ResetPrefixCache(ctx context.Context) (ResetResult, error) {
	base := n.engineBaseURL()
	if base == "" {
		return ResetResult{}, fmt.Errorf("%w: no engine is running: start one before resetting its prefix cache", ErrFailedPrecondition)
	}
	ctx, cancel := context.WithTimeout(ctx, resetTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/reset_prefix_cache", nil)
	if err != nil {
		return ResetResult{}, fmt.Errorf("reset prefix cache: %w", err)
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return ResetResult{}, fmt.Errorf("POST %s/reset_prefix_cache: %w", base, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxResetBody))
	return ResetResult{HTTPStatus: resp.StatusCode, Body: oneLine(b)}, nil
}

// EngineMetrics scrapes the running engine's /metrics now and returns the
// kept figures (ParseMetrics).
func (n *Node) EngineMetrics(ctx context.Context) (map[string]float64, time.Time, error) {
	base := n.engineBaseURL()
	if base == "" {
		return nil, time.Time{}, fmt.Errorf("%w: no engine is running: start one before reading its metrics", ErrFailedPrecondition)
	}
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("scrape metrics: %w", err)
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("GET %s/metrics: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, time.Time{}, fmt.Errorf("GET %s/metrics: status %d", base, resp.StatusCode)
	}
	m, err := ParseMetrics(io.LimitReader(resp.Body, 8<<20))
	return m, time.Now(), err
}

// oneLine keeps printable text on one line.
func oneLine(b []byte) string {
	return strings.Map(func(r rune) rune {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, strings.TrimSpace(string(b)))
}

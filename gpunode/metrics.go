package gpunode

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// keptMetrics are the engine metric families kept from /metrics, summed
// over label sets (engines, models) under their label-less names. Both the
// current and the older vLLM names are listed; an engine exports one of
// each pair.
var keptMetrics = map[string]bool{
	"vllm:num_requests_running":           true,
	"vllm:num_requests_waiting":           true,
	"vllm:kv_cache_usage_perc":            true,
	"vllm:gpu_cache_usage_perc":           true,
	"vllm:prefix_cache_queries_total":     true,
	"vllm:prefix_cache_hits_total":        true,
	"vllm:gpu_prefix_cache_queries_total": true,
	"vllm:gpu_prefix_cache_hits_total":    true,
	"vllm:gpu_prefix_cache_hit_rate":      true, // V0: a gauge, hits/queries since start
	"vllm:num_preemptions_total":          true,
	"vllm:time_to_first_token_seconds":    true, // histogram: _sum and _count
	"vllm:num_requests_swapped":           true,
	"vllm:prompt_tokens_total":            true,
	"vllm:generation_tokens_total":        true,
	"vllm:request_success_total":          true,
	"vllm:e2e_request_latency_seconds":    true,
	"vllm:request_queue_time_seconds":     true,
}

// ParseMetrics parses Prometheus text exposition and returns the kept
// vLLM figures: gauges and counters under their family name, histograms
// and summaries as NAME_sum and NAME_count, each summed over label sets.
func ParseMetrics(r io.Reader) (map[string]float64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil && len(fams) == 0 {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	out := map[string]float64{}
	// The engine's output is untrusted: a NaN or ±Inf value (legal in the
	// exposition format) would make every later JSON encoding of the
	// sample fail, so such values, and sums that overflow, are left out.
	defer func() {
		for k, v := range out {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				delete(out, k)
			}
		}
	}()
	for name, fam := range fams {
		if !keptMetrics[name] {
			continue
		}
		for _, m := range fam.GetMetric() {
			switch fam.GetType() {
			case dto.MetricType_GAUGE:
				out[name] += m.GetGauge().GetValue()
			case dto.MetricType_COUNTER:
				out[name] += m.GetCounter().GetValue()
			case dto.MetricType_UNTYPED:
				out[name] += m.GetUntyped().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[name+"_sum"] += m.GetHistogram().GetSampleSum()
				out[name+"_count"] += float64(m.GetHistogram().GetSampleCount())
			case dto.MetricType_SUMMARY:
				out[name+"_sum"] += m.GetSummary().GetSampleSum()
				out[name+"_count"] += float64(m.GetSummary().GetSampleCount())
			}
		}
	}
	return out, nil
}

// scrapeTimeout bounds one /metrics request.
const scrapeTimeout = 800 * time.Millisecond

// scraper polls the engine's /metrics on its own goroutine, so that a
// slow engine never delays a sample. run is started and close joins it.
type scraper struct {
	log      *slog.Logger
	interval time.Duration
	// target returns the engine's base URL, or "" when none runs.
	target func() string
	client *http.Client

	mu     sync.Mutex
	latest map[string]float64 // nil once taken

	stop chan struct{}
	done chan struct{}
}

func newScraper(log *slog.Logger, interval time.Duration, target func() string) *scraper {
	return &scraper{
		log:      log,
		interval: interval,
		target:   target,
		client:   &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, IdleConnTimeout: 5 * time.Second}, Timeout: scrapeTimeout},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
}

func (s *scraper) run() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		base := s.target()
		if base == "" {
			continue
		}
		m, err := s.scrape(base)
		if err != nil {
			s.log.Debug("engine /metrics scrape failed", "err", err)
			continue
		}
		s.mu.Lock()
		s.latest = m
		s.mu.Unlock()
	}
}

func (s *scraper) scrape(base string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: status %d", resp.StatusCode)
	}
	return ParseMetrics(io.LimitReader(resp.Body, 8<<20))
}

// take returns the latest scrape once, then nil until the next.
func (s *scraper) take() map[string]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.latest
	s.latest = nil
	return m
}

func (s *scraper) close() {
	close(s.stop)
	<-s.done
	s.client.CloseIdleConnections()
}

package sim

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Bucket lists of vLLM 0.11 (vllm/v1/metrics/loggers.py).
var (
	ttftBuckets = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0}
	itlBuckets  = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}
	latBuckets  = []float64{0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}
	iterBuckets = []float64{1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}
	nBuckets    = []float64{1, 2, 5, 10, 20}
)

// buckets125 returns vLLM's build_1_2_5_buckets(maxValue): 1, 2, 5, 10, 20,
// 50, … up to maxValue.
func buckets125(maxValue int) []float64 {
	var b []float64
	for exp := 1.0; ; exp *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := m * exp
			if v > float64(maxValue) {
				return b
			}
			b = append(b, v)
		}
	}
}

// finishReasons are the finished_reason label values of vllm:request_success_total.
var finishReasons = []string{"abort", "length", "stop"}

// histogram is a Prometheus histogram with fixed upper bounds.
type histogram struct {
	name, help string
	bounds     []float64
	counts     []uint64 // per bucket, not cumulative
	sum        float64
	count      uint64
}

func newHistogram(name, help string, bounds []float64) *histogram {
	return &histogram{name: name, help: help, bounds: bounds, counts: make([]uint64, len(bounds))}
}

func (h *histogram) observe(v float64) {
	h.sum += v
	h.count++
	if i := sort.SearchFloat64s(h.bounds, v); i < len(h.bounds) {
		h.counts[i]++
	}
}

// requestTimes are the timestamps of one finished request.
type requestTimes struct {
	arrival, queued, scheduled, firstToken, lastToken, finished time.Time
	promptTokens, outputTokens, maxTokens                       int
	reason                                                      string
}

// metrics holds vLLM's Prometheus metrics and the interval counters of the
// stats log line. It is safe for concurrent use.
type metrics struct {
	mu      sync.Mutex
	labels  string // engine="0",model_name="..."
	created float64

	ttft, e2e, itl, tpot, queue, prefill, decode, inference  *histogram
	iteration, reqPrompt, reqGen, maxGen, paramsN, paramsMax *histogram

	promptTokens, genTokens, preemptions, pcQueries, pcHits float64
	success                                                 map[string]float64
	running, waiting                                        int
	kvUsage                                                 float64
	cacheInfo                                               string // label set of vllm:cache_config_info

	// Interval counters for the stats line, reset by takeInterval; the
	// hit-rate counters are reset only by a prefix-cache reset.
	ivPrompt, ivGen   float64
	ivQueries, ivHits float64
}

func newMetrics(modelName string, maxModelLen int, now time.Time) *metrics {
	tokBuckets := buckets125(maxModelLen)
	m := &metrics{
		labels:  `engine="0",model_name="` + escapeLabel(modelName) + `"`,
		created: float64(now.UnixNano()) / 1e9,
		ttft:    newHistogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", ttftBuckets),
		e2e:     newHistogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", latBuckets),
		itl:     newHistogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", itlBuckets),
		tpot:    newHistogram("vllm:request_time_per_output_token_seconds", "Histogram of time_per_output_token_seconds per request.", itlBuckets),
		queue:   newHistogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", latBuckets),
		prefill: newHistogram("vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", latBuckets),
		decode:  newHistogram("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", latBuckets),
		inference: newHistogram("vllm:request_inference_time_seconds",
			"Histogram of time spent in RUNNING phase for request.", latBuckets),
		iteration: newHistogram("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", iterBuckets),
		reqPrompt: newHistogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokBuckets),
		reqGen:    newHistogram("vllm:request_generation_tokens", "Number of generation tokens processed.", tokBuckets),
		maxGen:    newHistogram("vllm:request_max_num_generation_tokens", "Histogram of maximum number of requested generation tokens.", tokBuckets),
		paramsN:   newHistogram("vllm:request_params_n", "Histogram of the n request parameter.", nBuckets),
		paramsMax: newHistogram("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", tokBuckets),
		success:   map[string]float64{},
	}
	return m
}

// escapeLabel escapes a Prometheus label value.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// setCacheInfo sets the labels of vllm:cache_config_info.
func (m *metrics) setCacheInfo(r resolved, numBlocks int) {
	kv := map[string]string{
		"block_size":               strconv.Itoa(BlockSize),
		"cache_dtype":              "auto",
		"calculate_kv_scales":      "False",
		"cpu_offload_gb":           "0",
		"enable_prefix_caching":    pyBool(r.EnablePrefixCaching),
		"engine":                   "0",
		"gpu_memory_utilization":   strconv.FormatFloat(r.GPUMemoryUtilization, 'f', -1, 64),
		"is_attention_free":        "False",
		"num_cpu_blocks":           "None",
		"num_gpu_blocks":           strconv.Itoa(numBlocks),
		"num_gpu_blocks_override":  "None",
		"prefix_caching_hash_algo": "sha256",
		"sliding_window":           "None",
		"swap_space":               "4",
		"swap_space_bytes":         "4294967296",
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + `="` + escapeLabel(kv[k]) + `"`
	}
	m.mu.Lock()
	m.cacheInfo = strings.Join(parts, ",")
	m.mu.Unlock()
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

// observeToken records one generated token and, when it is not the first,
// the inter-token latency gap.
func (m *metrics) observeToken(gap time.Duration, first bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.genTokens++
	m.ivGen++
	if !first {
		m.itl.observe(gap.Seconds())
	}
}

// observePrefillDone records a request's prompt tokens and TTFT.
func (m *metrics) observePrefillDone(promptTokens int, ttft time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.promptTokens += float64(promptTokens)
	m.ivPrompt += float64(promptTokens)
	m.ttft.observe(ttft.Seconds())
}

// observeIteration records the tokens of one engine step that produced
// output: the prompt tokens of prefills that finished plus the new tokens.
func (m *metrics) observeIteration(tokens int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.iteration.observe(float64(tokens))
}

// resetPrefixStats restarts the prefix-cache hit rate of the stats line
// after a cache reset; the Prometheus counters keep counting, as in vLLM.
func (m *metrics) resetPrefixStats() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ivQueries, m.ivHits = 0, 0
}

// observePrefixQuery records one prefix-cache lookup, in tokens.
func (m *metrics) observePrefixQuery(queries, hits int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pcQueries += float64(queries)
	m.pcHits += float64(hits)
	m.ivQueries += float64(queries)
	m.ivHits += float64(hits)
}

// observePreemption counts one preemption.
func (m *metrics) observePreemption() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.preemptions++
}

// observeFinished records a finished request's latencies.
func (m *metrics) observeFinished(t requestTimes) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.success[t.reason]++
	if t.reason == "abort" {
		return
	}
	m.e2e.observe(t.finished.Sub(t.arrival).Seconds())
	m.queue.observe(t.scheduled.Sub(t.queued).Seconds())
	m.prefill.observe(t.firstToken.Sub(t.scheduled).Seconds())
	m.decode.observe(t.lastToken.Sub(t.firstToken).Seconds())
	m.inference.observe(t.finished.Sub(t.scheduled).Seconds())
	m.reqPrompt.observe(float64(t.promptTokens))
	m.reqGen.observe(float64(t.outputTokens))
	m.maxGen.observe(float64(t.maxTokens))
	m.paramsN.observe(1)
	m.paramsMax.observe(float64(t.maxTokens))
	if t.outputTokens > 1 {
		m.tpot.observe(t.lastToken.Sub(t.firstToken).Seconds() / float64(t.outputTokens-1))
	}
}

// setGauges publishes the scheduler state.
func (m *metrics) setGauges(running, waiting int, kvUsage float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.running, m.waiting, m.kvUsage = running, waiting, kvUsage
}

// intervalStats is one stats-line interval.
type intervalStats struct {
	prompt, gen      float64
	running, waiting int
	kvUsage          float64
	hitRate          float64
}

// takeInterval returns the counts since the last call and resets them.
func (m *metrics) takeInterval() intervalStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := intervalStats{prompt: m.ivPrompt, gen: m.ivGen, running: m.running, waiting: m.waiting, kvUsage: m.kvUsage}
	if m.ivQueries > 0 {
		s.hitRate = m.ivHits / m.ivQueries
	}
	m.ivPrompt, m.ivGen = 0, 0
	return s
}

// pyFloat formats v as Python's repr(float) does, as prometheus_client writes it.
func pyFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	a := math.Abs(v)
	if v == 0 || (a >= 1e-4 && a < 1e16) {
		s := strconv.FormatFloat(v, 'f', -1, 64)
		if !strings.Contains(s, ".") {
			s += ".0"
		}
		return s
	}
	return strconv.FormatFloat(v, 'e', -1, 64)
}

// write writes the exposition in Prometheus text format 0.0.4, as vLLM's
// prometheus_client does in single-process mode (counters with _total and a
// _created gauge).
func (m *metrics) write(w io.Writer) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	l := m.labels
	gauge := func(name, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s{%s} %s\n", name, help, name, name, l, pyFloat(v))
	}
	created := func(name, help string) {
		fmt.Fprintf(&b, "# HELP %s_created %s\n# TYPE %s_created gauge\n%s_created{%s} %s\n", name, help, name, name, l, pyFloat(m.created))
	}
	counter := func(name, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s_total %s\n# TYPE %s_total counter\n%s_total{%s} %s\n", name, help, name, name, l, pyFloat(v))
		created(name, help)
	}
	hist := func(h *histogram) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s histogram\n", h.name, h.help, h.name)
		var cum uint64
		for i, ub := range h.bounds {
			cum += h.counts[i]
			fmt.Fprintf(&b, "%s_bucket{engine=\"0\",le=\"%s\",%s} %s\n", h.name, pyFloat(ub), l[len(`engine="0",`):], pyFloat(float64(cum)))
		}
		fmt.Fprintf(&b, "%s_bucket{engine=\"0\",le=\"+Inf\",%s} %s\n", h.name, l[len(`engine="0",`):], pyFloat(float64(h.count)))
		fmt.Fprintf(&b, "%s_count{%s} %s\n%s_sum{%s} %s\n", h.name, l, pyFloat(float64(h.count)), h.name, l, pyFloat(h.sum))
		created(h.name, h.help)
	}

	gauge("vllm:num_requests_running", "Number of requests in model execution batches.", float64(m.running))
	gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", float64(m.waiting))
	gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", m.kvUsage)
	counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.", m.pcQueries)
	counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", m.pcHits)
	counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", m.preemptions)
	counter("vllm:prompt_tokens", "Number of prefill tokens processed.", m.promptTokens)
	counter("vllm:generation_tokens", "Number of generation tokens processed.", m.genTokens)

	const successHelp = "Count of successfully processed requests."
	fmt.Fprintf(&b, "# HELP vllm:request_success_total %s\n# TYPE vllm:request_success_total counter\n", successHelp)
	for _, r := range finishReasons {
		fmt.Fprintf(&b, "vllm:request_success_total{engine=\"0\",finished_reason=\"%s\",%s} %s\n", r, l[len(`engine="0",`):], pyFloat(m.success[r]))
	}
	fmt.Fprintf(&b, "# HELP vllm:request_success_created %s\n# TYPE vllm:request_success_created gauge\n", successHelp)
	for _, r := range finishReasons {
		fmt.Fprintf(&b, "vllm:request_success_created{engine=\"0\",finished_reason=\"%s\",%s} %s\n", r, l[len(`engine="0",`):], pyFloat(m.created))
	}

	for _, h := range []*histogram{m.iteration, m.ttft, m.itl, m.tpot, m.e2e, m.queue, m.inference, m.prefill, m.decode,
		m.reqPrompt, m.reqGen, m.maxGen, m.paramsN, m.paramsMax} {
		hist(h)
	}
	if m.cacheInfo != "" {
		fmt.Fprintf(&b, "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{%s} 1.0\n", m.cacheInfo)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/ttftlab/ttftlab/agent"
	"github.com/ttftlab/ttftlab/coordinator/results"
	"github.com/ttftlab/ttftlab/internal/benchjson"
	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/oai"
)

// loadExport writes `ttftlab load`'s per-request file (--save-requests) as
// records arrive and folds them into the vLLM-compatible result
// (--save-result), written when the run ends.
type loadExport struct {
	acc      *benchjson.Accumulator // nil without --save-result
	reqs     *os.File               // nil without --save-requests
	reqsPath string
	// tokenized is set once a report says the prompts were sized with the
	// server's tokenizer; usage once a record carried usage prompt tokens.
	tokenized, usage bool
	estimated        bool
}

// newLoadExport opens what c asks for; origin is a time before the first
// request.
func newLoadExport(c *loadCLI, origin time.Time) (*loadExport, error) {
	e := &loadExport{}
	if c.saveResult != "" {
		e.acc = benchjson.New(benchjson.Options{Percentiles: c.percentiles, Metrics: c.percentileMetrics, Detailed: c.saveDetailed}, origin)
	}
	if c.saveRequests != "" {
		f, err := os.OpenFile(c.saveRequests, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("--save-requests: %w", err)
		}
		e.reqs, e.reqsPath = f, c.saveRequests
	}
	return e, nil
}

// wantsRecords reports whether the run must carry per-request records.
func (e *loadExport) wantsRecords() bool { return e.acc != nil || e.reqs != nil }

// Close closes the per-request file.
func (e *loadExport) Close() error {
	if e.reqs == nil {
		return nil
	}
	return e.reqs.Close()
}

// requestJSON is one line of --save-requests: one finished request, times
// in seconds as vLLM's per-request arrays. Absent values are null.
type requestJSON struct {
	Index  int    `json:"index"`
	Label  string `json:"label,omitempty"`
	Warmup bool   `json:"warmup"`
	// StartTime is the send time and SchedTime the intended one, in Unix
	// seconds.
	StartTime *float64 `json:"start_time"`
	SchedTime float64  `json:"sched_time"`
	QueueTime *float64 `json:"queue_time"`
	// TTFT is vLLM's (the first chunk); TTFTContent ttftlab's (the first
	// generated content).
	TTFT        *float64  `json:"ttft"`
	TTFTContent *float64  `json:"ttftlab_ttft"`
	Latency     *float64  `json:"latency"`
	ITL         []float64 `json:"itl"`
	// InputLen is the server's usage.prompt_tokens when it sent one, else
	// PromptLen, the generator's length.
	InputLen        int     `json:"input_len"`
	PromptLen       int     `json:"prompt_len"`
	PromptLenSource string  `json:"prompt_len_source"`
	PromptTokens    *int    `json:"prompt_tokens"`
	CachedTokens    *int    `json:"cached_tokens"`
	OutputLen       int     `json:"output_len"`
	UsageSource     *string `json:"usage_source"`
	GeneratedText   string  `json:"generated_text"`
	Error           string  `json:"error"`
	ErrorKind       string  `json:"error_kind,omitempty"`
}

// add writes a report's records and folds its measured ones. The request
// file is synced once per report, so at most one interval is at risk.
func (e *loadExport) add(r agent.Report) error {
	if r.PromptLenSource == agent.PromptLenTokenize {
		e.tokenized = true
	}
	for i := range r.Records {
		rec := &r.Records[i]
		if rec.PromptTokens > 0 {
			e.usage = true
		} else if !e.tokenized {
			e.estimated = true
		}
		if e.acc != nil && !rec.Warmup {
			e.acc.Add(benchRequest(rec))
		}
		if e.reqs != nil {
			b, err := json.Marshal(e.requestLine(rec))
			if err != nil {
				return fmt.Errorf("--save-requests %s: %w", e.reqsPath, err)
			}
			if _, err := e.reqs.Write(append(b, '\n')); err != nil {
				return fmt.Errorf("--save-requests %s: %w", e.reqsPath, err)
			}
		}
	}
	if e.reqs != nil && len(r.Records) > 0 {
		if err := e.reqs.Sync(); err != nil {
			return fmt.Errorf("--save-requests %s: %w", e.reqsPath, err)
		}
	}
	return nil
}

// promptLenSource says where the run's prompt lengths come from: the
// server's tokenizer, its usage numbers, or the word-count estimate.
func (e *loadExport) promptLenSource() string {
	switch {
	case e.tokenized:
		return agent.PromptLenTokenize
	case e.usage && !e.estimated:
		return agent.PromptLenUsage
	}
	return agent.PromptLenEstimate
}

func (e *loadExport) requestLine(rec *agent.Record) requestJSON {
	s := func(d time.Duration) *float64 { v := d.Seconds(); return &v }
	out := requestJSON{
		Index: rec.Index, Label: rec.Label, Warmup: rec.Warmup,
		SchedTime: unixSeconds(rec.Sched), PromptLen: rec.PromptLen, InputLen: rec.PromptLen,
		OutputLen: rec.OutputTokens, GeneratedText: rec.Preview, Error: rec.Err, ErrorKind: rec.ErrKind,
		PromptLenSource: agent.PromptLenEstimate, ITL: []float64{},
	}
	if e.tokenized {
		out.PromptLenSource = agent.PromptLenTokenize
	}
	if rec.PromptTokens > 0 {
		n := rec.PromptTokens
		out.PromptTokens, out.InputLen = &n, n
		if !e.tokenized {
			out.PromptLenSource = agent.PromptLenUsage
		}
	}
	if rec.CachedTokens >= 0 {
		n := rec.CachedTokens
		out.CachedTokens = &n
	}
	if rec.UsageSource != "" {
		u := rec.UsageSource
		out.UsageSource = &u
	}
	if !rec.Send.IsZero() {
		v := unixSeconds(rec.Send)
		out.StartTime, out.QueueTime = &v, s(rec.DispatchLag)
	}
	if rec.FirstChunk > 0 {
		out.TTFT = s(rec.FirstChunk)
	}
	if rec.TTFT > 0 {
		out.TTFTContent = s(rec.TTFT)
	}
	if rec.E2E > 0 {
		out.Latency = s(rec.E2E)
	}
	for _, g := range vllmGaps(rec) {
		out.ITL = append(out.ITL, g.Seconds())
	}
	return out
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// vllmGaps returns vLLM's inter-token latencies of a record: the gap
// between consecutive chunks, the chat role chunk included.
func vllmGaps(rec *agent.Record) []time.Duration {
	var out []time.Duration
	if rec.FirstChunk > 0 && rec.TTFT > rec.FirstChunk {
		out = append(out, rec.TTFT-rec.FirstChunk)
	}
	for i := 1; i < len(rec.Marks); i++ {
		out = append(out, rec.Marks[i].At-rec.Marks[i-1].At)
	}
	return out
}

// benchRequest converts a record for the vLLM result.
func benchRequest(rec *agent.Record) benchjson.Request {
	br := benchjson.Request{
		Start: rec.Send, OK: rec.Err == "", PromptLen: rec.PromptLen, OutputLen: rec.OutputTokens,
		FirstChunk: rec.FirstChunk, FirstToken: rec.TTFT, Latency: rec.E2E, QueueTime: rec.DispatchLag,
		Text: rec.Preview, Error: rec.Err,
	}
	if rec.PromptTokens > 0 {
		br.PromptLen = rec.PromptTokens
	}
	var prev time.Duration
	for i, m := range rec.Marks {
		gap := time.Duration(0)
		if i > 0 {
			gap = m.At - prev
		}
		prev = m.At
		br.Chunks = append(br.Chunks, benchjson.Chunk{Gap: gap, Tokens: int(m.Tokens)})
	}
	if br.Start.IsZero() {
		br.OK = false
	}
	return br
}

// writeResult writes the vLLM-compatible result of the run to --save-result,
// through a temporary file renamed into place, so a reader never sees half
// a file.
func (e *loadExport) writeResult(path string, spec agent.Spec, sum results.LoadSummary, good *uint64, date time.Time) error {
	if e.acc == nil {
		return nil
	}
	m := spec.Load
	st := benchjson.Settings{
		Date: date, Backend: "openai-chat", ModelID: spec.Target.Model, NumPrompts: int64(sum.Requests),
		Burstiness: 1,
	}
	if spec.Target.API == oai.APICompletions {
		st.Backend = "openai"
	}
	if e.tokenized {
		st.TokenizerID = spec.Target.Model
	}
	switch m.Kind {
	case agent.LoadClosed:
		st.MaxConcurrency = m.Concurrency
	case agent.LoadConstant:
		st.RequestRate, st.Burstiness, st.MaxConcurrency = m.Rate, math.Inf(1), m.MaxInFlight
	case agent.LoadGamma:
		st.RequestRate, st.Burstiness, st.MaxConcurrency = m.Rate, m.Burstiness, m.MaxInFlight
	default:
		st.RequestRate, st.MaxConcurrency = m.Rate, m.MaxInFlight
	}
	run := benchjson.Run{
		Status: sum.Status, Reason: sum.Reason, Interrupted: sum.Interrupted, Good: good,
		PromptLenSource: e.promptLenSource(), ErrorsByKind: sum.ErrorsByKind,
	}
	if sum.DurationS != nil {
		run.Duration = time.Duration(*sum.DurationS * float64(time.Second))
	}
	if sum.UsageSource != nil {
		run.UsageSource = *sum.UsageSource
	}
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("--save-result: %w", err)
	}
	werr := e.acc.Write(f, st, run)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("--save-result %s: %w", path, werr)
	}
	return nil
}

// intervalJSON is one interval report in the --out file: snake_case keys,
// each histogram decoded into its digest (milliseconds, null when empty)
// and kept once as its HdrHistogram V2 text, which HdrHistogram tools read.
type intervalJSON struct {
	RunID                string                 `json:"run_id"`
	AgentID              string                 `json:"agent_id"`
	Seq                  uint64                 `json:"seq"`
	Start                time.Time              `json:"start"`
	End                  time.Time              `json:"end"`
	Warmup               bool                   `json:"warmup"`
	Final                bool                   `json:"final"`
	OK                   uint64                 `json:"ok"`
	Failed               uint64                 `json:"failed"`
	Interrupted          uint64                 `json:"interrupted"`
	Good                 uint64                 `json:"good"`
	OutputTokens         uint64                 `json:"output_tokens"`
	OutputTokensStreamed uint64                 `json:"output_tokens_streamed"`
	ErrorsByKind         map[string]uint64      `json:"errors_by_kind"`
	ErrorSamples         []string               `json:"error_samples"`
	InFlight             int                    `json:"in_flight"`
	Scheduled            uint64                 `json:"scheduled"`
	ClientBound          bool                   `json:"client_bound"`
	UsageSource          *string                `json:"usage_source"`
	PromptLenSource      *string                `json:"prompt_len_source"`
	AbortReason          *string                `json:"abort_reason"`
	Metrics              map[string]hdr.Summary `json:"metrics_ms"`
	HdrV2                map[string]string      `json:"hdr_v2"`
}

// intervalLine converts a report for the --out file. A histogram that does
// not decode is an error: the agent encoded it in this process.
func intervalLine(r agent.Report) (intervalJSON, error) {
	str := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	out := intervalJSON{
		RunID: r.RunID, AgentID: r.AgentID, Seq: r.Seq, Start: r.Start, End: r.End, Warmup: r.Warmup, Final: r.Final,
		OK: r.OK, Failed: r.Failed, Interrupted: r.Interrupted, Good: r.Good, OutputTokens: r.OutputTokens,
		OutputTokensStreamed: r.OutputTokensStreamed, ErrorsByKind: r.ErrorsByKind, ErrorSamples: r.ErrorSamples,
		InFlight: r.InFlight, Scheduled: r.Scheduled, ClientBound: r.ClientBound, UsageSource: str(r.UsageSource),
		PromptLenSource: str(r.PromptLenSource), AbortReason: str(r.AbortReason),
		Metrics: map[string]hdr.Summary{}, HdrV2: map[string]string{},
	}
	if out.ErrorsByKind == nil {
		out.ErrorsByKind = map[string]uint64{}
	}
	if out.ErrorSamples == nil {
		out.ErrorSamples = []string{}
	}
	var errs []error
	for _, h := range r.Histograms {
		d, err := hdr.Decode(h.V2)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.Metric, err))
			continue
		}
		out.Metrics[h.Metric] = d.Summarize()
		out.HdrV2[h.Metric] = string(h.V2)
	}
	return out, errors.Join(errs...)
}

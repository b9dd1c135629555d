// Package agent drives load against an OpenAI-compatible endpoint (vLLM or
// the simulator) and reports what it measured as interval reports carrying
// delta HdrHistograms.
//
// The package is transport-neutral: server.go adapts it to gRPC, and the
// rest never imports google.golang.org/grpc.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ttftlab/ttftlab/internal/hdr"
)

// ErrInvalidSpec is wrapped by every error Spec.Validate returns.
var ErrInvalidSpec = errors.New("invalid spec")

// ErrTargetNotAllowed is wrapped by the error Run returns when
// Config.CheckTarget refuses the spec's target.
var ErrTargetNotAllowed = errors.New("target not allowed")

// Metrics lists the histograms every report carries, in order.
var metrics = [...]string{hdr.TTFT, hdr.E2E, hdr.ITL, hdr.ICL, hdr.TPOT}

// Config configures an Agent.
type Config struct {
	// MaxConcurrency is the largest concurrency a spec may ask for.
	MaxConcurrency int
	// ConnectTimeout bounds each TCP connect.
	ConnectTimeout time.Duration
	// DefaultTimeout bounds each request when the spec sets no timeout.
	DefaultTimeout time.Duration
	// TTFTTimeout cancels a request that has produced no token by then, when
	// the spec sets none. 0 means no separate limit.
	TTFTTimeout time.Duration
	// DefaultInterval is the report period when the spec sets none.
	DefaultInterval time.Duration
	// MaxErrorSamples is the number of error samples kept per run.
	MaxErrorSamples int
	// CheckTarget, when set, is asked whether load may be sent to a base URL;
	// a non-nil error refuses the run.
	CheckTarget func(baseURL string) error
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MaxConcurrency:  4096,
		ConnectTimeout:  10 * time.Second,
		DefaultTimeout:  10 * time.Minute,
		DefaultInterval: time.Second,
		MaxErrorSamples: 5,
	}
}

// Target names an OpenAI-compatible endpoint.
type Target struct {
	// BaseURL is for example http://127.0.0.1:8000 (a trailing /v1 is fine).
	BaseURL string
	Model   string
	// API is APICompletions or APIChat; empty means APIChat.
	API    string
	APIKey string
}

// Workload says what each request sends.
type Workload struct {
	Prompt      string
	MaxTokens   int
	IgnoreEOS   bool
	Temperature float64
}

// Spec is one segment of a load plan; it mirrors RunProbeRequest.
type Spec struct {
	RunID    string
	AgentID  string
	Target   Target
	Workload Workload
	// Concurrency is the closed-loop concurrency.
	Concurrency int
	// Requests is the number of requests to send.
	Requests int
	// Labels, when set, name each request in order; len(Labels) must equal
	// Requests, and every report then carries per-request records. With
	// Concurrency 1 the requests run strictly in order.
	Labels []string
	// Records asks for per-request records even without labels.
	Records bool
	// Interval is the report period; 0 means Config.DefaultInterval.
	Interval time.Duration
	// Start is the barrier time; zero or past means at once.
	Start time.Time
	// Timeout bounds each request; 0 means Config.DefaultTimeout.
	Timeout time.Duration
	// TTFTTimeout bounds the wait for each request's first token; 0 means
	// Config.TTFTTimeout.
	TTFTTimeout time.Duration
}

// Validate checks the spec and returns an error that names the bad field and
// the fix. It wraps ErrInvalidSpec.
func (s *Spec) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, a...))
	}
	if s.Target.BaseURL == "" {
		return bad("target.base_url is empty: set it to the server's URL, for example http://127.0.0.1:8000")
	}
	u, err := url.Parse(s.Target.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("target.base_url %q is not an absolute http(s) URL: use for example http://127.0.0.1:8000", s.Target.BaseURL)
	}
	if s.Target.Model == "" {
		return bad("target.model is empty: set it to a model the server lists at /v1/models")
	}
	switch s.Target.API {
	case "", APIChat, APICompletions:
	default:
		return bad("target.api %q is unknown: use %q or %q", s.Target.API, APIChat, APICompletions)
	}
	if s.Workload.MaxTokens < 1 {
		return bad("workload.max_tokens %d is invalid: set max_tokens ≥ 1", s.Workload.MaxTokens)
	}
	if t := s.Workload.Temperature; t < 0 || math.IsNaN(t) || math.IsInf(t, 0) {
		return bad("workload.temperature %v is invalid: set a temperature ≥ 0", t)
	}
	if s.Concurrency < 1 {
		return bad("concurrency %d is invalid: set concurrency ≥ 1", s.Concurrency)
	}
	if s.Requests < 1 {
		return bad("requests %d is invalid: set requests ≥ 1", s.Requests)
	}
	if len(s.Labels) > 0 && len(s.Labels) != s.Requests {
		return bad("labels has %d names for %d requests: give one label per request or none", len(s.Labels), s.Requests)
	}
	if s.Interval < 0 {
		return bad("interval %v is negative: set interval ≥ 0 (0 means the default)", s.Interval)
	}
	if s.Timeout < 0 {
		return bad("timeout %v is negative: set timeout ≥ 0 (0 means the default)", s.Timeout)
	}
	if s.TTFTTimeout < 0 {
		return bad("ttft timeout %v is negative: set it ≥ 0 (0 means the default)", s.TTFTTimeout)
	}
	return nil
}

// Histogram is one metric's encoded delta histogram.
type Histogram struct {
	Metric string
	// V2 is the HdrHistogram V2 encoding, in the configuration of
	// internal/hdr.
	V2 []byte
}

// Record is one request's measurements.
type Record struct {
	// Index is the request's position in the run, from 0.
	Index int
	Label string
	Send  time.Time
	// TTFT, E2E, FirstByte and FirstChunk are offsets from Send; zero when
	// the event did not happen.
	TTFT         time.Duration
	E2E          time.Duration
	FirstByte    time.Duration
	FirstChunk   time.Duration
	OutputTokens int
	PromptTokens int
	// CachedTokens is -1 when the server did not report it.
	CachedTokens int
	UsageSource  string
	Chunks       int
	Preview      string
	// Err is empty on success, else "kind: detail".
	Err string
	// ErrKind is the error kind alone.
	ErrKind string
}

// Report is one interval of one run.
type Report struct {
	RunID   string
	AgentID string
	Seq     uint64
	Start   time.Time
	End     time.Time
	// Histograms are this interval's deltas, one per metric, always all of
	// ttft, e2e, itl, icl and tpot.
	Histograms   []Histogram
	OK           uint64
	Failed       uint64
	OutputTokens uint64
	ErrorsByKind map[string]uint64
	ErrorSamples []string
	// Records are the requests finished in this interval, in finishing
	// order, when the spec has labels or asks for records.
	Records []Record
	// InFlight is the number of requests open at the end of the interval.
	InFlight int
	Final    bool
}

// Agent runs load segments. It is safe for concurrent use; each Run has its
// own connections and state.
type Agent struct {
	cfg Config
	log *slog.Logger
}

// New returns an Agent. A nil logger discards logs.
func New(cfg Config, logger *slog.Logger) *Agent {
	def := DefaultConfig()
	if cfg.MaxConcurrency <= 0 {
		cfg.MaxConcurrency = def.MaxConcurrency
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = def.ConnectTimeout
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = def.DefaultTimeout
	}
	if cfg.DefaultInterval <= 0 {
		cfg.DefaultInterval = def.DefaultInterval
	}
	if cfg.MaxErrorSamples < 0 {
		cfg.MaxErrorSamples = 0
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Agent{cfg: cfg, log: logger}
}

// Run validates spec, waits for its start time and runs it, calling emit
// with one Report per interval and a last one with Final set. emit is called
// from Run's goroutine only, never concurrently; an emit error stops the run
// and is returned.
//
// When ctx is cancelled, Run stops sending requests at once, cancels those
// in flight, tries to emit the final report, and returns ctx.Err().
func (a *Agent) Run(ctx context.Context, spec Spec, emit func(Report) error) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if spec.Concurrency > a.cfg.MaxConcurrency {
		return fmt.Errorf("%w: concurrency %d exceeds this agent's limit of %d: lower concurrency or spread the load over more agents",
			ErrInvalidSpec, spec.Concurrency, a.cfg.MaxConcurrency)
	}
	if a.cfg.CheckTarget != nil {
		if err := a.cfg.CheckTarget(spec.Target.BaseURL); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrTargetNotAllowed, spec.Target.BaseURL, err)
		}
	}
	if spec.Interval == 0 {
		spec.Interval = a.cfg.DefaultInterval
	}
	if spec.Timeout == 0 {
		spec.Timeout = a.cfg.DefaultTimeout
	}
	if spec.TTFTTimeout == 0 {
		spec.TTFTTimeout = a.cfg.TTFTTimeout
	}
	if spec.Target.API == "" {
		spec.Target.API = APIChat
	}
	workers := min(spec.Concurrency, spec.Requests)
	client := NewClient(ClientConfig{
		MaxConns:       workers,
		ConnectTimeout: a.cfg.ConnectTimeout,
		TTFTTimeout:    spec.TTFTTimeout,
		Timeout:        spec.Timeout,
	})
	defer client.Close()

	r := newRun(spec, client, a.cfg.MaxErrorSamples, a.log)
	log := a.log.With("run_id", spec.RunID, "agent_id", spec.AgentID)

	if wait := time.Until(spec.Start); !spec.Start.IsZero() && wait > 0 {
		log.Info("waiting for start barrier", "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			r.intervalStart = time.Now()
			_ = r.emit(emit, true)
			return ctx.Err()
		}
	}

	log.Info("run started", "target", spec.Target.BaseURL, "model", spec.Target.Model,
		"api", spec.Target.API, "concurrency", workers, "requests", spec.Requests)
	r.intervalStart = time.Now()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(loadCtx)
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()

	tick := time.NewTicker(spec.Interval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if err := r.emit(emit, false); err != nil {
				stopLoad()
				<-done
				log.Warn("run stopped: report not delivered", "err", err)
				return err
			}
		case <-done:
			err := r.emit(emit, true)
			log.Info("run finished", "ok", r.totalOK, "failed", r.totalFailed, "reports", r.seq)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
}

// run is the state of one Run. Fields under mu are shared with the workers;
// the rest belong to Run's goroutine.
type run struct {
	spec       Spec
	client     *Client
	log        *slog.Logger
	maxSamples int
	records    bool

	// next is the next request index to hand out. A later open-loop
	// schedule replaces it with a pacer goroutine.
	next atomic.Int64

	mu          sync.Mutex
	cur         hdr.Set
	ok          uint64
	failed      uint64
	outTokens   uint64
	errs        map[string]uint64
	samples     []string
	nSamples    int
	recs        []Record
	inFlight    int
	totalOK     uint64
	totalFailed uint64

	// Owned by Run's goroutine.
	spare         hdr.Set
	seq           uint64
	intervalStart time.Time
}

func newRun(spec Spec, client *Client, maxSamples int, log *slog.Logger) *run {
	r := &run{
		spec:       spec,
		client:     client,
		log:        log,
		maxSamples: maxSamples,
		records:    spec.Records || len(spec.Labels) > 0,
		cur:        newSet(),
		spare:      newSet(),
		errs:       map[string]uint64{},
	}
	return r
}

func newSet() hdr.Set {
	s := hdr.Set{}
	for _, m := range metrics {
		s.Get(m)
	}
	return s
}

// work is one closed-loop worker: it takes the next request index until
// none is left or ctx is done.
func (r *run) work(ctx context.Context) {
	req := Request{
		BaseURL:     r.spec.Target.BaseURL,
		API:         r.spec.Target.API,
		Model:       r.spec.Target.Model,
		APIKey:      r.spec.Target.APIKey,
		Prompt:      r.spec.Workload.Prompt,
		MaxTokens:   r.spec.Workload.MaxTokens,
		IgnoreEOS:   r.spec.Workload.IgnoreEOS,
		Temperature: r.spec.Workload.Temperature,
		Stream:      true,
	}
	for {
		if ctx.Err() != nil {
			return
		}
		i := int(r.next.Add(1) - 1)
		if i >= r.spec.Requests {
			return
		}
		r.mu.Lock()
		r.inFlight++
		r.mu.Unlock()
		res := r.client.Do(ctx, req)
		r.observe(i, &res)
	}
}

// observe records one finished request.
func (r *run) observe(i int, res *Result) {
	label := ""
	if i < len(r.spec.Labels) {
		label = r.spec.Labels[i]
	}
	if res.Err != nil {
		r.log.Debug("request failed", "run_id", r.spec.RunID, "index", i, "label", label,
			"kind", res.Err.Kind, "detail", res.Err.Detail)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight--
	if res.OK() {
		r.ok++
		r.totalOK++
		r.outTokens += uint64(max(res.OutputTokens, 0))
		recordMetrics(r.cur, res)
	} else {
		r.failed++
		r.totalFailed++
		r.errs[res.Err.Kind]++
		if r.nSamples < r.maxSamples {
			r.nSamples++
			r.samples = append(r.samples, errorSample(i, label, res.Err))
		}
	}
	if r.records {
		r.recs = append(r.recs, newRecord(i, label, res))
	}
}

func errorSample(i int, label string, e *Error) string {
	name := fmt.Sprintf("request %d", i)
	if label != "" {
		name += " (" + label + ")"
	}
	s := name + ": " + e.Error()
	if e.Body != "" && e.Body != e.Detail {
		s += "; body: " + e.Body
	}
	return s
}

func newRecord(i int, label string, res *Result) Record {
	rec := Record{
		Index:        i,
		Label:        label,
		Send:         res.Send,
		TTFT:         res.TTFT(),
		OutputTokens: res.OutputTokens,
		PromptTokens: res.PromptTokens,
		CachedTokens: res.CachedTokens,
		UsageSource:  res.UsageSource,
		Chunks:       res.Chunks,
		Preview:      res.Preview,
	}
	if !res.Send.IsZero() {
		rec.E2E = res.E2E()
	}
	if !res.Header.IsZero() {
		rec.FirstByte = res.Header.Sub(res.Send)
	}
	if !res.FirstChunk.IsZero() {
		rec.FirstChunk = res.FirstChunk.Sub(res.Send)
	}
	if res.Err != nil {
		rec.Err = res.Err.Error()
		rec.ErrKind = res.Err.Kind
	}
	return rec
}

// recordMetrics adds a successful result's metrics to s.
func recordMetrics(s hdr.Set, res *Result) {
	if !res.FirstToken.IsZero() {
		s.Get(hdr.TTFT).Record(res.TTFT())
	}
	s.Get(hdr.E2E).Record(res.E2E())
	if tpot, ok := res.TPOT(); ok {
		s.Get(hdr.TPOT).Record(tpot)
	}
	if len(res.Marks) < 2 {
		return
	}
	itl, icl := s.Get(hdr.ITL), s.Get(hdr.ICL)
	prev := res.Marks[0].At
	for _, m := range res.Marks[1:] {
		gap := m.At - prev
		prev = m.At
		icl.Record(gap)
		k := max(int(m.Tokens), 1)
		per := gap / time.Duration(k)
		for range k {
			itl.Record(per)
		}
	}
}

// emit swaps the interval state out, encodes it, and calls emit. It runs on
// Run's goroutine only.
func (r *run) emit(emit func(Report) error, final bool) error {
	now := time.Now()
	r.mu.Lock()
	set := r.cur
	r.cur = r.spare
	rep := Report{
		RunID:        r.spec.RunID,
		AgentID:      r.spec.AgentID,
		Seq:          r.seq,
		Start:        r.intervalStart,
		End:          now,
		OK:           r.ok,
		Failed:       r.failed,
		OutputTokens: r.outTokens,
		ErrorsByKind: r.errs,
		ErrorSamples: r.samples,
		Records:      r.recs,
		InFlight:     r.inFlight,
		Final:        final,
	}
	r.ok, r.failed, r.outTokens = 0, 0, 0
	r.errs = map[string]uint64{}
	r.samples, r.recs = nil, nil
	r.mu.Unlock()

	r.seq++
	r.intervalStart = now
	rep.Histograms = make([]Histogram, 0, len(metrics))
	for _, m := range metrics {
		b, err := set.Get(m).Encode()
		if err != nil {
			return fmt.Errorf("report %d: %w", rep.Seq, err)
		}
		rep.Histograms = append(rep.Histograms, Histogram{Metric: m, V2: b})
		set.Get(m).Reset()
	}
	r.spare = set
	return emit(rep)
}

// Package agent drives load against an OpenAI-compatible endpoint (vLLM or
// the simulator) and reports what it measured as interval reports carrying
// delta HdrHistograms.
//
// A run follows a load model: closed loop (N workers, each sending its next
// request when the previous one ends) or open loop (requests due at times a
// Pacer fixes in advance, sent then whatever is in flight). Every request is
// stamped with its intended send time t_sched, and latencies are measured
// from it as well as from the actual send, so a client that falls behind
// cannot hide it (no coordinated omission): TTFT_sched = t_tok1 − t_sched and
// dispatch lag = t_send − t_sched are histogrammed, and a run whose lag p99
// passes a threshold is flagged client-bound.
//
// A multi-agent run gives each agent a segment of one global plan
// (internal/segment); each agent sends exactly the global requests its
// segment owns, with the prompts the single-agent run would send.
//
// The package is transport-neutral: server.go adapts it to gRPC, and the
// rest never imports google.golang.org/grpc.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/segment"
)

// ErrInvalidSpec is wrapped by every error Spec.Validate returns.
var ErrInvalidSpec = errors.New("invalid spec")

// ErrTargetNotAllowed is wrapped by the error Run returns when
// Config.CheckTarget refuses the spec's target.
var ErrTargetNotAllowed = errors.New("target not allowed")

// metrics lists the histograms every report carries, in order.
var metrics = [...]string{hdr.TTFT, hdr.TTFTSched, hdr.E2E, hdr.ITL, hdr.ICL, hdr.TPOT, hdr.DispatchLag}

// Metrics returns the names of the histograms every report carries.
func Metrics() []string { return metrics[:] }

// DefaultClientBoundP99 is the dispatch-lag p99 above which a run is flagged
// client-bound when the load model sets no threshold.
const DefaultClientBoundP99 = 10 * time.Millisecond

// Limits on load models, so that a spec cannot make an agent loop for ever
// before it starts.
const (
	maxRate       = 1e6
	maxWarmupHits = 10_000_000
)

// Config configures an Agent.
type Config struct {
	// MaxConcurrency is the largest closed-loop concurrency a spec may ask
	// for, and the hard cap on requests in flight in an open-loop run that
	// sets no max_in_flight (an arrival that finds the cap reached waits
	// before it is sent, and the wait shows as dispatch lag). A run's
	// connection pool is sized to its cap, so no request ever waits for a
	// connection after it was stamped sent: that would count the client's
	// queue as server TTFT. An open-loop run may thus open up to this many
	// connections (and file descriptors).
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
	// DatasetDir, when set, is the only directory dataset files are read
	// from: generator paths are resolved inside it and cannot leave it.
	// When empty, Run reads any local path (the standalone CLI), and the
	// gRPC server refuses dataset generators.
	DatasetDir string
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
	// Headers are added to every request.
	Headers map[string]string
}

// Workload says what each request sends, unless a generator says otherwise.
type Workload struct {
	Prompt      string
	MaxTokens   int
	IgnoreEOS   bool
	Temperature float64
	// ExtraBody is merged into every request body (see ParseExtraBody).
	ExtraBody map[string]any
}

// LoadModel is the global plan of a run. Counts and rates are global: each
// agent runs its segment's share.
type LoadModel struct {
	// Kind is LoadClosed, LoadConstant, LoadPoisson, LoadGamma or LoadRamp.
	Kind string
	// Concurrency is the closed-loop worker count.
	Concurrency int
	// Rate is the open-loop rate in requests per second (for LoadRamp, the
	// rate reached at the end).
	Rate float64
	// StartRate is LoadRamp's rate at the start.
	StartRate float64
	// Burstiness is LoadGamma's shape; 0 means 1 (Poisson).
	Burstiness float64
	// Duration and Requests bound the measured part of the run; the first
	// reached ends it, and at least one must be set. In open loop, Duration
	// bounds the schedule (requests due later are not sent); in closed loop
	// no request starts after it. Requests in flight then finish.
	Duration time.Duration
	Requests int64
	// Warmup and WarmupRequests (at most one) add a warm-up before the
	// measured part: the requests due (open loop) or started (closed loop)
	// in the first Warmup, or the first WarmupRequests requests. Their
	// results are reported in intervals flagged warmup and left out of the
	// statistics.
	Warmup         time.Duration
	WarmupRequests int64
	// MaxInFlight caps the open-loop requests in flight (its segment share,
	// at least 1, and at most Config.MaxConcurrency); 0 means the cap is
	// Config.MaxConcurrency. An arrival that finds the cap reached waits
	// before it is sent, and its wait is dispatch lag.
	MaxInFlight int
	// Seed makes random arrivals reproducible.
	Seed uint64
	// ClientBoundP99 is the dispatch-lag p99 above which the run is flagged
	// client-bound; 0 means DefaultClientBoundP99.
	ClientBoundP99 time.Duration
	// SLO, when any field is set, counts the successful requests that meet
	// it (Report.Good): goodput.
	SLO SLO
	// MaxErrorRate ends the run as failed (Report.AbortReason) once more
	// than this fraction of the attempts finished within ErrorWindow failed,
	// counted over at least 10 attempts. 0 means DefaultMaxErrorRate; 1
	// never trips, and a negative value turns the budget off. Requests the
	// run itself interrupted do not count.
	MaxErrorRate float64
	// ErrorWindow is the error budget's sliding window; 0 means
	// DefaultErrorWindow.
	ErrorWindow time.Duration
}

// maxErrorWindow bounds LoadModel.ErrorWindow.
const maxErrorWindow = time.Hour

// errorBudget returns the run's error budget, or nil when it is off.
func (m *LoadModel) errorBudget(t0 time.Time) *errorBudget {
	rate, window := m.MaxErrorRate, m.ErrorWindow
	if rate == 0 {
		rate = DefaultMaxErrorRate
	}
	if window == 0 {
		window = DefaultErrorWindow
	}
	return newErrorBudget(rate, window, t0)
}

// SLO is a service-level objective per request. A zero field leaves that
// metric unconstrained. TTFT and E2E are measured from the intended send
// time (TTFT_sched, E2E_sched), what a user behind the schedule waits for;
// in closed loop that is the send time.
type SLO struct {
	TTFT, TPOT, E2E time.Duration
}

// Set reports whether any objective is given.
func (s SLO) Set() bool { return s.TTFT > 0 || s.TPOT > 0 || s.E2E > 0 }

// Met reports whether a successful result, intended at sched, meets s. A
// request with fewer than two output tokens has no TPOT and meets that part.
func (s SLO) Met(res *Result, sched time.Time) bool {
	if s.TTFT > 0 && (res.FirstToken.IsZero() || res.FirstToken.Sub(sched) > s.TTFT) {
		return false
	}
	if s.TPOT > 0 {
		if tpot, ok := res.TPOT(); ok && tpot > s.TPOT {
			return false
		}
	}
	if s.E2E > 0 && res.Send.Add(res.E2E()).Sub(sched) > s.E2E {
		return false
	}
	return true
}

func (m *LoadModel) open() bool { return m.Kind != LoadClosed }

func (m *LoadModel) burstiness() float64 {
	if m.Burstiness == 0 {
		return 1
	}
	return m.Burstiness
}

// totalDuration is the schedule's length, warm-up included; 0 is unbounded.
func (m *LoadModel) totalDuration() time.Duration {
	if m.Duration <= 0 {
		return 0
	}
	return m.Warmup + m.Duration
}

// totalRequests is the global request count with count-based warm-up; 0 is
// unbounded (or set later from a time-based warm-up).
func (m *LoadModel) totalRequests() uint64 {
	if m.Requests <= 0 {
		return 0
	}
	return uint64(m.WarmupRequests + m.Requests)
}

func (m *LoadModel) validate() error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch m.Kind {
	case LoadClosed:
		if m.Concurrency < 1 {
			return fmt.Errorf("load.concurrency %d is invalid for a closed loop: set concurrency ≥ 1", m.Concurrency)
		}
		if m.Rate != 0 || m.StartRate != 0 || m.Burstiness != 0 {
			return errors.New("load.rate, start_rate or burstiness is set for a closed loop: leave them 0, or pick an open-loop kind")
		}
		if m.MaxInFlight != 0 {
			return errors.New("load.max_in_flight is set for a closed loop, where concurrency already caps it: leave it 0")
		}
	case LoadConstant, LoadPoisson, LoadGamma, LoadRamp:
		if m.Concurrency != 0 {
			return fmt.Errorf("load.concurrency %d is set for open-loop kind %q: leave it 0 (use max_in_flight to cap requests in flight)", m.Concurrency, m.Kind)
		}
		if !finite(m.Rate) || m.Rate <= 0 || m.Rate > maxRate {
			return fmt.Errorf("load.rate %v is invalid: set a rate in requests per second in (0, %g]", m.Rate, maxRate)
		}
		if m.Kind == LoadRamp {
			if !finite(m.StartRate) || m.StartRate < 0 || m.StartRate > maxRate {
				return fmt.Errorf("load.start_rate %v is invalid: set a rate in [0, %g]", m.StartRate, maxRate)
			}
			if m.Duration <= 0 {
				return errors.New("load.duration is 0 for a ramp: set the duration the rate ramps over")
			}
		} else if m.StartRate != 0 {
			return fmt.Errorf("load.start_rate is set for kind %q: use kind %q to ramp the rate", m.Kind, LoadRamp)
		}
		if m.Kind == LoadGamma {
			if b := m.Burstiness; !finite(b) || b < 0 || (b > 0 && b < 1e-3) || b > 1e3 {
				return fmt.Errorf("load.burstiness %v is invalid: set a gamma shape in [0.001, 1000] (1 is Poisson, below 1 burstier)", b)
			}
		} else if m.Burstiness != 0 {
			return fmt.Errorf("load.burstiness is set for kind %q: use kind %q for bursty arrivals", m.Kind, LoadGamma)
		}
		if m.MaxInFlight < 0 {
			return fmt.Errorf("load.max_in_flight %d is negative: set it ≥ 0 (0 means no cap)", m.MaxInFlight)
		}
	case "":
		return fmt.Errorf("load.kind is empty: use %q, %q, %q, %q or %q", LoadClosed, LoadConstant, LoadPoisson, LoadGamma, LoadRamp)
	default:
		return fmt.Errorf("load.kind %q is unknown: use %q, %q, %q, %q or %q", m.Kind, LoadClosed, LoadConstant, LoadPoisson, LoadGamma, LoadRamp)
	}
	if m.Duration < 0 || m.Requests < 0 {
		return fmt.Errorf("load.duration %v or requests %d is negative: set them ≥ 0", m.Duration, m.Requests)
	}
	if m.Duration == 0 && m.Requests == 0 {
		return errors.New("load has no bound: set duration, requests or both (the first reached ends the run)")
	}
	if m.Warmup < 0 || m.WarmupRequests < 0 {
		return fmt.Errorf("load.warmup %v or warmup_requests %d is negative: set them ≥ 0", m.Warmup, m.WarmupRequests)
	}
	if m.Warmup > 0 && m.WarmupRequests > 0 {
		return errors.New("load sets both warmup and warmup_requests: pick one")
	}
	if m.ClientBoundP99 < 0 {
		return fmt.Errorf("load.client_bound_p99 %v is negative: set it ≥ 0 (0 means %v)", m.ClientBoundP99, DefaultClientBoundP99)
	}
	if m.SLO.TTFT < 0 || m.SLO.TPOT < 0 || m.SLO.E2E < 0 {
		return fmt.Errorf("load.slo %+v has a negative objective: set each ≥ 0 (0 leaves it unconstrained)", m.SLO)
	}
	if r := m.MaxErrorRate; math.IsNaN(r) || r > 1 {
		return fmt.Errorf("load.max_error_rate %v is invalid: set a fraction in [0, 1] (0 means %g, 1 or a negative value turns the error budget off)", r, DefaultMaxErrorRate)
	}
	if m.ErrorWindow < 0 || m.ErrorWindow > maxErrorWindow {
		return fmt.Errorf("load.error_window %v is invalid: set a window in [0, %v] (0 means %v)", m.ErrorWindow, maxErrorWindow, DefaultErrorWindow)
	}
	return nil
}

// Spec is one segment of a load plan; it mirrors RunProbeRequest.
type Spec struct {
	RunID    string
	AgentID  string
	Target   Target
	Workload Workload
	// Load, when its Kind is set, is the global load plan, and Segment this
	// agent's share of it. Otherwise Concurrency and Requests describe a
	// closed loop of this agent alone.
	Load    LoadModel
	Segment segment.Segment
	// Generator, when set, generates each request's prompt and length.
	Generator WorkloadGen
	// Concurrency is the closed-loop concurrency when Load is not set.
	Concurrency int
	// Requests is the number of requests to send when Load is not set.
	Requests int
	// Labels, when set, name each request in order of its global index;
	// len(Labels) must equal the number of requests (warm-up included), and
	// every report then carries per-request records. With concurrency 1 the
	// requests run strictly in order.
	Labels []string
	// Records asks for per-request records even without labels.
	Records bool
	// Interval is the report period; 0 means Config.DefaultInterval.
	Interval time.Duration
	// Start is the barrier time; zero means at once. An open-loop schedule
	// counts from it, so agents that share it share one schedule.
	Start time.Time
	// Timeout bounds each request; 0 means Config.DefaultTimeout.
	Timeout time.Duration
	// TTFTTimeout bounds the wait for each request's first token; 0 means
	// Config.TTFTTimeout.
	TTFTTimeout time.Duration
	// ConnectTimeout bounds each connect; 0 means Config.ConnectTimeout.
	ConnectTimeout time.Duration
}

// load returns the effective load model: Load, or the closed loop that
// Concurrency and Requests describe.
func (s *Spec) load() LoadModel {
	if s.Load.Kind != "" {
		return s.Load
	}
	// Probes (labelled requests, a handful at a time) keep every failure as
	// a data point: no error budget.
	return LoadModel{Kind: LoadClosed, Concurrency: s.Concurrency, Requests: int64(s.Requests), MaxErrorRate: -1}
}

// Validate checks the spec and returns an error that names the bad field and
// the fix. It wraps ErrInvalidSpec.
func (s *Spec) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, a...))
	}
	wrap := func(err error) error { return fmt.Errorf("%w: %w", ErrInvalidSpec, err) }
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
	if err := validHeaders(s.Target.Headers); err != nil {
		return wrap(err)
	}
	if err := s.Generator.validate(s.Workload); err != nil {
		return wrap(err)
	}
	if s.Workload.MaxTokens < 0 || (s.Workload.MaxTokens < 1 && s.Generator.needsMaxTokens()) {
		return bad("workload.max_tokens %d is invalid: set max_tokens ≥ 1", s.Workload.MaxTokens)
	}
	if t := s.Workload.Temperature; t < 0 || math.IsNaN(t) || math.IsInf(t, 0) {
		return bad("workload.temperature %v is invalid: set a temperature ≥ 0", t)
	}
	for _, k := range []string{"stream", "prompt", "messages", "model"} {
		if _, ok := s.Workload.ExtraBody[k]; ok {
			return bad("workload.extra_body sets %q, which the agent controls: remove it", k)
		}
	}
	if s.Load.Kind == "" {
		if !s.Segment.IsFull() {
			return bad("segment %s is set but load is not: segments split a load model; set load or drop the segment", s.Segment)
		}
		if s.Concurrency < 1 {
			return bad("concurrency %d is invalid: set concurrency ≥ 1", s.Concurrency)
		}
		if s.Requests < 1 {
			return bad("requests %d is invalid: set requests ≥ 1", s.Requests)
		}
	} else {
		if s.Concurrency != 0 || s.Requests != 0 {
			return bad("concurrency %d and requests %d are set along with load: set them in load only", s.Concurrency, s.Requests)
		}
		if err := s.Load.validate(); err != nil {
			return wrap(err)
		}
		if m := &s.Load; !m.open() && m.Requests > 0 && s.Segment.Scale(int64(m.Concurrency)) == 0 && ownsRequests(s.Segment, m) {
			// The segment's request indices would go unsent: no other
			// agent takes them.
			return bad("load.concurrency %d gives segment %s no worker, yet the segment owns part of the %d requests, which no agent would send: use at most %d agents for concurrency %d, or raise load.concurrency",
				m.Concurrency, s.Segment, m.Requests, m.Concurrency, m.Concurrency)
		}
	}
	if len(s.Labels) > 0 {
		m := s.load()
		if want := m.totalRequests(); m.Warmup > 0 || uint64(len(s.Labels)) != want {
			return bad("labels has %d names for %d requests: give one label per request or none", len(s.Labels), want)
		}
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
	if s.ConnectTimeout < 0 {
		return bad("connect timeout %v is negative: set it ≥ 0 (0 means the default)", s.ConnectTimeout)
	}
	return nil
}

// ownsRequests reports whether seg has a share of a closed loop's request
// bound: measured requests it would send (time-based warm-up, where the
// bound is split by quota), or indices below the bound that it owns.
func ownsRequests(seg segment.Segment, m *LoadModel) bool {
	if m.Warmup > 0 {
		return seg.Scale(m.Requests) > 0
	}
	n := m.totalRequests()
	for i := uint64(0); i < n; i++ {
		if seg.Owns(i) {
			return true
		}
	}
	return false
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
	// Index is the request's global index in the run, from 0.
	Index int
	Label string
	// Sched is the intended send time; Send the actual one.
	Sched time.Time
	Send  time.Time
	// TTFT, E2E, FirstByte and FirstChunk are offsets from Send; zero when
	// the event did not happen.
	TTFT       time.Duration
	E2E        time.Duration
	FirstByte  time.Duration
	FirstChunk time.Duration
	// TTFTSched is the first token's offset from Sched; DispatchLag is
	// Send − Sched.
	TTFTSched    time.Duration
	DispatchLag  time.Duration
	Warmup       bool
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
	// Metrics().
	Histograms []Histogram
	OK         uint64
	Failed     uint64
	// Good counts the successful requests that met the load model's SLO.
	Good         uint64
	OutputTokens uint64
	// OutputTokensStreamed counts the output tokens that arrived in this
	// interval, per token-bearing chunk as ITL counts them, of the report's
	// requests (warm-up or measured) whether they finished or are still
	// streaming.
	OutputTokensStreamed uint64
	ErrorsByKind         map[string]uint64
	ErrorSamples         []string
	// Records are the requests finished in this interval, in finishing
	// order, when the spec has labels or asks for records.
	Records []Record
	// InFlight is the number of requests open at the end of the interval.
	InFlight int
	// Scheduled is the number of requests this agent has reached the
	// intended send time of so far (cumulative).
	Scheduled uint64
	// Warmup marks a report of warm-up requests only. Each interval has one
	// measured report and, while warm-up requests finish or are open, a
	// warm-up report for the same interval just before it.
	Warmup bool
	// ClientBound is set once the measured dispatch-lag p99 passed the
	// threshold; it stays set.
	ClientBound bool
	// UsageSource is the weakest usage source among this report's
	// successful requests (counted < final < continuous); empty when none.
	UsageSource string
	// MeasuredStart is the earliest intended send time and MeasuredEnd the
	// latest finish of a measured request so far (cumulative; zero when
	// none), for throughput over the measured span.
	MeasuredStart time.Time
	MeasuredEnd   time.Time
	// Interrupted counts the requests of this interval that were still in
	// flight when the run was cancelled or aborted: neither successes nor
	// failures.
	Interrupted uint64
	// AbortReason, on the final report only, says why the run ended early
	// as failed (the error budget was spent); empty for a run that ran its
	// plan or was cancelled by its caller.
	AbortReason string
	Final       bool
}

// Agent runs load segments. It is safe for concurrent use; each Run has its
// own connections and state.
type Agent struct {
	cfg Config
	log *slog.Logger
	// send replaces Client.Do in tests that run in a synctest bubble, where
	// time is virtual and exact.
	send func(ctx context.Context, c *Client, req Request) Result
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

// openDataset opens a generator's dataset file, inside Config.DatasetDir
// when it is set.
func (a *Agent) openDataset(path string) (io.ReadCloser, error) {
	if a.cfg.DatasetDir == "" {
		return os.Open(path)
	}
	root, err := os.OpenRoot(a.cfg.DatasetDir)
	if err != nil {
		return nil, fmt.Errorf("dataset directory: %w", err)
	}
	defer root.Close()
	f, err := root.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: name a file inside the agent's dataset directory %s", err, a.cfg.DatasetDir)
	}
	return f, nil
}

// plan is a run's share of the load model, fixed before it starts.
type plan struct {
	model LoadModel
	seg   segment.Segment
	// workers is the closed-loop worker count.
	workers int
	// pacer is the open-loop schedule in global arrival indices, bounded.
	pacer Pacer
	// inflightCap bounds open-loop requests in flight: the run's semaphore,
	// acquired before a request is sent, and its connection pool's size.
	inflightCap int
	// warmHits: global indices below it are warm-up.
	warmHits uint64
	// warmDur: closed-loop requests started before it are warm-up.
	warmDur time.Duration
	// endDur: no request is started (closed) or due (open) from it on; 0
	// means none.
	endDur time.Duration
	// maxIdx: global indices from it on are not sent; 0 means none.
	maxIdx uint64
	// quota caps measured closed-loop requests (time-based warm-up); -1
	// means none.
	quota     int64
	threshold time.Duration
}

func (a *Agent) plan(spec *Spec) (*plan, error) {
	m := spec.load()
	p := &plan{model: m, seg: spec.Segment, quota: -1, endDur: m.totalDuration(), threshold: m.ClientBoundP99}
	if p.threshold == 0 {
		p.threshold = DefaultClientBoundP99
	}
	if !m.open() {
		// A segment may get no worker (more agents than workers): Validate
		// refused it if it owns requests under a request bound; bounded by
		// duration alone it has nothing to send and ends at once.
		p.workers = int(p.seg.Scale(int64(m.Concurrency)))
		if p.workers > a.cfg.MaxConcurrency {
			return nil, fmt.Errorf("%w: concurrency %d exceeds this agent's limit of %d: lower concurrency or spread the load over more agents",
				ErrInvalidSpec, p.workers, a.cfg.MaxConcurrency)
		}
		p.warmHits = uint64(m.WarmupRequests)
		p.warmDur = m.Warmup
		if m.Requests > 0 {
			if m.Warmup > 0 {
				p.quota = p.seg.Scale(m.Requests)
			} else {
				p.maxIdx = m.totalRequests()
			}
		}
		return p, nil
	}
	p.inflightCap = a.cfg.MaxConcurrency
	if m.MaxInFlight > 0 {
		p.inflightCap = min(p.inflightCap, max(int(p.seg.Scale(int64(m.MaxInFlight))), 1))
	}
	p.warmHits = uint64(m.WarmupRequests)
	if m.Warmup > 0 {
		// The arrivals due in the warm-up are warm-up; the request bound
		// counts the measured ones after them.
		base, err := NewPacer(LoadModel{Kind: m.Kind, Rate: m.Rate, StartRate: m.StartRate, Burstiness: m.Burstiness,
			Seed: m.Seed, Duration: m.totalDuration(), Warmup: 0})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidSpec, err)
		}
		n := uint64(0)
		for ; ; n++ {
			at, stop := base.Due(n)
			if stop || at >= m.Warmup {
				break
			}
			if n >= maxWarmupHits {
				return nil, fmt.Errorf("%w: load.warmup %v holds more than %d requests at rate %g: shorten the warm-up", ErrInvalidSpec, m.Warmup, maxWarmupHits, m.Rate)
			}
		}
		p.warmHits = n
		m.WarmupRequests = int64(n)
	}
	pacer, err := NewPacer(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	p.pacer = pacer
	return p, nil
}

// Run validates spec, waits for its start time and runs it, calling emit
// with one Report per interval and a last one with Final set. emit is called
// from Run's goroutine only, never concurrently; an emit error stops the run
// and is returned.
//
// When ctx is cancelled, Run stops sending requests at once, cancels those
// in flight (they are reported as Interrupted, not as failures), tries to
// emit the final report, and returns ctx.Err().
//
// When the load model's error budget is spent, Run stops the same way and
// returns nil: its final report's AbortReason says that the run failed and
// why. A closed-loop worker whose request failed before any response backs
// off (see Backoff) before its next one; open-loop arrivals keep their
// schedule.
func (a *Agent) Run(ctx context.Context, spec Spec, emit func(Report) error) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if spec.Load.Kind == "" && spec.Concurrency > a.cfg.MaxConcurrency {
		return fmt.Errorf("%w: concurrency %d exceeds this agent's limit of %d: lower concurrency or spread the load over more agents",
			ErrInvalidSpec, spec.Concurrency, a.cfg.MaxConcurrency)
	}
	if a.cfg.CheckTarget != nil {
		if err := a.cfg.CheckTarget(spec.Target.BaseURL); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrTargetNotAllowed, spec.Target.BaseURL, err)
		}
	}
	pl, err := a.plan(&spec)
	if err != nil {
		return err
	}
	gen, err := NewGenerator(spec.Workload, spec.Generator, a.openDataset)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, err)
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
	if spec.ConnectTimeout == 0 {
		spec.ConnectTimeout = a.cfg.ConnectTimeout
	}
	if spec.Target.API == "" {
		spec.Target.API = APIChat
	}
	// The pool holds as many connections as requests may be in flight, so
	// that a request never waits for one once sent: in closed loop the
	// workers, in open loop the in-flight cap (whose semaphore is taken
	// before the send, so that its wait is dispatch lag).
	conns := pl.workers
	if pl.pacer != nil {
		conns = pl.inflightCap
	}
	client := NewClient(ClientConfig{
		MaxConns:       max(conns, 1),
		ConnectTimeout: spec.ConnectTimeout,
		TTFTTimeout:    spec.TTFTTimeout,
		Timeout:        spec.Timeout,
	})
	defer client.Close()

	r := newRun(spec, pl, gen, client, a.cfg.MaxErrorSamples, a.log)
	if a.send != nil {
		r.send = func(ctx context.Context, req Request) Result { return a.send(ctx, client, req) }
	}
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

	// t0 anchors the schedule: the barrier when there is one, so agents
	// that share a barrier share a schedule, with this clock's monotonic
	// reading so that timer waits ignore wall-clock steps.
	now := time.Now()
	r.t0 = now
	if !spec.Start.IsZero() {
		r.t0 = now.Add(spec.Start.Sub(now))
	}
	log.Info("run started", "target", spec.Target.BaseURL, "model", spec.Target.Model, "api", spec.Target.API,
		"load", pl.model.Kind, "segment", pl.seg.String(), "workers", pl.workers, "rate", pl.seg.ScaleRate(pl.model.Rate))
	r.intervalStart = now
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	r.budget, r.abort = pl.model.errorBudget(now), stopLoad
	var wg sync.WaitGroup
	if pl.pacer != nil {
		wg.Go(func() { r.schedule(loadCtx, &wg) })
	} else {
		for w := range pl.workers {
			wg.Go(func() { r.work(loadCtx, uint64(w)) })
		}
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
			r.mu.Lock()
			ok, failed, intr, reason := r.totalOK, r.totalFailed, r.totalIntr, r.abortReason
			r.mu.Unlock()
			if reason != "" {
				log.Warn("run aborted", "reason", reason, "ok", ok, "failed", failed, "interrupted", intr)
			}
			log.Info("run finished", "ok", ok, "failed", failed, "interrupted", intr, "reports", r.seq, "client_bound", r.clientBound)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
}

// acc accumulates one interval of either warm-up or measured requests.
type acc struct {
	set         hdr.Set
	ok          uint64
	failed      uint64
	interrupted uint64
	good        uint64
	outTokens   uint64
	errs        map[string]uint64
	samples     []string
	recs        []Record
	usage       string
}

func newAcc() acc { return acc{set: newSet(), errs: map[string]uint64{}} }

func (c *acc) empty() bool {
	return c.ok == 0 && c.failed == 0 && c.interrupted == 0 && len(c.recs) == 0
}

// usageRank orders usage sources from weakest to strongest.
func usageRank(s string) int {
	switch s {
	case UsageCounted:
		return 1
	case UsageFinal:
		return 2
	case UsageContinuous:
		return 3
	}
	return 4
}

// run is the state of one Run. Fields under mu are shared with the request
// goroutines; the rest belong to Run's goroutine or are fixed.
type run struct {
	spec       Spec
	plan       *plan
	gen        *Generator
	client     *Client
	send       func(context.Context, Request) Result
	log        *slog.Logger
	maxSamples int
	records    bool
	base       Request
	t0         time.Time
	sem        chan struct{} // open-loop in-flight cap; sized by the cap

	// Closed-loop index dispenser.
	dmu     sync.Mutex
	nextIdx uint64
	taken   int64

	mu           sync.Mutex
	meas, warm   acc
	lag          *hdr.Histogram // measured dispatch lag, cumulative
	clientBound  bool
	inFlight     int
	warmInFlight int
	scheduled    uint64
	nSamples     int
	totalOK      uint64
	totalFailed  uint64
	totalIntr    uint64
	measStart    time.Time
	measEnd      time.Time
	budget       *errorBudget // nil when off
	abortReason  string
	abort        func() // stops the load; set before it starts

	// streamedMeas and streamedWarm count the tokens streamed since the
	// last report, added by the client per chunk and swapped out by emit.
	streamedMeas, streamedWarm atomic.Uint64

	// Owned by Run's goroutine: the accumulators swapped in next, kept to
	// reuse their histograms.
	spareWarm, spareMeas acc
	seq                  uint64
	intervalStart        time.Time
}

func newRun(spec Spec, pl *plan, gen *Generator, client *Client, maxSamples int, log *slog.Logger) *run {
	r := &run{
		spec:       spec,
		plan:       pl,
		gen:        gen,
		client:     client,
		log:        log,
		maxSamples: maxSamples,
		records:    spec.Records || len(spec.Labels) > 0,
		meas:       newAcc(),
		warm:       newAcc(),
		spareMeas:  newAcc(),
		spareWarm:  newAcc(),
		lag:        hdr.New(),
		send:       client.Do,
		base: Request{
			BaseURL:     spec.Target.BaseURL,
			API:         spec.Target.API,
			Model:       spec.Target.Model,
			APIKey:      spec.Target.APIKey,
			Headers:     spec.Target.Headers,
			ExtraBody:   spec.Workload.ExtraBody,
			Temperature: spec.Workload.Temperature,
			Stream:      true,
		},
	}
	if pl.pacer != nil {
		r.sem = make(chan struct{}, pl.inflightCap)
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

// take hands a closed-loop worker that became free at now its next global
// request index, and says whether it is warm-up.
func (r *run) take(now time.Time) (i uint64, warm, ok bool) {
	p := r.plan
	r.dmu.Lock()
	defer r.dmu.Unlock()
	el := now.Sub(r.t0)
	if p.endDur > 0 && el >= p.endDur {
		return 0, false, false
	}
	// The next index this segment owns, scanning no further than the bound.
	for i = r.nextIdx; !p.seg.Owns(i); i++ {
		if p.maxIdx > 0 && i >= p.maxIdx {
			return 0, false, false
		}
	}
	if p.maxIdx > 0 && i >= p.maxIdx {
		return 0, false, false
	}
	warm = i < p.warmHits || el < p.warmDur
	if !warm && p.quota >= 0 {
		if r.taken >= p.quota {
			return 0, false, false
		}
		r.taken++
	}
	r.nextIdx = i + 1
	return i, warm, true
}

// work is closed-loop worker w: its intended send time is the moment it
// becomes free, so its dispatch lag is the client's own overhead. After a
// request that failed before any response (a refused or timed-out connect,
// a reset) it waits out a jittered exponential backoff first, so that a
// dead target is not hammered in a hot loop; any response resets it. The
// wait is not dispatch lag: the next request's intended send time is when
// the wait ends.
func (r *run) work(ctx context.Context, w uint64) {
	bo := Backoff{Base: backoffBase, Max: backoffMax, Rand: rand.New(rand.NewPCG(r.plan.model.Seed, w)).Float64}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for ctx.Err() == nil {
		free := time.Now()
		i, warm, ok := r.take(free)
		if !ok {
			return
		}
		r.begin(warm)
		if !r.do(ctx, i, free, warm, r.gen.Prompt(i)) {
			bo.Reset()
			continue
		}
		d := bo.Next()
		if end := r.plan.endDur; end > 0 {
			// No request starts after the end: waiting past it is pointless.
			d = min(d, max(r.t0.Add(end).Sub(time.Now()), 0))
		}
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			return
		}
	}
}

// schedule walks the global open-loop schedule and dispatches, at its
// intended time, each arrival this agent's segment owns, in a goroutine of
// its own: no arrival waits for an earlier one unless the in-flight cap is
// reached, and then the wait is dispatch lag. Request goroutines join wg.
func (r *run) schedule(ctx context.Context, wg *sync.WaitGroup) {
	p := r.plan
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for n := uint64(0); ; n++ {
		at, stop := p.pacer.Due(n)
		if stop {
			return
		}
		if !p.seg.Owns(n) {
			continue
		}
		sched := r.t0.Add(at)
		warm := n < p.warmHits
		prompt := r.gen.Prompt(n) // built before the due time, off the lag
		if d := time.Until(sched); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.scheduled++
		r.mu.Unlock()
		select {
		case r.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		r.begin(warm)
		wg.Go(func() {
			defer func() { <-r.sem }()
			r.do(ctx, n, sched, warm, prompt)
		})
	}
}

func (r *run) begin(warm bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.plan.pacer == nil {
		r.scheduled++
	}
	r.inFlight++
	if warm {
		r.warmInFlight++
	}
}

// do sends request i, intended at sched, and records it. It reports whether
// the request failed before any response, for the closed loop's backoff.
func (r *run) do(ctx context.Context, i uint64, sched time.Time, warm bool, p Prompt) (backoff bool) {
	req := r.base
	req.Prompt, req.MaxTokens, req.IgnoreEOS = p.Text, p.MaxTokens, p.IgnoreEOS
	req.Streamed = &r.streamedMeas
	if warm {
		req.Streamed = &r.streamedWarm
	}
	res := r.send(ctx, req)
	interrupted := res.Err != nil && res.Err.Kind == KindCanceled && ctx.Err() != nil
	r.observe(int(i), sched, warm, interrupted, &res)
	backoff = !interrupted && failedBeforeResponse(&res)
	res.Release() // observe keeps no reference to the marks.
	return backoff
}

// observe records one finished request. An interrupted one (cancelled
// because the run stopped) counts neither as a success nor as a failure,
// nor against the error budget.
func (r *run) observe(i int, sched time.Time, warm, interrupted bool, res *Result) {
	end := time.Now()
	label := ""
	if i < len(r.spec.Labels) {
		label = r.spec.Labels[i]
	}
	if res.Err != nil && !interrupted {
		r.log.Debug("request failed", "run_id", r.spec.RunID, "index", i, "label", label,
			"kind", res.Err.Kind, "detail", res.Err.Detail)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight--
	c := &r.meas
	if warm {
		r.warmInFlight--
		c = &r.warm
	} else {
		if r.measStart.IsZero() || sched.Before(r.measStart) {
			r.measStart = sched
		}
		if end.After(r.measEnd) {
			r.measEnd = end
		}
	}
	if !res.Send.IsZero() {
		// Dispatch lag is the client's, so failed requests count too.
		lag := max(res.Send.Sub(sched), 0)
		c.set.Get(hdr.DispatchLag).Record(lag)
		if !warm {
			r.lag.Record(lag)
		}
	}
	switch {
	case interrupted:
		c.interrupted++
		if !warm {
			r.totalIntr++
		}
	case res.OK():
		c.ok++
		c.outTokens += uint64(max(res.OutputTokens, 0))
		if usageRank(res.UsageSource) < usageRank(c.usage) {
			c.usage = res.UsageSource
		}
		recordMetrics(c.set, res)
		if r.spec.Load.SLO.Set() && r.spec.Load.SLO.Met(res, sched) {
			c.good++
		}
		if !res.FirstToken.IsZero() {
			c.set.Get(hdr.TTFTSched).Record(res.FirstToken.Sub(sched))
		}
		if !warm {
			r.totalOK++
		}
	default:
		c.failed++
		c.errs[res.Err.Kind]++
		if r.nSamples < r.maxSamples {
			r.nSamples++
			c.samples = append(c.samples, errorSample(i, label, res.Err))
		}
		if !warm {
			r.totalFailed++
		}
	}
	if r.budget != nil && !interrupted {
		kind := ""
		if res.Err != nil {
			kind = res.Err.Kind
		}
		if reason := r.budget.add(end, kind); reason != "" && r.abortReason == "" {
			r.abortReason = reason
			r.abort()
		}
	}
	if r.records {
		rec := newRecord(i, label, res)
		rec.Sched, rec.Warmup = sched, warm
		if !res.Send.IsZero() {
			rec.DispatchLag = max(res.Send.Sub(sched), 0)
		}
		if !res.FirstToken.IsZero() {
			rec.TTFTSched = res.FirstToken.Sub(sched)
		}
		c.recs = append(c.recs, rec)
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

// recordMetrics adds a successful result's send-relative metrics to s.
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

// emit swaps the interval state out, encodes it, and calls emit: first a
// warm-up report when warm-up requests finished or are open, then the
// measured one. It runs on Run's goroutine only.
func (r *run) emit(emit func(Report) error, final bool) error {
	now := time.Now()
	r.mu.Lock()
	warmPending := !r.warm.empty() || r.warmInFlight > 0
	warm, meas := r.warm, r.meas
	r.warm, r.meas = r.spareWarm, r.spareMeas
	warmStreamed, measStreamed := r.streamedWarm.Swap(0), r.streamedMeas.Swap(0)
	warmPending = warmPending || warmStreamed > 0
	if !r.clientBound && r.lag.Count() > 0 && time.Duration(r.lag.Summarize().P99*float64(time.Millisecond)) > r.plan.threshold {
		r.clientBound = true
	}
	base := Report{
		RunID:         r.spec.RunID,
		AgentID:       r.spec.AgentID,
		Start:         r.intervalStart,
		End:           now,
		InFlight:      r.inFlight,
		Scheduled:     r.scheduled,
		ClientBound:   r.clientBound,
		MeasuredStart: r.measStart,
		MeasuredEnd:   r.measEnd,
	}
	abortReason := r.abortReason
	r.mu.Unlock()
	r.intervalStart = now

	defer func() { r.spareWarm, r.spareMeas = recycle(warm), recycle(meas) }()
	if warmPending {
		rep := base
		rep.Warmup = true
		rep.OutputTokensStreamed = warmStreamed
		if err := r.report(emit, rep, &warm); err != nil {
			return err
		}
	}
	rep := base
	rep.Final = final
	rep.OutputTokensStreamed = measStreamed
	if final {
		rep.AbortReason = abortReason
	}
	return r.report(emit, rep, &meas)
}

// recycle empties an accumulator whose report went out, keeping its
// histograms' allocations.
func recycle(c acc) acc {
	for _, h := range c.set {
		h.Reset()
	}
	return acc{set: c.set, errs: map[string]uint64{}}
}

func (r *run) report(emit func(Report) error, rep Report, c *acc) error {
	rep.Seq = r.seq
	r.seq++
	rep.OK, rep.Failed, rep.Good, rep.OutputTokens = c.ok, c.failed, c.good, c.outTokens
	rep.Interrupted = c.interrupted
	rep.ErrorsByKind, rep.ErrorSamples, rep.Records = c.errs, c.samples, c.recs
	rep.UsageSource = c.usage
	rep.Histograms = make([]Histogram, 0, len(metrics))
	for _, m := range metrics {
		b, err := c.set.Get(m).Encode()
		if err != nil {
			return fmt.Errorf("report %d: %w", rep.Seq, err)
		}
		rep.Histograms = append(rep.Histograms, Histogram{Metric: m, V2: b})
	}
	return emit(rep)
}

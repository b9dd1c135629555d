package agent

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/internal/oai"
	"github.com/ttftlab/ttftlab/internal/segment"
	"github.com/ttftlab/ttftlab/internal/specerr"
)

// ErrInvalidSpec is wrapped by every error Spec.Validate returns.
var ErrInvalidSpec = errors.New("invalid spec")

// DefaultClientBoundP99 is the dispatch-lag p99 above which a run is flagged
// client-bound when the load model sets no threshold.
const DefaultClientBoundP99 = 10 * time.Millisecond

// Limits on load models, so that a spec cannot make an agent loop for ever
// before it starts.
const (
	maxRate       = 1e6
	maxWarmupHits = 10_000_000
)

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
	// CAPEM, when set, holds the PEM certificates (at most MaxCAPEM bytes)
	// an https:// target's certificate must chain to, instead of the
	// system roots.
	CAPEM []byte
	// InsecureSkipVerify skips the https:// certificate check; for a
	// trusted test network only.
	InsecureSkipVerify bool
	// Transport is the HTTP client (oai.Config.Transport): oai.TransportH1
	// (the default when empty), oai.TransportNetHTTP or oai.TransportH2.
	Transport string
	// FirstTokenClock is where h1 takes a chunk's arrival time
	// (oai.Config.RxTimestamps): oai.ClockKernelRx (the default when
	// empty) or oai.ClockReadReturn.
	FirstTokenClock string
}

// EffectiveClient returns the HTTP transport and first-token clock t's
// settings give: the defaults filled in, and oai.ClockReadReturn for the
// transports that always stamp when bytes are handed on. With
// oai.ClockKernelRx a request whose read got no kernel timestamp still
// falls back to the read's return (oai.Result.FirstTokenClock).
func (t Target) EffectiveClient() (transport, clock string) {
	transport, clock = t.Transport, t.FirstTokenClock
	if transport == "" {
		transport = oai.TransportH1
	}
	if clock == "" {
		clock = oai.ClockKernelRx
	}
	if transport != oai.TransportH1 {
		clock = oai.ClockReadReturn
	}
	return transport, clock
}

// CheckTransport checks a Target.Transport value; the error (to follow the
// field's name and value) says which are accepted.
func CheckTransport(v string) error {
	if v == "" || slices.Contains(oai.Transports, v) {
		return nil
	}
	return fmt.Errorf("is unknown: use %q (the default), %q or %q", oai.TransportH1, oai.TransportNetHTTP, oai.TransportH2)
}

// CheckFirstTokenClock checks a Target.FirstTokenClock value; the error
// (to follow the field's name and value) says which are accepted.
func CheckFirstTokenClock(v string) error {
	if v == "" || slices.Contains(oai.Clocks, v) {
		return nil
	}
	return fmt.Errorf("is unknown: use %q (the default) or %q", oai.ClockKernelRx, oai.ClockReadReturn)
}

// MaxCAPEM caps Target.CAPEM: a few CA certificates are a few KiB.
const MaxCAPEM = 64 << 10

// TLSConfig is the TLS configuration of t's https:// requests: nil (the
// system roots) when neither CAPEM nor InsecureSkipVerify is set. Errors
// name the field and the fix.
func (t Target) TLSConfig() (*tls.Config, error) {
	if len(t.CAPEM) == 0 && !t.InsecureSkipVerify {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // asked for explicitly, on a trusted test network
	if len(t.CAPEM) > 0 {
		pool, err := ParseCAPEM(t.CAPEM)
		if err != nil {
			return nil, specerr.New("target.ca_pem", nil, "%v", err)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// ParseCAPEM parses PEM certificates into a pool. It refuses more than
// MaxCAPEM bytes, input with no certificate, and a block that is not a
// parsable certificate; the error says which and the fix.
func ParseCAPEM(b []byte) (*x509.CertPool, error) {
	if len(b) > MaxCAPEM {
		return nil, fmt.Errorf("is %d bytes, over the %d-byte cap: give only the CA certificates the target's chain needs", len(b), MaxCAPEM)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			if n > 0 && len(bytes.TrimSpace(rest)) > 0 {
				return nil, errors.New("has text that is not PEM after the certificates: give a PEM file of CERTIFICATE blocks")
			}
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("holds a %q PEM block: give only CERTIFICATE blocks (the CA's certificate, not a key)", blk.Type)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d does not parse: %w: give the CA's PEM certificate", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, errors.New("holds no PEM certificate: give the CA's certificate as a PEM file (-----BEGIN CERTIFICATE-----)")
	}
	return pool, nil
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

// Bounds of LoadModel.ErrorWindow (when set): shorter windows hold too few
// attempts to judge a rate by. They are the one definition: the
// coordinator checks a sweep's load.error_window_ms with CheckErrorWindow.
const (
	MinErrorWindow = 100 * time.Millisecond
	MaxErrorWindow = time.Hour
)

// CheckErrorWindow returns nil when w is a valid error-budget window (0 for
// DefaultErrorWindow, or MinErrorWindow..MaxErrorWindow), else a
// specerr.FieldError that names field, the value and the fix.
func CheckErrorWindow(field string, w time.Duration) error {
	if w < 0 || (w > 0 && w < MinErrorWindow) || w > MaxErrorWindow {
		return specerr.New(field, w, "is invalid: set a window from %v to %v, such as 5s (0 means %v)", MinErrorWindow, MaxErrorWindow, DefaultErrorWindow)
	}
	return nil
}

// MaxConcurrency caps a load model's concurrency and max_in_flight: each
// request in flight is a goroutine and a connection (a file descriptor) of
// one agent process.
const MaxConcurrency = 100_000

// SLO is a service-level objective per request. A zero field leaves that
// metric unconstrained. TTFT and E2E are measured from the intended send
// time (TTFT_sched, E2E_sched), what a user behind the schedule waits for;
// in closed loop that is the send time.
type SLO struct {
	TTFT, TPOT, E2E time.Duration
}

// Set reports whether any objective is given.
func (s SLO) Set() bool { return s.TTFT > 0 || s.TPOT > 0 || s.E2E > 0 }

// String describes the objectives, for example "TTFT ≤ 200ms, E2E ≤ 2s";
// "" when none is set.
func (s SLO) String() string {
	var parts []string
	for _, p := range []struct {
		name string
		d    time.Duration
	}{{"TTFT", s.TTFT}, {"TPOT", s.TPOT}, {"E2E", s.E2E}} {
		if p.d > 0 {
			parts = append(parts, fmt.Sprintf("%s ≤ %v", p.name, p.d))
		}
	}
	return strings.Join(parts, ", ")
}

// Describe names the load model in words, for example "closed loop,
// concurrency 8" or "poisson arrivals at 5 req/s, max 16 in flight".
func (m LoadModel) Describe() string {
	d := fmt.Sprintf("closed loop, concurrency %d", m.Concurrency)
	switch m.Kind {
	case LoadRamp:
		d = fmt.Sprintf("ramp %g → %g req/s", m.StartRate, m.Rate)
	case LoadGamma:
		d = fmt.Sprintf("gamma arrivals at %g req/s, burstiness %g", m.Rate, m.burstiness())
	case LoadPoisson, LoadConstant:
		d = fmt.Sprintf("%s arrivals at %g req/s", m.Kind, m.Rate)
	}
	if m.MaxInFlight > 0 {
		d += fmt.Sprintf(", max %d in flight", m.MaxInFlight)
	}
	return d
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
	bad := specerr.New
	switch m.Kind {
	case LoadClosed:
		if m.Concurrency < 1 {
			return bad("load.concurrency", m.Concurrency, "is invalid for a closed loop: set concurrency ≥ 1")
		}
		if m.Concurrency > MaxConcurrency {
			return bad("load.concurrency", m.Concurrency, "is over the limit of %d: lower it, or spread the load over several agents with a sweep", MaxConcurrency)
		}
		if m.Rate != 0 {
			return bad("load.rate", m.Rate, "is set for a closed loop: leave it 0, or pick an open-loop kind")
		}
		if m.StartRate != 0 {
			return bad("load.start_rate", m.StartRate, "is set for a closed loop: leave it 0, or pick kind %q", LoadRamp)
		}
		if m.Burstiness != 0 {
			return bad("load.burstiness", m.Burstiness, "applies to an open loop (kind %q): leave it 0 for a closed loop", LoadGamma)
		}
		if m.MaxInFlight != 0 {
			return bad("load.max_in_flight", m.MaxInFlight, "applies to an open loop; in a closed loop concurrency already caps it: leave it 0")
		}
	case LoadConstant, LoadPoisson, LoadGamma, LoadRamp:
		if m.Concurrency != 0 {
			return bad("load.concurrency", m.Concurrency, "is set for open-loop kind %q: leave it 0 (use max_in_flight to cap requests in flight)", m.Kind)
		}
		if !finite(m.Rate) || m.Rate <= 0 || m.Rate > maxRate {
			return bad("load.rate", m.Rate, "is invalid: set a rate in requests per second in (0, %g]", maxRate)
		}
		if m.Kind == LoadRamp {
			if !finite(m.StartRate) || m.StartRate < 0 || m.StartRate > maxRate {
				return bad("load.start_rate", m.StartRate, "is invalid: set a rate in [0, %g]", maxRate)
			}
			if m.Duration <= 0 {
				return bad("load.duration", nil, "is 0 for a ramp: set the duration the rate ramps over")
			}
		} else if m.StartRate != 0 {
			return bad("load.start_rate", m.StartRate, "is set for kind %q: use kind %q to ramp the rate", m.Kind, LoadRamp)
		}
		if m.Kind == LoadGamma {
			if b := m.Burstiness; !finite(b) || b < 0 || (b > 0 && b < 1e-3) || b > 1e3 {
				return bad("load.burstiness", b, "is invalid: set a gamma shape in [0.001, 1000] (1 is Poisson, below 1 burstier)")
			}
		} else if m.Burstiness != 0 {
			return bad("load.burstiness", m.Burstiness, "is set for kind %q: use kind %q for bursty arrivals", m.Kind, LoadGamma)
		}
		if m.MaxInFlight < 0 {
			return bad("load.max_in_flight", m.MaxInFlight, "is negative: set it ≥ 0 (0 means no cap)")
		}
		if m.MaxInFlight > MaxConcurrency {
			return bad("load.max_in_flight", m.MaxInFlight, "is over the limit of %d: lower it, or spread the load over several agents with a sweep", MaxConcurrency)
		}
	case "":
		return bad("load.kind", nil, "is empty: use %q, %q, %q, %q or %q", LoadClosed, LoadConstant, LoadPoisson, LoadGamma, LoadRamp)
	default:
		return bad("load.kind", fmt.Sprintf("%q", m.Kind), "is unknown: use %q, %q, %q, %q or %q", LoadClosed, LoadConstant, LoadPoisson, LoadGamma, LoadRamp)
	}
	if m.Duration < 0 {
		return bad("load.duration", m.Duration, "is negative: set a positive duration, or 0 for no time bound")
	}
	if m.Requests < 0 {
		return bad("load.requests", m.Requests, "is negative: set requests ≥ 1, or 0 for no count bound")
	}
	if m.Duration == 0 && m.Requests == 0 {
		return bad("load", nil, "has no bound: set duration, requests or both (the first reached ends the run)")
	}
	if m.Warmup < 0 {
		return bad("load.warmup", m.Warmup, "is negative: set it ≥ 0")
	}
	if m.WarmupRequests < 0 {
		return bad("load.warmup_requests", m.WarmupRequests, "is negative: set it ≥ 0")
	}
	if m.Warmup > 0 && m.WarmupRequests > 0 {
		return bad("load.warmup_requests", m.WarmupRequests, "is set along with load.warmup %v: pick one", m.Warmup)
	}
	if m.ClientBoundP99 < 0 {
		return bad("load.client_bound_p99", m.ClientBoundP99, "is negative: set a positive duration such as 10ms (0 means %v)", DefaultClientBoundP99)
	}
	for _, o := range []struct {
		field string
		d     time.Duration
	}{{"load.slo.ttft", m.SLO.TTFT}, {"load.slo.tpot", m.SLO.TPOT}, {"load.slo.e2e", m.SLO.E2E}} {
		if o.d < 0 {
			return bad(o.field, o.d, "is negative: set each objective ≥ 0 (0 leaves it unconstrained)")
		}
	}
	if r := m.MaxErrorRate; math.IsNaN(r) || r > 1 {
		return bad("load.max_error_rate", r, "is invalid: set a fraction of failed attempts in [0, 1] (0 means %g; 1 or a negative value turns the error budget off)", DefaultMaxErrorRate)
	}
	return CheckErrorWindow("load.error_window", m.ErrorWindow)
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
	// RecordMarks adds each record's token-bearing chunks (Record.Marks),
	// for exports that list per-chunk gaps; it implies Records. Each
	// interval's records then hold 12 bytes per chunk until the report is
	// sent.
	RecordMarks bool
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
	bad := func(field string, v any, format string, a ...any) error {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, specerr.New(field, v, format, a...))
	}
	wrap := func(err error) error { return fmt.Errorf("%w: %w", ErrInvalidSpec, err) }
	if s.Target.BaseURL == "" {
		return bad("target.base_url", nil, "is empty: set it to the server's URL, for example http://127.0.0.1:8000")
	}
	u, err := url.Parse(s.Target.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("target.base_url", fmt.Sprintf("%q", s.Target.BaseURL), "is not an absolute http(s) URL: use for example http://127.0.0.1:8000")
	}
	if s.Target.Model == "" {
		return bad("target.model", nil, "is empty: set it to a model the server lists at /v1/models")
	}
	switch s.Target.API {
	case "", oai.APIChat, oai.APICompletions:
	default:
		return bad("target.api", fmt.Sprintf("%q", s.Target.API), "is unknown: use %q or %q", oai.APIChat, oai.APICompletions)
	}
	if _, err := s.Target.TLSConfig(); err != nil {
		return wrap(err)
	}
	if err := CheckTransport(s.Target.Transport); err != nil {
		return bad("target.transport", fmt.Sprintf("%q", s.Target.Transport), "%v", err)
	}
	if err := CheckFirstTokenClock(s.Target.FirstTokenClock); err != nil {
		return bad("target.first_token_clock", fmt.Sprintf("%q", s.Target.FirstTokenClock), "%v", err)
	}
	if err := validHeaders(s.Target.Headers); err != nil {
		return wrap(specerr.New("target.headers", nil, "%s", strings.TrimPrefix(err.Error(), "target.headers ")))
	}
	if err := s.Generator.validate(s.Workload); err != nil {
		return wrap(err)
	}
	if s.Workload.MaxTokens < 0 || (s.Workload.MaxTokens < 1 && s.Generator.needsMaxTokens()) {
		return bad("workload.max_tokens", s.Workload.MaxTokens, "is invalid: set max_tokens ≥ 1")
	}
	if t := s.Workload.Temperature; t < 0 || math.IsNaN(t) || math.IsInf(t, 0) {
		return bad("workload.temperature", t, "is invalid: set a temperature ≥ 0")
	}
	for _, k := range []string{"stream", "prompt", "messages", "model"} {
		if _, ok := s.Workload.ExtraBody[k]; ok {
			return bad("workload.extra_body", nil, "sets %q, which the agent controls: remove it", k)
		}
	}
	if s.Load.Kind == "" {
		if !s.Segment.IsFull() {
			return bad("segment", s.Segment, "is set but load is not: segments split a load model; set load or drop the segment")
		}
		if s.Concurrency < 1 {
			return bad("concurrency", s.Concurrency, "is invalid: set concurrency ≥ 1")
		}
		if s.Concurrency > MaxConcurrency {
			return bad("concurrency", s.Concurrency, "is over the limit of %d: lower it", MaxConcurrency)
		}
		if s.Requests < 1 {
			return bad("requests", s.Requests, "is invalid: set requests ≥ 1")
		}
	} else {
		if s.Concurrency != 0 || s.Requests != 0 {
			return bad("concurrency", s.Concurrency, "and requests %d are set along with load: set them in load only", s.Requests)
		}
		if err := s.Load.validate(); err != nil {
			return wrap(err)
		}
		if m := &s.Load; !m.open() && m.Requests > 0 && s.Segment.Scale(int64(m.Concurrency)) == 0 && ownsRequests(s.Segment, m) {
			// The segment's request indices would go unsent: no other
			// agent takes them.
			return bad("load.concurrency", m.Concurrency, "gives segment %s no worker, yet the segment owns part of the %d requests, which no agent would send: use at most %d agents for concurrency %d, or raise load.concurrency",
				s.Segment, m.Requests, m.Concurrency, m.Concurrency)
		}
	}
	if len(s.Labels) > 0 {
		m := s.load()
		if want := m.totalRequests(); m.Warmup > 0 || uint64(len(s.Labels)) != want {
			return bad("labels", nil, "has %d names for %d requests: give one label per request or none", len(s.Labels), want)
		}
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"interval", s.Interval}, {"timeout", s.Timeout}, {"ttft_timeout", s.TTFTTimeout}, {"connect_timeout", s.ConnectTimeout}} {
		if d.v < 0 {
			return bad(d.field, d.v, "is negative: set a positive duration such as 30s (0 means the default)")
		}
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

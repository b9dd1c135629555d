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
// Requests go out through a Sender: by default an internal/oai Client, the
// OpenAI-compatible streaming client, one per run.
//
// Files: spec.go (the spec and its validation), plan.go (a run's share of
// the load model), run.go (the closed- and open-loop runners), backoff.go
// (closed-loop backoff), pacer.go (open-loop schedules), workload.go
// (prompts), account.go (per-request accounting into interval
// accumulators), budget.go (the error budget), report.go (interval
// reports).
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
	"os"
	"time"

	"github.com/ttftlab/ttftlab/internal/oai"
)

// ErrTargetNotAllowed is wrapped by the error Run returns when
// Config.CheckTarget refuses the spec's target.
var ErrTargetNotAllowed = errors.New("target not allowed")

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
	// NewSender makes each run's Sender; nil means NewClientSender.
	NewSender NewSenderFunc
	// DatasetDir, when set, is the only directory dataset files are read
	// from: generator paths are resolved inside it and cannot leave it.
	// When empty, Run reads any local path (the standalone CLI), and the
	// gRPC server refuses dataset generators.
	DatasetDir string
	// Observer, when set, sees every request start and end (metrics).
	Observer Observer
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

// Agent runs load segments. It is safe for concurrent use; each Run has its
// own connections and state.
type Agent struct {
	cfg Config
	log *slog.Logger
}

// Sender sends one request and times it. *oai.Client is one; tests use
// fakes, for example inside a synctest bubble, where time is virtual.
type Sender interface {
	// Do sends req and reads the whole response; it never panics, and
	// every failure is described by the Result's Err.
	Do(ctx context.Context, req oai.Request) oai.Result
	// Close releases the Sender's idle connections.
	Close()
}

// NewSenderFunc makes the Sender of one run from its client configuration:
// MaxConns sized to the run's requests in flight, and the spec's timeouts.
type NewSenderFunc func(cfg oai.Config) (Sender, error)

// NewClientSender is the default NewSenderFunc: an oai.Client.
func NewClientSender(cfg oai.Config) (Sender, error) {
	c, err := oai.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	return c, nil
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
	if cfg.NewSender == nil {
		cfg.NewSender = NewClientSender
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

package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ttftlab/ttftlab/agent"
)

// Agent exports an agent's requests live: in flight, ended by outcome,
// errors by kind, and the dispatch lag (t_send − t_sched, the open-loop
// schedule lag) as a native histogram. It is an agent.Observer and is safe
// for concurrent use. Warm-up requests count too, under phase="warmup".
type Agent struct {
	reg      *prometheus.Registry
	inFlight prometheus.Gauge
	requests *prometheus.CounterVec
	errs     *prometheus.CounterVec
	lag      prometheus.Histogram

	mu    sync.Mutex
	kinds map[string]bool // error kinds with a series
}

var _ agent.Observer = (*Agent)(nil)

// NewAgent returns an agent's metrics with their own registry, which also
// holds the Go runtime and process collectors.
func NewAgent() *Agent {
	a := &Agent{
		reg: newRegistry(),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ttftlab_agent_in_flight",
			Help: "Requests this agent has in flight, over all its runs."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ttftlab_agent_requests_total",
			Help: "Requests this agent ended, by phase (measured, warmup) and outcome (ok, failed, interrupted)."}, []string{"phase", "outcome"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ttftlab_agent_request_errors_total",
			Help: "Failed requests by error kind, warm-up included."}, []string{"kind"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ttftlab_agent_dispatch_lag_seconds",
			Help:    "Dispatch lag t_send − t_sched of every request sent: how far the agent fell behind its schedule.",
			Buckets: []float64{0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1}, NativeHistogramBucketFactor: NativeBucketFactor,
			NativeHistogramMaxBucketNumber: 160}),
		kinds: map[string]bool{},
	}
	a.reg.MustRegister(a.inFlight, a.requests, a.errs, a.lag)
	return a
}

// Registry returns the registry to serve.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// RequestStarted counts a request in flight.
func (a *Agent) RequestStarted() { a.inFlight.Inc() }

// RequestEnded counts how a request ended and observes its dispatch lag.
func (a *Agent) RequestEnded(e agent.RequestEnd) {
	a.inFlight.Dec()
	phase := "measured"
	if e.Warmup {
		phase = "warmup"
	}
	outcome := "ok"
	switch {
	case e.Interrupted:
		outcome = "interrupted"
	case e.ErrKind != "":
		outcome = "failed"
		a.errs.WithLabelValues(a.kind(e.ErrKind)).Inc()
	}
	a.requests.WithLabelValues(phase, outcome).Inc()
	if e.Sent {
		a.lag.Observe(e.DispatchLag.Seconds())
	}
}

// kind bounds the error kind label: the agent's own kinds are a short
// list, but http_<code> carries the server's status.
func (a *Agent) kind(k string) string {
	if !errorKindRe.MatchString(k) {
		return "other"
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.kinds[k] {
		if len(a.kinds) >= maxErrorKinds {
			return "other"
		}
		a.kinds[k] = true
	}
	return k
}

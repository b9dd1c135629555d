package metrics

import (
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/membership"
)

// DefaultRetention is how long a run's series stay exported after it ends.
const DefaultRetention = 10 * time.Minute

// Bounds on what untrusted interval reports can add to the exposition.
const (
	maxErrorKinds   = 32   // distinct error kinds per level; more count as "other"
	maxAgentsPerRun = 1024 // agents whose in-flight count a level tracks
	maxLevels       = 4096 // levels tracked per run
	maxRuns         = 64   // runs tracked at once; the oldest ended go first
)

// BaselineLevel is the level label of a baseline run's reports.
const BaselineLevel = "baseline"

// errorKindRe is what an error kind label may be; anything else from an
// agent counts as "other".
var errorKindRe = regexp.MustCompile(`^[a-z0-9_]{1,40}$`)

// Coordinator exports a coordinator's live state: runs by state, the queue
// depth (runs whose last news is a queued event, not yet a lease), members by role and state, and per run and level the TTFT, ITL
// and E2E histograms, requests, errors, tokens and requests in flight, fed
// from the interval reports as the coordinator records them. A run's series
// are dropped Retention after it ends. It is safe for concurrent use.
type Coordinator struct {
	reg       *prometheus.Registry
	now       func() time.Time
	retention time.Duration
	members   func() []membership.Member

	mu       sync.Mutex
	runs     map[string]*runState
	finished map[string]uint64

	runsDesc, finishedDesc, queueDesc, membersDesc     *prometheus.Desc
	ttftDesc, itlDesc, e2eDesc                         *prometheus.Desc
	requestsDesc, errorsDesc, tokensDesc, inFlightDesc *prometheus.Desc
	levelValueDesc                                     *prometheus.Desc
}

type runState struct {
	state   string // running, ok, failed
	started time.Time
	ended   time.Time
	levels  map[string]*levelState
}

type levelState struct {
	value    float64
	hasValue bool
	ttft     *nativeHist
	itl      *nativeHist
	e2e      *nativeHist
	requests map[string]uint64 // ok, failed, interrupted
	errors   map[string]uint64
	tokens   uint64
	inFlight map[string]uint32 // per agent, from its latest report
}

// CoordinatorOptions configures NewCoordinator.
type CoordinatorOptions struct {
	// Members lists the cluster's members at scrape time; nil exports none.
	Members func() []membership.Member
	// Retention is how long a run's series outlive it; 0 means
	// DefaultRetention.
	Retention time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// NewCoordinator returns the coordinator's metrics with their own registry,
// which also holds the Go runtime and process collectors.
func NewCoordinator(o CoordinatorOptions) *Coordinator {
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	runLevel := []string{"run", "level"}
	c := &Coordinator{
		reg: newRegistry(), now: o.Now, retention: o.Retention, members: o.Members,
		runs: map[string]*runState{}, finished: map[string]uint64{},
		runsDesc:       prometheus.NewDesc("ttftlab_runs", "Runs the coordinator knows, by state: queued, running, or ok/failed for runs ended within the retention.", []string{"state"}, nil),
		finishedDesc:   prometheus.NewDesc("ttftlab_runs_finished_total", "Runs ended since the coordinator started, by status (ok, failed).", []string{"status"}, nil),
		queueDesc:      prometheus.NewDesc("ttftlab_queue_depth", "Runs waiting in the scheduler's queue for a gpunode or agents.", nil, nil),
		membersDesc:    prometheus.NewDesc("ttftlab_members", "Cluster members by role and memberlist state.", []string{"role", "state"}, nil),
		ttftDesc:       prometheus.NewDesc("ttftlab_ttft_seconds", "Time to first token of the measured requests, merged over the agents as their interval reports arrive.", runLevel, nil),
		itlDesc:        prometheus.NewDesc("ttftlab_itl_seconds", "Inter-token latency per token of the measured requests, merged over the agents.", runLevel, nil),
		e2eDesc:        prometheus.NewDesc("ttftlab_e2e_seconds", "End-to-end latency of the measured requests, merged over the agents.", runLevel, nil),
		requestsDesc:   prometheus.NewDesc("ttftlab_requests_total", "Measured requests that ended, by outcome (ok, failed, interrupted).", []string{"run", "level", "outcome"}, nil),
		errorsDesc:     prometheus.NewDesc("ttftlab_request_errors_total", "Failed measured requests by error kind.", []string{"run", "level", "kind"}, nil),
		tokensDesc:     prometheus.NewDesc("ttftlab_output_tokens_total", "Output tokens streamed, warm-up included, as the agents counted them per chunk.", runLevel, nil),
		inFlightDesc:   prometheus.NewDesc("ttftlab_in_flight", "Requests in flight at the agents' latest interval reports, summed over the agents.", runLevel, nil),
		levelValueDesc: prometheus.NewDesc("ttftlab_level_value", "A sweep level's concurrency (closed loop) or rate in requests/s (open loop).", runLevel, nil),
	}
	c.reg.MustRegister(c)
	return c
}

// Registry returns the registry to serve.
func (c *Coordinator) Registry() *prometheus.Registry { return c.reg }

// RunEvent takes one event of a run as the coordinator records it: a
// coordinator.Observer. A queued event puts the run in the queue and its
// lease takes it out; interval reports feed the run's histograms and
// counters, level_start names a level's value, run_end ends the run.
func (c *Coordinator) RunEvent(runID, kind string, payload any) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prune(now)
	r := c.runs[runID]
	if r == nil {
		if kind == results.EventRunEnd {
			return // a run that was never seen, or already dropped
		}
		r = &runState{state: "running", started: now, levels: map[string]*levelState{}}
		c.runs[runID] = r
		c.evict()
	}
	switch kind {
	case results.EventQueued:
		if r.state == "running" || r.state == "queued" {
			r.state = "queued"
		}
	case results.EventLease:
		if r.state == "queued" {
			r.state = "running"
		}
	case results.EventLevelStart:
		if ls, ok := payload.(results.LevelStart); ok {
			if l := r.level(levelLabel(ls.Level), now); l != nil {
				l.value, l.hasValue = ls.Value, true
			}
		}
	case results.EventSweepInterval:
		if si, ok := payload.(results.SweepInterval); ok {
			if l := r.level(levelLabel(si.Level), now); l != nil {
				l.addReport(si.Report)
			}
		}
	case results.EventInterval:
		if rep, ok := payload.(*pb.IntervalReport); ok {
			if l := r.level(BaselineLevel, now); l != nil {
				l.addReport(rep)
			}
		}
	case results.EventRunEnd:
		status := results.StatusFailed
		if end, ok := payload.(results.RunEnd); ok && end.Status == results.StatusOK {
			status = results.StatusOK
		}
		if r.state == "running" || r.state == "queued" {
			c.finished[status]++
		}
		r.state, r.ended = status, now
		for _, l := range r.levels {
			clear(l.inFlight)
		}
	}
}

func levelLabel(i int) string { return strconv.Itoa(i + 1) }

// level returns the named level, creating it, or nil past maxLevels.
func (r *runState) level(name string, now time.Time) *levelState {
	if l := r.levels[name]; l != nil {
		return l
	}
	if len(r.levels) >= maxLevels {
		return nil
	}
	l := &levelState{ttft: newNativeHist(now), itl: newNativeHist(now), e2e: newNativeHist(now),
		requests: map[string]uint64{}, errors: map[string]uint64{}, inFlight: map[string]uint32{}}
	r.levels[name] = l
	return l
}

// addReport adds one agent's interval report. A warm-up report adds only
// its streamed tokens and in-flight count, as the results leave warm-up
// out of every statistic; a report whose histograms fail validation adds
// its counts but not its histograms, as the results builders do.
func (l *levelState) addReport(rep *pb.IntervalReport) {
	if rep == nil {
		return
	}
	l.tokens += rep.GetOutputTokensStreamed()
	if agent := rep.GetAgentId(); len(l.inFlight) < maxAgentsPerRun || l.hasAgent(agent) {
		if rep.GetFinal() {
			delete(l.inFlight, agent)
		} else {
			l.inFlight[agent] = rep.GetInFlight()
		}
	}
	if rep.GetWarmup() {
		return
	}
	l.requests["ok"] += rep.GetRequestsOk()
	l.requests["failed"] += rep.GetRequestsFailed()
	l.requests["interrupted"] += rep.GetRequestsInterrupted()
	for kind, n := range rep.GetErrorsByKind() {
		if !errorKindRe.MatchString(kind) {
			kind = "other"
		}
		if _, known := l.errors[kind]; !known && len(l.errors) >= maxErrorKinds {
			kind = "other"
		}
		l.errors[kind] += n
	}
	set, err := results.ReportHistograms(rep)
	if err != nil {
		return
	}
	l.ttft.addHDR(set[hdr.TTFT])
	l.itl.addHDR(set[hdr.ITL])
	l.e2e.addHDR(set[hdr.E2E])
}

func (l *levelState) hasAgent(a string) bool { _, ok := l.inFlight[a]; return ok }

// prune drops the runs that ended more than the retention ago.
func (c *Coordinator) prune(now time.Time) {
	for id, r := range c.runs {
		if !r.ended.IsZero() && now.Sub(r.ended) > c.retention {
			delete(c.runs, id)
		}
	}
}

// evict keeps at most maxRuns runs, dropping the ones that ended first.
func (c *Coordinator) evict() {
	for len(c.runs) > maxRuns {
		oldest := ""
		for id, r := range c.runs {
			if !r.ended.IsZero() && (oldest == "" || r.ended.Before(c.runs[oldest].ended)) {
				oldest = id
			}
		}
		if oldest == "" {
			return
		}
		delete(c.runs, oldest)
	}
}

// Describe sends the descriptors of every metric Collect sends.
func (c *Coordinator) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.runsDesc, c.finishedDesc, c.queueDesc, c.membersDesc, c.ttftDesc, c.itlDesc,
		c.e2eDesc, c.requestsDesc, c.errorsDesc, c.tokensDesc, c.inFlightDesc, c.levelValueDesc} {
		ch <- d
	}
}

// Collect sends the current values.
func (c *Coordinator) Collect(ch chan<- prometheus.Metric) {
	if c.members != nil {
		type rs struct{ role, state string }
		n := map[rs]int{}
		for _, m := range c.members() {
			n[rs{string(m.Role), m.State}]++
		}
		for k, v := range n {
			ch <- prometheus.MustNewConstMetric(c.membersDesc, prometheus.GaugeValue, float64(v), k.role, k.state)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prune(c.now())
	byState := map[string]int{"queued": 0, "running": 0, results.StatusOK: 0, results.StatusFailed: 0}
	for _, r := range c.runs {
		byState[r.state]++
	}
	ch <- prometheus.MustNewConstMetric(c.queueDesc, prometheus.GaugeValue, float64(byState["queued"]))
	for s, n := range byState {
		ch <- prometheus.MustNewConstMetric(c.runsDesc, prometheus.GaugeValue, float64(n), s)
	}
	for _, s := range []string{results.StatusOK, results.StatusFailed} {
		ch <- prometheus.MustNewConstMetric(c.finishedDesc, prometheus.CounterValue, float64(c.finished[s]), s)
	}
	for id, r := range c.runs {
		for name, l := range r.levels {
			c.collectLevel(ch, id, name, l)
		}
	}
}

func (c *Coordinator) collectLevel(ch chan<- prometheus.Metric, run, level string, l *levelState) {
	for _, h := range []struct {
		d *prometheus.Desc
		h *nativeHist
	}{{c.ttftDesc, l.ttft}, {c.itlDesc, l.itl}, {c.e2eDesc, l.e2e}} {
		if h.h.count == 0 {
			continue // no observation yet: no series rather than a zero one
		}
		if m, err := h.h.metric(h.d, run, level); err == nil {
			ch <- m
		} else {
			ch <- prometheus.NewInvalidMetric(h.d, err)
		}
	}
	for _, o := range []string{"ok", "failed", "interrupted"} {
		ch <- prometheus.MustNewConstMetric(c.requestsDesc, prometheus.CounterValue, float64(l.requests[o]), run, level, o)
	}
	for kind, n := range l.errors {
		ch <- prometheus.MustNewConstMetric(c.errorsDesc, prometheus.CounterValue, float64(n), run, level, kind)
	}
	ch <- prometheus.MustNewConstMetric(c.tokensDesc, prometheus.CounterValue, float64(l.tokens), run, level)
	var inFlight uint64
	for _, n := range l.inFlight {
		inFlight += uint64(n)
	}
	ch <- prometheus.MustNewConstMetric(c.inFlightDesc, prometheus.GaugeValue, float64(inFlight), run, level)
	if l.hasValue {
		ch <- prometheus.MustNewConstMetric(c.levelValueDesc, prometheus.GaugeValue, l.value, run, level)
	}
}

package coordinator

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// SampleObserver is an Observer that also wants the gpunode's host samples
// of each run (the dashboard's GPU gauges). RunSample has RunEvent's rules:
// safe for concurrent use, never blocking.
type SampleObserver interface {
	RunSample(runID string, s *pb.HostSample)
}

// Observers fans events out to several observers (nil ones are left out);
// samples go to those that implement SampleObserver.
func Observers(obs ...Observer) Observer {
	var out multiObserver
	for _, o := range obs {
		if o != nil {
			out = append(out, o)
		}
	}
	return out
}

type multiObserver []Observer

func (m multiObserver) RunEvent(runID, kind string, payload any) {
	for _, o := range m {
		o.RunEvent(runID, kind, payload)
	}
}

func (m multiObserver) RunSample(runID string, s *pb.HostSample) {
	for _, o := range m {
		if so, ok := o.(SampleObserver); ok {
			so.RunSample(runID, s)
		}
	}
}

// Dashboard limits.
const (
	// DashboardTick is how often the live page is updated.
	DashboardTick = time.Second
	// dashboardClients bounds the open event streams; more are refused.
	dashboardClients = 64
	// dashboardBuffer is the updates queued per client; a client that
	// falls this far behind is dropped (the browser reconnects).
	dashboardBuffer = 4
	// dashboardRuns is how many runs the live view keeps, the running ones
	// first; finished runs beyond it are forgotten (their reports stay).
	dashboardRuns = 32
	// maxListedReports bounds the past runs listed.
	maxListedReports = 500
)

// DashboardConfig configures a Dashboard.
type DashboardConfig struct {
	// OutDir is the coordinator's --out: past runs' reports are served
	// from under it, and nothing outside it.
	OutDir string
	// Token, when set, is the bearer token every request must carry: an
	// "Authorization: Bearer" header, or the cookie that opening any page
	// with ?token=… sets (browsers cannot add headers to event streams).
	Token  string
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Dashboard is the coordinator's live web view: the runs in progress,
// updated every DashboardTick by server-sent events (the current level,
// merged TTFT percentiles, throughput, errors, agents and their coverage,
// GPU gauges), and a browser of past runs' report.html under OutDir. It is
// an Observer of the coordinator's runs. Close stops its ticker and ends
// every event stream.
type Dashboard struct {
	cfg  DashboardConfig
	root *os.Root

	mu      sync.Mutex
	runs    map[string]*liveRun
	clients map[*dashClient]struct{}
	closed  bool

	stop chan struct{}
	wg   sync.WaitGroup
}

type dashClient struct {
	ch chan []byte
	// gone is closed when the client is dropped (slow, or Close).
	gone chan struct{}
}

// liveRun is what the dashboard knows of one run.
type liveRun struct {
	id, kind, status, errText string
	started, ended            time.Time
	// level is the current level (0-based; -1 none yet), its value and start.
	level      int
	levelValue float64
	levels     int
	levelStart time.Time
	merger     *results.Merger
	tokens     uint64
	failed     uint64
	ok         uint64
	agents     map[string]*liveAgent
	sample     *pb.HostSample
	sampleAt   time.Time
}

type liveAgent struct {
	Intervals int    `json:"intervals"`
	Final     bool   `json:"final"`
	Lost      string `json:"lost,omitempty"`
}

// NewDashboard returns a dashboard and starts its ticker.
func NewDashboard(cfg DashboardConfig) (*Dashboard, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("dashboard: results directory: %w", err)
	}
	root, err := os.OpenRoot(cfg.OutDir)
	if err != nil {
		return nil, fmt.Errorf("dashboard: open results directory %s: %w", cfg.OutDir, err)
	}
	d := &Dashboard{cfg: cfg, root: root, runs: map[string]*liveRun{}, clients: map[*dashClient]struct{}{}, stop: make(chan struct{})}
	d.wg.Add(1)
	go d.tick()
	return d, nil
}

// Close stops the ticker, ends every event stream and waits for the ticker.
func (d *Dashboard) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	for c := range d.clients {
		close(c.gone)
		delete(d.clients, c)
	}
	d.mu.Unlock()
	close(d.stop)
	d.wg.Wait()
	return d.root.Close()
}

// RunEvent implements Observer.
func (d *Dashboard) RunEvent(runID, kind string, payload any) {
	now := d.cfg.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.runs[runID]
	if r == nil {
		r = &liveRun{id: runID, kind: "run", status: "running", started: now, level: -1, merger: results.NewMerger(), agents: map[string]*liveAgent{}}
		d.runs[runID] = r
		d.evictLocked()
	}
	switch p := payload.(type) {
	case results.RunStart:
		r.kind = "baseline"
	case results.SweepStart:
		r.kind, r.levels = "sweep", len(p.Levels)
	case results.Queued:
		r.status = fmt.Sprintf("queued (position %d)", p.Position)
	case results.Lease:
		r.status = "running"
	case results.LevelStart:
		r.level, r.levelValue, r.levelStart = p.Level, p.Value, now
		r.merger, r.tokens, r.failed, r.ok = results.NewMerger(), 0, 0, 0
		r.agents = map[string]*liveAgent{}
		for _, a := range p.Agents {
			r.agents[a] = &liveAgent{}
		}
	case results.SweepInterval:
		if p.Level == r.level {
			r.addReport(p.Report, p.Checked)
		}
	case *pb.IntervalReport:
		r.addReport(p, nil)
	case results.AgentLost:
		if a := r.agents[p.Agent]; a != nil && p.Level == r.level {
			a.Lost = p.Error
		}
	case results.RunEnd:
		r.status, r.errText, r.ended = p.Status, p.Error, now
	}
}

// addReport merges a report into the level's live merge; checked is its
// histograms as the recorder decoded them (nil: decode them here).
func (r *liveRun) addReport(rep *pb.IntervalReport, checked *results.Checked) {
	if rep == nil {
		return
	}
	a := r.agents[rep.GetAgentId()]
	if a == nil {
		a = &liveAgent{}
		r.agents[rep.GetAgentId()] = a
	}
	a.Intervals++
	a.Final = a.Final || rep.GetFinal()
	if added, _ := r.merger.AddChecked(rep, checked); added == results.Merged || added == results.Refused {
		r.ok += rep.GetRequestsOk()
		r.failed += rep.GetRequestsFailed()
		t := rep.GetOutputTokensStreamed()
		if t == 0 {
			t = rep.GetOutputTokens()
		}
		r.tokens += t
	}
}

// RunSample implements SampleObserver.
func (d *Dashboard) RunSample(runID string, s *pb.HostSample) {
	now := d.cfg.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if r := d.runs[runID]; r != nil {
		r.sample, r.sampleAt = s, now
	}
}

// evictLocked forgets the oldest finished runs beyond dashboardRuns.
func (d *Dashboard) evictLocked() {
	if len(d.runs) <= dashboardRuns {
		return
	}
	var done []*liveRun
	for _, r := range d.runs {
		if !r.ended.IsZero() {
			done = append(done, r)
		}
	}
	sort.Slice(done, func(i, j int) bool { return done[i].ended.Before(done[j].ended) })
	for _, r := range done {
		if len(d.runs) <= dashboardRuns {
			return
		}
		delete(d.runs, r.id)
	}
}

// LiveRun is one run in the dashboard's updates (JSON).
type LiveRun struct {
	RunID  string `json:"run_id"`
	Kind   string `json:"kind"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// Level is 1-based; 0 before the first level (or in a baseline).
	Level      int     `json:"level"`
	Levels     int     `json:"levels"`
	LevelValue float64 `json:"level_value"`
	ElapsedS   float64 `json:"level_elapsed_s"`
	// TTFT percentiles in ms, merged over the agents; nil before any.
	TTFTP50 *float64 `json:"ttft_p50_ms"`
	TTFTP90 *float64 `json:"ttft_p90_ms"`
	TTFTP99 *float64 `json:"ttft_p99_ms"`
	// TokensPerS is output tokens streamed in the level's reports so far
	// over the time since the level started; nil before any.
	TokensPerS *float64               `json:"output_tokens_per_s"`
	Successes  uint64                 `json:"successes"`
	Errors     uint64                 `json:"errors"`
	Agents     map[string]*liveAgent  `json:"agents"`
	GPUs       []LiveGPU              `json:"gpus"`
	EngineCPU  *float64               `json:"engine_cpu_pct"`
	GPUNote    string                 `json:"gpu_note,omitempty"`
	Metrics    map[string]hdr.Summary `json:"-"`
}

// LiveGPU is one GPU's gauges.
type LiveGPU struct {
	Index   int32   `json:"index"`
	MemGiB  float64 `json:"mem_used_gib"`
	TotGiB  float64 `json:"mem_total_gib"`
	UtilPct float64 `json:"util_pct"`
	// PowerW is nil when the GPU reports no power draw.
	PowerW *float64 `json:"power_w"`
}

// Snapshot returns the runs the dashboard shows, running ones first, then
// the most recently finished.
func (d *Dashboard) Snapshot() []LiveRun {
	now := d.cfg.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]LiveRun, 0, len(d.runs))
	for _, r := range d.runs {
		lr := LiveRun{RunID: r.id, Kind: r.kind, Status: r.status, Error: r.errText, Level: r.level + 1, Levels: r.levels,
			LevelValue: r.levelValue, Successes: r.ok, Errors: r.failed, Agents: map[string]*liveAgent{}}
		for k, v := range r.agents {
			c := *v
			lr.Agents[k] = &c
		}
		if !r.levelStart.IsZero() {
			end := now
			if !r.ended.IsZero() {
				end = r.ended
			}
			lr.ElapsedS = end.Sub(r.levelStart).Seconds()
			if lr.ElapsedS > 0 && r.tokens > 0 {
				v := float64(r.tokens) / lr.ElapsedS
				lr.TokensPerS = &v
			}
		}
		if s, ok := r.merger.Summaries()[hdr.TTFT]; ok && s.Count > 0 {
			lr.TTFTP50, lr.TTFTP90, lr.TTFTP99 = &s.P50, &s.P90, &s.P99
		}
		if s := r.sample; s != nil {
			for _, g := range s.GetGpus() {
				lg := LiveGPU{Index: g.GetIndex(), MemGiB: float64(g.GetMemoryUsedBytes()) / (1 << 30),
					TotGiB: float64(g.GetMemoryTotalBytes()) / (1 << 30), UtilPct: float64(g.GetGpuUtilPercent())}
				if mw := g.GetPowerMw(); mw > 0 {
					w := float64(mw) / 1000
					lg.PowerW = &w
				}
				lr.GPUs = append(lr.GPUs, lg)
			}
			lr.GPUNote = s.GetNvmlError()
			if c := s.GetEngineCpuPercent(); c >= 0 {
				lr.EngineCPU = &c
			}
		}
		out = append(out, lr)
	}
	rank := func(s string) int {
		if s == results.StatusOK || s == results.StatusFailed {
			return 1
		}
		return 0
	}
	sort.SliceStable(out, func(i, j int) bool {
		if a, b := rank(out[i].Status), rank(out[j].Status); a != b {
			return a < b
		}
		return out[i].RunID > out[j].RunID
	})
	return out
}

// tick sends a snapshot to every client each DashboardTick; a client whose
// buffer is full is dropped.
func (d *Dashboard) tick() {
	defer d.wg.Done()
	t := time.NewTicker(DashboardTick)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		d.broadcast()
	}
}

func (d *Dashboard) broadcast() {
	d.mu.Lock()
	n := len(d.clients)
	d.mu.Unlock()
	if n == 0 {
		return
	}
	msg, err := json.Marshal(d.Snapshot())
	if err != nil {
		d.cfg.Logger.Error("dashboard: encode update", "err", err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for c := range d.clients {
		select {
		case c.ch <- msg:
		default:
			// Too slow: drop it rather than buffer without bound.
			close(c.gone)
			delete(d.clients, c)
			d.cfg.Logger.Info("dashboard: dropped a slow client")
		}
	}
}

func (d *Dashboard) subscribe() (*dashClient, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("the dashboard is shutting down")
	}
	if len(d.clients) >= dashboardClients {
		return nil, fmt.Errorf("%d dashboard clients are open, the most allowed: close one", dashboardClients)
	}
	c := &dashClient{ch: make(chan []byte, dashboardBuffer), gone: make(chan struct{})}
	d.clients[c] = struct{}{}
	return c, nil
}

func (d *Dashboard) unsubscribe(c *dashClient) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.clients[c]; ok {
		close(c.gone)
		delete(d.clients, c)
	}
}

// Handler returns the dashboard's HTTP handler: / (the live page),
// /events (its server-sent events), /runs/ (past reports) and files under
// /runs/<path> from OutDir.
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.servePage)
	mux.HandleFunc("GET /events", d.serveEvents)
	mux.HandleFunc("GET /runs/{$}", d.serveRunList)
	mux.HandleFunc("GET /runs/{path...}", d.serveRunFile)
	return d.auth(securityHeaders(mux))
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		h.ServeHTTP(w, r)
	})
}

const tokenCookie = "ttftlab_token"

// auth admits a request with the bearer token in its Authorization header
// or cookie; ?token=… sets the cookie and redirects to the same page
// without it. With no token configured (loopback only) it admits all.
func (d *Dashboard) auth(h http.Handler) http.Handler {
	if d.cfg.Token == "" {
		return h
	}
	want := []byte(d.cfg.Token)
	ok := func(got string) bool { return got != "" && subtle.ConstantTimeCompare([]byte(got), want) == 1 }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q := r.URL.Query().Get("token"); q != "" {
			if !ok(q) {
				http.Error(w, "wrong token: open the dashboard with the coordinator's --token-file token as ?token=…", http.StatusUnauthorized)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: q, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			u := *r.URL
			qs := u.Query()
			qs.Del("token")
			u.RawQuery = qs.Encode()
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
			return
		}
		if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") && ok(strings.TrimPrefix(a, "Bearer ")) {
			h.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(tokenCookie); err == nil && ok(c.Value) {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="ttftlab"`)
		http.Error(w, "missing or wrong bearer token: send Authorization: Bearer <token>, or open the page once with ?token=<token> (the coordinator's --token-file)", http.StatusUnauthorized)
	})
}

//go:embed dashboard.html
var dashboardHTML []byte

func (d *Dashboard) servePage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(dashboardHTML)
}

// serveEvents streams a snapshot at once and then every DashboardTick,
// until the client goes, is dropped for being slow, or the dashboard closes.
func (d *Dashboard) serveEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	c, err := d.subscribe()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer d.unsubscribe(c)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	first, err := json.Marshal(d.Snapshot())
	if err != nil {
		return
	}
	write := func(b []byte) bool {
		if _, err := fmt.Fprintf(w, "event: runs\ndata: %s\n\n", b); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	if !write(first) {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.gone:
			return
		case b := <-c.ch:
			if !write(b) {
				return
			}
		}
	}
}

// pastRun is one past run's report under OutDir.
type pastRun struct {
	Path    string // slash path under OutDir of the run directory
	ModTime time.Time
}

// listReports finds report.html files under OutDir, at most three
// directories deep and maxListedReports of them, newest first.
func (d *Dashboard) listReports() []pastRun {
	var out []pastRun
	fsys := d.root.FS()
	fs.WalkDir(fsys, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || len(out) >= maxListedReports {
			return fs.SkipDir
		}
		if e.IsDir() && strings.Count(p, "/") >= 3 {
			return fs.SkipDir
		}
		if !e.IsDir() && e.Name() == results.HTMLReport {
			info, err := e.Info()
			if err == nil {
				out = append(out, pastRun{Path: path.Dir(p), ModTime: info.ModTime()})
			}
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ModTime.After(out[j].ModTime) })
	return out
}

var runListTmpl = template.Must(template.New("runs").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ttftlab: past runs</title><link rel="icon" href="data:,">
<style>body{font-family:system-ui,sans-serif;margin:24px;} td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #ddd;}</style></head>
<body><h1>Past runs</h1><p><a href="/">live runs</a></p>
{{if .}}<table><tr><th>run</th><th>rendered</th></tr>
{{range .}}<tr><td><a href="/runs/{{.Path}}/report.html">{{.Path}}</a></td><td>{{.ModTime.UTC.Format "2006-01-02 15:04:05 UTC"}}</td></tr>
{{end}}</table>{{else}}<p>No report.html under the results directory yet.</p>{{end}}
</body></html>
`))

func (d *Dashboard) serveRunList(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := runListTmpl.Execute(w, d.listReports()); err != nil {
		d.cfg.Logger.Error("dashboard: run list", "err", err)
	}
}

// servedExt are the files of a run directory the browser serves.
var servedExt = map[string]string{
	".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".md": "text/markdown; charset=utf-8",
	".json": "application/json", ".jsonl": "application/x-ndjson", ".csv": "text/csv; charset=utf-8",
}

// serveRunFile serves one file under OutDir through an os.Root, which
// refuses any path that leaves it (.., absolute paths, symbolic links out).
func (d *Dashboard) serveRunFile(w http.ResponseWriter, r *http.Request) {
	p := r.PathValue("path")
	if p == "" || !fs.ValidPath(p) {
		http.Error(w, fmt.Sprintf("bad path %q: name a file under the results directory, as /runs/ lists them", p), http.StatusBadRequest)
		return
	}
	ct, ok := servedExt[strings.ToLower(filepath.Ext(p))]
	if !ok {
		http.Error(w, "not a report file", http.StatusNotFound)
		return
	}
	f, err := d.root.Open(p)
	if err != nil {
		http.Error(w, "no such report file", http.StatusNotFound)
		return
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil || info.IsDir() {
		http.Error(w, "no such report file", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", ct)
	http.ServeContent(w, r, path.Base(p), info.ModTime(), f)
}

// CheckDashboardAddr refuses a dashboard address that is not loopback when
// neither a token nor mutual TLS protects it.
func CheckDashboardAddr(addr string, token bool, mtls bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--http %q is not host:port (for example 127.0.0.1:8080): %w", addr, err)
	}
	if token || mtls {
		return nil
	}
	ip := net.ParseIP(host)
	if host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("--http %s is not a loopback address and the dashboard would have no authentication: pass --token-file (the page then asks for ?token=…) or --tls-dir (mutual TLS), or bind 127.0.0.1", addr)
}

// ServeDashboard serves the dashboard on addr (with tlsConfig's mutual TLS
// when set) until stop is called; stop closes the dashboard and waits for
// the server.
func ServeDashboard(addr string, d *Dashboard, tlsConfig *tls.Config, logger *slog.Logger) (url string, stop func(), err error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--http %s: %w", addr, err)
	}
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
	scheme := "http"
	if tlsConfig != nil {
		srv.TLSConfig = tlsConfig
		scheme = "https"
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		if tlsConfig != nil {
			err = srv.ServeTLS(lis, "", "")
		} else {
			err = srv.Serve(lis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) && logger != nil {
			logger.Error("dashboard server", "err", err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			// Event streams never end on their own: close them first.
			d.Close()
			if srv.Shutdown(sctx) != nil {
				srv.Close()
			}
			<-done
		})
	}
	return scheme + "://" + lis.Addr().String() + "/", stop, nil
}

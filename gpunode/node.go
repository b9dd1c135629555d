// Package gpunode is the GPU node's domain logic: it owns one engine
// process (vllm serve, ttftlab sim or another OpenAI-compatible server),
// starts, stops and restarts it, detects readiness, captures its logs and
// parses its cold-start phases, and samples the GPUs (NVML) and the host
// (/proc).
//
// Only server.go knows about gRPC; only this package imports go-nvml.
package gpunode

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/ttftlab/ttftlab/internal/vllmlog"
)

// Config configures a Node. Start from DefaultConfig.
type Config struct {
	// Profiles are the engines this node may run, by name.
	Profiles map[string]Profile
	// LogDir, when set, receives each engine's full log.
	LogDir string
	// SampleInterval is the sampling period.
	SampleInterval time.Duration
	// ReadyTimeout bounds a start when the request sets none. Real vLLM
	// can compile for many minutes.
	ReadyTimeout time.Duration
	// ReadyPollInterval is how often readiness is probed.
	ReadyPollInterval time.Duration
	// StopGrace is the time between SIGTERM and SIGKILL when a request
	// sets none.
	StopGrace time.Duration
	// LogRingLines is how many recent log lines are kept in memory.
	LogRingLines int
	// LogTailLines is how many lines an error or EngineInfo carries.
	LogTailLines int
	// Launcher builds engine commands; nil means ExecLauncher.
	Launcher Launcher
	// ProcRoot is where /proc is mounted, for host sampling.
	ProcRoot string
	// NVML is the NVML library (an nvml.Interface, such as nvml.New() or a
	// go-nvml mock); nil means nvml.New(). Without cgo it is ignored and
	// GPU sampling is off.
	NVML NVML
	// Env is the base environment of engines; nil means os.Environ().
	Env []string
	// DropCachesPath is where drop_caches writes; normally
	// /proc/sys/vm/drop_caches.
	DropCachesPath string
	// CompileCacheRoot holds the fresh compile-cache directory of a
	// cold-compile start (one at a time; the previous is removed).
	CompileCacheRoot string
	// MetricsInterval is how often the engine's /metrics is scraped.
	MetricsInterval time.Duration
	// SimGPUMemoryGiB returns a simulated GPU's memory, for the gpumem
	// label of a node without NVML (Labels); nil leaves the label out.
	// The caller supplies it because gpunode does not import the simulator.
	SimGPUMemoryGiB func(gpu string) (float64, bool)
}

// DefaultConfig returns the configuration of a node with the built-in
// profiles, for the running ttftlab executable.
func DefaultConfig() Config {
	exe, err := os.Executable()
	if err != nil {
		exe = "ttftlab"
	}
	return Config{
		Profiles:          BuiltinProfiles(exe),
		SampleInterval:    100 * time.Millisecond,
		ReadyTimeout:      15 * time.Minute,
		ReadyPollInterval: 20 * time.Millisecond,
		StopGrace:         10 * time.Second,
		LogRingLines:      2000,
		LogTailLines:      30,
		ProcRoot:          "/proc",
		DropCachesPath:    "/proc/sys/vm/drop_caches",
		CompileCacheRoot:  filepath.Join(os.TempDir(), "ttftlab-gpunode-compile-cache"),
		MetricsInterval:   time.Second,
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Profiles == nil {
		c.Profiles = d.Profiles
	}
	if c.SampleInterval <= 0 {
		c.SampleInterval = d.SampleInterval
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = d.ReadyTimeout
	}
	if c.ReadyPollInterval <= 0 {
		c.ReadyPollInterval = d.ReadyPollInterval
	}
	if c.StopGrace <= 0 {
		c.StopGrace = d.StopGrace
	}
	if c.LogRingLines <= 0 {
		c.LogRingLines = d.LogRingLines
	}
	if c.LogTailLines <= 0 {
		c.LogTailLines = d.LogTailLines
	}
	if c.Launcher == nil {
		c.Launcher = ExecLauncher
	}
	if c.ProcRoot == "" {
		c.ProcRoot = d.ProcRoot
	}
	if c.DropCachesPath == "" {
		c.DropCachesPath = d.DropCachesPath
	}
	if c.CompileCacheRoot == "" {
		c.CompileCacheRoot = d.CompileCacheRoot
	}
	if c.MetricsInterval <= 0 {
		c.MetricsInterval = d.MetricsInterval
	}
	return c
}

// Errors a Node returns; test them with errors.Is.
var (
	ErrUnknownProfile  = errors.New("unknown profile")
	ErrInvalidArgument = errors.New("invalid argument")
	ErrNotImplemented  = errors.New("not implemented yet")
	ErrClosed          = errors.New("gpunode is closed")
)

// ExitError reports an engine that exited before it was ready.
type ExitError struct {
	// ExitStatus is as os.ProcessState writes it: "exit status 1",
	// "signal: killed".
	ExitStatus string
	// Cause is the failure line found in the log, if any.
	Cause *vllmlog.Failure
	// LogTail is the last lines of the engine's output.
	LogTail []string
}

func (e *ExitError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "engine exited before it was ready (%s)", e.ExitStatus)
	if e.Cause != nil {
		fmt.Fprintf(&b, "; cause %s: %s", e.Cause.Kind, clip(strings.TrimSpace(e.Cause.Line), 2*maxErrorLineBytes))
	}
	writeTail(&b, e.LogTail)
	return b.String()
}

// ReadyTimeoutError reports an engine that was not ready in time; the node
// has stopped it.
type ReadyTimeoutError struct {
	Timeout time.Duration
	// Stage is the last readiness stage passed: "spawned", "port_open" or
	// "health_ok".
	Stage   string
	LogTail []string
}

func (e *ReadyTimeoutError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "engine not ready after %s (last stage passed: %s); stopped it — raise the ready timeout if the engine is still compiling", e.Timeout, e.Stage)
	writeTail(&b, e.LogTail)
	return b.String()
}

// maxErrorLineBytes bounds each log line quoted in an error, so that the
// message fits a gRPC status (sent in HTTP/2 trailers, which clients cap
// at 16 KiB by default); EngineInfo and ExitError.LogTail keep the lines whole.
const maxErrorLineBytes = 300

func writeTail(b *strings.Builder, tail []string) {
	if len(tail) == 0 {
		return
	}
	fmt.Fprintf(b, "\nlast %d log lines:", len(tail))
	for _, l := range tail {
		b.WriteString("\n  ")
		b.WriteString(clip(l, maxErrorLineBytes))
	}
}

// clip cuts s to at most n bytes, on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Info is a node's static facts.
type Info struct {
	Hostname      string
	OS            string
	Kernel        string
	NVMLAvailable bool
	// NVMLError says in plain words why NVML is not available.
	NVMLError     string
	DriverVersion string
	GPUs          []GPUInfo
	Profiles      []string
	CPUCount      int
	MemTotalBytes uint64
}

// StartSpec asks for an engine.
type StartSpec struct {
	Profile string
	Knobs   Knobs
	// ReadyTimeout bounds the wait for readiness; 0 means the node's.
	ReadyTimeout time.Duration
	// ColdMode is "" (the same as "warm-restart"), "warm-restart",
	// "cold-disk" or "cold-compile".
	ColdMode string
	// DropCaches additionally drops the whole page cache in cold-disk
	// mode; it needs root.
	DropCaches bool
}

// Cold modes.
const (
	ColdWarmRestart = "warm-restart"
	ColdDisk        = "cold-disk"
	ColdCompile     = "cold-compile"
)

// EngineInfo describes a started engine and how it came up.
type EngineInfo struct {
	Profile         string
	Kind            string
	BaseURL         string
	Model           string
	ServedModelName string
	Version         string
	Argv            []string
	PID             int
	Port            int
	Spawn           time.Time
	Ready           time.Time
	// ReadyDuration is Ready − Spawn, on the monotonic clock.
	ReadyDuration time.Duration
	// Phases are log-derived and supervisor phases, sorted by start.
	Phases    []vllmlog.Phase
	LogTail   []string
	Simulated bool
	// Log is everything the log parser learned.
	Log vllmlog.Result
	// Figures are the startup figures from the log.
	Figures vllmlog.Figures
	// Timeline merges the log's phases with the sampler's evidence and the
	// supervisor's milestones, sorted by start.
	Timeline []vllmlog.Phase
	// ColdMode is the cold mode the start ran in, and Cold what it did.
	ColdMode string
	Cold     ColdReport
	// Reads attributes what the engine read while starting to its window
	// and cause.
	Reads StartReads
}

// StopResult reports how an engine ended.
type StopResult struct {
	WasRunning bool
	ExitStatus string
}

// engine is the node's current engine.
type engine struct {
	proc    *process
	profile Profile
	knobs   Knobs
	port    int
	baseURL string
	ready   bool // guarded by Node.mu
}

// Node owns one engine and the sampler. Its methods are safe for
// concurrent use; StartEngine calls are serialised.
type Node struct {
	cfg   Config
	log   *slog.Logger
	start time.Time
	info  Info
	gpus  *gpus
	smp   *sampler

	startMu sync.Mutex // serialises StartEngine

	mu      sync.Mutex
	eng     *engine
	closed  bool
	coldDir string // the current cold-compile cache directory

	exitMu   sync.Mutex
	exitSubs map[int]chan Exit
	exitNext int

	// starts counts engine spawns, exits the engine's unexpected exits.
	starts, exits atomic.Uint64
}

// New validates cfg, opens NVML (reporting, not failing, when it is
// unavailable) and starts the sampler.
func New(cfg Config, logger *slog.Logger) (*Node, error) {
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	for name, p := range cfg.Profiles {
		if p.Name == "" {
			p.Name = name
			cfg.Profiles[name] = p
		}
		if p.Name != name {
			return nil, fmt.Errorf("profile %q is listed under the name %q; make them match", p.Name, name)
		}
		if err := p.Validate(); err != nil {
			return nil, err
		}
	}
	n := &Node{cfg: cfg, log: logger, start: time.Now()}
	n.gpus = openGPUs(cfg.NVML, logger)
	if !n.gpus.available() {
		logger.Warn("GPU sampling off", "reason", n.gpus.reason)
	}
	n.info = n.staticInfo()
	n.smp = newSampler(logger, cfg.SampleInterval, newHostSampler(cfg.ProcRoot), n.gpus, n.enginePID, n.start)
	n.smp.metrics = newScraper(logger, cfg.MetricsInterval, n.engineBaseURL)
	go n.smp.run()
	return n, nil
}

func (n *Node) staticInfo() Info {
	info := Info{
		OS:            osPrettyName(),
		Kernel:        kernelRelease(),
		NVMLAvailable: n.gpus.available(),
		NVMLError:     n.gpus.reason,
		DriverVersion: n.gpus.driver,
		GPUs:          slices.Clone(n.gpus.info),
		Profiles:      slices.Sorted(maps.Keys(n.cfg.Profiles)),
		CPUCount:      runtime.NumCPU(),
	}
	info.Hostname, _ = os.Hostname()
	if m, err := readMemInfo(n.cfg.ProcRoot); err == nil {
		info.MemTotalBytes = m.total
	}
	return info
}

func osPrettyName() string {
	for _, path := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
				return strings.Trim(v, `"'`)
			}
		}
	}
	return runtime.GOOS
}

func kernelRelease() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return ""
	}
	b := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// Info returns the node's static facts. It does not block.
func (n *Node) Info(ctx context.Context) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	info := n.info
	info.GPUs = slices.Clone(info.GPUs)
	info.Profiles = slices.Clone(info.Profiles)
	return info, nil
}

// enginePID returns the running engine's pid, or 0.
func (n *Node) enginePID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.eng == nil || n.eng.proc.hasExited() {
		return 0
	}
	return n.eng.proc.pid
}

// engineBaseURL returns the running engine's base URL, or "".
func (n *Node) engineBaseURL() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.eng == nil || n.eng.proc.hasExited() {
		return ""
	}
	return n.eng.baseURL
}

// resolve checks spec and returns the profile and resolved knobs.
func (n *Node) resolve(spec StartSpec) (Profile, Knobs, error) {
	prof, ok := n.cfg.Profiles[spec.Profile]
	if !ok {
		return Profile{}, Knobs{}, fmt.Errorf("%w %q; this node knows %s", ErrUnknownProfile, spec.Profile, strings.Join(n.info.Profiles, ", "))
	}
	switch spec.ColdMode {
	case "", ColdWarmRestart, ColdDisk, ColdCompile:
	default:
		return Profile{}, Knobs{}, fmt.Errorf("%w: cold_mode %q is unknown; use %q, %q or %q", ErrInvalidArgument, spec.ColdMode, ColdWarmRestart, ColdDisk, ColdCompile)
	}
	if spec.DropCaches && spec.ColdMode != ColdDisk {
		return Profile{}, Knobs{}, fmt.Errorf("%w: drop_caches is for cold_mode %q only", ErrInvalidArgument, ColdDisk)
	}

	if spec.ReadyTimeout < 0 {
		return Profile{}, Knobs{}, fmt.Errorf("%w: ready timeout %s is negative; use 0 for the node default", ErrInvalidArgument, spec.ReadyTimeout)
	}
	if err := spec.Knobs.ValidateSet(); err != nil {
		return Profile{}, Knobs{}, err
	}
	if err := prof.CheckRequest(spec.Knobs); err != nil {
		return Profile{}, Knobs{}, err
	}
	k := prof.Defaults.Override(spec.Knobs)
	if err := k.Validate(); err != nil {
		return Profile{}, Knobs{}, err
	}
	return prof, k, nil
}

// StartEngine starts the engine spec asks for and blocks until it is ready
// (port open, /health 200, /v1/models lists the served name), has exited
// (*ExitError), or the ready timeout has passed (*ReadyTimeoutError). A
// running engine is stopped first, so the same call is a restart. On
// failure the engine is stopped; nothing is left running.
func (n *Node) StartEngine(ctx context.Context, spec StartSpec) (EngineInfo, error) {
	prof, k, err := n.resolve(spec)
	if err != nil {
		return EngineInfo{}, err
	}
	timeout := spec.ReadyTimeout
	if timeout == 0 {
		timeout = n.cfg.ReadyTimeout
	}

	n.startMu.Lock()
	defer n.startMu.Unlock()
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return EngineInfo{}, ErrClosed
	}
	if _, err := n.stop(n.cfg.StopGrace); err != nil {
		return EngineInfo{}, err
	}

	host := prof.host()
	port := prof.Port
	if port == 0 {
		if port, err = FreePort(dialHost(host)); err != nil {
			return EngineInfo{}, err
		}
	}
	if err := checkPortFree(host, port); err != nil {
		return EngineInfo{}, err
	}
	argv, err := prof.Argv(k, port)
	if err != nil {
		return EngineInfo{}, err
	}
	env := n.engineEnv(prof, k, port)
	cold, coldEnv, err := n.prepareCold(spec, prof, k, env)
	if err != nil {
		return EngineInfo{}, err
	}
	env = append(env, coldEnv...)

	// The weight files' page-cache residency before spawn and after ready
	// tells what the start read of them; samples from just before the
	// spawn to readiness are the evidence of the timeline's sampler phases.
	weights := findWeights(prof.Kind, k.Model, env)
	baseline, _ := n.smp.latest()
	rec := newRecorder(n.smp)
	defer rec.stop()

	p, err := spawn(ctx, n.log, spawnConfig{
		launcher: n.cfg.Launcher,
		argv:     argv,
		env:      env,
		logDir:   n.cfg.LogDir,
		name:     prof.Name,
		ringSize: n.cfg.LogRingLines,
		onExit:   n.publishExit,
	})
	if err != nil {
		return EngineInfo{}, err
	}
	pr := newProber(host, port, k.Served())
	defer pr.close()
	e := &engine{proc: p, profile: prof, knobs: k, port: port, baseURL: pr.baseURL()}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		p.stop(n.cfg.StopGrace)
		return EngineInfo{}, ErrClosed
	}
	n.eng = e
	n.mu.Unlock()
	n.starts.Add(1)
	n.log.Info("engine spawned", "profile", prof.Name, "pid", p.pid, "port", port, "argv", argv, "cold_mode", cold.Mode)

	wctx, cancel := context.WithTimeout(ctx, timeout)
	rt, stage, err := pr.waitReady(wctx, p, n.cfg.ReadyPollInterval)
	cancel()
	if err != nil {
		return EngineInfo{}, n.failStart(ctx, e, stage, timeout, err)
	}
	n.mu.Lock()
	e.ready = true
	n.mu.Unlock()
	samples := rec.stop()
	if len(weights.files) > 0 {
		weights.residentAfter = residentBytes(weights.files)
	}

	res := p.parser.Result()
	phases := withSupervisorPhases(res.Phases, p.spawn, rt)
	info := EngineInfo{
		Profile:         prof.Name,
		Kind:            prof.Kind,
		BaseURL:         pr.baseURL(),
		Model:           k.Model,
		ServedModelName: k.Served(),
		Version:         res.Version,
		Argv:            argv,
		PID:             p.pid,
		Port:            port,
		Spawn:           p.spawn,
		Ready:           rt.ready,
		ReadyDuration:   rt.ready.Sub(p.spawn),
		Phases:          phases,
		LogTail:         p.tailText(n.cfg.LogTailLines),
		Simulated:       prof.Kind == KindSim,
		Log:             res,
		Figures:         res.Figures(),
		ColdMode:        cold.Mode,
		Cold:            cold,
	}
	info.Timeline, info.Reads = buildTimeline(timelineInput{
		phases:    phases,
		spawn:     p.spawn,
		ready:     rt.ready,
		baseline:  baseline,
		samples:   samples,
		cold:      cold,
		nvml:      n.gpus.available(),
		nvmlWhy:   n.gpus.reason,
		log:       res,
		weights:   weights,
		generated: generatedWeights(argv),
	})
	if info.Version == "" {
		info.Version = pr.version(ctx)
	}
	n.log.Info("engine ready", "profile", prof.Name, "pid", p.pid, "ready", info.ReadyDuration)
	return info, nil
}

// failStart stops a start that failed and explains why.
func (n *Node) failStart(ctx context.Context, e *engine, stage string, timeout time.Duration, err error) error {
	n.mu.Lock()
	if n.eng == e {
		n.eng = nil
	}
	n.mu.Unlock()
	p := e.proc
	p.stop(n.cfg.StopGrace)
	tail := p.tailText(n.cfg.LogTailLines)
	switch {
	case errors.Is(err, errExited):
		ee := &ExitError{ExitStatus: p.exitStatus, LogTail: tail}
		if f, ok := p.parser.Result().RootCause(); ok {
			ee.Cause = &f
		}
		n.log.Warn("engine exited before ready", "pid", p.pid, "status", p.exitStatus)
		return ee
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		n.log.Warn("engine not ready in time; stopped it", "pid", p.pid, "timeout", timeout, "stage", stage)
		return &ReadyTimeoutError{Timeout: timeout, Stage: stage, LogTail: tail}
	default:
		return fmt.Errorf("wait for engine readiness: %w", err)
	}
}

// withSupervisorPhases appends port_open, health_ok and ready, each a span
// from the previous milestone.
func withSupervisorPhases(phases []vllmlog.Phase, spawn time.Time, rt readyTimes) []vllmlog.Phase {
	out := slices.Clone(phases)
	portOpen := rt.portOpen.Sub(spawn)
	var prev time.Duration
	for _, ph := range phases {
		if ph.Source == vllmlog.SourceLog && ph.End <= portOpen {
			prev = max(prev, ph.End)
		}
	}
	add := func(name string, start, end time.Duration) {
		out = append(out, vllmlog.Phase{Name: name, Start: start, End: end, Duration: end - start, Source: vllmlog.SourceSupervisor})
	}
	add(vllmlog.PhasePortOpen, prev, portOpen)
	add(vllmlog.PhaseHealthOK, portOpen, rt.healthOK.Sub(spawn))
	add(vllmlog.PhaseReady, rt.healthOK.Sub(spawn), rt.ready.Sub(spawn))
	slices.SortStableFunc(out, func(a, b vllmlog.Phase) int { return cmp.Compare(a.Start, b.Start) })
	return out
}

// engineEnv is the base environment plus the profile's (placeholders
// filled from the resolved knobs), in sorted order; later entries win.
func (n *Node) engineEnv(p Profile, k Knobs, port int) []string {
	env := n.cfg.Env
	if env == nil {
		env = os.Environ()
	}
	return append(slices.Clone(env), p.EnvFor(k, port)...)
}

// dialHost maps a wildcard listen host to loopback for picking a port.
func dialHost(host string) string {
	if host == "0.0.0.0" || host == "::" || host == "" {
		return "127.0.0.1"
	}
	return host
}

// StopEngine stops the engine and blocks until its process group is gone:
// SIGTERM, then SIGKILL after grace (0 means the node's). Stopping a
// stopped engine is not an error. The stop always completes, even when ctx
// ends first: a half-stopped engine would be an orphan.
func (n *Node) StopEngine(ctx context.Context, grace time.Duration) (StopResult, error) {
	if grace < 0 {
		return StopResult{}, fmt.Errorf("%w: grace %s is negative; use 0 for the node default", ErrInvalidArgument, grace)
	}
	if grace == 0 {
		grace = n.cfg.StopGrace
	}
	_ = ctx
	return n.stop(grace)
}

func (n *Node) stop(grace time.Duration) (StopResult, error) {
	n.mu.Lock()
	e := n.eng
	n.eng = nil
	n.mu.Unlock()
	if e == nil {
		return StopResult{}, nil
	}
	wasRunning := !e.proc.hasExited()
	e.proc.stop(grace)
	n.log.Info("engine stopped", "pid", e.proc.pid, "status", e.proc.exitStatus)
	return StopResult{WasRunning: wasRunning, ExitStatus: e.proc.exitStatus}, nil
}

// Subscribe returns a channel that receives every sample from now on, and
// a cancel function that ends the subscription and closes the channel.
// Sends never block the sampler: a slow reader loses samples and sees a
// gap in Seq. The channel is also closed by Close.
func (n *Node) Subscribe() (<-chan Sample, func()) {
	return n.smp.subscribe()
}

// exitBuffer is how many engine exits a subscriber may lag behind; an
// engine exits at most once per start, so a reader never falls that far.
const exitBuffer = 8

// SubscribeExits returns a channel that receives every unexpected engine
// exit from now on (an exit that no StopEngine, restart or Close asked
// for), and a cancel function that ends the subscription and closes the
// channel. Sends never block the supervisor.
func (n *Node) SubscribeExits() (<-chan Exit, func()) {
	ch := make(chan Exit, exitBuffer)
	n.exitMu.Lock()
	if n.exitSubs == nil {
		n.exitSubs = map[int]chan Exit{}
	}
	id := n.exitNext
	n.exitNext++
	n.exitSubs[id] = ch
	n.exitMu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			n.exitMu.Lock()
			delete(n.exitSubs, id)
			n.exitMu.Unlock()
			close(ch)
		})
	}
}

// publishExit hands an unexpected exit to every exit subscriber.
func (n *Node) publishExit(ex Exit) {
	n.exits.Add(1)
	n.exitMu.Lock()
	defer n.exitMu.Unlock()
	for _, ch := range n.exitSubs {
		select {
		case ch <- ex:
		default:
			n.log.Error("engine exit not delivered: subscriber is full", "pid", ex.PID)
		}
	}
}

// SampleInterval returns the sampler's period.
func (n *Node) SampleInterval() time.Duration { return n.cfg.SampleInterval }

// LatestSample returns the most recent sample, if one has been taken.
func (n *Node) LatestSample() (Sample, bool) { return n.smp.latest() }

// Close stops the engine and the sampler, waits for every goroutine, and
// shuts NVML down. Later calls return ErrClosed.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	n.closed = true
	n.mu.Unlock()
	_, _ = n.stop(n.cfg.StopGrace)
	// Join a StartEngine in flight: it sees its engine exit, or the closed
	// flag, and returns.
	n.startMu.Lock()
	defer n.startMu.Unlock()
	n.smp.close()
	n.gpus.close()
	n.mu.Lock()
	dir := n.coldDir
	n.coldDir = ""
	n.mu.Unlock()
	if dir != "" {
		if err := os.RemoveAll(dir); err != nil {
			n.log.Warn("remove compile cache", "dir", dir, "err", err)
		}
	}
	return nil
}

package vllmlog

import (
	"cmp"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Phase names, in the order a vLLM start goes through them. The supervisor
// adds PhasePortOpen, PhaseHealthOK and PhaseReady from its own probes.
const (
	PhaseBootstrap      = "bootstrap"               // spawn → "Starting to load model"
	PhaseLoadWeights    = "load_weights"            // load start → "Loading weights took"
	PhaseLoadModel      = "load_model"              // load start → "Model loading took"
	PhaseCompile        = "compile"                 // model loaded → "torch.compile takes … in total"
	PhaseMemoryKV       = "memory_profile_kv_alloc" // compile (or load) done → KV cache sized
	PhaseGraphCapture   = "graph_capture"           // KV sized → "Graph capturing finished"
	PhaseInitEngine     = "init_engine"             // model loaded → "init engine (…) took"
	PhaseAPIServerStart = "api_server_start"        // init done → "Application startup complete."
	PhasePortOpen       = "port_open"
	PhaseHealthOK       = "health_ok"
	PhaseReady          = "ready"
)

// Sources of a Phase.
const (
	SourceLog        = "log"
	SourceSupervisor = "supervisor"
	// SourceSampler marks a phase inferred from host and GPU samples.
	SourceSampler = "sampler"
)

// Failure kinds, from the lines vLLM prints when a start fails.
const (
	FailCUDAOOM              = "cuda_oom"
	FailKVCacheTooSmall      = "kv_cache_too_small"
	FailNoKVMemory           = "no_kv_memory"
	FailInsufficientFreeMem  = "insufficient_free_memory"
	FailAddressInUse         = "address_in_use"
	FailModelNotFound        = "model_not_found"
	FailEngineCoreInitFailed = "engine_core_init_failed"
)

// Phase is one named span of an engine's start. Start and End are arrival
// offsets since spawn of the lines (or probes) that began and ended it.
type Phase struct {
	Name  string
	Start time.Duration
	End   time.Duration
	// Duration is the duration the source reported; where it reported none
	// it is End - Start, and Reported is false.
	Duration time.Duration
	Reported bool
	// Source is SourceLog or SourceSupervisor.
	Source string
	Detail string
}

// Failure is a line that explains why a start failed.
type Failure struct {
	Kind string
	// At is the arrival offset since spawn.
	At   time.Duration
	Line string
	// Message is the failure's own text: the line's message with the
	// exception class ("torch.OutOfMemoryError: ") taken off.
	Message string
}

// String returns "kind: message", such as "cuda_oom: CUDA out of memory.
// Tried to allocate 2.00 GiB. …", clipped to a readable length.
func (f Failure) String() string {
	return f.Kind + ": " + clip(f.Message, maxFailureMessage)
}

// maxFailureMessage bounds Failure.String's message.
const maxFailureMessage = 300

// Result is what a Parser has learned so far. Optional figures are nil
// until their line has been seen.
type Result struct {
	Version string
	Model   string

	DownloadS       *float64 // "Time spent downloading weights"
	LoadWeightsS    *float64 // "Loading weights took"
	ModelLoadGiB    *float64 // "Model loading took X GiB" (V0: "Loading model weights took X GB")
	ModelLoadS      *float64 // "Model loading took … and Y seconds"
	DynamoTransform *float64 // "Dynamo bytecode transform time"
	// CompileGraphS sums "Compiling a graph for … takes X s"; CompileCacheS
	// sums "Directly load the compiled graph(s) … took X s" (a cache hit).
	CompileGraphS      *float64
	CompileCacheS      *float64
	TorchCompileTotalS *float64 // "torch.compile takes X s in total"
	AvailableKVGiB     *float64
	KVCacheTokens      *int64
	// MaxConcurrency is "Maximum concurrency for N tokens per request: X x",
	// N being MaxConcurrencyTokens.
	MaxConcurrency       *float64
	MaxConcurrencyTokens *int64
	GraphCaptureS        *float64
	GraphCaptureGiB      *float64
	InitEngineS          *float64
	// InitCompileS is the "(compilation: X s)" part of the init engine
	// line (vLLM ~0.20+).
	InitCompileS *float64
	// KVBlocks is V0's "# GPU blocks: N" (also "# cuda blocks"), and
	// BlockSize the block size read from the engine config (default 16);
	// KVCacheTokens is their product when V1's token line is absent.
	KVBlocks  *int64
	BlockSize int64
	// FirstToReadyS is the time from the first timestamped line to the
	// line that says the server is ready to serve, from the log's own
	// timestamps (whole seconds, no year: midnight and new year wrap).
	FirstToReadyS *float64
	// APIServerListening is set by "Starting vLLM API server"/"Starting
	// vLLM server on"; AppStartupComplete by uvicorn's line.
	APIServerListening bool
	AppStartupComplete bool

	// Failures holds the first line of each failure kind, in arrival order.
	Failures []Failure
	// Phases holds the log-derived phases, sorted by start.
	Phases []Phase
	// Lines counts the lines seen.
	Lines int
	// EngineLines counts the lines that are recognisably an engine's: a
	// vLLM or uvicorn header, a vLLM process prefix, or a known failure. A
	// log with none is not an engine log.
	EngineLines int
}

// RootCause returns the most telling failure: the first one that is not
// the generic "Engine core initialization failed" wrapper, else the
// wrapper, else false.
func (r Result) RootCause() (Failure, bool) {
	for _, f := range r.Failures {
		if f.Kind != FailEngineCoreInitFailed {
			return f, true
		}
	}
	if len(r.Failures) > 0 {
		return r.Failures[0], true
	}
	return Failure{}, false
}

// event marks, as arrival offsets since spawn.
type mark int

const (
	mLoadStart mark = iota
	mWeightsDone
	mModelLoaded
	mCompileFirst
	mCompileLast
	mCompileTotal
	mKVFirst
	mKVLast
	mGraphDone
	mInitDone
	mListening
	mAppStartup
	numMarks
)

// Parser is a streaming parser of one engine's log. Feed it lines with
// Line as they arrive; read what it learned with Result at any time. It is
// safe for concurrent use.
type Parser struct {
	spawn time.Time

	mu    sync.Mutex
	res   Result
	marks [numMarks]*time.Duration
	// owners remembers, per figure, the process whose line set it: with
	// tensor parallelism every rank prints the same lines, and sums must
	// not add ranks together.
	owners map[string]string
	stamps stampClock
	// stampListening and stampAppStartup are the log times of the ready
	// lines (or of the last timestamp before them).
	stampListening, stampAppStartup *time.Time
}

// NewParser returns a Parser whose offsets are measured from spawn, the
// time the engine process was started. Use a time.Time with a monotonic
// reading (from time.Now) for both spawn and the line arrival times.
func NewParser(spawn time.Time) *Parser {
	return &Parser{spawn: spawn, owners: map[string]string{}}
}

var (
	reVersion       = regexp.MustCompile(`vLLM (?:API )?server version:? ?(\S+?),?(?:\s|$)`)
	reLogoVersion   = regexp.MustCompile(`[█▄▀].*\bversion (\d[\w.+-]*)\s*$`)
	reLoadStart     = regexp.MustCompile(`Starting to load model (.+?)(?:\.\.\.)?\s*$`)
	reDownload      = regexp.MustCompile(`Time spent downloading weights for .*: ([\d.]+) seconds`)
	reWeights       = regexp.MustCompile(`Loading weights took ([\d.]+) seconds`)
	reModelLoaded   = regexp.MustCompile(`Model loading took (-?[\d.]+) ?(GiB|GB)(?: memory)? and ([\d.]+) seconds`)
	reV0Weights     = regexp.MustCompile(`Loading model weights took (-?[\d.]+) ?GB`)
	reDynamo        = regexp.MustCompile(`Dynamo bytecode transform time: ([\d.]+) s`)
	reCompileGraph  = regexp.MustCompile(`Compiling a graph for .* takes ([\d.]+) s`)
	reCompileCache  = regexp.MustCompile(`Directly load the compiled graph\(s\) for .* took ([\d.]+) s`)
	reCompileTotal  = regexp.MustCompile(`torch\.compile (?:takes|took|and initial profiling run took) ([\d.]+) s in total`)
	reAvailableKV   = regexp.MustCompile(`Available KV cache memory: (-?[\d.]+) GiB`)
	reKVTokens      = regexp.MustCompile(`GPU KV cache size: ([\d,]+) tokens`)
	reConcurrency   = regexp.MustCompile(`Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x`)
	reGraphCapture  = regexp.MustCompile(`Graph capturing finished in ([\d.]+) secs?(?:, took (-?[\d.]+) GiB)?`)
	reInitEngine    = regexp.MustCompile(`init engine \(profile, create kv cache, warmup model\) took ([\d.]+) (?:seconds|s)(?: \(compilation: ([\d.]+) s\))?`)
	reV0CacheBlocks = regexp.MustCompile(`# (?:GPU|cuda|CUDA|npu|xpu|XPU) blocks: (\d+)(?:, # CPU blocks: \d+)?`)
	reBlockSize     = regexp.MustCompile(`\bblock_size[=':\s]+(\d+)`)
	reExceptionHead = regexp.MustCompile(`^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit)): `)
)

var failurePatterns = []struct {
	kind   string
	substr string
}{
	{FailCUDAOOM, "CUDA out of memory"},
	{FailCUDAOOM, "OutOfMemoryError"},
	{FailCUDAOOM, "CUDA driver error: out of memory"},
	// "models's" until ~0.12, then "model's".
	{FailKVCacheTooSmall, "To serve at least one request with the model"},
	{FailKVCacheTooSmall, "larger than the maximum number of tokens that can be stored in KV cache"},
	{FailNoKVMemory, "No available memory for the cache blocks"},
	{FailInsufficientFreeMem, "is less than desired GPU memory utilization"},
	{FailAddressInUse, "Address already in use"},
	{FailAddressInUse, "address already in use"},
	{FailModelNotFound, "is not a local folder and is not a valid model identifier"},
	{FailModelNotFound, "Repository Not Found"},
	{FailModelNotFound, "RepositoryNotFoundError"},
	{FailModelNotFound, "GatedRepoError"},
	{FailEngineCoreInitFailed, "Engine core initialization failed"},
}

// Line feeds one line that arrived at time at. A line holding several
// tqdm updates separated by '\r' is split and each part parsed.
func (p *Parser) Line(at time.Time, line string) {
	off := at.Sub(p.spawn)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.res.Lines++
	if strings.IndexByte(line, '\r') < 0 {
		p.parse(off, line)
		return
	}
	for part := range strings.SplitSeq(line, "\r") {
		if strings.TrimSpace(part) != "" {
			p.parse(off, part)
		}
	}
}

func (p *Parser) set(m mark, off time.Duration) {
	if p.marks[m] == nil {
		p.marks[m] = new(off)
	}
}

func (p *Parser) setLast(m mark, off time.Duration) { p.marks[m] = new(off) }

func float(s string) float64 {
	f, _ := strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64)
	return f
}

func integer(s string) int64 {
	n, _ := strconv.ParseInt(strings.ReplaceAll(s, ",", ""), 10, 64)
	return n
}

func addTo(dst **float64, v float64) {
	if *dst == nil {
		*dst = new(v)
		return
	}
	**dst += v
}

// proc names the process a line came from, for per-process sums.
func proc(l Line) string {
	if l.Process == "" {
		return "main"
	}
	return l.Process + "/" + strconv.Itoa(l.PID)
}

// mine reports whether the figure key belongs to l's process, claiming it
// for that process when no process has it yet. Every rank of a
// tensor-parallel engine prints the same lines; the first rank to print a
// figure owns it.
func (p *Parser) mine(key string, l Line) bool {
	owner, ok := p.owners[key]
	if !ok {
		p.owners[key] = proc(l)
		return true
	}
	return owner == proc(l)
}

// first sets *dst to v unless it is already set.
func first[T any](dst **T, v T) bool {
	if *dst != nil {
		return false
	}
	*dst = new(v)
	return true
}

// failureMessage is a failure line's own text, without the exception
// class that Python puts in front.
func failureMessage(msg string) string {
	msg = strings.TrimSpace(msg)
	if loc := reExceptionHead.FindStringIndex(msg); loc != nil {
		msg = msg[loc[1]:]
	}
	return msg
}

func (p *Parser) parse(off time.Duration, raw string) {
	l := ParseLine(raw)
	msg := l.Message
	r := &p.res

	if l.Time != "" {
		p.stamps.observe(l.Time)
	}
	engine := l.Level != "" || l.Process != ""

	for _, fp := range failurePatterns {
		if strings.Contains(msg, fp.substr) {
			engine = true
			if !slices.ContainsFunc(r.Failures, func(f Failure) bool { return f.Kind == fp.kind }) {
				r.Failures = append(r.Failures, Failure{Kind: fp.kind, At: off, Line: l.Raw, Message: failureMessage(msg)})
			}
			break
		}
	}

	if engine {
		r.EngineLines++
	}
	switch {
	case strings.Contains(msg, "Application startup complete."):
		r.AppStartupComplete = true
		p.set(mAppStartup, off)
		if p.stampAppStartup == nil && p.stamps.ok {
			p.stampAppStartup = new(p.stamps.last)
		}
	case strings.Contains(msg, "Starting vLLM API server") || strings.Contains(msg, "Starting vLLM server on"):
		r.APIServerListening = true
		p.set(mListening, off)
		if p.stampListening == nil && p.stamps.ok {
			p.stampListening = new(p.stamps.last)
		}
	case strings.Contains(msg, "server version"):
		if m := reVersion.FindStringSubmatch(msg); m != nil && r.Version == "" {
			r.Version = m[1]
		}
	case strings.Contains(msg, "version ") && l.File == "utils.py":
		if m := reLogoVersion.FindStringSubmatch(msg); m != nil && r.Version == "" {
			r.Version = m[1]
		}
	case strings.Contains(msg, "Starting to load model"):
		if m := reLoadStart.FindStringSubmatch(msg); m != nil && r.Model == "" {
			r.Model = m[1]
		}
		p.set(mLoadStart, off)
	case strings.Contains(msg, "Time spent downloading weights"):
		if m := reDownload.FindStringSubmatch(msg); m != nil && p.mine("download", l) {
			addTo(&r.DownloadS, float(m[1]))
		}
	case strings.Contains(msg, "Loading weights took"):
		if m := reWeights.FindStringSubmatch(msg); m != nil && first(&r.LoadWeightsS, float(m[1])) {
			p.set(mWeightsDone, off)
		}
	case strings.Contains(msg, "Model loading took"):
		if m := reModelLoaded.FindStringSubmatch(msg); m != nil && first(&r.ModelLoadGiB, float(m[1])) {
			r.ModelLoadS = new(float(m[3]))
			p.set(mModelLoaded, off)
		}
	case strings.Contains(msg, "Loading model weights took"):
		if m := reV0Weights.FindStringSubmatch(msg); m != nil && first(&r.ModelLoadGiB, float(m[1])) {
			p.set(mModelLoaded, off)
		}
	case strings.Contains(msg, "Dynamo bytecode transform time"):
		if m := reDynamo.FindStringSubmatch(msg); m != nil && p.mine("compile", l) {
			addTo(&r.DynamoTransform, float(m[1]))
			p.set(mCompileFirst, off)
			p.setLast(mCompileLast, off)
		}
	case strings.Contains(msg, "Compiling a graph for"):
		if m := reCompileGraph.FindStringSubmatch(msg); m != nil && p.mine("compile", l) {
			addTo(&r.CompileGraphS, float(m[1]))
			p.set(mCompileFirst, off)
			p.setLast(mCompileLast, off)
		}
	case strings.Contains(msg, "Directly load the compiled graph"):
		if m := reCompileCache.FindStringSubmatch(msg); m != nil && p.mine("compile", l) {
			addTo(&r.CompileCacheS, float(m[1]))
			p.set(mCompileFirst, off)
			p.setLast(mCompileLast, off)
		}
	case strings.Contains(msg, "torch.compile"):
		if m := reCompileTotal.FindStringSubmatch(msg); m != nil && first(&r.TorchCompileTotalS, float(m[1])) {
			p.set(mCompileFirst, off)
			p.setLast(mCompileLast, off)
			p.set(mCompileTotal, off)
		}
	case strings.Contains(msg, "Available KV cache memory"):
		if m := reAvailableKV.FindStringSubmatch(msg); m != nil && first(&r.AvailableKVGiB, float(m[1])) {
			p.set(mKVFirst, off)
			p.setLast(mKVLast, off)
		}
	case strings.Contains(msg, "GPU KV cache size"):
		if m := reKVTokens.FindStringSubmatch(msg); m != nil && first(&r.KVCacheTokens, integer(m[1])) {
			p.set(mKVFirst, off)
			p.setLast(mKVLast, off)
		}
	case strings.Contains(msg, "Maximum concurrency for"):
		if m := reConcurrency.FindStringSubmatch(msg); m != nil && first(&r.MaxConcurrency, float(m[2])) {
			r.MaxConcurrencyTokens = new(integer(m[1]))
			p.set(mKVFirst, off)
			p.setLast(mKVLast, off)
		}
	case strings.Contains(msg, " blocks: "):
		if m := reV0CacheBlocks.FindStringSubmatch(msg); m != nil && first(&r.KVBlocks, integer(m[1])) {
			p.set(mKVFirst, off)
			p.setLast(mKVLast, off)
		}
	case strings.Contains(msg, "Graph capturing finished"):
		if m := reGraphCapture.FindStringSubmatch(msg); m != nil && first(&r.GraphCaptureS, float(m[1])) {
			if m[2] != "" {
				r.GraphCaptureGiB = new(float(m[2]))
			}
			p.set(mGraphDone, off)
		}
	case strings.Contains(msg, "init engine (profile, create kv cache, warmup model)"):
		if m := reInitEngine.FindStringSubmatch(msg); m != nil && first(&r.InitEngineS, float(m[1])) {
			if m[2] != "" {
				r.InitCompileS = new(float(m[2]))
			}
			p.set(mInitDone, off)
		}
	}
	// The engine config (V0 "Initializing an LLM engine … block_size=16",
	// "args: Namespace(… block_size=16 …)") names the block size.
	if r.BlockSize == 0 && strings.Contains(msg, "block_size") {
		if m := reBlockSize.FindStringSubmatch(msg); m != nil {
			r.BlockSize = integer(m[1])
		}
	}
}

// maxSeconds bounds a duration read from a log; a longer one (or a
// non-finite one) is not a real startup phase and is ignored.
const maxSeconds = 30 * 24 * 3600

func seconds(f *float64) (time.Duration, bool) {
	if f == nil || !(*f >= 0 && *f <= maxSeconds) {
		return 0, false
	}
	return time.Duration(*f * float64(time.Second)), true
}

// dropNonFinite clears figures that overflowed to ±Inf (a number of more
// than 308 digits in the log): the log did not say anything usable, and
// JSON cannot carry them.
func dropNonFinite(fs ...**float64) {
	for _, f := range fs {
		if *f != nil && (math.IsInf(**f, 0) || math.IsNaN(**f)) {
			*f = nil
		}
	}
}

// Result returns a copy of what the parser has learned so far, with the
// phases composed from the lines seen.
func (p *Parser) Result() Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.res
	r.Failures = slices.Clone(r.Failures)
	r.Phases = p.phases()
	dropNonFinite(&r.DownloadS, &r.LoadWeightsS, &r.ModelLoadGiB, &r.ModelLoadS, &r.DynamoTransform, &r.CompileGraphS, &r.CompileCacheS,
		&r.TorchCompileTotalS, &r.AvailableKVGiB, &r.MaxConcurrency, &r.GraphCaptureS, &r.GraphCaptureGiB, &r.InitEngineS, &r.InitCompileS)
	if r.BlockSize == 0 {
		r.BlockSize = defaultBlockSize
	}
	if r.KVCacheTokens == nil && r.KVBlocks != nil {
		r.KVCacheTokens = new(*r.KVBlocks * r.BlockSize)
	}
	ready := p.stampAppStartup
	if ready == nil {
		ready = p.stampListening
	}
	if ready != nil && p.stamps.ok {
		r.FirstToReadyS = new(ready.Sub(p.stamps.first).Seconds())
	}
	return r
}

// defaultBlockSize is vLLM's KV block size on CUDA when the log does not
// name one.
const defaultBlockSize = 16

func (p *Parser) phases() []Phase {
	var out []Phase
	add := func(name string, start, end *time.Duration, reported *float64, detail string) {
		if start == nil || end == nil || *end < *start {
			return
		}
		ph := Phase{Name: name, Start: *start, End: *end, Source: SourceLog, Detail: detail}
		if d, ok := seconds(reported); ok {
			ph.Duration, ph.Reported = d, true
		} else {
			ph.Duration = *end - *start
		}
		out = append(out, ph)
	}
	m := p.marks
	r := p.res
	zero := new(time.Duration(0))

	add(PhaseBootstrap, zero, m[mLoadStart], nil, "")
	add(PhaseLoadWeights, m[mLoadStart], m[mWeightsDone], r.LoadWeightsS, "")
	loadDetail := ""
	if r.ModelLoadGiB != nil {
		loadDetail = strconv.FormatFloat(*r.ModelLoadGiB, 'f', -1, 64) + " GiB"
	}
	add(PhaseLoadModel, m[mLoadStart], m[mModelLoaded], r.ModelLoadS, loadDetail)

	compileStart := m[mModelLoaded]
	if compileStart == nil {
		compileStart = m[mCompileFirst]
	}
	compileEnd := m[mCompileTotal]
	if compileEnd == nil {
		compileEnd = m[mCompileLast]
	}
	compileDetail := ""
	if r.CompileCacheS != nil && r.CompileGraphS == nil {
		compileDetail = "compile cache hit"
	}
	add(PhaseCompile, compileStart, compileEnd, r.TorchCompileTotalS, compileDetail)

	kvStart := compileEnd
	if kvStart == nil {
		kvStart = m[mModelLoaded]
	}
	kvDetail := ""
	if r.KVCacheTokens != nil {
		kvDetail = strconv.FormatInt(*r.KVCacheTokens, 10) + " tokens"
	}
	add(PhaseMemoryKV, kvStart, m[mKVLast], nil, kvDetail)
	graphDetail := ""
	if r.GraphCaptureGiB != nil {
		graphDetail = strconv.FormatFloat(*r.GraphCaptureGiB, 'f', -1, 64) + " GiB"
	}
	add(PhaseGraphCapture, m[mKVLast], m[mGraphDone], r.GraphCaptureS, graphDetail)
	add(PhaseInitEngine, m[mModelLoaded], m[mInitDone], r.InitEngineS, "")

	apiStart := m[mInitDone]
	if apiStart == nil {
		apiStart = m[mListening]
	}
	add(PhaseAPIServerStart, apiStart, m[mAppStartup], nil, "")

	slices.SortStableFunc(out, func(a, b Phase) int { return cmp.Compare(a.Start, b.Start) })
	return out
}

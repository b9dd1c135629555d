package results

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// Results is what results.json holds. It is built from events.jsonl alone,
// so it can be rebuilt at any time.
type Results struct {
	RunID      string      `json:"run_id"`
	Status     string      `json:"status"`
	Error      string      `json:"error,omitempty"`
	Simulated  bool        `json:"simulated"`
	StartedAt  time.Time   `json:"started_at"`
	FinishedAt time.Time   `json:"finished_at"`
	Spec       SpecFacts   `json:"spec"`
	Node       NodeFacts   `json:"node"`
	Engine     EngineFacts `json:"engine"`
	Runs       []Run       `json:"runs"`
	// Warm is null when no warm run succeeded.
	Warm   *WarmStats `json:"warm"`
	Sanity Sanity     `json:"sanity"`
	// Histograms are the agents' interval histograms merged, per metric, in
	// milliseconds.
	Histograms   map[string]hdr.Summary   `json:"histograms_ms"`
	Agents       map[string]AgentCoverage `json:"agents"`
	Observations []string                 `json:"observations"`
	Warnings     []string                 `json:"warnings,omitempty"`
	// Rounds are the restarts of DESIGN step 7, one per round; with more
	// than one, ColdSpread summarises them.
	Rounds     []RoundResult `json:"rounds"`
	ColdSpread *ColdSpread   `json:"cold_spread,omitempty"`
	// Decomposition splits restart-to-first-token into its parts.
	Decomposition []DecompRow `json:"decomposition"`
}

// SpecFacts is the run's configuration as requested.
type SpecFacts struct {
	Profile   string          `json:"profile"`
	Prompt    string          `json:"prompt"`
	MaxTokens int             `json:"max_tokens"`
	WarmRuns  int             `json:"warm_runs"`
	API       string          `json:"api"`
	ColdMode  string          `json:"cold_mode"`
	Knobs     json.RawMessage `json:"knobs,omitempty"`
}

// NodeFacts describes the gpunode's host.
type NodeFacts struct {
	Hostname      string   `json:"hostname"`
	OS            string   `json:"os"`
	Kernel        string   `json:"kernel"`
	NVMLAvailable bool     `json:"nvml_available"`
	NVMLError     string   `json:"nvml_error,omitempty"`
	Driver        string   `json:"driver,omitempty"`
	GPUs          []string `json:"gpus"`
	CPUs          int      `json:"cpus"`
}

// EngineFacts describes the engine and its start.
type EngineFacts struct {
	Kind            string   `json:"kind"`
	Model           string   `json:"model"`
	ServedModelName string   `json:"served_model_name"`
	Version         string   `json:"version"`
	BaseURL         string   `json:"base_url"`
	Argv            []string `json:"argv"`
	ReadyS          float64  `json:"ready_s"`
	Phases          []Phase  `json:"phases"`
	// Timeline merges log phases with sampler and supervisor evidence.
	Timeline  []Phase        `json:"timeline"`
	Figures   map[string]any `json:"figures,omitempty"`
	ColdMode  string         `json:"cold_mode,omitempty"`
	Simulated bool           `json:"simulated"`
	// StartupScale is the sim's test-only --startup-scale when it is not 1:
	// the phase durations are then not realistic.
	StartupScale float64 `json:"startup_scale,omitempty"`
	// Reads attributes what the engine read while starting to its window
	// and cause; nil from a gpunode that sent none.
	Reads *StartReads `json:"start_reads,omitempty"`
}

// Phase is one cold-start phase.
type Phase struct {
	Name      string  `json:"name"`
	StartS    float64 `json:"start_s"`
	EndS      float64 `json:"end_s"`
	DurationS float64 `json:"duration_s"`
	Source    string  `json:"source"`
	Detail    string  `json:"detail,omitempty"`
}

// Run is one labelled request.
type Run struct {
	Label        string  `json:"label"`
	Agent        string  `json:"agent"`
	TTFTS        float64 `json:"ttft_s"`
	E2ES         float64 `json:"e2e_s"`
	FirstByteS   float64 `json:"first_byte_s"`
	FirstChunkS  float64 `json:"first_chunk_s"`
	OutputTokens int     `json:"output_tokens"`
	PromptTokens int     `json:"prompt_tokens"`
	SendUnixNano int64   `json:"send_unix_nano"`
	Error        string  `json:"error,omitempty"`
	Preview      string  `json:"output_preview,omitempty"`
}

// WarmStats summarise the warm runs' TTFT.
type WarmStats struct {
	N       int     `json:"n"`
	MinS    float64 `json:"min_ttft_s"`
	MedianS float64 `json:"median_ttft_s"`
	MaxS    float64 `json:"max_ttft_s"`
	MeanS   float64 `json:"mean_ttft_s"`
	// StddevS is the sample standard deviation; nil with one run.
	StddevS *float64 `json:"stddev_ttft_s"`
	// BandPct is half the min–max spread as a percentage of the median: the
	// warm band is median ± BandPct; nil when the median is not positive.
	BandPct *float64 `json:"band_pct"`
	// DriftS is the least-squares slope of TTFT over run index, in seconds
	// per run; nil with one run.
	DriftS   *float64 `json:"drift_s_per_run"`
	Outliers []string `json:"outliers"`
	// Insufficient marks a warm set with fewer successes than a p90
	// (MinSuccessesP90) or p99 (MinSuccessesP99) needs; InsufficientFor
	// names those percentiles (docs/metrics.md, "Enough samples").
	Insufficient        bool     `json:"insufficient"`
	InsufficientReasons []string `json:"insufficient_reasons,omitempty"`
	InsufficientFor     []string `json:"insufficient_percentiles,omitempty"`
}

// Sanity holds the host and GPU sanity metrics. A nil value was not
// measured; the matching note says why.
type Sanity struct {
	GPUMemBeforeMiB    *float64 `json:"gpu_mem_before_mib"`
	GPUMemAfterColdMiB *float64 `json:"gpu_mem_after_cold_mib"`
	GPUMemTotalMiB     *float64 `json:"gpu_mem_total_mib"`
	GPUUtilWarmPct     *float64 `json:"gpu_util_warm_pct"`
	GPUUtilWarmMaxPct  *float64 `json:"gpu_util_warm_max_pct"`
	CPUColdPct         *float64 `json:"engine_cpu_cold_pct"`
	CPUWarmPct         *float64 `json:"engine_cpu_warm_pct"`
	GPUNote            string   `json:"gpu_note,omitempty"`
	CPUNote            string   `json:"cpu_note,omitempty"`
	// EngineWaitingMax is the most requests the engine reported waiting
	// (vllm:num_requests_waiting) during cold_1; nil when not scraped.
	EngineWaitingMax *float64 `json:"engine_waiting_max_cold"`
	Samples          int      `json:"samples"`
}

// AgentCoverage says what each agent delivered.
type AgentCoverage struct {
	Intervals int   `json:"intervals"`
	Requests  int64 `json:"requests_ok"`
	Failed    int64 `json:"requests_failed"`
	Final     int   `json:"final_reports"`
}

type timedSample struct {
	t int64
	s *pb.HostSample
}

// timed times a sample by the gpunode's clock, or by the coordinator's
// (the event's) when the sample has none.
func timed(ev Event, s *pb.HostSample) timedSample {
	t := s.GetUnixNano()
	if t == 0 {
		t = ev.T
	}
	return timedSample{t: t, s: s}
}

// decodeAll decodes every event's payload; events of kinds this version
// does not know are left out (nil).
func decodeAll(events []Event) ([]any, error) {
	out := make([]any, len(events))
	for i, ev := range events {
		v, err := Decode(ev)
		if errors.Is(err, ErrUnknownKind) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i+1, err)
		}
		out[i] = v
	}
	return out, nil
}

// nodeFacts turns a gpunode's info into the report's facts.
func nodeFacts(info *pb.InfoResponse) NodeFacts {
	n := NodeFacts{Hostname: info.GetHostname(), OS: info.GetOs(), Kernel: info.GetKernel(),
		NVMLAvailable: info.GetNvmlAvailable(), NVMLError: info.GetNvmlError(), Driver: info.GetDriverVersion(), CPUs: int(info.GetCpuCount())}
	for _, g := range info.GetGpus() {
		n.GPUs = append(n.GPUs, fmt.Sprintf("%d: %s (%.1f GiB)", g.GetIndex(), g.GetName(), float64(g.GetMemoryTotalBytes())/(1<<30)))
	}
	return n
}

// engineFacts turns an engine_ready payload into the report's facts.
func engineFacts(e *pb.EngineInfo) EngineFacts {
	f := EngineFacts{Kind: e.GetKind(), Model: e.GetModel(), ServedModelName: e.GetServedModelName(), Version: e.GetVersion(),
		BaseURL: e.GetBaseUrl(), Argv: e.GetArgv(), ReadyS: e.GetReadyS(), Simulated: e.GetSimulated()}
	f.Phases = phases(e.GetPhases())
	f.Timeline = phases(e.GetTimeline())
	f.ColdMode = e.GetColdMode()
	f.Reads = startReads(e.GetStartReads())
	if fig := e.GetFigures(); fig != nil {
		var m map[string]any
		if b, err := pjson.Marshal(fig); err == nil && json.Unmarshal(b, &m) == nil && len(m) > 0 {
			f.Figures = m
		}
	}
	f.StartupScale = startupScale(e.GetArgv())
	return f
}

// Build turns a run's events into Results. It asserts that the merged
// histogram counts equal the sum of the agents' counts.
func Build(events []Event) (*Results, error) {
	payloads, err := decodeAll(events)
	if err != nil {
		return nil, err
	}
	res := &Results{Status: "incomplete", Histograms: map[string]hdr.Summary{}, Agents: map[string]AgentCoverage{}}
	marks := map[string]int64{}
	var samples []timedSample
	merger := NewMerger()
	round, roundsSeen := 0, 0
	readyByRound := map[int]float64{}
	urlByRound := map[int][2]string{}
	var warns warnings
	for i, ev := range events {
		switch p := payloads[i].(type) {
		case RunStart:
			res.StartedAt = time.Unix(0, ev.T).UTC()
			res.RunID = p.RunID
			res.Spec = SpecFacts{Profile: p.Profile, Prompt: p.Prompt, MaxTokens: p.MaxTokens, WarmRuns: p.WarmRuns,
				API: p.API, ColdMode: p.ColdMode, Knobs: p.Knobs}
		case *pb.InfoResponse:
			res.Node = nodeFacts(p)
		case *pb.HostSample:
			samples = append(samples, timed(ev, p))
		case Mark:
			marks[p.Name] = ev.T
		case Round:
			round = p.Round
			roundsSeen = max(roundsSeen, p.Round)
		case *pb.EngineInfo:
			readyByRound[max(round, 1)] = p.GetReadyS()
			urlByRound[max(round, 1)] = [2]string{p.GetBaseUrl(), p.GetServedModelName()}
			if round > 1 {
				// The engine facts and phases are round 1's; later rounds
				// contribute their spawn → ready time.
				continue
			}
			res.Engine = engineFacts(p)
			res.Simulated = p.GetSimulated()
		case *pb.IntervalReport:
			switch added, err := merger.Add(p); added {
			case Duplicate:
				warns.addDerived(fmt.Sprintf("agent %s report %d recorded twice; counted once", p.GetAgentId(), p.GetSeq()))
				continue
			case Warmup:
				// Warm-up intervals are left out of every statistic.
				continue
			case Refused:
				// A bad report's histograms are left out; the run goes on.
				warns.addDerived(BadHistogramsWarning(err))
			}
			for _, rr := range p.GetRequests() {
				res.Runs = append(res.Runs, Run{Label: rr.GetLabel(), Agent: p.GetAgentId(), TTFTS: rr.GetTtftS(), E2ES: rr.GetE2ES(),
					FirstByteS: rr.GetFirstByteS(), FirstChunkS: rr.GetFirstChunkS(), OutputTokens: int(rr.GetOutputTokens()),
					PromptTokens: int(rr.GetPromptTokens()), SendUnixNano: rr.GetSendUnixNano(), Error: rr.GetError(), Preview: rr.GetOutputPreview()})
			}
		case Warning:
			warns.addRecorded(p.Message)
		case RunEnd:
			res.FinishedAt = time.Unix(0, ev.T).UTC()
			res.Status, res.Error = p.Status, p.Error
		}
	}
	res.Warnings = warns.list
	// The merge must be lossless: merged count == Σ agents' counts.
	if err := merger.Check(); err != nil {
		return nil, err
	}
	for a, c := range merger.Agents() {
		res.Agents[a] = AgentCoverage{Intervals: c.Intervals, Requests: int64(c.OK), Failed: int64(c.Failed), Final: c.FinalReports}
	}
	res.Histograms = merger.Summaries()
	res.Warm = warmStats(res.Runs)
	res.Sanity = sanity(samples, marks, res.Node)
	res.Rounds, res.ColdSpread = rounds(res.Runs, readyByRound, urlByRound, roundsSeen)
	res.Decomposition = Decompose(res)
	res.Observations = observations(res)
	return res, nil
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func warmStats(runs []Run) *WarmStats {
	var xs []float64
	var labels []string
	for _, r := range runs {
		if strings.HasPrefix(r.Label, "warm_") && r.Error == "" {
			xs = append(xs, r.TTFTS)
			labels = append(labels, r.Label)
		}
	}
	if len(xs) == 0 {
		return nil
	}
	w := &WarmStats{N: len(xs), MinS: xs[0], MaxS: xs[0], Outliers: []string{}}
	v := judgeSamples(uint64(len(xs)), nil, nil)
	w.Insufficient, w.InsufficientReasons, w.InsufficientFor = v.insufficient(), v.Reasons, v.Marked
	var sum float64
	for _, x := range xs {
		w.MinS = math.Min(w.MinS, x)
		w.MaxS = math.Max(w.MaxS, x)
		sum += x
	}
	w.MeanS = sum / float64(len(xs))
	w.MedianS = median(xs)
	var ss float64
	for _, x := range xs {
		ss += (x - w.MeanS) * (x - w.MeanS)
	}
	if len(xs) > 1 {
		w.StddevS = ptr(math.Sqrt(ss / float64(len(xs)-1)))
	}
	if w.MedianS > 0 {
		w.BandPct = ptr((w.MaxS - w.MinS) / 2 / w.MedianS * 100)
	}
	// Drift: least-squares slope over run index.
	if n := float64(len(xs)); n > 1 {
		var sx, sy, sxy, sxx float64
		for i, y := range xs {
			x := float64(i)
			sx, sy, sxy, sxx = sx+x, sy+y, sxy+x*y, sxx+x*x
		}
		w.DriftS = ptr((n*sxy - sx*sy) / (n*sxx - sx*sx))
	}
	// Outliers: further than 3 scaled MADs from the median, and at least 10%
	// away (a MAD of nearly zero would otherwise flag noise).
	dev := make([]float64, len(xs))
	for i, x := range xs {
		dev[i] = math.Abs(x - w.MedianS)
	}
	mad := 1.4826 * median(dev)
	for i, x := range xs {
		if d := math.Abs(x - w.MedianS); d > 3*mad && d > 0.1*w.MedianS {
			w.Outliers = append(w.Outliers, labels[i])
		}
	}
	return w
}

func ptr(v float64) *float64 { return &v }

const mib = 1 << 20

// sampleAt returns the first sample at or after t.
func sampleAt(samples []timedSample, t int64) *pb.HostSample {
	for _, s := range samples {
		if s.t >= t {
			return s.s
		}
	}
	return nil
}

func window(samples []timedSample, from, to int64) []*pb.HostSample {
	var out []*pb.HostSample
	for _, s := range samples {
		if s.t >= from && s.t <= to {
			out = append(out, s.s)
		}
	}
	return out
}

func gpuMemMiB(s *pb.HostSample) (float64, bool) {
	if s == nil || len(s.GetGpus()) == 0 {
		return 0, false
	}
	var used uint64
	for _, g := range s.GetGpus() {
		used += g.GetMemoryUsedBytes()
	}
	return float64(used) / mib, true
}

func sanity(samples []timedSample, marks map[string]int64, node NodeFacts) Sanity {
	out := Sanity{Samples: len(samples)}
	if len(samples) == 0 {
		out.GPUNote = "not measured: the gpunode sent no samples during the run"
		out.CPUNote = out.GPUNote
		return out
	}
	nvmlOK := false
	for _, s := range samples {
		if len(s.s.GetGpus()) > 0 {
			nvmlOK = true
			break
		}
	}
	if !nvmlOK {
		reason := node.NVMLError
		for _, s := range samples {
			if e := s.s.GetNvmlError(); e != "" {
				reason = e
				break
			}
		}
		if reason == "" {
			reason = "the gpunode reported no GPUs"
		}
		out.GPUNote = "not measured: " + reason
	} else {
		if t, ok := marks[MarkBeforeEngine]; ok {
			if v, ok := gpuMemMiB(sampleAt(samples, t)); ok {
				out.GPUMemBeforeMiB = ptr(v)
			}
		}
		if t, ok := marks[MarkColdEnd]; ok {
			if s := sampleAt(samples, t); s != nil {
				if v, ok := gpuMemMiB(s); ok {
					out.GPUMemAfterColdMiB = ptr(v)
				}
				var tot uint64
				for _, g := range s.GetGpus() {
					tot += g.GetMemoryTotalBytes()
				}
				out.GPUMemTotalMiB = ptr(float64(tot) / mib)
			}
		}
		if ws := window(samples, marks[MarkWarmStart], marks[MarkWarmEnd]); len(ws) > 0 {
			var sum, max float64
			var n int
			for _, s := range ws {
				for _, g := range s.GetGpus() {
					u := float64(g.GetGpuUtilPercent())
					sum += u
					n++
					max = math.Max(max, u)
				}
			}
			if n > 0 {
				out.GPUUtilWarmPct, out.GPUUtilWarmMaxPct = ptr(sum/float64(n)), ptr(max)
			}
		} else {
			out.GPUNote = "GPU utilisation not measured: the warm window was shorter than one sampling interval"
		}
	}
	cpuMean := func(from, to int64) (*float64, int) {
		ws := window(samples, from, to)
		var sum float64
		var n int
		for _, s := range ws {
			if c := s.GetEngineCpuPercent(); c >= 0 {
				sum += c
				n++
			}
		}
		if n == 0 {
			return nil, 0
		}
		return ptr(sum / float64(n)), n
	}
	for _, s := range window(samples, marks[MarkColdStart], marks[MarkColdEnd]) {
		if w, ok := s.GetEngineMetrics()["vllm:num_requests_waiting"]; ok {
			if out.EngineWaitingMax == nil || w > *out.EngineWaitingMax {
				out.EngineWaitingMax = ptr(w)
			}
		}
	}
	var nCold, nWarm int
	out.CPUColdPct, nCold = cpuMean(marks[MarkColdStart], marks[MarkColdEnd])
	out.CPUWarmPct, nWarm = cpuMean(marks[MarkWarmStart], marks[MarkWarmEnd])
	switch {
	case nCold == 0 && nWarm == 0:
		out.CPUNote = "not measured: no sample with a running engine fell inside the cold or warm windows"
	case nCold == 0:
		out.CPUNote = "cold CPU not measured: the cold request finished within one sampling interval"
	case nWarm == 0:
		out.CPUNote = "warm CPU not measured: the warm requests finished within one sampling interval"
	default:
		out.CPUNote = fmt.Sprintf("engine process tree, 100%% = one core; mean of %d cold and %d warm samples", nCold, nWarm)
	}
	return out
}

func runByLabel(runs []Run, label string) *Run {
	for i := range runs {
		if runs[i].Label == label {
			return &runs[i]
		}
	}
	return nil
}

func observations(res *Results) []string {
	var out []string
	cold := runByLabel(res.Runs, "cold_1")
	w := res.Warm
	if cold != nil && cold.Error == "" && w != nil && w.MedianS > 0 {
		out = append(out, fmt.Sprintf("Cold TTFT is %.2f× the warm median (%.1f ms vs %.1f ms): the first request after a restart pays %.1f ms extra.",
			cold.TTFTS/w.MedianS, cold.TTFTS*1000, w.MedianS*1000, (cold.TTFTS-w.MedianS)*1000))
	}
	if cold != nil && res.Engine.ReadyS > 0 && cold.Error == "" {
		out = append(out, fmt.Sprintf("From spawn to first token after a restart: %.2f s (%.2f s to ready + %.3f s cold TTFT).",
			res.Engine.ReadyS+cold.TTFTS, res.Engine.ReadyS, cold.TTFTS))
	}
	if w != nil {
		scaled := func(v *float64, k float64) *float64 {
			if v == nil {
				return nil
			}
			return ptr(*v * k)
		}
		out = append(out, fmt.Sprintf("Warm band: %.1f ms ± %s over %d runs (min %.1f, max %.1f ms); drift %s ms per run.",
			w.MedianS*1000, fmtPtr(w.BandPct, "%.1f%%"), w.N, w.MinS*1000, w.MaxS*1000, fmtPtr(scaled(w.DriftS, 1000), "%+.2f")))
		if w.Insufficient {
			out = append(out, fmt.Sprintf("The warm runs are too few for tail percentiles: %s; the merged histograms' percentiles from fewer values are marked ⚠ (use more warm runs for a p90 or p99).",
				strings.Join(w.InsufficientReasons, "; ")))
		}
		if len(w.Outliers) > 0 {
			out = append(out, "Outliers among the warm runs (more than 3 MADs and 10% from the median): "+strings.Join(w.Outliers, ", ")+".")
		} else {
			out = append(out, "No outliers among the warm runs (none more than 3 MADs and 10% from the median).")
		}
	}
	for _, r := range res.Runs {
		if r.Error != "" {
			out = append(out, fmt.Sprintf("%s failed: %s.", r.Label, r.Error))
		}
	}
	if s := res.Sanity; s.GPUMemBeforeMiB != nil && s.GPUMemAfterColdMiB != nil {
		out = append(out, fmt.Sprintf("The engine holds %.0f MiB of GPU memory after the cold request (before start: %.0f MiB).",
			*s.GPUMemAfterColdMiB-*s.GPUMemBeforeMiB, *s.GPUMemBeforeMiB))
	}
	if s := res.ColdSpread; s != nil {
		out = append(out, fmt.Sprintf("Over %d restarts, restart → first token was %.2f–%.2f s (median %.2f s); cold TTFT %.1f–%.1f ms.",
			s.N, s.RestartToFirstMinS, s.RestartToFirstMaxS, s.RestartToFirstMedS, s.ColdTTFTMinS*1000, s.ColdTTFTMaxS*1000))
	}
	if res.Simulated {
		out = append(out, "These figures come from ttftlab's simulated vLLM engine (a performance model), not from a real GPU.")
	}
	return out
}

// startupScale returns the value of --startup-scale in argv, or 0 when it is
// absent or 1.
func startupScale(argv []string) float64 {
	for i, a := range argv {
		var v string
		switch {
		case a == "--startup-scale" && i+1 < len(argv):
			v = argv[i+1]
		case strings.HasPrefix(a, "--startup-scale="):
			v = strings.TrimPrefix(a, "--startup-scale=")
		default:
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f == 1 {
			return 0
		}
		return f
	}
	return 0
}

func phases(in []*pb.Phase) []Phase {
	out := []Phase{}
	for _, p := range in {
		out = append(out, Phase{Name: p.GetName(), StartS: p.GetStartS(), EndS: p.GetEndS(),
			DurationS: p.GetDurationS(), Source: p.GetSource(), Detail: p.GetDetail()})
	}
	return out
}

// RoundResult is one restart of the baseline.
type RoundResult struct {
	Round int `json:"round"`
	// ReadyS is spawn → ready; ColdTTFTS is that round's cold_1;
	// WarmMedianS the median of its warm runs. Nil when not measured.
	ReadyS      *float64 `json:"ready_s"`
	ColdTTFTS   *float64 `json:"cold_ttft_s"`
	WarmMedianS *float64 `json:"warm_median_ttft_s"`
	// RestartToFirstTokenS is ReadyS + ColdTTFTS.
	RestartToFirstTokenS *float64 `json:"restart_to_first_token_s"`
	// BaseURL and ServedModelName are this round's engine; the last round's
	// is the one still running after the run.
	BaseURL         string `json:"base_url,omitempty"`
	ServedModelName string `json:"served_model_name,omitempty"`
}

// ColdSpread summarises the rounds' cold figures.
type ColdSpread struct {
	N                  int     `json:"n"`
	ReadyMinS          float64 `json:"ready_min_s"`
	ReadyMedianS       float64 `json:"ready_median_s"`
	ReadyMaxS          float64 `json:"ready_max_s"`
	ColdTTFTMinS       float64 `json:"cold_ttft_min_s"`
	ColdTTFTMedianS    float64 `json:"cold_ttft_median_s"`
	ColdTTFTMaxS       float64 `json:"cold_ttft_max_s"`
	RestartToFirstMinS float64 `json:"restart_to_first_token_min_s"`
	RestartToFirstMedS float64 `json:"restart_to_first_token_median_s"`
	RestartToFirstMaxS float64 `json:"restart_to_first_token_max_s"`
}

// roundLabel is a run's label in round k: round 1 keeps the plain label.
func roundLabel(round int, label string) string {
	if round <= 1 {
		return label
	}
	return fmt.Sprintf("r%d/%s", round, label)
}

func rounds(runs []Run, readyByRound map[int]float64, urlByRound map[int][2]string, n int) ([]RoundResult, *ColdSpread) {
	for k := range readyByRound {
		n = max(n, k)
	}
	out := []RoundResult{}
	var readies, colds, totals []float64
	for k := 1; k <= n; k++ {
		rr := RoundResult{Round: k}
		if v, ok := readyByRound[k]; ok {
			rr.ReadyS = ptr(v)
			rr.BaseURL, rr.ServedModelName = urlByRound[k][0], urlByRound[k][1]
		}
		if c := runByLabel(runs, roundLabel(k, "cold_1")); c != nil && c.Error == "" {
			rr.ColdTTFTS = ptr(c.TTFTS)
		}
		var warm []float64
		prefix := roundLabel(k, "warm_")
		for _, run := range runs {
			if strings.HasPrefix(run.Label, prefix) && run.Error == "" {
				warm = append(warm, run.TTFTS)
			}
		}
		if len(warm) > 0 {
			rr.WarmMedianS = ptr(median(warm))
		}
		if rr.ReadyS != nil && rr.ColdTTFTS != nil {
			rr.RestartToFirstTokenS = ptr(*rr.ReadyS + *rr.ColdTTFTS)
			readies, colds, totals = append(readies, *rr.ReadyS), append(colds, *rr.ColdTTFTS), append(totals, *rr.RestartToFirstTokenS)
		}
		out = append(out, rr)
	}
	if len(totals) < 2 {
		return out, nil
	}
	mm := func(xs []float64) (lo, med, hi float64) {
		lo, hi = xs[0], xs[0]
		for _, x := range xs {
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
		return lo, median(xs), hi
	}
	s := &ColdSpread{N: len(totals)}
	s.ReadyMinS, s.ReadyMedianS, s.ReadyMaxS = mm(readies)
	s.ColdTTFTMinS, s.ColdTTFTMedianS, s.ColdTTFTMaxS = mm(colds)
	s.RestartToFirstMinS, s.RestartToFirstMedS, s.RestartToFirstMaxS = mm(totals)
	return out, s
}

package results

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name, kind, data string
		want             any    // compared with the payload when set
		wantErr          string // "" for success
	}{
		{name: "mark", kind: EventMark, data: `{"name":"cold_end"}`, want: Mark{Name: "cold_end"}},
		{name: "mark without a name", kind: EventMark, data: `{}`, wantErr: "mark has no name"},
		{name: "round", kind: EventRound, data: `{"round":2}`, want: Round{Round: 2}},
		{name: "round zero", kind: EventRound, data: `{"round":0}`, wantErr: "round 0 is out of range"},
		{name: "run end", kind: EventRunEnd, data: `{"status":"failed","error":"boom"}`, want: RunEnd{Status: StatusFailed, Error: "boom"}},
		{name: "run end, unknown status", kind: EventRunEnd, data: `{"status":"great"}`, wantErr: `status "great" is neither ok nor failed`},
		{name: "warning", kind: EventWarning, data: `{"message":"careful"}`, want: Warning{Message: "careful"}},
		{name: "level start", kind: EventLevelStart, data: `{"level":1,"value":4,"agents":["a"]}`},
		{name: "negative level", kind: EventLevelStart, data: `{"level":-1}`, wantErr: "level -1 is out of range"},
		{name: "huge level", kind: EventAgentLost, data: `{"level":99999999,"agent":"a"}`, wantErr: "out of range"},
		{name: "sweep interval", kind: EventSweepInterval, data: `{"level":0,"report":{"agent_id":"a","seq":"3","requests_ok":"2"}}`},
		{name: "sweep interval without report", kind: EventSweepInterval, data: `{"level":0}`, wantErr: "no report"},
		{name: "sweep interval, report not a report", kind: EventSweepInterval, data: `{"level":0,"report":{"seq":"x"}}`, wantErr: "sweep_interval event"},
		{name: "interval", kind: EventInterval, data: `{"agent_id":"a","usage":"USAGE_SOURCE_FINAL"}`},
		{name: "interval, wrong type", kind: EventInterval, data: `{"requests_ok":"many"}`, wantErr: "interval event"},
		{name: "sample without data", kind: EventSample, data: ``, wantErr: "no data"},
		{name: "engine exit", kind: EventEngineExit, data: `{"gpunode":"g","exit":{"signal":"SIGKILL","pid":7}}`},
		{name: "engine exit without status", kind: EventEngineExit, data: `{"gpunode":"g"}`, wantErr: "no exit status"},
		{name: "sweep start, bad load", kind: EventSweepStart, data: `{"run_id":"r","load":{"kind":7}}`, wantErr: "load:"},
		{name: "not JSON", kind: EventWarning, data: `{"message":`, wantErr: "warning event"},
		{name: "unknown kind", kind: "telepathy", data: `{}`, wantErr: "unknown event kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(Event{Kind: tt.kind, Data: json.RawMessage(tt.data)})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode = %v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				if tt.kind == "telepathy" && !errors.Is(err, ErrUnknownKind) {
					t.Errorf("error %v does not wrap ErrUnknownKind", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if tt.want != nil && got != tt.want {
				t.Errorf("Decode = %#v, want %#v", got, tt.want)
			}
		})
	}
	t.Run("payloads round-trip", func(t *testing.T) {
		rep := &pb.IntervalReport{AgentId: "a", Seq: 4, Usage: pb.UsageSource_USAGE_SOURCE_COUNTED}
		for _, v := range []struct {
			kind    string
			payload any
		}{
			{EventSweepInterval, SweepInterval{Level: 2, Report: rep}},
			{EventEngineExit, EngineExit{GPUNode: "g", Exit: &pb.EngineExit{Signal: "SIGKILL", Pid: 9}}},
			{EventAgentLost, AgentLost{Level: 1, Agent: "a", Error: "lost", Intervals: 3}},
		} {
			data, err := EncodeData(v.payload)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(Event{Kind: v.kind, Data: data})
			if err != nil {
				t.Fatalf("%s: %v", v.kind, err)
			}
			switch g := got.(type) {
			case SweepInterval:
				if g.Level != 2 || g.Report.GetSeq() != 4 || ReportUsage(g.Report) != pb.UsageSource_USAGE_SOURCE_COUNTED {
					t.Errorf("sweep interval came back as %+v", g)
				}
			case EngineExit:
				if g.GPUNode != "g" || g.Exit.GetPid() != 9 || g.Exit.GetSignal() != "SIGKILL" {
					t.Errorf("engine exit came back as %+v", g)
				}
			case AgentLost:
				if g != v.payload {
					t.Errorf("agent lost came back as %+v", g)
				}
			}
		}
	})
}

// report is an interval report of n successful requests of ttft each, with
// matching TTFT and E2E histograms.
func report(t *testing.T, agent string, seq uint64, n int, ttft time.Duration) *pb.IntervalReport {
	t.Helper()
	h := hdr.New()
	for range n {
		h.Record(ttft)
	}
	b, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &pb.IntervalReport{AgentId: agent, Seq: seq, StartUnixNano: int64(seq) * 1e9, EndUnixNano: int64(seq+1) * 1e9,
		RequestsOk: uint64(n), Histograms: []*pb.EncodedHistogram{{Metric: hdr.TTFT, V2: b}, {Metric: hdr.E2E, V2: b}}}
}

func TestMerger(t *testing.T) {
	ms := time.Millisecond
	warm := report(t, "a", 1, 5, ms)
	warm.Warmup = true
	bad := report(t, "b", 1, 2, ms)
	bad.Histograms[0].V2 = []byte("garbage")
	counted := report(t, "b", 2, 1, ms)
	//lint:ignore SA1019 an older agent sets only the deprecated field
	counted.UsageSource = "counted"
	final := report(t, "a", 3, 1, ms)
	final.Usage = pb.UsageSource_USAGE_SOURCE_FINAL
	final.AbortReason = "error budget spent"
	tests := []struct {
		name      string
		reports   []*pb.IntervalReport
		want      []Added
		wantOK    uint64
		wantTTFT  int64
		wantUsage pb.UsageSource
		wantErr   string
	}{
		{name: "two agents merge losslessly", reports: []*pb.IntervalReport{report(t, "a", 1, 10, ms), report(t, "b", 1, 7, 2*ms)},
			want: []Added{Merged, Merged}, wantOK: 17, wantTTFT: 17},
		{name: "a duplicate counts once", reports: []*pb.IntervalReport{report(t, "a", 1, 3, ms), report(t, "a", 1, 3, ms)},
			want: []Added{Merged, Duplicate}, wantOK: 3, wantTTFT: 3},
		{name: "same seq, another interval is another probe", reports: []*pb.IntervalReport{report(t, "a", 1, 3, ms), func() *pb.IntervalReport {
			r := report(t, "a", 1, 2, ms)
			r.StartUnixNano, r.EndUnixNano = 50e9, 51e9
			return r
		}()}, want: []Added{Merged, Merged}, wantOK: 5, wantTTFT: 5},
		{name: "warm-up is left out", reports: []*pb.IntervalReport{warm, report(t, "a", 2, 4, ms)},
			want: []Added{Warmup, Merged}, wantOK: 4, wantTTFT: 4},
		{name: "bad histograms are refused, counts kept", reports: []*pb.IntervalReport{bad, report(t, "a", 1, 1, ms)},
			want: []Added{Refused, Merged}, wantOK: 3, wantTTFT: 1, wantErr: `agent "b" interval 1`},
		{name: "the weakest usage source wins, old agents included", reports: []*pb.IntervalReport{final, counted},
			want: []Added{Merged, Merged}, wantOK: 2, wantTTFT: 2, wantUsage: pb.UsageSource_USAGE_SOURCE_COUNTED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMerger()
			for i, r := range tt.reports {
				got, err := m.Add(r)
				if got != tt.want[i] {
					t.Errorf("report %d: Add = %v, want %v", i, got, tt.want[i])
				}
				if (got == Refused) != (err != nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
					t.Errorf("report %d: err %v, want one containing %q exactly when refused", i, err, tt.wantErr)
				}
			}
			if err := m.Check(); err != nil {
				t.Errorf("Check: %v", err)
			}
			if m.OK != tt.wantOK || m.Histograms()[hdr.TTFT].Count() != tt.wantTTFT {
				t.Errorf("ok %d, TTFT count %d; want %d, %d", m.OK, m.Histograms()[hdr.TTFT].Count(), tt.wantOK, tt.wantTTFT)
			}
			if m.Usage != tt.wantUsage {
				t.Errorf("usage %v, want %v", m.Usage, tt.wantUsage)
			}
		})
	}
	t.Run("abort reasons name their agent", func(t *testing.T) {
		m := NewMerger()
		m.Add(final)
		if got := m.AbortError(); got != "agent a: error budget spent" {
			t.Errorf("AbortError = %q", got)
		}
	})
	t.Run("an inconsistent report fails the check", func(t *testing.T) {
		// E2E holds one value per success; a report that says 3 successes
		// with 2 E2E values is refused by validation, so Check stays
		// truthful about what was merged.
		m := NewMerger()
		r := report(t, "a", 1, 2, ms)
		r.RequestsOk = 3
		if got, err := m.Add(r); got != Refused || !strings.Contains(err.Error(), "e2e holds 2 values but the report counts 3") {
			t.Fatalf("Add = %v, %v; want the report refused", got, err)
		}
		if err := m.Check(); err != nil {
			t.Errorf("Check: %v", err)
		}
	})
}

func TestSanity(t *testing.T) {
	const s = int64(time.Second)
	gpu := func(t int64, usedMiB uint64, util uint32, cpu float64) timedSample {
		return timedSample{t: t, s: &pb.HostSample{EngineCpuPercent: cpu,
			Gpus: []*pb.GPUSample{{MemoryUsedBytes: usedMiB << 20, MemoryTotalBytes: 1000 << 20, GpuUtilPercent: util}}}}
	}
	noGPU := func(t int64, cpu float64) timedSample {
		return timedSample{t: t, s: &pb.HostSample{EngineCpuPercent: cpu, NvmlError: "NVML library not found"}}
	}
	marks := map[string]int64{MarkBeforeEngine: 0, MarkColdStart: 2 * s, MarkColdEnd: 4 * s, MarkWarmStart: 4 * s, MarkWarmEnd: 7 * s}
	tests := []struct {
		name    string
		samples []timedSample
		marks   map[string]int64
		check   func(t *testing.T, got Sanity)
	}{
		{name: "no samples", check: func(t *testing.T, got Sanity) {
			if got.GPUMemBeforeMiB != nil || got.CPUColdPct != nil || !strings.Contains(got.GPUNote, "sent no samples") {
				t.Errorf("got %+v, want nothing measured and the reason", got)
			}
		}},
		{name: "windows cut at the marks", marks: marks, samples: []timedSample{
			gpu(0, 100, 0, -1), gpu(3*s, 900, 50, 80), gpu(5*s, 950, 60, 40), gpu(6*s, 950, 80, 20)},
			check: func(t *testing.T, got Sanity) {
				want := map[string][2]float64{
					"before": {100, *got.GPUMemBeforeMiB}, "after cold": {950, *got.GPUMemAfterColdMiB},
					"util mean": {70, *got.GPUUtilWarmPct}, "util max": {80, *got.GPUUtilWarmMaxPct},
					"cpu cold": {80, *got.CPUColdPct}, "cpu warm": {30, *got.CPUWarmPct}, "total": {1000, *got.GPUMemTotalMiB},
				}
				for k, v := range want {
					if v[0] != v[1] {
						t.Errorf("%s = %g, want %g", k, v[1], v[0])
					}
				}
				if got.Samples != 4 || !strings.Contains(got.CPUNote, "mean of 1 cold and 2 warm samples") {
					t.Errorf("samples %d note %q", got.Samples, got.CPUNote)
				}
			}},
		{name: "no NVML says why", marks: marks, samples: []timedSample{noGPU(3*s, 50), noGPU(5*s, 10)},
			check: func(t *testing.T, got Sanity) {
				if got.GPUMemBeforeMiB != nil || got.GPUUtilWarmPct != nil || got.GPUNote != "not measured: NVML library not found" {
					t.Errorf("GPU figures %+v, note %q: want null with the NVML error", got, got.GPUNote)
				}
				if got.CPUColdPct == nil || *got.CPUColdPct != 50 {
					t.Errorf("cold CPU %v, want 50", got.CPUColdPct)
				}
			}},
		{name: "a cold request inside one sampling interval", marks: marks, samples: []timedSample{gpu(0, 100, 0, -1), gpu(5*s, 950, 60, 40)},
			check: func(t *testing.T, got Sanity) {
				if got.CPUColdPct != nil || got.CPUNote != "cold CPU not measured: the cold request finished within one sampling interval" {
					t.Errorf("cold CPU %v note %q", got.CPUColdPct, got.CPUNote)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, sanity(tt.samples, tt.marks, NodeFacts{}))
		})
	}
}

func TestDecomposeTable(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	base := func() *Results {
		return &Results{
			Engine: EngineFacts{ReadyS: 10, Phases: []Phase{
				{Name: "bootstrap", StartS: 0, EndS: 3}, {Name: "load_model", StartS: 3, EndS: 8, DurationS: 5}}},
			Runs: []Run{{Label: "cold_1", TTFTS: 0.5}},
			Warm: &WarmStats{N: 3, MedianS: 0.1},
		}
	}
	row := func(rows []DecompRow, name string) *DecompRow {
		for i := range rows {
			if strings.HasPrefix(rows[i].Component, name) {
				return &rows[i]
			}
		}
		return nil
	}
	tests := []struct {
		name   string
		mutate func(r *Results)
		// want maps a component's prefix to its seconds; nil means present
		// with no value, and a missing row is named in absent.
		want   map[string]*float64
		absent []string
	}{
		{name: "ready and cold", want: map[string]*float64{
			"spawn → ready": f(10), "process start": f(3), "weights": f(5), "readiness polling": f(2),
			"cold TTFT": f(0.5), "first-request extra": f(0.4), "prefill + API": f(0.1), "queueing": nil, "restart → first token": f(10.5)}},
		{name: "queueing seen", mutate: func(r *Results) { r.Sanity.EngineWaitingMax = f(0) }, want: map[string]*float64{"queueing": f(0)}},
		{name: "failed cold request ends at the start", mutate: func(r *Results) { r.Runs[0].Error = "boom" },
			want: map[string]*float64{"spawn → ready": f(10)}, absent: []string{"cold TTFT", "restart → first token"}},
		{name: "no warm run", mutate: func(r *Results) { r.Warm = nil },
			want: map[string]*float64{"cold TTFT": f(0.5)}, absent: []string{"first-request extra", "prefill + API"}},
		{name: "engine never ready", mutate: func(r *Results) { r.Engine = EngineFacts{} },
			want: map[string]*float64{"cold TTFT": f(0.5)}, absent: []string{"spawn → ready", "restart → first token"}},
		{name: "phases longer than the start overlap", mutate: func(r *Results) { r.Engine.ReadyS = 6 },
			want: map[string]*float64{"readiness polling": f(0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base()
			if tt.mutate != nil {
				tt.mutate(r)
			}
			rows := Decompose(r)
			assertPartsWithinParents(t, rows)
			for name, want := range tt.want {
				got := row(rows, name)
				switch {
				case got == nil:
					t.Errorf("no row %q in %+v", name, rows)
				case want == nil && got.Seconds != nil:
					t.Errorf("%q = %g, want not measured", name, *got.Seconds)
				case want != nil && (got.Seconds == nil || abs(*got.Seconds-*want) > 1e-9):
					t.Errorf("%q = %v, want %g", name, got.Seconds, *want)
				}
			}
			for _, name := range tt.absent {
				if got := row(rows, name); got != nil {
					t.Errorf("row %q present: %+v", name, got)
				}
			}
		})
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

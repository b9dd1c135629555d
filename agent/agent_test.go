package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
	"github.com/ttftlab/ttftlab/internal/specerr"

	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/oai"
)

func testSpec(base string) Spec {
	return Spec{
		RunID:       "run1",
		AgentID:     "agent1",
		Target:      Target{BaseURL: base, Model: "m", API: oai.APIChat},
		Workload:    Workload{Prompt: "hi", MaxTokens: 8},
		Concurrency: 1,
		Requests:    1,
		Interval:    20 * time.Millisecond,
	}
}

// collect runs spec and returns every report.
func collect(t *testing.T, ctx context.Context, a *Agent, spec Spec) ([]Report, error) {
	t.Helper()
	var reps []Report
	err := a.Run(ctx, spec, func(r Report) error {
		reps = append(reps, r)
		return nil
	})
	return reps, err
}

// merged decodes and merges every report's histograms.
func merged(t *testing.T, reps []Report) hdr.Set {
	t.Helper()
	set := hdr.Set{}
	for _, r := range reps {
		if len(r.Histograms) != len(metrics) {
			t.Fatalf("report %d has %d histograms, want %d", r.Seq, len(r.Histograms), len(metrics))
		}
		for _, h := range r.Histograms {
			d, err := hdr.Decode(h.V2)
			if err != nil {
				t.Fatalf("report %d metric %s: %v", r.Seq, h.Metric, err)
			}
			set.Get(h.Metric).Merge(d)
		}
	}
	return set
}

// checkSequence checks seq numbering, contiguous intervals and the final
// flag, and returns the totals.
func checkSequence(t *testing.T, reps []Report) (ok, failed uint64, errs map[string]uint64) {
	t.Helper()
	if len(reps) == 0 {
		t.Fatal("no reports")
	}
	errs = map[string]uint64{}
	var prev *Report
	for i, r := range reps {
		if r.Seq != uint64(i) {
			t.Errorf("report %d has seq %d", i, r.Seq)
		}
		if r.Final != (i == len(reps)-1) {
			t.Errorf("report %d final=%v", i, r.Final)
		}
		if r.Warmup {
			// A warm-up report shares its interval with the measured
			// report after it and is left out of the totals.
			if i+1 >= len(reps) || reps[i+1].Warmup || !reps[i+1].Start.Equal(r.Start) || !reps[i+1].End.Equal(r.End) {
				t.Errorf("warm-up report %d is not followed by a measured report of the same interval", i)
			}
			continue
		}
		if prev != nil && !r.Start.Equal(prev.End) {
			t.Errorf("report %d starts at %v, previous ended at %v", i, r.Start, prev.End)
		}
		prev = &reps[i]
		if r.End.Before(r.Start) {
			t.Errorf("report %d ends before it starts", i)
		}
		if r.RunID != "run1" || r.AgentID != "agent1" {
			t.Errorf("report %d ids %q %q", i, r.RunID, r.AgentID)
		}
		ok += r.OK
		failed += r.Failed
		for k, v := range r.ErrorsByKind {
			errs[k] += v
		}
	}
	if last := reps[len(reps)-1]; last.InFlight != 0 {
		t.Errorf("final report has %d in flight", last.InFlight)
	}
	return ok, failed, errs
}

func TestRunLabelsInOrder(t *testing.T) {
	f := oaitest.NewServer(t, oaitest.StreamTokens(4, 10*time.Millisecond))
	spec := testSpec(f.URL)
	spec.Labels = []string{"cold_1", "warm_1", "warm_2", "warm_3", "warm_4"}
	spec.Requests = len(spec.Labels)
	reps, err := collect(t, context.Background(), New(DefaultConfig(), nil), spec)
	if err != nil {
		t.Fatal(err)
	}
	ok, failed, _ := checkSequence(t, reps)
	if ok != 5 || failed != 0 {
		t.Fatalf("ok %d failed %d, want 5, 0", ok, failed)
	}
	if len(reps) < 2 {
		t.Errorf("%d reports; want several 20 ms intervals over a ≥200 ms run", len(reps))
	}
	var recs []Record
	var tokens uint64
	for _, r := range reps {
		recs = append(recs, r.Records...)
		tokens += r.OutputTokens
	}
	if tokens != 5*4 {
		t.Errorf("output tokens %d, want 20", tokens)
	}
	if len(recs) != len(spec.Labels) {
		t.Fatalf("%d records, want %d", len(recs), len(spec.Labels))
	}
	for i, rec := range recs {
		if rec.Label != spec.Labels[i] || rec.Index != i {
			t.Errorf("record %d is %q (index %d), want %q", i, rec.Label, rec.Index, spec.Labels[i])
		}
		if rec.Err != "" || rec.TTFT <= 0 || rec.E2E < rec.TTFT || rec.FirstChunk > rec.TTFT || rec.FirstByte > rec.FirstChunk ||
			rec.OutputTokens != 4 || rec.PromptTokens != 7 || rec.UsageSource != oai.UsageContinuous || rec.Preview != "t1 t2 t3 t4 " {
			t.Errorf("record %d = %+v", i, rec)
		}
		if i > 0 && !rec.Send.After(recs[i-1].Send.Add(recs[i-1].E2E)) {
			t.Errorf("record %d sent at %v before record %d ended", i, rec.Send, i-1)
		}
	}
	maxOpen := f.MaxOpen()
	if maxOpen != 1 {
		t.Errorf("server saw %d requests at once, want 1", maxOpen)
	}
	set := merged(t, reps)
	for _, m := range []string{hdr.TTFT, hdr.E2E, hdr.TPOT} {
		if got := set.Get(m).Count(); got != 5 {
			t.Errorf("merged %s count %d, want 5 (one per request)", m, got)
		}
	}
	if got := set.Get(hdr.ITL).Count(); got != 5*3 {
		t.Errorf("merged itl count %d, want 15", got)
	}
	if got := set.Get(hdr.ICL).Count(); got != 5*3 {
		t.Errorf("merged icl count %d, want 15", got)
	}
}

func TestRunConcurrency(t *testing.T) {
	f := oaitest.NewServer(t, oaitest.StreamTokens(3, 5*time.Millisecond))
	spec := testSpec(f.URL)
	spec.Concurrency = 4
	spec.Requests = 24
	reps, err := collect(t, context.Background(), New(DefaultConfig(), nil), spec)
	if err != nil {
		t.Fatal(err)
	}
	ok, failed, _ := checkSequence(t, reps)
	if ok != 24 || failed != 0 || f.Requests.Load() != 24 {
		t.Fatalf("ok %d failed %d server saw %d; want 24, 0, 24", ok, failed, f.Requests.Load())
	}
	maxOpen := f.MaxOpen()
	if maxOpen > 4 || maxOpen < 2 {
		t.Errorf("server saw at most %d at once, want 2..4", maxOpen)
	}
	if got := merged(t, reps).Get(hdr.TTFT).Count(); got != 24 {
		t.Errorf("merged ttft count %d, want 24", got)
	}
	for _, r := range reps {
		if len(r.Records) != 0 {
			t.Fatalf("report %d has records without labels or Records", r.Seq)
		}
	}
}

func TestRunErrors(t *testing.T) {
	f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"message":"overloaded","type":"x","param":null,"code":503}}`))
	})
	spec := testSpec(f.URL)
	spec.Requests = 8
	spec.Concurrency = 2
	spec.Records = true
	reps, err := collect(t, context.Background(), New(DefaultConfig(), nil), spec)
	if err != nil {
		t.Fatal(err)
	}
	ok, failed, errs := checkSequence(t, reps)
	if ok != 0 || failed != 8 || errs["http_503"] != 8 {
		t.Errorf("ok %d failed %d errors %v; want 0, 8, http_503:8", ok, failed, errs)
	}
	var samples []string
	var recs int
	for _, r := range reps {
		samples = append(samples, r.ErrorSamples...)
		recs += len(r.Records)
	}
	if len(samples) != 5 || !strings.Contains(samples[0], "http_503: overloaded") {
		t.Errorf("samples = %q, want 5 naming http_503: overloaded", samples)
	}
	if recs != 8 {
		t.Errorf("%d records with Records set, want 8", recs)
	}
	if got := merged(t, reps).Get(hdr.TTFT).Count(); got != 0 {
		t.Errorf("failed requests recorded %d TTFTs, want 0", got)
	}
}

func TestRunCancelStopsLoad(t *testing.T) {
	f := oaitest.NewServer(t, oaitest.StreamTokens(1000, 10*time.Millisecond))
	spec := testSpec(f.URL)
	spec.Concurrency = 4
	spec.Requests = 1000
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)

	var mu sync.Mutex
	var reps []Report
	start := time.Now()
	err := New(DefaultConfig(), nil).Run(ctx, spec, func(r Report) error {
		mu.Lock()
		defer mu.Unlock()
		reps = append(reps, r)
		return nil
	})
	took := time.Since(start)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if took > time.Second {
		t.Errorf("Run took %v after cancel at 200 ms, want prompt return", took)
	}
	sent := f.Requests.Load()
	time.Sleep(200 * time.Millisecond)
	if after := f.Requests.Load(); after != sent {
		t.Errorf("server saw %d requests after Run returned, had %d", after, sent)
	}
	if sent != 4 {
		t.Errorf("server saw %d requests, want the 4 first ones only", sent)
	}
	open := f.Open()
	if open != 0 {
		t.Errorf("%d requests still open on the server", open)
	}
	_, failed, errs := checkSequence(t, reps)
	var intr uint64
	for _, r := range reps {
		intr += r.Interrupted
	}
	if failed != 0 || len(errs) != 0 || intr != 4 {
		t.Errorf("failed %d errors %v interrupted %d; want the 4 in flight interrupted, not failed", failed, errs, intr)
	}
}

func TestRunBarrier(t *testing.T) {
	var first time.Time
	var once sync.Once
	f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { first = time.Now() })
		oaitest.StreamTokens(1, 0)(w, r)
	})
	spec := testSpec(f.URL)
	spec.Start = time.Now().Add(150 * time.Millisecond)
	if _, err := collect(t, context.Background(), New(DefaultConfig(), nil), spec); err != nil {
		t.Fatal(err)
	}
	if first.Before(spec.Start) {
		t.Errorf("first request at %v, before the barrier %v", first, spec.Start)
	}
}

func TestRunCancelDuringBarrier(t *testing.T) {
	f := oaitest.NewServer(t, oaitest.StreamTokens(1, 0))
	spec := testSpec(f.URL)
	spec.Start = time.Now().Add(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	reps, err := collect(t, ctx, New(DefaultConfig(), nil), spec)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v, want DeadlineExceeded", err)
	}
	if len(reps) != 1 || !reps[0].Final || f.Requests.Load() != 0 {
		t.Errorf("reports %+v, requests %d; want one empty final report and no load", reps, f.Requests.Load())
	}
}

func TestRunEmitErrorStops(t *testing.T) {
	f := oaitest.NewServer(t, oaitest.StreamTokens(1000, 5*time.Millisecond))
	spec := testSpec(f.URL)
	spec.Requests = 100
	spec.Concurrency = 2
	boom := errors.New("stream broken")
	err := New(DefaultConfig(), nil).Run(context.Background(), spec, func(Report) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("Run = %v, want the emit error", err)
	}
	sent := f.Requests.Load()
	time.Sleep(100 * time.Millisecond)
	if f.Requests.Load() != sent || sent > 2 {
		t.Errorf("server saw %d then %d requests; want load to stop at the first failed report", sent, f.Requests.Load())
	}
}

// TestRunSenderRefused: a run whose Sender cannot be made fails before any
// report, with the maker's error, as an invalid spec.
func TestRunSenderRefused(t *testing.T) {
	cfg := DefaultConfig()
	var got oai.Config
	cfg.NewSender = func(c oai.Config) (Sender, error) {
		got = c
		return nil, errors.New("client transport \"h3\" is unknown")
	}
	spec := testSpec("http://127.0.0.1:1")
	spec.Concurrency, spec.Requests, spec.TTFTTimeout = 3, 5, 2*time.Second
	reps, err := collect(t, context.Background(), New(cfg, nil), spec)
	if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "h3") {
		t.Fatalf("Run = %v, want an invalid-spec error naming the transport", err)
	}
	if len(reps) != 0 {
		t.Errorf("%d reports, want none", len(reps))
	}
	if got.MaxConns != 3 || got.TTFTTimeout != 2*time.Second || got.Timeout != cfg.DefaultTimeout {
		t.Errorf("sender asked for %+v; want 3 connections, the spec's TTFT timeout and the default timeout", got)
	}
}

func TestRunRefusesBadSpecs(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxConcurrency = 8
	cfg.CheckTarget = func(base string) error {
		if strings.Contains(base, "forbidden") {
			return errors.New("not announced by any gpunode")
		}
		return nil
	}
	a := New(cfg, nil)
	tests := []struct {
		name   string
		mutate func(*Spec)
		want   error
	}{
		{"too much concurrency", func(s *Spec) { s.Concurrency = 9 }, ErrInvalidSpec},
		{"target not allowed", func(s *Spec) { s.Target.BaseURL = "http://forbidden:8000" }, ErrTargetNotAllowed},
		{"invalid", func(s *Spec) { s.Requests = 0 }, ErrInvalidSpec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testSpec("http://127.0.0.1:1")
			tt.mutate(&spec)
			called := false
			err := a.Run(context.Background(), spec, func(Report) error { called = true; return nil })
			if !errors.Is(err, tt.want) || called {
				t.Errorf("Run = %v (emitted %v), want %v and no report", err, called, tt.want)
			}
		})
	}
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Spec)
		want   string // substring; empty means valid
	}{
		{"valid", func(*Spec) {}, ""},
		{"empty api means chat", func(s *Spec) { s.Target.API = "" }, ""},
		{"zero concurrency", func(s *Spec) { s.Concurrency = 0 }, "concurrency 0 is invalid: set concurrency ≥ 1"},
		{"zero requests", func(s *Spec) { s.Requests = 0 }, "requests 0 is invalid: set requests ≥ 1"},
		{"labels mismatch", func(s *Spec) { s.Labels = []string{"a", "b"} }, "labels has 2 names for 1 requests"},
		{"no url", func(s *Spec) { s.Target.BaseURL = "" }, "target.base_url is empty"},
		{"relative url", func(s *Spec) { s.Target.BaseURL = "localhost:8000" }, "not an absolute http(s) URL"},
		{"no model", func(s *Spec) { s.Target.Model = "" }, "target.model is empty"},
		{"bad api", func(s *Spec) { s.Target.API = "responses" }, `target.api "responses" is unknown`},
		{"bad transport", func(s *Spec) { s.Target.Transport = "h3" }, `target.transport "h3" is unknown: use "h1" (the default), "net/http" or "h2"`},
		{"bad first-token clock", func(s *Spec) { s.Target.FirstTokenClock = "tsc" }, `target.first_token_clock "tsc" is unknown: use "kernel_rx" (the default) or "read_return"`},
		{"zero max tokens", func(s *Spec) { s.Workload.MaxTokens = 0 }, "workload.max_tokens 0 is invalid"},
		{"negative temperature", func(s *Spec) { s.Workload.Temperature = -1 }, "workload.temperature -1 is invalid"},
		{"negative interval", func(s *Spec) { s.Interval = -time.Second }, "interval -1s is negative"},
		{"negative timeout", func(s *Spec) { s.Timeout = -time.Second }, "timeout -1s is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testSpec("http://127.0.0.1:8000")
			tt.mutate(&s)
			err := s.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidSpec)):
				t.Errorf("Validate = %v, want an ErrInvalidSpec containing %q", err, tt.want)
			}
		})
	}
}

// TestLoadValidateNamesTheField checks the rules that every front end (the
// CLI and a coordinator's remote runs) gets from the library, and that each
// error is a FieldError naming the spec field.
func TestLoadValidateNamesTheField(t *testing.T) {
	closed := LoadModel{Kind: LoadClosed, Concurrency: 1, Requests: 10}
	open := LoadModel{Kind: LoadPoisson, Rate: 5, Requests: 10}
	tests := []struct {
		name      string
		m         LoadModel
		mutate    func(*LoadModel)
		wantField string
		want      string
	}{
		{"concurrency over the cap", closed, func(m *LoadModel) { m.Concurrency = MaxConcurrency + 1 }, "load.concurrency", "load.concurrency 100001 is over the limit of 100000"},
		{"zero concurrency", closed, func(m *LoadModel) { m.Concurrency = 0 }, "load.concurrency", "load.concurrency 0 is invalid"},
		{"max in flight over the cap", open, func(m *LoadModel) { m.MaxInFlight = 200_000 }, "load.max_in_flight", "load.max_in_flight 200000 is over the limit of 100000"},
		{"max in flight in closed loop", closed, func(m *LoadModel) { m.MaxInFlight = 3 }, "load.max_in_flight", "load.max_in_flight 3 applies to an open loop"},
		{"burstiness in closed loop", closed, func(m *LoadModel) { m.Burstiness = 0.5 }, "load.burstiness", "load.burstiness 0.5 applies to an open loop"},
		{"zero rate", open, func(m *LoadModel) { m.Rate = 0 }, "load.rate", "load.rate 0 is invalid"},
		{"error rate above 1", closed, func(m *LoadModel) { m.MaxErrorRate = 1.5 }, "load.max_error_rate", "load.max_error_rate 1.5 is invalid"},
		{"error window too short", closed, func(m *LoadModel) { m.ErrorWindow = time.Millisecond }, "load.error_window", "load.error_window 1ms is invalid: set a window from 100ms to 1h0m0s"},
		{"error window too long", closed, func(m *LoadModel) { m.ErrorWindow = 2 * time.Hour }, "load.error_window", "load.error_window 2h0m0s is invalid"},
		{"both warm-ups", closed, func(m *LoadModel) { m.Warmup, m.WarmupRequests = time.Second, 3 }, "load.warmup_requests", "pick one"},
		{"negative objective", closed, func(m *LoadModel) { m.SLO.TPOT = -time.Millisecond }, "load.slo.tpot", "load.slo.tpot -1ms is negative"},
		{"error window at the floor", closed, func(m *LoadModel) { m.ErrorWindow = 100 * time.Millisecond }, "", ""},
		{"concurrency at the cap", closed, func(m *LoadModel) { m.Concurrency = MaxConcurrency }, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testSpec("http://127.0.0.1:8000")
			s.Concurrency, s.Requests = 0, 0
			s.Load = tt.m
			tt.mutate(&s.Load)
			err := s.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			var fe *specerr.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.wantField || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("Validate = %v (field %v), want a FieldError for %s containing %q", err, fe, tt.wantField, tt.want)
			}
		})
	}
}

// Example of the record a failed labelled request carries.
func TestRecordOfFailure(t *testing.T) {
	res := oai.Result{Send: time.Unix(100, 0), Done: time.Unix(101, 0), CachedTokens: -1,
		Err: &oai.Error{Kind: oai.KindTruncated, Class: oai.KindTruncated, Detail: "stream ended without [DONE]"}}
	rec := newRecord(3, "warm_2", &res)
	if rec.Err != "truncated: stream ended without [DONE]" || rec.ErrKind != oai.KindTruncated || rec.E2E != time.Second || rec.TTFT != 0 {
		t.Errorf("record = %+v", rec)
	}
	if s := errorSample(3, "warm_2", res.Err); s != fmt.Sprintf("request 3 (warm_2): %s", res.Err) {
		t.Errorf("sample = %q", s)
	}
}

func TestSLOMet(t *testing.T) {
	t0 := time.Unix(1000, 0)
	res := &oai.Result{Send: t0.Add(10 * time.Millisecond), FirstToken: t0.Add(110 * time.Millisecond),
		Last: t0.Add(1110 * time.Millisecond), OutputTokens: 11}
	// TTFT_sched 110 ms, TPOT (1110-110)/10 = 100 ms, E2E_sched 1110 ms.
	tests := []struct {
		slo  SLO
		want bool
	}{
		{SLO{}, true},
		{SLO{TTFT: 110 * time.Millisecond}, true},
		{SLO{TTFT: 109 * time.Millisecond}, false},
		{SLO{TPOT: 100 * time.Millisecond}, true},
		{SLO{TPOT: 99 * time.Millisecond}, false},
		{SLO{E2E: 1110 * time.Millisecond}, true},
		{SLO{E2E: 1100 * time.Millisecond}, false}, // measured from the intended time, not the send
		{SLO{TTFT: time.Second, TPOT: time.Second, E2E: 2 * time.Second}, true},
	}
	for _, tt := range tests {
		if got := tt.slo.Met(res, t0); got != tt.want {
			t.Errorf("%+v.Met = %v, want %v", tt.slo, got, tt.want)
		}
	}
	if (SLO{}).Set() || !(SLO{E2E: 1}).Set() {
		t.Error("Set is wrong")
	}
}

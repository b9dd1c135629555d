package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ttftlab/ttftlab/coordinator/results"
	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
)

// fakeOpenAI serves /v1/models with one model and streams n chat or
// completion tokens with continuous usage. It records request bodies.
type fakeOpenAI struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
	hdrs   []http.Header
}

func newFakeOpenAI(t *testing.T) *fakeOpenAI {
	t.Helper()
	f := &fakeOpenAI{}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

// newFakeOpenAITLS is newFakeOpenAI over TLS, with httptest's self-signed
// certificate (for 127.0.0.1).
func newFakeOpenAITLS(t *testing.T) *fakeOpenAI {
	t.Helper()
	f := &fakeOpenAI{}
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	f.StartTLS()
	t.Cleanup(f.Close)
	return f
}

func (f *fakeOpenAI) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/models" {
		io.WriteString(w, `{"object":"list","data":[{"id":"fake-model","object":"model"}]}`)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/v1/") {
		http.NotFound(w, r) // no /tokenize: not vLLM
		return
	}
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	f.hdrs = append(f.hdrs, r.Header.Clone())
	f.mu.Unlock()
	n := 3
	if mt, ok := body["max_tokens"].(float64); ok {
		n = int(mt)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(w, `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"t%d "},"finish_reason":null}],"usage":{"prompt_tokens":5,"completion_tokens":%d,"total_tokens":%d}}`+"\n\n", i, i, 5+i)
		fl.Flush()
	}
	fmt.Fprintf(w, `data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":%d,"total_tokens":%d}}`+"\n\n", n, 5+n)
	io.WriteString(w, "data: [DONE]\n\n")
}

func TestLoadJSONFields(t *testing.T) {
	f := newFakeOpenAI(t)
	out := filepath.Join(t.TempDir(), "run.jsonl")
	var stdout, stderr bytes.Buffer
	err := runLoad(context.Background(), []string{"--url", f.URL, "--concurrency", "2", "--requests", "6",
		"--warmup-requests", "2", "--input-len", "12", "--output-len", "4", "--seed", "3",
		"--extra-body", `{"min_tokens": 4}`, "--header", "X-Tenant: lab", "--api-key", "k",
		"--interval", "50ms", "--json", "--out", out}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("runLoad: %v\nstderr: %s", err, stderr.String())
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout.String())
	}
	if n := strings.Count(strings.TrimSpace(stdout.String()), "\n"); n != 0 {
		t.Errorf("stdout has %d lines, want one object", n+1)
	}
	wantKeys := []string{"status", "requests", "successes", "errors", "interrupted", "errors_by_kind", "ttft_ms", "ttft_sched_ms", "itl_ms", "icl_ms", "tpot_ms", "e2e_ms",
		"dispatch_lag_ms", "output_tokens", "output_tokens_per_s", "requests_per_s", "client_bound",
		"usage_source", "duration_s", "warmup_excluded", "cut_at_deadline", "transport", "first_token_clock"}
	slices.Sort(wantKeys)
	if diff := cmp.Diff(wantKeys, slices.Sorted(maps.Keys(got))); diff != "" {
		t.Errorf("JSON fields (-want +got):\n%s", diff)
	}
	for _, k := range []string{"ttft_ms", "ttft_sched_ms", "itl_ms", "icl_ms", "tpot_ms", "e2e_ms", "dispatch_lag_ms"} {
		var m map[string]float64
		if err := json.Unmarshal(got[k], &m); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if diff := cmp.Diff([]string{"max", "mean", "p50", "p90", "p95", "p99"}, slices.Sorted(maps.Keys(m))); diff != "" {
			t.Errorf("%s fields (-want +got):\n%s", k, diff)
		}
		if k != "dispatch_lag_ms" && m["max"] <= 0 {
			t.Errorf("%s max %v, want > 0", k, m["max"])
		}
	}
	var s results.LoadSummary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatal(err)
	}
	if s.Status != "ok" || s.Requests != 6 || s.Successes != 6 || s.Errors != 0 || s.Interrupted != 0 || s.OutputTokens != 24 ||
		s.WarmupExcluded != 2 || s.UsageSource == nil || *s.UsageSource != "continuous" ||
		s.RequestsPerS == nil || *s.RequestsPerS <= 0 || s.OutputTokensPerS == nil || *s.OutputTokensPerS <= 0 || len(s.ErrorsByKind) != 0 {
		t.Errorf("summary %+v", s)
	}
	f.mu.Lock()
	if len(f.bodies) != 8 {
		t.Errorf("server saw %d requests, want 8 (2 warm-up + 6)", len(f.bodies))
	}
	for i, b := range f.bodies {
		msgs, _ := b["messages"].([]any)
		if b["max_tokens"] != 4.0 || b["ignore_eos"] != true || b["min_tokens"] != 4.0 || b["model"] != "fake-model" || len(msgs) != 1 {
			t.Errorf("request %d body %v", i, b)
		}
		if h := f.hdrs[i]; h.Get("X-Tenant") != "lab" || h.Get("Authorization") != "Bearer k" {
			t.Errorf("request %d headers %v", i, h)
		}
	}
	f.mu.Unlock()

	// The --out file holds every interval and the summary, one per line.
	fh, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(nil, 1<<24)
	var types []string
	var final bool
	for sc.Scan() {
		var line struct {
			Type   string `json:"type"`
			Report struct{ Final bool }
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("--out line: %v", err)
		}
		types = append(types, line.Type)
		final = final || line.Report.Final
	}
	if len(types) < 2 || types[len(types)-1] != "summary" || !final {
		t.Errorf("--out lines %v (final seen %v), want intervals then a summary", types, final)
	}
}

func TestLoadTable(t *testing.T) {
	f := newFakeOpenAI(t)
	var stdout, stderr bytes.Buffer
	err := runLoad(context.Background(), []string{"--url", f.URL, "--model", "fake-model", "--rate", "200", "--arrival", "constant",
		"--requests", "10", "--api", "completions", "--max-tokens", "3"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("runLoad: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"Requests (measured):         10", "constant arrivals at 200 req/s", "ttft_sched", "dispatch_lag", "Output tokens:", "Usage source:"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, stdout.String())
		}
	}
}

// TestLoadFlagErrors checks that every bad value is refused with the flag's
// name: the rules are the library's (agent.Spec.Validate), its field names
// rewritten to flags, or load's own rules on which flags go together.
func TestLoadFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no url", []string{}, "--url is empty"},
		{"relative url", []string{"--url", "localhost:8000"}, `--url "localhost:8000" is not an absolute http(s) URL`},
		{"unknown api", []string{"--url", "http://h", "--api", "responses"}, `--api "responses" is unknown`},
		{"concurrency and rate", []string{"--url", "http://h", "--concurrency", "2", "--rate", "3"}, "--concurrency 2 is set for open-loop kind"},
		{"zero rate", []string{"--url", "http://h", "--rate", "0"}, "--rate 0 is invalid"},
		{"negative rate", []string{"--url", "http://h", "--rate", "-2"}, "--rate -2 is invalid"},
		{"rate over the cap", []string{"--url", "http://h", "--rate", "2e6"}, "--rate 2e+06 is invalid"},
		{"zero concurrency", []string{"--url", "http://h", "--concurrency", "0"}, "--concurrency 0 is invalid"},
		{"burstiness in closed loop", []string{"--url", "http://h", "--burstiness", "0.5"}, "--burstiness 0.5 applies to an open loop"},
		{"max in flight in closed loop", []string{"--url", "http://h", "--max-in-flight", "4"}, "--max-in-flight 4 applies to an open loop"},
		{"arrival in closed loop", []string{"--url", "http://h", "--arrival", "constant"}, "--arrival applies to an open loop"},
		{"zero burstiness", []string{"--url", "http://h", "--rate", "5", "--burstiness", "0"}, "--burstiness 0 is invalid"},
		{"burstiness with poisson", []string{"--url", "http://h", "--rate", "5", "--arrival", "poisson", "--burstiness", "0.5"}, `--burstiness 0.5 is set for kind "poisson"`},
		{"ramp without duration", []string{"--url", "http://h", "--rate", "5", "--ramp-from", "1"}, "--duration is 0 for a ramp"},
		{"negative ramp", []string{"--url", "http://h", "--rate", "5", "--ramp-from", "-1", "--duration", "1s"}, "--ramp-from -1 is invalid"},
		{"gamma without burstiness", []string{"--url", "http://h", "--rate", "5", "--arrival", "gamma"}, "--arrival gamma needs --burstiness"},
		{"unknown arrival", []string{"--url", "http://h", "--rate", "5", "--arrival", "weibull"}, `--arrival "weibull" is unknown`},
		{"unknown dist", []string{"--url", "http://h", "--input-len", "10", "--input-len-dist", "zipf"}, `--input-len-dist "zipf" is unknown`},
		{"uniform without max", []string{"--url", "http://h", "--input-len-dist", "uniform", "--input-len-min", "5"}, "--input-len uniform(5, 0) is invalid"},
		{"min with fixed", []string{"--url", "http://h", "--input-len", "5", "--input-len-min", "5"}, "--input-len-min, -max and -stddev need --input-len-dist uniform or normal"},
		{"zero output len", []string{"--url", "http://h", "--output-len", "0"}, "--output-len 0 is invalid"},
		{"fractional input len", []string{"--url", "http://h", "--input-len", "1.5"}, "--input-len 1.5 is invalid for a fixed length"},
		{"both warm-ups", []string{"--url", "http://h", "--warmup", "1s", "--warmup-requests", "3"}, "--warmup-requests 3 is set along with load.warmup 1s: pick one"},
		{"negative warm-up", []string{"--url", "http://h", "--warmup", "-1s"}, "--warmup -1s is negative"},
		{"extra body not an object", []string{"--url", "http://h", "--extra-body", "[1]"}, "-extra-body: extra body is not a JSON object"},
		{"extra body sets stream", []string{"--url", "http://h", "--extra-body", `{"stream": false}`}, `sets "stream"`},
		{"header without colon", []string{"--url", "http://h", "--header", "nocolon"}, "is not KEY:VALUE"},
		{"header the client sets", []string{"--url", "http://h", "--header", "Content-Length: 3"}, "--header"},
		{"dataset without format", []string{"--url", "http://h", "--dataset", "x.txt"}, "add --dataset-format"},
		{"dataset and input len", []string{"--url", "http://h", "--dataset", "x.json", "--input-len", "5"}, "--dataset supplies the prompts"},
		{"prefix without input len", []string{"--url", "http://h", "--prefix-len", "5"}, "--prefix-len needs --input-len"},
		{"prefix over input len", []string{"--url", "http://h", "--input-len", "10", "--prefix-len", "20"}, "--input-len can be 10 tokens, below prefix_len 20"},
		{"zero prefixes", []string{"--url", "http://h", "--input-len", "10", "--prefix-len", "2", "--num-prefixes", "0"}, "--num-prefixes 0 is invalid"},
		{"zero requests", []string{"--url", "http://h", "--requests", "0"}, "--requests 0 is invalid"},
		{"negative requests", []string{"--url", "http://h", "--requests", "-3"}, "--requests -3 is negative"},
		{"zero duration", []string{"--url", "http://h", "--duration", "0s"}, "--duration 0s is invalid"},
		{"max tokens and output len", []string{"--url", "http://h", "--max-tokens", "3", "--output-len", "4"}, "drop one"},
		{"zero max tokens", []string{"--url", "http://h", "--max-tokens", "0"}, "--max-tokens 0 is invalid"},
		{"negative temperature", []string{"--url", "http://h", "--temperature", "-1"}, "--temperature -1 is invalid"},
		{"stray argument", []string{"--url", "http://h", "extra"}, `unexpected argument "extra"`},
		{"concurrency over the cap", []string{"--url", "http://h", "--concurrency", "100000000"}, "--concurrency 100000000 is over the limit of 100000"},
		{"max in flight over the cap", []string{"--url", "http://h", "--rate", "5", "--max-in-flight", "200000"}, "--max-in-flight 200000 is over the limit of 100000"},
		{"error rate above 1", []string{"--url", "http://h", "--max-error-rate", "1.5"}, `-max-error-rate: "1.5" is not a fraction of failed attempts`},
		{"error rate not a number", []string{"--url", "http://h", "--max-error-rate", "half"}, `-max-error-rate: "half" is not a fraction`},
		{"short error window", []string{"--url", "http://h", "--error-window", "1ms"}, "--error-window 1ms is invalid"},
		{"zero error window", []string{"--url", "http://h", "--error-window", "0s"}, "--error-window 0s is invalid"},
		{"zero timeout", []string{"--url", "http://h", "--timeout", "0s"}, "--timeout 0s is invalid"},
		{"negative ttft timeout", []string{"--url", "http://h", "--ttft-timeout", "-1s"}, "--ttft-timeout -1s is negative"},
		{"negative client bound", []string{"--url", "http://h", "--client-bound-p99", "-1ms"}, "--client-bound-p99 -1ms is negative"},
		{"bad goodput", []string{"--url", "http://h", "--goodput", "itl:5"}, `-goodput: metric "itl" is unknown`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runLoad(context.Background(), tt.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("runLoad = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestParseSLO(t *testing.T) {
	slo, err := parseSLO("ttft:200 tpot:50,e2el:2000")
	if err != nil || slo.TTFT != 200*time.Millisecond || slo.TPOT != 50*time.Millisecond || slo.E2E != 2*time.Second {
		t.Fatalf("parseSLO = %+v, %v", slo, err)
	}
	for _, bad := range []string{"ttft", "ttft:-1", "itl:5", "ttft:x"} {
		if _, err := parseSLO(bad); err == nil {
			t.Errorf("parseSLO(%q) = nil, want an error", bad)
		}
	}
}

func TestLoadAgainstClosedPort(t *testing.T) {
	// No wall-clock bound is asserted (a loaded CI host once took 8 s for a
	// run that ends in well under one here): what ends each run is read
	// from its summary instead.
	tests := []struct {
		name     string
		args     []string
		maxTries uint64
		wantErr  string
	}{
		// Without the budget the run lasts its 3 s: backoff alone keeps the
		// attempts to about ten per worker, where a hot loop made 100,000.
		{"backoff without a budget", []string{"--concurrency", "8", "--duration", "3s", "--max-error-rate", "off"}, 300,
			"no request succeeded"},
		// With the default budget the run ends as soon as ten attempts
		// failed, before its --duration cuts it.
		{"default error budget", []string{"--concurrency", "8", "--duration", "3s"}, 300,
			"run failed: error budget spent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--url", oaitest.RefusedURL(t), "--model", "m", "--json", "--interval", "200ms"}, tt.args...)
			var stdout, stderr bytes.Buffer
			start := time.Now()
			err := run(context.Background(), append([]string{"load"}, args...), &stdout, &stderr)
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("run = %v, want a one-line error containing %q", err, tt.wantErr)
			}
			var s results.LoadSummary
			if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
				t.Fatalf("stdout: %v\n%s", err, stdout.String())
			}
			if strings.Contains(tt.wantErr, "budget") && s.CutAtDeadline {
				t.Errorf("the --duration bound cut the run (%v); want the error budget to end it first", took)
			}
			if s.Status != "failed" || !strings.Contains(s.Reason, tt.wantErr) {
				t.Errorf("status %q reason %q, want failed naming %q", s.Status, s.Reason, tt.wantErr)
			}
			if s.Requests == 0 || s.Requests > tt.maxTries || s.Successes != 0 || s.ErrorsByKind["connect_refused"] != s.Errors ||
				s.Requests != s.Successes+s.Errors+s.Interrupted {
				t.Errorf("requests %d = %d ok + %d errors (%v) + %d interrupted; want 1..%d attempts, all connect_refused",
					s.Requests, s.Successes, s.Errors, s.ErrorsByKind, s.Interrupted, tt.maxTries)
			}
			t.Logf("%d attempts in %v", s.Requests, took)
		})
	}
}

func TestLoadAllFailedPrintsNA(t *testing.T) {
	srv := oaitest.NewServer(t, oaitest.Stream{Status: http.StatusInternalServerError, Message: "boom"}.Handler())
	base := []string{"--url", srv.URL, "--model", "m", "--requests", "4", "--max-error-rate", "off"}
	t.Run("json nulls", func(t *testing.T) {
		var stdout bytes.Buffer
		err := runLoad(context.Background(), append(base, "--json"), &stdout, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "no request succeeded: 4 attempts, 4 failed (http_500=4)") {
			t.Fatalf("runLoad = %v, want the no-success failure", err)
		}
		var got map[string]json.RawMessage
		if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"ttft_ms", "ttft_sched_ms", "itl_ms", "icl_ms", "tpot_ms", "e2e_ms", "usage_source"} {
			if string(got[k]) != "null" {
				t.Errorf("%s = %s, want null", k, got[k])
			}
		}
		if string(got["dispatch_lag_ms"]) == "null" {
			t.Errorf("dispatch_lag_ms is null, but failed requests have a dispatch lag")
		}
	})
	t.Run("table n/a", func(t *testing.T) {
		var stdout bytes.Buffer
		err := runLoad(context.Background(), base, &stdout, io.Discard)
		if err == nil {
			t.Fatal("runLoad succeeded, want the no-success failure")
		}
		out := stdout.String()
		for _, want := range []string{"Status:", "failed", "ttft  ", "Usage source:                n/a"} {
			if !strings.Contains(out, want) {
				t.Errorf("table lacks %q:\n%s", want, out)
			}
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || !slices.Contains([]string{"ttft", "ttft_sched", "itl", "icl", "tpot", "e2e"}, f[0]) {
				continue
			}
			if strings.Contains(line, "0.00") || strings.Count(line, "n/a") != 6 {
				t.Errorf("row %q: want n/a for every statistic, never 0.00", line)
			}
		}
	})
}

// TestProbeFlagErrors checks that every bad value is refused, before any
// request, with the flag's name: the rules are agent.Spec.Validate's.
func TestProbeFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no url", []string{}, "--url is empty"},
		{"relative url", []string{"--url", "localhost:8000"}, `--url "localhost:8000" is not an absolute http(s) URL`},
		{"unknown api", []string{"--url", "http://h", "--api", "responses"}, `--api "responses" is unknown`},
		{"zero max tokens", []string{"--url", "http://h", "--max-tokens", "0"}, "--max-tokens 0 is invalid"},
		{"empty prompt", []string{"--url", "http://h", "--prompt", ""}, "--prompt is empty"},
		{"zero timeout", []string{"--url", "http://h", "--timeout", "0s"}, "--timeout 0s is invalid"},
		{"negative timeout", []string{"--url", "http://h", "--timeout", "-1s"}, "--timeout -1s is negative"},
		{"stray argument", []string{"--url", "http://h", "x"}, `unexpected argument "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runProbe(context.Background(), tt.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("runProbe = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestLoadDurationBoundsWallTime checks that --duration bounds the whole
// command, warm-up and drain included: long requests still in flight at
// the bound are cancelled and counted as interrupted, the run stays ok and
// says it was cut, and the interval file holds what was measured.
func TestLoadDurationBoundsWallTime(t *testing.T) {
	url := startSim(t)
	tests := []struct {
		name string
		args []string
	}{
		{name: "closed loop", args: []string{"--concurrency", "4"}},
		{name: "open loop with warm-up", args: []string{"--rate", "5", "--arrival", "constant", "--warmup", "500ms"}},
		{name: "open loop", args: []string{"--rate", "5", "--arrival", "constant"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "intervals.jsonl")
			// Every other request asks for 20000 tokens: those are still
			// running at the bound; the short ones succeed.
			ds := filepath.Join(dir, "prompts.jsonl")
			if err := os.WriteFile(ds, []byte(`{"prompt": "short", "max_tokens": 4}`+"\n"+`{"prompt": "long", "max_tokens": 20000}`+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"load", "--url", url, "--json", "--duration", "2s", "--interval", "200ms",
				"--dataset", ds, "--ignore-eos", "--out", out}, tt.args...)
			var stdout bytes.Buffer
			start := time.Now()
			err := run(t.Context(), args, &stdout, io.Discard)
			took := time.Since(start)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			// Generous grace for a loaded CI host; without the bound the
			// long requests would run for minutes.
			if took > 2*time.Second+1500*time.Millisecond {
				t.Errorf("load with --duration 2s took %v", took)
			}
			var sum results.LoadSummary
			if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
				t.Fatalf("decode %q: %v", stdout.String(), err)
			}
			if sum.Status != "ok" || !sum.CutAtDeadline || sum.Interrupted == 0 || !strings.Contains(sum.Note, "cut at --duration 2s") {
				t.Errorf("status %q, cut %v, interrupted %d, note %q: want ok, cut, some interrupted and a note",
					sum.Status, sum.CutAtDeadline, sum.Interrupted, sum.Note)
			}
			if sum.Requests != sum.Successes+sum.Errors+sum.Interrupted {
				t.Errorf("requests %d != %d + %d + %d", sum.Requests, sum.Successes, sum.Errors, sum.Interrupted)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(b, []byte(`"final":true`)) || !bytes.Contains(b, []byte(`"type":"summary"`)) {
				t.Errorf("--out lacks the final report or the summary:\n%s", b)
			}
		})
	}
}

func TestLoadWarmupMustFitDuration(t *testing.T) {
	err := run(t.Context(), []string{"load", "--url", "http://127.0.0.1:1", "--model", "m", "--duration", "1s", "--warmup", "2s"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--warmup 2s does not fit in --duration 1s") {
		t.Errorf("err = %v, want the warm-up named as not fitting", err)
	}
}

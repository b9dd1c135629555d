package main

import (
	"bytes"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/ttftlab/ttftlab/agent"
)

// specField normalises a spec field's path across the library's spec
// structs: agent.Spec says load.duration, SweepSpec load.duration_ms, and
// both mean one setting.
func specField(f string) string {
	f = strings.TrimSuffix(f, "_ms")
	if strings.HasPrefix(f, "load.slo") {
		return "load.slo"
	}
	return f
}

// TestOneNamePerSetting checks that no two commands name one spec field
// with different flags, through the rename tables that turn library
// errors into flag names. The exceptions are listed with their reason.
func TestOneNamePerSetting(t *testing.T) {
	different := map[string]string{
		"load":                "a parent entry: the flag named when the load model as a whole is at fault",
		"load.duration":       "load's --duration bounds the whole run; a sweep's --level-duration is each level's",
		"workload.max_tokens": "a sweep has no --max-tokens: --output-len sets max_tokens (with ignore_eos), so its errors name --output-len",
	}
	tables := map[string]flagNames{"load": loadFlagNames(), "sweep and up": sweepFlagNames(), "baseline and up": baselineFlagNames()}
	seen := map[string]string{} // field → "flag (table)"
	for name, table := range tables {
		for field, flagName := range table {
			f := specField(field)
			if _, ok := different[f]; ok {
				continue
			}
			if prev, ok := seen[f]; ok && !strings.HasPrefix(prev, flagName+" ") {
				t.Errorf("spec field %s is %s but %s (%s)", f, prev, flagName, name)
			}
			seen[f] = flagName + " (" + name + ")"
		}
	}
	if len(seen) < 20 {
		t.Errorf("only %d fields compared: the tables are not being read", len(seen))
	}
}

func TestDeprecatedNamesStillWork(t *testing.T) {
	tests := []struct {
		name, old, canon string
		oldPrefix        string
	}{
		{"sweep input len", "levels-input-len", "input-len", "levels"},
		{"up input len", "sweep-input-len", "input-len", "sweep"},
		{"up levels", "sweep", "levels", "sweep"},
		{"up error window", "sweep-error-window", "error-window", "sweep"},
		{"sweep load model", "levels-load", "arrival", "levels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("sweep", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var stderr bytes.Buffer
			var sf sweepFlags
			sf.register(fs, tt.oldPrefix, "1", &stderr)
			val := map[string]string{"levels": "2,4", "error-window": "7s", "arrival": "poisson"}[tt.canon]
			if val == "" {
				val = "77"
			}
			if err := parseFlags(fs, []string{"--" + tt.old, val}); err != nil {
				t.Fatal(err)
			}
			if !setFlags(fs)[tt.canon] || fs.Lookup(tt.canon).Value.String() != val {
				t.Errorf("--%s did not set --%s", tt.old, tt.canon)
			}
			if want := "ttftlab: --" + tt.old + " is deprecated: use --" + tt.canon + "\n"; stderr.String() != want {
				t.Errorf("notice %q, want %q", stderr.String(), want)
			}
		})
	}
}

func TestUnknownFlagSuggestions(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"typo on load", []string{"load", "--concurency", "4"}, "unknown flag --concurency: did you mean --concurrency?"},
		{"typo with value", []string{"load", "--input-lenn=5"}, "did you mean --input-len?"},
		{"vLLM alias typo", []string{"load", "--num-prompt", "5"}, "did you mean --num-prompts?"},
		{"engine flag on load", []string{"load", "--max-model-len", "4096"}, "--max-model-len: that is an engine flag, not a benchmark one: set it on the gpunode profile / ttftlab sim --max-model-len"},
		{"engine flag on sweep", []string{"sweep", "--tensor-parallel-size", "2"}, "that is an engine flag"},
		{"nothing near", []string{"probe", "--zzzzzzzzzz"}, "ttftlab probe has no such flag; 'ttftlab probe -h' lists them"},
		{"after a value", []string{"load", "--url", "http://x", "--ratee", "3"}, "did you mean --rate?"},
		{"sweep typo of old name", []string{"sweep", "--level-input-len", "3"}, "did you mean --levels-input-len?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(t.Context(), tt.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"abc", "", 3}, {"concurency", "concurrency", 1}, {"kitten", "sitting", 3}} {
		t.Run(tt.a+"/"+tt.b, func(t *testing.T) {
			if got := editDistance(tt.a, tt.b); got != tt.want {
				t.Errorf("editDistance = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestVLLMBenchNames checks vLLM bench serve's names on load: each sets
// what vllm/benchmarks/serve.py means by it.
func TestVLLMBenchNames(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		check   func(s agent.Spec) bool
		wantErr string
	}{
		{name: "num-prompts", args: []string{"--num-prompts", "42"}, check: func(s agent.Spec) bool { return s.Load.Requests == 42 }},
		{name: "request-rate with max-concurrency", args: []string{"--request-rate", "5", "--max-concurrency", "3"},
			check: func(s agent.Spec) bool {
				return s.Load.Kind == agent.LoadPoisson && s.Load.Rate == 5 && s.Load.MaxInFlight == 3
			}},
		{name: "request-rate inf is all at once", args: []string{"--request-rate", "inf", "--num-prompts", "50"},
			check: func(s agent.Spec) bool {
				return s.Load.Kind == agent.LoadClosed && s.Load.Concurrency == 50 && s.Load.Requests == 50
			}},
		{name: "request-rate inf with max-concurrency", args: []string{"--request-rate", "inf", "--max-concurrency", "8"},
			check: func(s agent.Spec) bool { return s.Load.Kind == agent.LoadClosed && s.Load.Concurrency == 8 }},
		{name: "burstiness is gamma", args: []string{"--request-rate", "4", "--burstiness", "0.5"},
			check: func(s agent.Spec) bool { return s.Load.Kind == agent.LoadGamma && s.Load.Burstiness == 0.5 }},
		{name: "random dataset lengths", args: []string{"--dataset-name", "random", "--random-input-len", "300", "--random-output-len", "20", "--seed", "9"},
			check: func(s agent.Spec) bool {
				return s.Generator.Kind == agent.GenSynthetic && s.Generator.InputLen.Mean == 300 && s.Generator.OutputLen.Mean == 20 && s.Generator.Seed == 9
			}},
		{name: "random dataset takes vLLM's defaults", args: []string{"--dataset-name", "random"},
			check: func(s agent.Spec) bool { return s.Generator.InputLen.Mean == 1024 && s.Generator.OutputLen.Mean == 128 }},
		{name: "sharegpt", args: []string{"--dataset-name", "sharegpt", "--dataset-path", "x.data"},
			check: func(s agent.Spec) bool { return s.Generator.Kind == agent.GenShareGPT && s.Generator.Path == "x.data" }},
		{name: "sharegpt without a path", args: []string{"--dataset-name", "sharegpt"}, wantErr: "--dataset-name sharegpt needs --dataset-path"},
		{name: "unsupported dataset", args: []string{"--dataset-name", "sonnet"}, wantErr: `"sonnet" is not supported`},
		{name: "inf and concurrency", args: []string{"--request-rate", "inf", "--concurrency", "3"}, wantErr: "--request-rate inf sends every request at once"},
		{name: "bad max-concurrency", args: []string{"--max-concurrency", "0"}, wantErr: `"0" is not a positive whole number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("ttftlab load", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			c := registerLoadFlags(fs)
			err := parseFlags(fs, append([]string{"--url", "http://127.0.0.1:1"}, tt.args...))
			var s agent.Spec
			if err == nil {
				s, err = c.build(fs)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(s) {
				t.Errorf("spec load %+v generator %+v", s.Load, s.Generator)
			}
		})
	}
}

// TestHelpListsAliasesApart checks that aliases are not mixed into the
// flag list but listed under their own headings.
func TestHelpListsAliasesApart(t *testing.T) {
	var stderr bytes.Buffer
	_ = run(t.Context(), []string{"up", "-h"}, io.Discard, &stderr)
	help := stderr.String()
	flags, rest, _ := strings.Cut(help, "\nvLLM bench serve names")
	if strings.Contains(flags, "-sweep-input-len") || strings.Contains(flags, "-num-prompts") {
		t.Errorf("the flag list holds aliases:\n%s", flags)
	}
	for _, want := range []string{"--num-prompts = --requests", "Deprecated names", "--sweep-input-len (use --input-len)"} {
		if !strings.Contains(rest, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
}

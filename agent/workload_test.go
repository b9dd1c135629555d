package agent

import (
	"bytes"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func openFile(path string) (io.ReadCloser, error) { return os.Open(path) }

func mustGen(t *testing.T, w Workload, g WorkloadGen) *Generator {
	t.Helper()
	gen, err := NewGenerator(w, g, openFile)
	if err != nil {
		t.Fatal(err)
	}
	return gen
}

// simTokens counts tokens with the simulator's rule (internal/sim's
// tokenize.go): whitespace-separated words, a word of more than 4 runes
// counting ⌈runes/4⌉.
func simTokens(s string) int {
	n := 0
	for _, w := range strings.Fields(s) {
		n += (utf8.RuneCountInString(w) + 3) / 4
	}
	return n
}

func TestSyntheticPromptLengths(t *testing.T) {
	for _, n := range []int{1, 7, 128, 2000} {
		gen := mustGen(t, Workload{MaxTokens: 1}, WorkloadGen{Kind: GenSynthetic, InputLen: Fixed(n), OutputLen: Fixed(33), Seed: 5})
		for i := range uint64(20) {
			p := gen.Prompt(i)
			if got := simTokens(p.Text); got != n {
				t.Fatalf("input_len %d: prompt %d has %d sim tokens", n, i, got)
			}
			if p.MaxTokens != 33 || !p.IgnoreEOS {
				t.Fatalf("output_len 33: prompt %d has max_tokens %d ignore_eos %v", i, p.MaxTokens, p.IgnoreEOS)
			}
		}
	}
	for _, w := range words {
		if utf8.RuneCountInString(w) > 4 || strings.ContainsFunc(w, func(r rune) bool { return r < 'a' || r > 'z' }) {
			t.Errorf("word %q is not a short lowercase word", w)
		}
	}
}

func TestLengthDistributions(t *testing.T) {
	const n = 4000
	tests := []struct {
		name             string
		d                LengthDist
		lo, hi           int
		wantMean, tolAbs float64
	}{
		{"fixed", Fixed(50), 50, 50, 50, 0},
		{"uniform", LengthDist{Kind: DistUniform, Min: 10, Max: 30}, 10, 30, 20, 0.5},
		{"normal", LengthDist{Kind: DistNormal, Mean: 200, Stddev: 20}, 1, 1 << 20, 200, 1.5},
		{"normal clamped to 1", LengthDist{Kind: DistNormal, Mean: 1, Stddev: 50}, 1, 1 << 20, math.NaN(), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gen := mustGen(t, Workload{MaxTokens: 1}, WorkloadGen{Kind: GenSynthetic, InputLen: tt.d, Seed: 9})
			sum := 0.0
			seen := map[int]bool{}
			for i := range uint64(n) {
				k := simTokens(gen.Prompt(i).Text)
				if k < tt.lo || k > tt.hi {
					t.Fatalf("prompt %d has %d tokens, outside [%d, %d]", i, k, tt.lo, tt.hi)
				}
				sum += float64(k)
				seen[k] = true
			}
			if mean := sum / n; !math.IsNaN(tt.wantMean) && math.Abs(mean-tt.wantMean) > tt.tolAbs {
				t.Errorf("mean length %.2f, want %.1f ± %.1f", mean, tt.wantMean, tt.tolAbs)
			}
			if tt.d.Kind == DistUniform && len(seen) != 21 {
				t.Errorf("uniform(10, 30) drew %d distinct lengths, want all 21", len(seen))
			}
		})
	}
}

func TestGeneratorDeterministic(t *testing.T) {
	g := WorkloadGen{Kind: GenSynthetic, InputLen: LengthDist{Kind: DistUniform, Min: 5, Max: 50},
		OutputLen: LengthDist{Kind: DistNormal, Mean: 20, Stddev: 5}, Seed: 77}
	a, b := mustGen(t, Workload{}, g), mustGen(t, Workload{}, g)
	g.Seed = 78
	c := mustGen(t, Workload{}, g)
	var seqA, seqB []Prompt
	differs := 0
	for i := range uint64(200) {
		seqA = append(seqA, a.Prompt(i))
		seqB = append(seqB, b.Prompt(i))
		if c.Prompt(i) != seqA[i] {
			differs++
		}
	}
	if diff := cmp.Diff(seqA, seqB); diff != "" {
		t.Errorf("same seed, different prompts (-a +b):\n%s", diff)
	}
	if differs < 190 {
		t.Errorf("another seed changed only %d of 200 prompts", differs)
	}
	// Pure in i: out of order gives the same prompt.
	if a.Prompt(150) != seqA[150] || a.Prompt(3) != seqA[3] {
		t.Error("Prompt(i) depends on call order")
	}
	if seqA[0].Text == seqA[1].Text {
		t.Error("consecutive prompts are equal")
	}
}

func TestSharedPrefix(t *testing.T) {
	gen := mustGen(t, Workload{MaxTokens: 8}, WorkloadGen{Kind: GenSharedPrefix, InputLen: Fixed(40), PrefixLen: 30, NumPrefixes: 3, Seed: 1})
	prefix := func(s string) string { return strings.Join(strings.Fields(s)[:30], " ") }
	for i := range uint64(12) {
		p := gen.Prompt(i)
		if n := simTokens(p.Text); n != 40 {
			t.Fatalf("prompt %d has %d tokens, want 40", i, n)
		}
		if p.MaxTokens != 8 || p.IgnoreEOS {
			t.Fatalf("prompt %d: max_tokens %d ignore_eos %v; want the workload's 8, false", i, p.MaxTokens, p.IgnoreEOS)
		}
		same := prefix(gen.Prompt(i + 3).Text)
		if prefix(p.Text) != same {
			t.Fatalf("prompts %d and %d do not share a prefix", i, i+3)
		}
		if prefix(gen.Prompt(i+1).Text) == same {
			t.Fatalf("prompts %d and %d share a prefix with 3 prefixes", i, i+1)
		}
		if p.Text == gen.Prompt(i+3).Text {
			t.Fatalf("prompts %d and %d have the same suffix", i, i+3)
		}
	}
}

func TestShareGPT(t *testing.T) {
	gen := mustGen(t, Workload{}, WorkloadGen{Kind: GenShareGPT, Path: "testdata/sharegpt_small.json", Seed: 3})
	var got []string
	for i := range uint64(2) {
		p := gen.Prompt(i)
		got = append(got, p.Text)
		want := map[string]int{
			"What is the capital of France and why is it famous?": simTokens("Paris is the capital of France. It is famous for art, food, fashion and the Eiffel Tower."),
			"List four primary colours used in painting please.":  simTokens("Red, yellow and blue are the usual three; some add green or white."),
		}[p.Text]
		if want == 0 || p.MaxTokens != want || p.IgnoreEOS {
			t.Errorf("prompt %d = %+v; want a kept conversation with max_tokens %d", i, p, want)
		}
	}
	slices.Sort(got)
	if diff := cmp.Diff([]string{"List four primary colours used in painting please.", "What is the capital of France and why is it famous?"}, got); diff != "" {
		t.Errorf("kept prompts (-want +got):\n%s", diff)
	}
	// The output length overrides the file's and sets ignore_eos.
	gen = mustGen(t, Workload{}, WorkloadGen{Kind: GenShareGPT, Path: "testdata/sharegpt_small.json", OutputLen: Fixed(5)})
	if p := gen.Prompt(0); p.MaxTokens != 5 || !p.IgnoreEOS {
		t.Errorf("with output_len 5: %+v", p)
	}
}

func TestJSONL(t *testing.T) {
	gen := mustGen(t, Workload{MaxTokens: 64}, WorkloadGen{Kind: GenJSONL, Path: "testdata/prompts.jsonl", Seed: 1})
	got := map[string]int{}
	for i := range uint64(3) {
		p := gen.Prompt(i)
		got[p.Text] = p.MaxTokens
	}
	want := map[string]int{"Write a haiku about the sea.": 32, "Summarise the plot of Hamlet.": 64, "Name three planets.": 12}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("prompts → max_tokens (-want +got):\n%s", diff)
	}
	if _, err := NewGenerator(Workload{}, WorkloadGen{Kind: GenJSONL, Path: "testdata/prompts.jsonl"}, openFile); err == nil ||
		!strings.Contains(err.Error(), "has no output length and workload.max_tokens is 0") {
		t.Errorf("missing lengths without max_tokens: %v", err)
	}
}

func TestGeneratorErrors(t *testing.T) {
	tests := []struct {
		name string
		w    Workload
		g    WorkloadGen
		want string
	}{
		{"unknown kind", Workload{}, WorkloadGen{Kind: "random"}, `generator.kind "random" is unknown`},
		{"no input len", Workload{}, WorkloadGen{Kind: GenSynthetic}, "generator.input_len.kind is empty"},
		{"bad dist", Workload{}, WorkloadGen{Kind: GenSynthetic, InputLen: LengthDist{Kind: "zipf"}}, `generator.input_len.kind "zipf" is unknown`},
		{"uniform reversed", Workload{}, WorkloadGen{Kind: GenSynthetic, InputLen: LengthDist{Kind: DistUniform, Min: 9, Max: 3}}, "set 1 ≤ min ≤ max"},
		{"negative stddev", Workload{}, WorkloadGen{Kind: GenSynthetic, InputLen: LengthDist{Kind: DistNormal, Mean: 9, Stddev: -1}}, "stddev ≥ 0"},
		{"prefix longer than input", Workload{}, WorkloadGen{Kind: GenSharedPrefix, InputLen: Fixed(10), PrefixLen: 20, NumPrefixes: 1}, "below prefix_len 20"},
		{"no prefixes", Workload{}, WorkloadGen{Kind: GenSharedPrefix, InputLen: Fixed(10), PrefixLen: 5}, "generator.num_prefixes 0 is invalid"},
		{"no path", Workload{}, WorkloadGen{Kind: GenShareGPT}, "generator.path is empty"},
		{"missing file", Workload{}, WorkloadGen{Kind: GenShareGPT, Path: "testdata/nope.json"}, "no such file"},
		{"not sharegpt", Workload{}, WorkloadGen{Kind: GenShareGPT, Path: "testdata/prompts.jsonl"}, "not a ShareGPT file"},
		{"not jsonl", Workload{MaxTokens: 1}, WorkloadGen{Kind: GenJSONL, Path: "testdata/sharegpt_small.json"}, "generator.path: testdata/sharegpt_small.json:1: "},
		{"fixed without prompt", Workload{}, WorkloadGen{}, "workload.prompt is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewGenerator(tt.w, tt.g, openFile)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewGenerator = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestParseExtraBody(t *testing.T) {
	m, err := ParseExtraBody(`{"min_tokens": 16, "top_k": 5, "chat_template_kwargs": {"enable_thinking": false}}`)
	if err != nil || len(m) != 3 {
		t.Fatalf("ParseExtraBody = %v, %v", m, err)
	}
	for in, want := range map[string]string{
		`[1, 2]`:            "not a JSON object",
		`{"a": 1} {"b": 2}`: "not a JSON object",
		`{"stream": false}`: `sets "stream"`,
		`{"model": "x"}`:    `sets "model"`,
		`{`:                 "not a JSON object",
		`null`:              "not a JSON object",
	} {
		if _, err := ParseExtraBody(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseExtraBody(%s) = %v, want an error containing %q", in, err, want)
		}
	}
	if m, err := ParseExtraBody("  "); m != nil || err != nil {
		t.Errorf("empty extra body = %v, %v", m, err)
	}
}

// repeatReader yields the byte b for ever.
type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// promptLine returns a reader of one JSON line whose prompt is n bytes,
// without holding it in memory.
func promptLine(n int64, eol string) io.Reader {
	return io.MultiReader(strings.NewReader(`{"prompt":"`), io.LimitReader(repeatReader('a'), n), strings.NewReader(`"}`+eol))
}

func TestReadJSONL(t *testing.T) {
	const lineOverhead = int64(len(`{"prompt":""}`))
	ok := func(n int) string { return strings.Repeat(`{"prompt":"p"}`+"\n", n) }
	tests := []struct {
		name    string
		r       io.Reader
		want    int // prompts read
		wantErr string
	}{
		{"lines with LF, CRLF and none at the end", strings.NewReader("{\"prompt\":\"a\"}\n{\"prompt\":\"b\"}\r\n\n{\"prompt\":\"c\"}"), 3, ""},
		{"a line at the limit is read", promptLine(maxDatasetPrompt-lineOverhead, "\r\n"), 1, ""},
		{"a line one byte over the limit", io.MultiReader(strings.NewReader(ok(16)), promptLine(maxDatasetPrompt-lineOverhead+1, "\n")), 0,
			"prompts.jsonl:17: line is 16777217 bytes, over the 16 MiB limit"},
		{"a 100 MB line names its length", io.MultiReader(strings.NewReader(ok(16)), promptLine(100<<20-lineOverhead, "\n"), strings.NewReader(ok(1))), 0,
			"prompts.jsonl:17: line is 104857600 bytes, over the 16 MiB limit"},
		{"a long last line without newline", promptLine(maxDatasetPrompt, ""), 0, "prompts.jsonl:1: line is 16777229 bytes"},
		{"bad JSON names the line", strings.NewReader(ok(2) + "{nope}\n"), 0, "prompts.jsonl:3: invalid character"},
		{"no prompt names the line", strings.NewReader(`{"max_tokens": 3}`), 0, "prompts.jsonl:1: line has no prompt"},
		{"bad length names the line", strings.NewReader(ok(1) + `{"prompt":"x","max_tokens":0}`), 0, "prompts.jsonl:2: output length 0 is invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readJSONL("prompts.jsonl", tt.r)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("readJSONL = %d prompts, %v; want an error containing %q", len(got), err, tt.wantErr)
				}
				return
			}
			if err != nil || len(got) != tt.want {
				t.Fatalf("readJSONL = %d prompts, %v; want %d", len(got), err, tt.want)
			}
		})
	}
}

// FuzzReadJSONL feeds arbitrary bytes to the JSON-lines reader: it must
// never panic, and every prompt it returns is non-empty with a valid length.
func FuzzReadJSONL(f *testing.F) {
	f.Add([]byte("{\"prompt\":\"a\",\"max_tokens\":3}\n{\"messages\":[{\"role\":\"user\",\"content\":\"b\"}]}\r\n"))
	f.Add([]byte("\n\n{}"))
	f.Add([]byte("{\"prompt\":\"\"}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := readJSONL("f.jsonl", bytes.NewReader(b))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.jsonl:") {
				t.Errorf("error %q does not start with the file name", err)
			}
			return
		}
		for i, e := range got {
			if e.text == "" || e.out < 0 {
				t.Errorf("prompt %d = %+v: want non-empty text and a length ≥ 0", i, e)
			}
		}
	})
}

func TestSharedPrefixUniqueFractionAndSuffixSeed(t *testing.T) {
	base := WorkloadGen{Kind: GenSharedPrefix, InputLen: Fixed(40), PrefixLen: 32, NumPrefixes: 1, Seed: 7}
	prefix := func(t *testing.T, g WorkloadGen, i uint64) (string, string) {
		t.Helper()
		gen, err := NewGenerator(Workload{MaxTokens: 4}, g, nil)
		if err != nil {
			t.Fatal(err)
		}
		w := strings.Fields(gen.Prompt(i).Text)
		if len(w) != 40 {
			t.Fatalf("prompt %d has %d words, want 40", i, len(w))
		}
		return strings.Join(w[:32], " "), strings.Join(w[32:], " ")
	}
	shared, _ := prefix(t, base, 0)
	for _, tc := range []struct {
		name       string
		fraction   float64
		wantUnique int // of 8 requests
	}{
		{"none unique", 0, 0},
		{"a quarter unique", 0.25, 2},
		{"half unique", 0.5, 4},
		{"all unique", 1, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := base
			g.UniqueFraction = tc.fraction
			seen := map[string]bool{}
			unique := 0
			for i := range uint64(8) {
				p, _ := prefix(t, g, i)
				if p != shared {
					unique++
					if seen[p] {
						t.Errorf("request %d repeats another request's unique prefix", i)
					}
					seen[p] = true
				}
			}
			if unique != tc.wantUnique {
				t.Errorf("%d of 8 prefixes are unique, want %d", unique, tc.wantUnique)
			}
		})
	}
	t.Run("suffix seed keeps the prefix and changes the suffix", func(t *testing.T) {
		g := base
		g.SuffixSeed = 99
		p1, s1 := prefix(t, base, 3)
		p2, s2 := prefix(t, g, 3)
		if p1 != p2 || s1 == s2 {
			t.Errorf("prefix equal %v (want true), suffix equal %v (want false)", p1 == p2, s1 == s2)
		}
	})
	t.Run("fraction out of range is refused", func(t *testing.T) {
		g := base
		g.UniqueFraction = 1.5
		if _, err := NewGenerator(Workload{MaxTokens: 4}, g, nil); err == nil || !strings.Contains(err.Error(), "unique_fraction") {
			t.Errorf("err = %v, want one naming unique_fraction", err)
		}
	})
}

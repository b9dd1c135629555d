package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"unicode/utf8"

	"github.com/ttftlab/ttftlab/internal/specerr"
)

// Workload generator kinds, as in WorkloadGen.Kind.
const (
	// GenFixed sends Workload.Prompt every time.
	GenFixed = "fixed"
	// GenSynthetic sends random common short words, InputLen tokens long.
	GenSynthetic = "synthetic"
	// GenSharedPrefix sends one of NumPrefixes prefixes of PrefixLen tokens
	// followed by a unique suffix, InputLen tokens in all.
	GenSharedPrefix = "shared_prefix"
	// GenJSONL reads prompts from a JSON-lines file.
	GenJSONL = "jsonl"
	// GenShareGPT reads the first human turn of each ShareGPT conversation.
	GenShareGPT = "sharegpt"
)

// Length distribution kinds, as in LengthDist.Kind.
const (
	DistFixed   = "fixed"
	DistUniform = "uniform"
	DistNormal  = "normal"
)

// ShareGPT filters, as vLLM's sampler applies them: conversations whose
// prompt or reply is shorter than 4 tokens, whose prompt is longer than 1024
// tokens, or whose prompt and reply together pass 2048 tokens are skipped.
const (
	shareGPTMinLen    = 4
	shareGPTMaxPrompt = 1024
	shareGPTMaxTotal  = 2048
)

// Generator limits, so a spec cannot make an agent build absurd prompts.
const (
	maxGenTokens     = 1 << 20
	maxPrefixTokens  = 1 << 24 // PrefixLen × NumPrefixes
	maxDatasetBytes  = 1 << 30
	maxDatasetPrompt = 16 << 20
)

// LengthDist is a token-length distribution. The zero value is unset.
type LengthDist struct {
	// Kind is DistFixed (Mean), DistUniform (integers Min..Max inclusive) or
	// DistNormal (Mean, Stddev; rounded and clamped to ≥ 1).
	Kind   string
	Mean   float64
	Min    float64
	Max    float64
	Stddev float64
}

// IsZero reports whether d is unset.
func (d LengthDist) IsZero() bool { return d == LengthDist{} }

// Fixed returns the fixed distribution of n tokens.
func Fixed(n int) LengthDist { return LengthDist{Kind: DistFixed, Mean: float64(n)} }

func (d LengthDist) validate(field string) error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	if !finite(d.Mean) || !finite(d.Min) || !finite(d.Max) || !finite(d.Stddev) {
		return specerr.New(field, nil, "has a non-finite parameter: give finite numbers")
	}
	switch d.Kind {
	case DistFixed:
		if d.Mean < 1 || d.Mean > maxGenTokens || d.Mean != math.Trunc(d.Mean) {
			return specerr.New(field, d.Mean, "is invalid for a fixed length: set a whole number of tokens in 1..%d", maxGenTokens)
		}
	case DistUniform:
		if d.Min < 1 || d.Max < d.Min || d.Max > maxGenTokens {
			return specerr.New(field, fmt.Sprintf("uniform(%v, %v)", d.Min, d.Max), "is invalid: set 1 ≤ min ≤ max ≤ %d", maxGenTokens)
		}
	case DistNormal:
		if d.Mean < 1 || d.Mean > maxGenTokens || d.Stddev < 0 {
			return specerr.New(field, fmt.Sprintf("normal(mean %v, stddev %v)", d.Mean, d.Stddev), "is invalid: set 1 ≤ mean ≤ %d and stddev ≥ 0", maxGenTokens)
		}
	case "":
		return specerr.New(field+".kind", nil, "is empty: use %q, %q or %q", DistFixed, DistUniform, DistNormal)
	default:
		return specerr.New(field+".kind", fmt.Sprintf("%q", d.Kind), "is unknown: use %q, %q or %q", DistFixed, DistUniform, DistNormal)
	}
	return nil
}

// lowest returns the smallest length d can draw.
func (d LengthDist) lowest() int {
	switch d.Kind {
	case DistUniform:
		return int(math.Ceil(d.Min))
	case DistNormal:
		return 1
	}
	return int(d.Mean)
}

// draw returns one length from d, at least 1.
func (d LengthDist) draw(r *rand.Rand) int {
	var v float64
	switch d.Kind {
	case DistUniform:
		lo, hi := int64(math.Ceil(d.Min)), int64(math.Floor(d.Max))
		if hi < lo {
			hi = lo
		}
		v = float64(lo + r.Int64N(hi-lo+1))
	case DistNormal:
		v = math.Round(d.Mean + d.Stddev*r.NormFloat64())
	default:
		v = d.Mean
	}
	return int(min(max(v, 1), maxGenTokens))
}

// WorkloadGen says how to generate each request's prompt and length. The
// zero value sends Workload.Prompt with Workload.MaxTokens.
type WorkloadGen struct {
	// Kind is one of the Gen constants; empty means GenFixed.
	Kind string
	// InputLen is the prompt length in tokens (synthetic, shared_prefix).
	InputLen LengthDist
	// OutputLen, when set, fixes each request's max_tokens and sets
	// ignore_eos, so the server generates exactly that many tokens. For
	// datasets it overrides the file's lengths.
	OutputLen LengthDist
	// PrefixLen and NumPrefixes shape shared_prefix prompts.
	PrefixLen   int
	NumPrefixes int
	// UniqueFraction (shared_prefix) is the fraction of requests, spread
	// evenly over the indices, whose prefix is their own random text: 0
	// shares every prefix, 1 none.
	UniqueFraction float64
	// SuffixSeed, when not 0, seeds the text after the prefix instead of
	// Seed: two runs with one Seed and different SuffixSeeds send the same
	// prefixes with different suffixes.
	SuffixSeed uint64
	// Path is the dataset file (jsonl, sharegpt).
	Path string
	// Seed makes the prompts reproducible.
	Seed uint64
}

func (g *WorkloadGen) validate(w Workload) error {
	switch g.Kind {
	case "", GenFixed:
		if w.Prompt == "" {
			return specerr.New("workload.prompt", nil, "is empty: set a prompt, or use a generator such as synthetic")
		}
	case GenSynthetic, GenSharedPrefix:
		if err := g.InputLen.validate("generator.input_len"); err != nil {
			return err
		}
		if g.Kind == GenSharedPrefix {
			if g.PrefixLen < 1 || g.NumPrefixes < 1 {
				if g.PrefixLen < 1 {
					return specerr.New("generator.prefix_len", g.PrefixLen, "is invalid for shared_prefix: set it ≥ 1")
				}
				return specerr.New("generator.num_prefixes", g.NumPrefixes, "is invalid for shared_prefix: set it ≥ 1")
			}
			if int64(g.PrefixLen)*int64(g.NumPrefixes) > maxPrefixTokens {
				return specerr.New("generator.num_prefixes", g.NumPrefixes, "× prefix_len %d = %d tokens is too many: keep it ≤ %d", g.PrefixLen, int64(g.PrefixLen)*int64(g.NumPrefixes), maxPrefixTokens)
			}
			if !(g.UniqueFraction >= 0 && g.UniqueFraction <= 1) {
				return specerr.New("generator.unique_fraction", g.UniqueFraction, "is out of range: use a fraction in [0, 1]")
			}
			if lo := g.InputLen.lowest(); g.InputLen.Kind != DistNormal && lo < g.PrefixLen {
				return specerr.New("generator.input_len", nil, "can be %d tokens, below prefix_len %d: make every input length ≥ prefix_len", lo, g.PrefixLen)
			}
		}
	case GenJSONL, GenShareGPT:
		if g.Path == "" {
			return specerr.New("generator.path", nil, "is empty for %s: name the dataset file", g.Kind)
		}
	default:
		return specerr.New("generator.kind", fmt.Sprintf("%q", g.Kind), "is unknown: use %q, %q, %q, %q or %q", GenFixed, GenSynthetic, GenSharedPrefix, GenJSONL, GenShareGPT)
	}
	if !g.OutputLen.IsZero() {
		if err := g.OutputLen.validate("generator.output_len"); err != nil {
			return err
		}
	}
	return nil
}

// needsMaxTokens reports whether requests take Workload.MaxTokens.
func (g *WorkloadGen) needsMaxTokens() bool {
	return g.OutputLen.IsZero() && g.Kind != GenShareGPT && g.Kind != GenJSONL
}

// Prompt is what one request sends.
type Prompt struct {
	Text      string
	MaxTokens int
	IgnoreEOS bool
	// Tokens is the prompt length the generator drew (synthetic and
	// shared-prefix prompts), exact once the generator was sized with the
	// server's tokenizer (SizeWithServer); 0 when the generator does not
	// choose lengths (fixed prompts, datasets).
	Tokens int
}

// entry is one dataset prompt; out is 0 when the file gave no length.
type entry struct {
	text string
	out  int
}

// Generator builds request i's prompt from (seed, i) alone, so that any
// agent can build the prompts of its own segment and the global sequence is
// the same however the run is split. It is immutable and safe for
// concurrent use.
type Generator struct {
	w        Workload
	g        WorkloadGen
	prefixes []string
	entries  []entry
	// overhead is the tokens the server adds around a prompt's words (a
	// chat template, special tokens), found by SizeWithServer; a prompt of
	// n tokens then carries n − overhead words.
	overhead int
}

// NewGenerator validates g and prepares it: it builds the shared prefixes
// and, for datasets, reads the file with open and shuffles its entries with
// the seed.
func NewGenerator(w Workload, g WorkloadGen, open func(path string) (io.ReadCloser, error)) (*Generator, error) {
	if g.Kind == "" {
		g.Kind = GenFixed
	}
	if err := g.validate(w); err != nil {
		return nil, err
	}
	gen := &Generator{w: w, g: g}
	switch g.Kind {
	case GenSharedPrefix:
		for j := range g.NumPrefixes {
			r := seeded(g.Seed^saltPrefix, uint64(j))
			var b strings.Builder
			writeWords(&b, r, g.PrefixLen)
			gen.prefixes = append(gen.prefixes, b.String())
		}
	case GenJSONL, GenShareGPT:
		if open == nil {
			return nil, fmt.Errorf("generator.path %q: this agent reads no dataset files: use a synthetic generator or give the agent a dataset directory", g.Path)
		}
		f, err := open(g.Path)
		if err != nil {
			return nil, fmt.Errorf("generator.path: %w", err)
		}
		defer f.Close()
		rd := io.LimitReader(f, maxDatasetBytes)
		if g.Kind == GenJSONL {
			// Its errors start "path:line:".
			if gen.entries, err = readJSONL(g.Path, rd); err != nil {
				return nil, fmt.Errorf("generator.path: %w", err)
			}
		} else if gen.entries, err = readShareGPT(rd); err != nil {
			return nil, fmt.Errorf("generator.path %s: %w", g.Path, err)
		}
		if len(gen.entries) == 0 {
			return nil, fmt.Errorf("generator.path %s holds no usable prompt: check the file's format (%s)", g.Path, g.Kind)
		}
		if g.OutputLen.IsZero() && w.MaxTokens < 1 {
			for i, e := range gen.entries {
				if e.out < 1 {
					return nil, fmt.Errorf("generator.path %s: prompt %d has no output length and workload.max_tokens is 0: set max_tokens or an output length", g.Path, i+1)
				}
			}
		}
		r := seeded(g.Seed^saltShuffle, 0)
		r.Shuffle(len(gen.entries), func(i, j int) { gen.entries[i], gen.entries[j] = gen.entries[j], gen.entries[i] })
	}
	return gen, nil
}

// Seed salts keep the streams of prefixes, prompts, lengths and the dataset
// shuffle independent.
const (
	saltPrefix  = 0x70726566
	saltPrompt  = 0x70726f6d
	saltOutput  = 0x6f757470
	saltShuffle = 0x73687566
	saltUnique  = 0x756e6971
)

// unique reports whether request i of a shared_prefix generator takes its
// own prefix: ⌊(i+1)·f⌋ > ⌊i·f⌋ spreads a fraction f evenly, so every
// window of requests holds about f of them.
func (gen *Generator) unique(i uint64) bool {
	f := gen.g.UniqueFraction
	if f <= 0 {
		return false
	}
	return math.Floor(float64(i+1)*f) > math.Floor(float64(i)*f)
}

func seeded(seed, i uint64) *rand.Rand {
	return rand.New(rand.NewPCG(mix(seed), mix(i)))
}

// Prompt returns request i's prompt. It is a pure function of the
// generator's configuration and i.
func (gen *Generator) Prompt(i uint64) Prompt {
	g, w := &gen.g, &gen.w
	p := Prompt{Text: w.Prompt, MaxTokens: w.MaxTokens, IgnoreEOS: w.IgnoreEOS}
	switch g.Kind {
	case GenSynthetic, GenSharedPrefix:
		seed := g.Seed
		if g.SuffixSeed != 0 {
			seed = g.SuffixSeed
		}
		r := seeded(seed^saltPrompt, i)
		n := g.InputLen.draw(r)
		p.Tokens = n
		n = max(n-gen.overhead, 1)
		var b strings.Builder
		if g.Kind == GenSharedPrefix {
			pre := gen.prefixes[i%uint64(len(gen.prefixes))]
			if gen.unique(i) {
				var u strings.Builder
				writeWords(&u, seeded(g.Seed^saltUnique, i), g.PrefixLen)
				pre = u.String()
			}
			b.Grow(len(pre) + 5*max(n-g.PrefixLen+1, 0))
			b.WriteString(pre)
			n = max(n-g.PrefixLen, 0)
		} else {
			b.Grow(5 * n)
		}
		writeWords(&b, r, n)
		p.Text = b.String()
	case GenJSONL, GenShareGPT:
		e := gen.entries[i%uint64(len(gen.entries))]
		p.Text = e.text
		if e.out > 0 {
			p.MaxTokens = e.out
		}
	}
	if !g.OutputLen.IsZero() {
		p.MaxTokens = g.OutputLen.draw(seeded(g.Seed^saltOutput, i))
		p.IgnoreEOS = true
	}
	return p
}

// words are common short English words: each is one token in the
// simulator (≤ 4 characters) and, with its leading space, usually one token
// in BPE tokenisers too.
var words = strings.Fields(`the of and to in is it you that he was for on are as with his they at be
this have from or one had by but not what all were we when your can said there use an each
which she do how if will up other out many then them so some her make like him into time has
look two more go see no way could my than been call who its now find long down day did get
come made may part over new take only work know year live me back give most very after
thing our just name good man think say help line turn much mean move same tell boy
follow came want show also form three small set put end does well large must big even such
why ask went men read need land here home us old try kind hand high word cat dog sun red
blue top car far sea eye run own`)

func init() {
	kept := words[:0]
	for _, w := range words {
		if utf8.RuneCountInString(w) <= 4 {
			kept = append(kept, w)
		}
	}
	words = kept
}

// writeWords appends n random words, each preceded by a space when b is
// not empty.
func writeWords(b *strings.Builder, r *rand.Rand, n int) {
	for range n {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[r.IntN(len(words))])
	}
}

// ApproxTokens counts tokens as the simulator's tokeniser does: each
// whitespace-separated word counts ⌈runes/4⌉. Real tokenisers give about
// 1.3 tokens per English word, so it is an estimate for real servers.
func ApproxTokens(s string) int {
	n := 0
	for _, w := range strings.Fields(s) {
		n += (utf8.RuneCountInString(w) + 3) / 4
	}
	return n
}

// readJSONL reads one JSON object per line: {"prompt": "..."} with an
// optional "max_tokens" or "output_len", or {"messages": [{"role": "user",
// "content": "..."}]}, whose first user message is the prompt. Errors start
// "name:line:"; a line over maxDatasetPrompt bytes is refused with its
// length, counted without being held in memory.
func readJSONL(name string, r io.Reader) ([]entry, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var out []entry
	var buf []byte
	for line := 1; ; line++ {
		buf = buf[:0]
		n := 0
		var err error
		var chunk []byte
		for {
			chunk, err = br.ReadSlice('\n')
			n += len(chunk)
			if n <= maxDatasetPrompt+2 { // the line and its CR LF
				buf = append(buf, chunk...)
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s:%d: read: %w", name, line, err)
		}
		eof := err != nil
		if content := n - eolLen(chunk); content > maxDatasetPrompt {
			return nil, fmt.Errorf("%s:%d: line is %d bytes, over the %d MiB limit: shorten the prompt or split the line", name, line, content, maxDatasetPrompt>>20)
		}
		b := bytes.TrimSpace(buf)
		if len(b) == 0 {
			if eof {
				break
			}
			continue
		}
		var rec struct {
			Prompt    *string `json:"prompt"`
			MaxTokens *int    `json:"max_tokens"`
			OutputLen *int    `json:"output_len"`
			Messages  []struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"messages"`
		}
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, fmt.Errorf("%s:%d: %w: write one JSON object per line, such as {\"prompt\": \"...\", \"max_tokens\": 128}", name, line, err)
		}
		e := entry{}
		switch {
		case rec.Prompt != nil:
			e.text = *rec.Prompt
		default:
			for _, m := range rec.Messages {
				if m.Role == "user" {
					e.text = m.Content
					break
				}
			}
		}
		if e.text == "" {
			return nil, fmt.Errorf("%s:%d: line has no prompt: give a non-empty \"prompt\" or a user message in \"messages\"", name, line)
		}
		for _, n := range []*int{rec.MaxTokens, rec.OutputLen} {
			if n != nil {
				if *n < 1 {
					return nil, fmt.Errorf("%s:%d: output length %d is invalid: give max_tokens ≥ 1 or leave it out", name, line, *n)
				}
				e.out = *n
			}
		}
		out = append(out, e)
		if eof {
			break
		}
	}
	return out, nil
}

// eolLen returns the length of the line ending that ends a line's last
// chunk: 2 for CR LF, 1 for LF, 0 at the end of the file.
func eolLen(last []byte) int {
	n := len(last)
	if n == 0 || last[n-1] != '\n' {
		return 0
	}
	if n >= 2 && last[n-2] == '\r' {
		return 2
	}
	return 1
}

// readShareGPT reads a ShareGPT array and keeps, for each conversation, the
// first human turn as the prompt and the reply after it for the output
// length, skipping what vLLM's sampler skips.
func readShareGPT(r io.Reader) ([]entry, error) {
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, errors.New(`not a ShareGPT file: want a JSON array of {"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]}`)
	}
	var out []entry
	for i := 0; dec.More(); i++ {
		var conv struct {
			Conversations []struct {
				From  string `json:"from"`
				Value string `json:"value"`
			} `json:"conversations"`
		}
		if err := dec.Decode(&conv); err != nil {
			return nil, fmt.Errorf("conversation %d: %w", i, err)
		}
		c := conv.Conversations
		k := 0
		for k < len(c) && c[k].From != "human" {
			k++
		}
		if k+1 >= len(c) || c[k+1].From != "gpt" {
			continue
		}
		in, out1 := ApproxTokens(c[k].Value), ApproxTokens(c[k+1].Value)
		if in < shareGPTMinLen || out1 < shareGPTMinLen || in > shareGPTMaxPrompt || in+out1 > shareGPTMaxTotal {
			continue
		}
		out = append(out, entry{text: c[k].Value, out: out1})
	}
	return out, nil
}

// ParseExtraBody parses an extra request body: a JSON object whose keys are
// merged into every request. Keys that would break the measurement are
// refused.
func ParseExtraBody(s string) (map[string]any, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil || m == nil || dec.More() {
		if err == nil {
			err = errors.New("not a single object")
		}
		return nil, fmt.Errorf("extra body is not a JSON object (%v): write for example {\"min_tokens\": 16}", err)
	}
	for _, k := range []string{"stream", "prompt", "messages", "model"} {
		if _, ok := m[k]; ok {
			return nil, fmt.Errorf("extra body sets %q, which the agent controls: remove it (set the model, prompt and API through their own options)", k)
		}
	}
	return m, nil
}

// validHeaders checks extra header names and values.
func validHeaders(h map[string]string) error {
	for k, v := range h {
		if k == "" || strings.IndexFunc(k, func(r rune) bool {
			return r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r)
		}) >= 0 {
			return fmt.Errorf("target.headers name %q is not a valid header name: use letters, digits and -", k)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("target.headers %q has a line break in its value: remove it", k)
		}
		switch strings.ToLower(k) {
		case "content-length", "transfer-encoding", "connection", "host", "content-type":
			return fmt.Errorf("target.headers sets %q, which the HTTP client controls: remove it", k)
		}
	}
	return nil
}

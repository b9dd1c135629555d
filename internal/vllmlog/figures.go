package vllmlog

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"time"
)

// Figures are the startup figures of one vLLM log, in the form
// `ttftlab vllm parse-log` prints: every field is a number, or nil (JSON
// null) when the log did not say.
type Figures struct {
	WeightsLoadS         *float64 `json:"weights_load_s"`
	ModelLoadGiB         *float64 `json:"model_load_gib"`
	ModelLoadS           *float64 `json:"model_load_s"`
	CompileS             *float64 `json:"compile_s"`
	GraphCaptureS        *float64 `json:"graph_capture_s"`
	GraphCaptureGiB      *float64 `json:"graph_capture_gib"`
	KVCacheTokens        *int64   `json:"kv_cache_tokens"`
	MaxConcurrency       *float64 `json:"max_concurrency"`
	MaxConcurrencyTokens *int64   `json:"max_concurrency_tokens"`
	EngineInitS          *float64 `json:"engine_init_s"`
	FirstToReadyS        *float64 `json:"first_to_ready_s"`
	// Error is the classified failure, "kind: message", or nil.
	Error *string `json:"error"`
	// AvailableKVGiB is carried to EngineInfo but not printed by parse-log.
	AvailableKVGiB *float64 `json:"-"`
}

// CompileS is the time spent in torch.compile: the engine's own total
// ("torch.compile takes X s in total"), else the "(compilation: X s)" of
// the init engine line, else the sum of the Dynamo transform and the graph
// compile (or compile-cache load) times; nil when the engine did not
// compile (--enforce-eager).
func (r Result) CompileS() *float64 {
	switch {
	case r.TorchCompileTotalS != nil:
		return new(*r.TorchCompileTotalS)
	case r.InitCompileS != nil:
		return new(*r.InitCompileS)
	}
	var sum float64
	any := false
	for _, f := range []*float64{r.DynamoTransform, r.CompileGraphS, r.CompileCacheS} {
		if f != nil {
			sum += *f
			any = true
		}
	}
	if !any {
		return nil
	}
	return &sum
}

// Figures returns the result's startup figures.
func (r Result) Figures() Figures {
	f := Figures{
		WeightsLoadS:         r.LoadWeightsS,
		ModelLoadGiB:         r.ModelLoadGiB,
		ModelLoadS:           r.ModelLoadS,
		CompileS:             r.CompileS(),
		GraphCaptureS:        r.GraphCaptureS,
		GraphCaptureGiB:      r.GraphCaptureGiB,
		KVCacheTokens:        r.KVCacheTokens,
		MaxConcurrency:       r.MaxConcurrency,
		MaxConcurrencyTokens: r.MaxConcurrencyTokens,
		EngineInitS:          r.InitEngineS,
		FirstToReadyS:        r.FirstToReadyS,
		AvailableKVGiB:       r.AvailableKVGiB,
	}
	if fl, ok := r.RootCause(); ok {
		f.Error = new(fl.String())
	}
	return f
}

// maxLogLine bounds one line read by ParseLog; longer lines are cut.
const maxLogLine = 1 << 20

// ParseLog parses a whole saved log. Lines arrive at the offsets their own
// timestamps give (from the first timestamped line; lines without one
// take the last seen), so phases keep their shape.
func ParseLog(r io.Reader) (Result, error) {
	spawn := time.Now()
	p := NewParser(spawn)
	var clock stampClock
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := readLine(br)
		if len(line) > 0 || err == nil {
			if t := ParseLine(line).Time; t != "" {
				clock.observe(t)
			}
			var off time.Duration
			if clock.ok {
				off = clock.last.Sub(clock.first)
			}
			p.Line(spawn.Add(off), strings.TrimRight(line, "\r"))
		}
		if err == io.EOF {
			return p.Result(), nil
		}
		if err != nil {
			return p.Result(), fmt.Errorf("read log: %w", err)
		}
	}
}

// readLine reads one '\n'-terminated line, cut at maxLogLine bytes.
func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if len(b)+len(chunk) <= maxLogLine {
			b = append(b, chunk...)
		}
		if err != nil {
			return string(b), err
		}
		if !isPrefix {
			return string(b), nil
		}
	}
}

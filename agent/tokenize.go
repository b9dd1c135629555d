package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ttftlab/ttftlab/internal/oai"
)

// Prompt length sources, as in Report.PromptLenSource: where the prompt
// lengths a run reports come from.
const (
	// PromptLenTokenize: the prompts were sized with the server's
	// tokenizer (POST /tokenize), so each is exactly its requested length.
	PromptLenTokenize = "tokenize"
	// PromptLenUsage: the server's usage.prompt_tokens counted them.
	PromptLenUsage = "usage"
	// PromptLenEstimate: neither; the word-count estimate (ApproxTokens).
	PromptLenEstimate = "estimate"
)

// TokenCounter counts a prompt's tokens as a request of api for model
// would be charged. A Sender that is one (*oai.Client, through vLLM's
// /tokenize) lets a run size synthetic prompts exactly.
type TokenCounter interface {
	Tokenize(ctx context.Context, baseURL, apiKey, model, api, prompt string) (int, error)
}

// sizeTimeout bounds the tokenize calls of SizeWithServer.
const sizeTimeout = 30 * time.Second

// maxSizeRounds bounds the build–tokenize–adjust rounds at one length.
const maxSizeRounds = 6

// ErrCannotSize is wrapped by SizeWithServer's error when the server's
// tokenizer cannot be matched: the run goes on with estimated lengths.
var ErrCannotSize = errors.New("prompts cannot be sized exactly")

// SizeWithServer makes synthetic and shared-prefix prompts exactly their
// drawn length as the server counts them, as vLLM's bench aligns its random
// prompts with /tokenize: it builds request 0's prompt, asks the server for
// its length, and moves the number of words by the difference (the chat
// template and special tokens the server adds) until they agree, then
// checks the shortest and longest lengths the distribution can draw with
// the same correction. It reports whether the generator now sizes prompts
// exactly (false for generators that choose no lengths, and for a server
// without /tokenize). The error wraps ErrCannotSize when the server answers
// but no word count matches, and ErrInvalidSpec when the requested length
// is shorter than what the server adds to every prompt. Call it before the
// generator is used concurrently.
func (gen *Generator) SizeWithServer(ctx context.Context, tc TokenCounter, t Target) (bool, error) {
	if gen.g.Kind != GenSynthetic && gen.g.Kind != GenSharedPrefix {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, sizeTimeout)
	defer cancel()
	count := func(i uint64) (want, got int, err error) {
		p := gen.Prompt(i)
		n, err := tc.Tokenize(ctx, t.BaseURL, t.APIKey, t.Model, t.API, p.Text)
		return p.Tokens, n, err
	}
	gen.overhead = 0
	want, got, err := count(0)
	if errors.Is(err, oai.ErrNoTokenize) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrCannotSize, err)
	}
	for round := 0; got != want; round++ {
		if round == maxSizeRounds {
			gen.overhead = 0
			return false, fmt.Errorf("%w: after %d rounds a prompt of %d tokens still counts %d on the server", ErrCannotSize, maxSizeRounds, want, got)
		}
		gen.overhead += got - want
		if gen.overhead >= want {
			over := gen.overhead
			gen.overhead = 0
			return false, fmt.Errorf("%w: generator.input_len %d is not above the %d tokens the server adds to every %s prompt (chat template, special tokens): request more than %d tokens",
				ErrInvalidSpec, want, over, t.API, over)
		}
		if _, got, err = count(0); err != nil {
			gen.overhead = 0
			return false, fmt.Errorf("%w: %w", ErrCannotSize, err)
		}
	}
	// The same correction must hold at the extremes of the distribution.
	for _, i := range gen.extremes() {
		want, got, err := count(i)
		if err != nil {
			return false, fmt.Errorf("%w: %w", ErrCannotSize, err)
		}
		if got != want {
			return false, fmt.Errorf("%w: request %d's prompt of %d tokens counts %d on the server (%d counted for request 0): the tokenizer splits the words unevenly", ErrCannotSize, i, want, got, gen.overhead)
		}
	}
	return true, nil
}

// extremes returns the indices, among the first 1,000 requests, of the
// shortest and longest prompt lengths drawn, when they differ from request
// 0's.
func (gen *Generator) extremes() []uint64 {
	if gen.g.InputLen.Kind == DistFixed {
		return nil
	}
	first := gen.Prompt(0).Tokens
	lo, hi := uint64(0), uint64(0)
	loN, hiN := first, first
	for i := uint64(1); i < 1000; i++ {
		r := seeded(gen.g.Seed^saltPrompt, i)
		n := gen.g.InputLen.draw(r)
		if n < loN {
			lo, loN = i, n
		}
		if n > hiN {
			hi, hiN = i, n
		}
	}
	var out []uint64
	for _, i := range []uint64{lo, hi} {
		if i != 0 {
			out = append(out, i)
		}
	}
	return out
}

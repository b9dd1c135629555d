package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ttftlab/ttftlab/internal/oai"
)

// fakeCounter counts like a server whose template adds overhead tokens and
// whose tokenizer splits words of more than split runes in two.
type fakeCounter struct {
	overhead int
	split    int // 0: every word is one token
	missing  bool
}

func (f fakeCounter) Tokenize(_ context.Context, _, _, _, _, prompt string) (int, error) {
	if f.missing {
		return 0, fmt.Errorf("tokenize: 404: %w", oai.ErrNoTokenize)
	}
	n := f.overhead
	for _, w := range strings.Fields(prompt) {
		n++
		if f.split > 0 && len(w) > f.split {
			n++
		}
	}
	return n, nil
}

func TestSizeWithServer(t *testing.T) {
	synthetic := func(d LengthDist) WorkloadGen { return WorkloadGen{Kind: GenSynthetic, InputLen: d, Seed: 7} }
	tests := []struct {
		name      string
		gen       WorkloadGen
		tc        fakeCounter
		wantSized bool
		wantErr   error
	}{
		{name: "chat template overhead", gen: synthetic(Fixed(1024)), tc: fakeCounter{overhead: 13}, wantSized: true},
		{name: "no overhead", gen: synthetic(Fixed(64)), tc: fakeCounter{}, wantSized: true},
		{name: "uniform lengths", gen: synthetic(LengthDist{Kind: DistUniform, Min: 100, Max: 300}), tc: fakeCounter{overhead: 5}, wantSized: true},
		{name: "shared prefix", gen: WorkloadGen{Kind: GenSharedPrefix, InputLen: Fixed(200), PrefixLen: 50, NumPrefixes: 2}, tc: fakeCounter{overhead: 13}, wantSized: true},
		{name: "no tokenize endpoint", gen: synthetic(Fixed(64)), tc: fakeCounter{missing: true}},
		{name: "uneven tokenizer", gen: synthetic(LengthDist{Kind: DistUniform, Min: 50, Max: 400}), tc: fakeCounter{split: 3}, wantErr: ErrCannotSize},
		{name: "shorter than template", gen: synthetic(Fixed(10)), tc: fakeCounter{overhead: 13}, wantErr: ErrInvalidSpec},
		{name: "fixed prompt is not sized", gen: WorkloadGen{}, tc: fakeCounter{overhead: 13}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gen, err := NewGenerator(Workload{Prompt: "hi", MaxTokens: 4}, tt.gen, nil)
			if err != nil {
				t.Fatal(err)
			}
			sized, err := gen.SizeWithServer(context.Background(), tt.tc, Target{BaseURL: "http://x", Model: "m", API: oai.APIChat})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("SizeWithServer error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || sized != tt.wantSized {
				t.Fatalf("SizeWithServer = %v, %v; want %v", sized, err, tt.wantSized)
			}
			if !sized {
				return
			}
			for i := range uint64(50) {
				p := gen.Prompt(i)
				if got, _ := tt.tc.Tokenize(context.Background(), "", "", "", "", p.Text); got != p.Tokens {
					t.Fatalf("request %d: server counts %d tokens, want exactly %d", i, got, p.Tokens)
				}
			}
		})
	}
}

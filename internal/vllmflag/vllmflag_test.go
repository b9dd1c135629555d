package vllmflag

import (
	"slices"
	"testing"
)

func TestArgs(t *testing.T) {
	on, off := true, false
	tests := []struct {
		name string
		k    Knobs
		want []string
	}{
		{"none set", Knobs{}, nil},
		{"every knob", Knobs{MaxModelLen: 4096, MaxNumBatchedTokens: 2048, MaxNumSeqs: 32, EnableChunkedPrefill: &off,
			GPUMemoryUtilization: 0.85, EnablePrefixCaching: &on, EnforceEager: true, ServedModelName: "m"},
			[]string{"--served-model-name", "m", "--max-model-len", "4096", "--max-num-batched-tokens", "2048", "--max-num-seqs", "32",
				"--no-enable-chunked-prefill", "--gpu-memory-utilization", "0.85", "--enable-prefix-caching",
				"--enforce-eager"}},
		{"booleans the other way", Knobs{EnableChunkedPrefill: &on, EnablePrefixCaching: &off},
			[]string{"--enable-chunked-prefill", "--no-enable-prefix-caching"}},
		{"utilization keeps its digits", Knobs{GPUMemoryUtilization: 0.9}, []string{"--gpu-memory-utilization", "0.9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.k.Args(); !slices.Equal(got, tt.want) {
				t.Errorf("Args() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNegated(t *testing.T) {
	if got := Negated(EnablePrefixCaching); got != "--no-enable-prefix-caching" {
		t.Errorf("Negated = %q", got)
	}
}

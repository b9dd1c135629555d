// Package vllmflag is the one mapping from engine knobs to the flags
// `vllm serve` takes: the gpunode builds the engine's command line from it,
// and the results layer shows the flags a grid point ran with (presets'
// "vllm serve MODEL …" line). It is a leaf: it imports neither gpunode nor
// the generated messages, so both sides may use it.
package vllmflag

import (
	"strconv"
	"strings"
)

// vLLM's flag names for the knobs (argparse spellings; the booleans are
// BooleanOptionalAction, so each also has a "--no-" form).
const (
	MaxModelLen          = "--max-model-len"
	MaxNumBatchedTokens  = "--max-num-batched-tokens"
	MaxNumSeqs           = "--max-num-seqs"
	EnableChunkedPrefill = "--enable-chunked-prefill"
	GPUMemoryUtilization = "--gpu-memory-utilization"
	EnablePrefixCaching  = "--enable-prefix-caching"
	EnforceEager         = "--enforce-eager"
	ServedModelName      = "--served-model-name"
)

// Knobs are the engine settings that become vLLM flags. A zero number, a
// nil boolean and an empty name are unset and give no flag.
type Knobs struct {
	ServedModelName      string
	MaxModelLen          int
	MaxNumBatchedTokens  int
	MaxNumSeqs           int
	EnableChunkedPrefill *bool
	GPUMemoryUtilization float64
	EnablePrefixCaching  *bool
	// EnforceEager has no "--no-" form in use: false is vLLM's default and
	// gives no flag.
	EnforceEager bool
}

// Args returns the flags for every knob that is set, in one fixed order,
// each value its own argument: append them to an argv.
func (k Knobs) Args() []string {
	var a []string
	if k.ServedModelName != "" {
		a = append(a, ServedModelName, k.ServedModelName)
	}
	if k.MaxModelLen > 0 {
		a = append(a, MaxModelLen, strconv.Itoa(k.MaxModelLen))
	}
	if k.MaxNumBatchedTokens > 0 {
		a = append(a, MaxNumBatchedTokens, strconv.Itoa(k.MaxNumBatchedTokens))
	}
	if k.MaxNumSeqs > 0 {
		a = append(a, MaxNumSeqs, strconv.Itoa(k.MaxNumSeqs))
	}
	a = appendBool(a, EnableChunkedPrefill, k.EnableChunkedPrefill)
	if k.GPUMemoryUtilization > 0 {
		a = append(a, GPUMemoryUtilization, strconv.FormatFloat(k.GPUMemoryUtilization, 'f', -1, 64))
	}
	a = appendBool(a, EnablePrefixCaching, k.EnablePrefixCaching)
	if k.EnforceEager {
		a = append(a, EnforceEager)
	}
	return a
}

// Negated returns the "--no-" form of a boolean flag ("--enable-x" →
// "--no-enable-x").
func Negated(flag string) string { return "--no-" + strings.TrimPrefix(flag, "--") }

// appendBool appends argparse's BooleanOptionalAction form of a tri-state.
func appendBool(a []string, flag string, v *bool) []string {
	switch {
	case v == nil:
		return a
	case *v:
		return append(a, flag)
	default:
		return append(a, Negated(flag))
	}
}

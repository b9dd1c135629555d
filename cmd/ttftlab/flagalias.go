package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// This file holds the CLI's flag hygiene: aliases (the deprecated names of
// a setting, and vLLM bench serve's names for ours), "did you mean" for
// unknown flags, and the hint for an engine flag given to a bench command.

// aliasValue is a flag that sets another flag of its set: fs.Set marks
// the target as given, so the command sees one setting under one name.
type aliasValue struct {
	fs           *flag.FlagSet
	name, target string
	// deprecated prints a one-line notice to notice when used.
	deprecated bool
	notice     io.Writer
	// conv rewrites the value for the target; nil passes it on.
	conv func(string) (string, error)
	// note says where the alias comes from, for the help.
	note string
	// set, when not nil, replaces setting the target: for a value the
	// target cannot hold (vLLM's --request-rate inf).
	set func(string) error
}

func (a *aliasValue) String() string { return "" }

func (a *aliasValue) Set(s string) error {
	if a.deprecated {
		fmt.Fprintf(a.notice, "ttftlab: --%s is deprecated: use --%s\n", a.name, a.target)
	}
	if a.set != nil {
		return a.set(s)
	}
	if a.conv != nil {
		v, err := a.conv(s)
		if err != nil {
			return err
		}
		s = v
	}
	if err := a.fs.Set(a.target, s); err != nil {
		return fmt.Errorf("(--%s is --%s) %w", a.name, a.target, err)
	}
	return nil
}

// IsBoolFlag makes an alias of a boolean flag take no value.
func (a *aliasValue) IsBoolFlag() bool {
	f := a.fs.Lookup(a.target)
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// alias registers name as another name of target, which must be
// registered already. deprecated aliases print a notice to stderr.
func alias(fs *flag.FlagSet, name, target string, deprecated bool, stderr io.Writer, note string) *aliasValue {
	if fs.Lookup(target) == nil {
		panic("alias --" + name + " of unregistered --" + target) // a programming error, caught by every command's help test
	}
	a := &aliasValue{fs: fs, name: name, target: target, deprecated: deprecated, notice: stderr, note: note}
	fs.Var(a, name, "alias of --"+target)
	return a
}

// aliasOf returns the alias behind a flag, or nil.
func aliasOf(f *flag.Flag) *aliasValue {
	a, _ := f.Value.(*aliasValue)
	return a
}

// printAliases writes the aliases of fs under their own heading: vLLM's
// names, then the deprecated ones.
func printAliases(w io.Writer, fs *flag.FlagSet) {
	var vllm, old []string
	fs.VisitAll(func(f *flag.Flag) {
		a := aliasOf(f)
		switch {
		case a == nil:
		case a.deprecated:
			old = append(old, fmt.Sprintf("--%s (use --%s)", a.name, a.target))
		default:
			s := fmt.Sprintf("--%s = --%s", a.name, a.target)
			if a.note != "" {
				s += " (" + a.note + ")"
			}
			vllm = append(vllm, s)
		}
	})
	if len(vllm) > 0 {
		fmt.Fprintf(w, "\nvLLM bench serve names, accepted as they are:\n  %s\n", strings.Join(vllm, "\n  "))
	}
	if len(old) > 0 {
		fmt.Fprintf(w, "\nDeprecated names, still accepted with a notice:\n  %s\n", strings.Join(old, ", "))
	}
}

// engineFlags are `vllm serve` flags that configure the engine, not a
// benchmark: given to a bench command they get a hint where they belong.
var engineFlags = []string{
	"max-model-len", "gpu-memory-utilization", "max-num-seqs", "max-num-batched-tokens", "enforce-eager",
	"enable-prefix-caching", "no-enable-prefix-caching", "enable-chunked-prefill", "no-enable-chunked-prefill",
	"tensor-parallel-size", "tp", "pipeline-parallel-size", "pp", "data-parallel-size", "dtype", "kv-cache-dtype",
	"quantization", "block-size", "swap-space", "trust-remote-code", "kv-cache-memory-bytes", "served-model-name",
	"max-seq-len-to-capture", "cpu-offload-gb", "compilation-config", "load-format", "download-dir", "host", "port",
	"disable-log-stats", "disable-log-requests", "enable-prompt-tokens-details", "speculative-config",
}

// parseFlags parses args into fs like fs.Parse, but refuses an unknown
// flag with a suggestion first: the nearest flag or alias of the command
// by edit distance, or, for an engine flag given to a command without it,
// where it belongs.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := checkUnknown(fs, args); err != nil {
		return err
	}
	return fs.Parse(args)
}

// errUnknownFlag marks an unknown flag's error.
var errUnknownFlag = errors.New("unknown flag")

// checkUnknown walks args as the flag package would (flags until the
// first argument, values of non-boolean flags skipped) and returns an
// error for the first unknown flag.
func checkUnknown(fs *flag.FlagSet, args []string) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || a[0] != '-' {
			continue // an argument; compare takes flags after them too
		}
		if a == "--" {
			return nil
		}
		name := strings.TrimLeft(a, "-")
		name, _, hasValue := strings.Cut(name, "=")
		if name == "h" || name == "help" || name == "" {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			return unknownFlagError(fs, name)
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); (!ok || !b.IsBoolFlag()) && !hasValue {
			i++ // its value
		}
	}
	return nil
}

func unknownFlagError(fs *flag.FlagSet, name string) error {
	cmd := strings.TrimPrefix(fs.Name(), "ttftlab ")
	if cmd != "sim" && slices.Contains(engineFlags, name) {
		return fmt.Errorf("%w --%s: that is an engine flag, not a benchmark one: set it on the gpunode profile / ttftlab sim --%s", errUnknownFlag, name, name)
	}
	best, bestD := "", 1<<30
	fs.VisitAll(func(f *flag.Flag) {
		if d := editDistance(name, f.Name); d < bestD || (d == bestD && f.Name < best) {
			best, bestD = f.Name, d
		}
	})
	if best != "" && bestD <= max(2, len(name)/3) {
		return fmt.Errorf("%w --%s: did you mean --%s?", errUnknownFlag, name, best)
	}
	return fmt.Errorf("%w --%s: ttftlab %s has no such flag; 'ttftlab %s -h' lists them", errUnknownFlag, name, cmd, cmd)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

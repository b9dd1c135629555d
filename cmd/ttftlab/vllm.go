package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ttftlab/ttftlab/internal/vllmlog"
)

const vllmUsage = `
parse-log reads a saved vLLM log (any version from 0.6, V0 or V1, with or
without process prefixes and colour codes; "-" reads standard input) and
prints one JSON object: weights_load_s, model_load_gib, model_load_s,
compile_s, graph_capture_s, graph_capture_gib, kv_cache_tokens,
max_concurrency, max_concurrency_tokens, engine_init_s, first_to_ready_s
(each a number, or null when the log does not say) and error (the
classified failure, "kind: message", or null).
`

// printVLLMHelp writes the help of `ttftlab vllm`.
func printVLLMHelp(w io.Writer) {
	helpHeader(w, "vllm")
	fmt.Fprint(w, vllmUsage)
}

// runVLLM implements `ttftlab vllm SUBCOMMAND`.
func runVLLM(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		printVLLMHelp(stderr)
		return errors.New("vllm: no subcommand given; try 'ttftlab vllm parse-log FILE'")
	}
	switch args[0] {
	case "parse-log":
		return runVLLMParseLog(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		printVLLMHelp(stdout)
		return nil
	}
	printVLLMHelp(stderr)
	return fmt.Errorf("vllm: unknown subcommand %q; try 'ttftlab vllm parse-log FILE'", args[0])
}

func runVLLMParseLog(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ttftlab vllm parse-log", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { printVLLMHelp(stderr) }
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("vllm parse-log takes one log file (or - for standard input), got %d arguments", fs.NArg())
	}
	var in io.Reader = os.Stdin
	name := fs.Arg(0)
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("vllm parse-log: %w", err)
		}
		defer f.Close()
		in = f
	}
	res, err := vllmlog.ParseLog(in)
	if err != nil {
		return fmt.Errorf("vllm parse-log: %w", err)
	}
	if res.EngineLines == 0 {
		if name == "-" {
			name = "standard input"
		}
		return fmt.Errorf("vllm parse-log: no vLLM log lines found in %s (%d lines read): is this an engine log? Give the output of `vllm serve` (stdout and stderr)", name, res.Lines)
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(res.Figures())
}

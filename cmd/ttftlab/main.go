// Command ttftlab measures how fast LLM inference servers answer: cold
// against warm time-to-first-token after a restart, and latency under load
// driven from several hosts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one `ttftlab COMMAND`.
type command struct {
	name string
	// summary is the one-line description that opens its --help and its
	// line in the command list.
	summary string
	// usage is its synopsis, e.g. "ttftlab up [flags]".
	usage string
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands lists every subcommand, in the order the command list shows.
func commands() []command {
	return []command{
		{"up", "Run a coordinator, a gpunode and agents in one process and measure cold against warm TTFT.",
			"ttftlab up [flags]", runUp},
		{"coordinator", "Run the coordinator daemon, which drives the gpunodes and agents and writes the results.",
			"ttftlab coordinator [flags]", runCoordinator},
		{"agent", "Run an agent daemon, which generates load when the coordinator asks.",
			"ttftlab agent [flags]", runAgent},
		{"gpunode", "Run a gpunode daemon, which owns the engine process, parses its log and samples the GPU.",
			"ttftlab gpunode [flags]", runGPUNode},
		{"sim", "Run the simulated vLLM engine (vLLM's flags, logs, metrics and OpenAI API).",
			"ttftlab sim [MODEL] [flags]", runSim},
		{"baseline", "Run the cold/warm TTFT baseline on a running cluster.",
			"ttftlab baseline --coordinator ADDR [flags]", runBaseline},
		{"sweep", "Run a load sweep over concurrencies or rates, split across the cluster's agents.",
			"ttftlab sweep --coordinator ADDR [flags]", runSweep},
		{"kvscale", "Check KV capacity and the onset of preemption over a max-model-len × utilisation grid.",
			"ttftlab kvscale [--coordinator ADDR] [--max-model-len 2048,4096] [--gpu-memory-utilization 0.5,0.9] [flags]", runKVScale},
		{"prefix", "Measure prefix caching: cold vs hot TTFT, on vs off, with every cache reset verified.",
			"ttftlab prefix [--coordinator ADDR] [--prefix-lens 0,256,1024,4096] [--suffix-len 128] [--hit-ratios 0,0.5,1] [flags]", runPrefix},
		{"presets", "Recommend interactive and throughput engine presets from a scheduler-knob grid.",
			"ttftlab presets [--coordinator ADDR] [--max-num-batched-tokens 2048,8192] [--max-num-seqs 32,128] [--chunked-prefill on,off] [flags]", runPresets},
		{"members", "List the cluster's members and their labels as the coordinator sees them.",
			"ttftlab members --coordinator ADDR [flags]", runMembers},
		{"runs", "List the coordinator's runs: queued (with their place), running and done.",
			"ttftlab runs --coordinator ADDR [--limit N] [--json]", runRuns},
		{"load", "Drive load against an OpenAI-compatible server from this process, no cluster needed.",
			"ttftlab load --url URL [--model M] [flags]", runLoad},
		{"probe", "Stream one request and print its TTFT, E2E and token counts as one JSON line.",
			"ttftlab probe --url URL [--model M] [flags]", runProbe},
		{"kv", "Compute vLLM's KV-cache capacity: blocks, KV tokens and maximum concurrency per max-model-len.",
			"ttftlab kv (--model NAME | --model-config PATH) (--gpu NAME | --gpu-memory-gib GIB) [flags]", runKV},
		{"vllm", "vLLM helpers: parse-log prints a saved vLLM log's startup figures as JSON.",
			"ttftlab vllm parse-log FILE", runVLLM},
		{"certs", "Make a lab CA and a node certificate for mutual TLS.",
			"ttftlab certs --dir DIR [--hosts h1,h2]", runCerts},
		{"compare", "Compare two runs level by level with bootstrap intervals, and gate CI on --fail-on rules.",
			"ttftlab compare RUN_A RUN_B [--fail-on RULES] [--json] [--out FILE]", runCompare},
		{"report", "Re-render results.json, the reports and a sweep's save_result/ of a run directory from events.jsonl.",
			"ttftlab report [--save-result DIR [--metric-percentiles P] [--percentile-metrics M] [--result-label L]] RUN_DIR", runReport},
		{"version", "Print the version.",
			"ttftlab version", runVersion},
	}
}

// lookup returns the command called name.
func lookup(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// printCommands writes the command list.
func printCommands(w io.Writer) {
	fmt.Fprint(w, "ttftlab measures how fast LLM inference servers answer.\n\nUsage: ttftlab COMMAND [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nRun 'ttftlab COMMAND --help' for a command's flags.\n")
}

// helpHeader writes the opening of a command's --help: its one-line
// summary, then its usage.
func helpHeader(w io.Writer, name string) {
	c, ok := lookup(name)
	if !ok { // not registered: TestEveryCommandHasHelp fails
		c = command{usage: "ttftlab " + name + " [flags]"}
	}
	if c.summary != "" {
		fmt.Fprintf(w, "%s\n\n", c.summary)
	}
	fmt.Fprintf(w, "Usage: %s\n", c.usage)
}

// newFlagSet returns the flag set of `ttftlab name`: errors and --help go
// to stderr, and --help opens with the command's summary and usage.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ttftlab "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		helpHeader(stderr, name)
		printFlags(stderr, fs)
	}
	return fs
}

// printFlags writes the flag list under a "Flags:" heading, when there are
// any, then the aliases under their own.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	own := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	own.SetOutput(w)
	fs.VisitAll(func(f *flag.Flag) {
		if aliasOf(f) == nil {
			own.Var(f.Value, f.Name, f.Usage)
			own.Lookup(f.Name).DefValue = f.DefValue
		}
	})
	n := 0
	own.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprint(w, "\nFlags:\n")
		own.PrintDefaults()
	}
	printAliases(w, fs)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "ttftlab:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		printCommands(stderr)
		return errors.New("no command given: try 'ttftlab up'")
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "--help":
		printCommands(stdout)
		return nil
	case "--version":
		name = "version"
	}
	if c, ok := lookup(name); ok {
		return c.run(ctx, rest, stdout, stderr)
	}
	printCommands(stderr)
	return fmt.Errorf("unknown command %q: see the list above", strings.TrimSpace(name))
}

// runVersion prints the version.
func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("version takes no arguments, got %q", fs.Arg(0))
	}
	fmt.Fprintln(stdout, "ttftlab", version)
	return nil
}

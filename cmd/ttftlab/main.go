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
	"syscall"
)

const usage = `ttftlab measures how fast LLM inference servers answer.

Usage: ttftlab COMMAND [flags]

Commands:
  up           run a coordinator, a gpunode and agents in one process tree and
               measure cold vs warm TTFT against the simulated engine (default)
  coordinator  run the coordinator daemon
  agent        run an agent daemon
  gpunode      run a gpunode daemon (owns the engine process)
  sim          run the simulated vLLM engine (vLLM's flags and API)
  baseline     run the cold/warm baseline on a running cluster (--coordinator ADDR)
  sweep        run a load sweep over concurrencies or rates, split across the agents (--coordinator ADDR)
  members      list the cluster as the coordinator sees it (--coordinator ADDR)
  load         run a load (closed or open loop) against an OpenAI-compatible URL, no cluster needed
  probe        stream one request and print its TTFT as JSON
  kv           vLLM's KV-cache capacity: blocks, KV tokens, max concurrency per max-model-len
  vllm         vLLM helpers: 'ttftlab vllm parse-log FILE' prints the startup figures as JSON
  certs        make a lab CA and node certificate for mutual TLS (--dir DIR --hosts h1,h2)
  report       re-render results.json and first_token_latency.md from a run directory
  version      print the version

Run 'ttftlab COMMAND --help' for a command's flags.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

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
		fmt.Fprint(stderr, usage)
		return errors.New("no command given: try 'ttftlab up'")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "up":
		return runUp(ctx, rest, stdout, stderr)
	case "coordinator":
		return runCoordinator(ctx, rest, stdout, stderr)
	case "agent":
		return runAgent(ctx, rest, stdout, stderr)
	case "gpunode":
		return runGPUNode(ctx, rest, stdout, stderr)
	case "sim":
		return runSim(ctx, rest, stdout, stderr)
	case "load":
		return runLoad(ctx, rest, stdout, stderr)
	case "probe":
		return runProbe(ctx, rest, stdout, stderr)
	case "baseline":
		return runBaseline(ctx, rest, stdout, stderr)
	case "sweep":
		return runSweep(ctx, rest, stdout, stderr)
	case "members":
		return runMembers(ctx, rest, stdout, stderr)
	case "kv":
		return runKV(ctx, rest, stdout, stderr)
	case "vllm":
		return runVLLM(ctx, rest, stdout, stderr)
	case "certs":
		return runCerts(ctx, rest, stdout, stderr)
	case "report":
		return runReport(ctx, rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "ttftlab", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q: see the list above", cmd)
}

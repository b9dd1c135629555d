package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
	"github.com/ttftlab/ttftlab/internal/node"
)

// coordinatorFlags are the flags of commands that talk to a coordinator.
type coordinatorFlags struct {
	addr string
	node.ClientFlags
}

func (c *coordinatorFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "coordinator", "", "the coordinator's gRPC `host:port`, as the coordinator logs it at start")
	c.RegisterFlags(fs, "the coordinator")
}

func (c *coordinatorFlags) dial(ctx context.Context) (pb.CoordinatorServiceClient, io.Closer, error) {
	if c.addr == "" {
		return nil, nil, fmt.Errorf("--coordinator is required: give the coordinator's gRPC address, e.g. --coordinator 127.0.0.1:7000")
	}
	o, err := c.DialOptions()
	if err != nil {
		return nil, nil, err
	}
	cc, err := node.Dial(ctx, c.addr, o)
	if err != nil {
		return nil, nil, fmt.Errorf("--coordinator %s: %w", c.addr, err)
	}
	return pb.NewCoordinatorServiceClient(cc), cc, nil
}

// runBaseline runs the cold/warm baseline on a running cluster.
func runBaseline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("baseline", stderr)
	var c upConfig
	var cf coordinatorFlags
	cf.register(fs)
	finish := registerBaselineFlags(fs, &c, "", "subdirectory of the coordinator's --out for results/<run>/ (default: the coordinator's --out itself)")
	registerSelectionFlags(fs, &c.baseline.Selection)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := finish(); err != nil {
		return err
	}
	c.baseline.OutDir = c.out
	if err := withSelectionNames(baselineFlagNames()).rename(c.baseline.Validate()); err != nil {
		return err
	}
	client, closer, err := cf.dial(ctx)
	if err != nil {
		return err
	}
	defer closer.Close()
	dir, failure, err := streamBaseline(ctx, client, c.baselineRequest(), stderr)
	if err != nil {
		return err
	}
	report := results.BaselineReport
	if c.baseline.Selection.All {
		report = results.FleetReport // a fleet baseline: one row per gpunode
	}
	if err := printReport(stdout, stderr, dir, report, c.quiet); err != nil {
		return err
	}
	return failure
}

// printReport prints a report when it is on this machine's disk (the
// coordinator may run elsewhere) and says where the results are.
func printReport(stdout, stderr io.Writer, dir, name string, quiet bool) error {
	fmt.Fprintf(stderr, "results: %s (on the coordinator's disk)\n", dir)
	if quiet {
		return nil
	}
	md, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		fmt.Fprintf(stderr, "the report is not on this machine (%v); fetch %s from the coordinator\n", err, filepath.Join(dir, name))
		return nil
	}
	fmt.Fprintf(stdout, "%s\n", md)
	return nil
}

// runMembers lists the cluster as the coordinator sees it.
func runMembers(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("members", stderr)
	var cf coordinatorFlags
	cf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	client, closer, err := cf.dial(ctx)
	if err != nil {
		return err
	}
	defer closer.Close()
	resp, err := client.ListMembers(ctx, &pb.ListMembersRequest{})
	if err != nil {
		return fmt.Errorf("list members: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tGRPC\tSTATE\tPROTOCOL\tLABELS")
	for _, m := range resp.GetMembers() {
		// Labels come from gossip: the coordinator validated them, but
		// print them as a selector would be typed, sorted.
		labels := membership.FormatLabels(m.GetLabels())
		if labels == "" {
			labels = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", m.GetName(), m.GetRole(), m.GetGrpcAddr(), m.GetState(), m.GetProtocolVersion(), labels)
	}
	return tw.Flush()
}

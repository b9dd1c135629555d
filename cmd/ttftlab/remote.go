package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/ttftlab/ttftlab/coordinator"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/labtls"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// coordinatorFlags are the flags of commands that talk to a coordinator.
type coordinatorFlags struct {
	addr      string
	insecure  bool
	tokenFile string
	tlsDir    string
}

func (c *coordinatorFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "coordinator", "", "the coordinator's gRPC address (host:port), as `ttftlab coordinator` logs it")
	fs.BoolVar(&c.insecure, "insecure", false, "allow plaintext gRPC to a non-loopback coordinator")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the cluster's bearer token")
	fs.StringVar(&c.tlsDir, "tls-dir", "", "directory made by `ttftlab certs`: talk to the coordinator over mutual TLS")
}

func (c *coordinatorFlags) dial() (pb.CoordinatorServiceClient, io.Closer, error) {
	if c.addr == "" {
		return nil, nil, fmt.Errorf("--coordinator is required: give the coordinator's gRPC address, e.g. --coordinator 127.0.0.1:7000")
	}
	creds := insecure.NewCredentials()
	if c.tlsDir != "" {
		cfg, err := labtls.ClientConfig(c.tlsDir)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-dir: %w", err)
		}
		creds = credentials.NewTLS(cfg)
	} else if err := coordinator.CheckPlaintext(c.addr, c.insecure); err != nil {
		return nil, nil, fmt.Errorf("--coordinator: %w (or use --tls-dir)", err)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if c.tokenFile != "" {
		tok, err := readToken(c.tokenFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--token-file: %w", err)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearerCreds(tok)))
	}
	cc, err := grpc.NewClient(c.addr, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("--coordinator %s: %w", c.addr, err)
	}
	return pb.NewCoordinatorServiceClient(cc), cc, nil
}

// runBaseline runs the cold/warm baseline on a running cluster.
func runBaseline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c upConfig
	var cf coordinatorFlags
	cf.register(fs)
	finish := registerBaselineFlags(fs, &c, "", "subdirectory of the coordinator's --out for results/<run>/ (default: the coordinator's --out itself)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := finish(); err != nil {
		return err
	}
	c.subdir = c.out
	client, closer, err := cf.dial()
	if err != nil {
		return err
	}
	defer closer.Close()
	dir, failure, err := streamBaseline(ctx, client, c.baselineRequest(), stderr)
	if err != nil {
		return err
	}
	if err := printReport(stdout, stderr, dir, "first_token_latency.md", c.quiet); err != nil {
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
	fs := flag.NewFlagSet("members", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf coordinatorFlags
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	client, closer, err := cf.dial()
	if err != nil {
		return err
	}
	defer closer.Close()
	resp, err := client.ListMembers(ctx, &pb.ListMembersRequest{})
	if err != nil {
		return fmt.Errorf("list members: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tGRPC\tSTATE\tPROTOCOL")
	for _, m := range resp.GetMembers() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", m.GetName(), m.GetRole(), m.GetGrpcAddr(), m.GetState(), m.GetProtocolVersion())
	}
	return tw.Flush()
}

// bearerCreds sends the cluster's bearer token with every call.
type bearerCreds string

func (b bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearerCreds) RequireTransportSecurity() bool { return false }

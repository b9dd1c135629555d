//go:build unix

package sim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// raiseNoFile lifts RLIMIT_NOFILE to its hard limit and reports the result.
func raiseNoFile(tb testing.TB, need uint64) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur < need {
		tb.Skipf("RLIMIT_NOFILE hard limit %d < %d needed", lim.Cur, need)
	}
}

// rawStream sends one streaming completion over a fresh connection, reads
// the SSE events until [DONE] and returns completion_tokens from the usage
// chunk. It is a minimal HTTP/1.1 client so that 10,000 of them cost little
// more than their sockets.
func rawStream(ctx context.Context, addr string, body []byte, dialSem chan struct{}) (tokens int, err error) {
	dialSem <- struct{}{}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	<-dialSem
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	req := fmt.Sprintf("POST /v1/completions HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	if _, err := io.WriteString(conn, req); err != nil {
		return 0, err
	}
	br := bufio.NewReaderSize(conn, 4096)
	key := []byte(`"completion_tokens":`)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return tokens, err
		}
		rest, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			continue
		}
		if bytes.HasPrefix(rest, []byte("[DONE]")) {
			return tokens, nil
		}
		if i := bytes.Index(rest, key); i >= 0 {
			v := rest[i+len(key):]
			n := 0
			for len(v) > 0 && v[0] >= '0' && v[0] <= '9' {
				n = 10*n + int(v[0]-'0')
				v = v[1:]
			}
			tokens = n
		}
	}
}

// BenchmarkTenThousandStreams opens 10,000 concurrent streaming requests
// against one simulated engine and reports whether all were served and how
// late the engine's steps started against the timing model (p50/p99/max
// step-start jitter). Each iteration is one full run; use -benchtime 1x.
//
//	go test -run '^$' -bench TenThousandStreams -benchtime 1x ./internal/sim/
func BenchmarkTenThousandStreams(b *testing.B) {
	for _, bc := range []struct {
		name              string
		maxSeqs, maxBatch int
	}{
		{"default-1024-seqs", 0, 0},              // vLLM's H200 defaults: 1,024 running, the rest queue
		{"all-running-10000-seqs", 10000, 16384}, // every stream decodes in every step
	} {
		b.Run(bc.name, func(b *testing.B) {
			streams, outTokens := 10000, 64
			if n, err := strconv.Atoi(os.Getenv("SIM_STREAMS")); err == nil {
				streams = n // a smaller run, for comparison
			}
			raiseNoFile(b, uint64(streams)+1000)
			c := DefaultConfig()
			c.Port = 0
			c.StateDir = b.TempDir()
			c.StartupScale = 0
			c.FirstRequestDelay = 0
			c.DisableLogStats = true
			c.DisableAccessLog = true
			c.MaxNumSeqs, c.MaxNumBatchedTokens = bc.maxSeqs, bc.maxBatch
			e, err := New(c, io.Discard, nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- e.Run(ctx) }()
			defer func() { cancel(); <-done }()
			<-e.Ready()

			for b.Loop() {
				e.ResetStepJitter()
				res := runStreamClient(b, e.Addr(), streams, outTokens)
				j := e.StepJitter()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				b.ReportMetric(float64(res.Served), "served")
				b.ReportMetric(float64(j.P50.Microseconds()), "jitter-p50-µs")
				b.ReportMetric(float64(j.P99.Microseconds()), "jitter-p99-µs")
				b.ReportMetric(float64(j.Max.Microseconds()), "jitter-max-µs")
				b.ReportMetric(float64(j.Steps), "steps")
				b.ReportMetric(res.Elapsed.Seconds(), "run-s")
				b.Logf("%d/%d streams served (%d failed, %d short) in %v; %d steps (%d > 1 ms late), step-start jitter p50 %v p99 %v p99.9 %v max %v; server GOMAXPROCS %d, heap %d MiB",
					res.Served, streams, res.Failed, res.Short, res.Elapsed.Round(time.Millisecond), j.Steps, j.Late, j.P50, j.P99, j.P999, j.Max,
					runtime.GOMAXPROCS(0), ms.HeapSys>>20)
				if res.FirstErr != "" {
					b.Logf("first error: %s", res.FirstErr)
				}
				if res.Served != streams {
					b.Errorf("served %d of %d streams", res.Served, streams)
				}
			}
		})
	}
}

// streamResult is what the client process reports.
type streamResult struct {
	Served, Failed, Short int
	Elapsed               time.Duration
	FirstErr              string
}

// runStreamClient runs the 10,000 clients in a child process (this test
// binary running TestStreamClientProcess), so that neither process needs
// more than ~10,000 descriptors: a container's RLIMIT_NOFILE hard limit is
// often 20,000, less than both ends of 10,000 connections.
func runStreamClient(tb testing.TB, addr string, streams, outTokens int) streamResult {
	tb.Helper()
	// The client runs at the lowest CPU priority, as if it were on another
	// host: the 2 cores are then the server's whenever it needs them.
	args := []string{os.Args[0], "-test.run=^TestStreamClientProcess$", "-test.count=1"}
	if nice, err := exec.LookPath("nice"); err == nil {
		args = append([]string{nice, "-n", "19"}, args...)
	}
	if cpus := os.Getenv("SIM_CLIENT_CPUS"); cpus != "" {
		// Pin the client elsewhere (e.g. SIM_CLIENT_CPUS=2-3 with the
		// benchmark itself under taskset -c 0,1).
		args = append([]string{"taskset", "-c", cpus}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("SIM_STREAM_CLIENT=%s,%d,%d", addr, streams, outTokens))
	if p := os.Getenv("SIM_CLIENT_GOMAXPROCS"); p != "" {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+p)
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("client process: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if js, ok := strings.CutPrefix(line, "RESULT "); ok {
			var r streamResult
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				tb.Fatal(err)
			}
			return r
		}
	}
	tb.Fatalf("client process printed no result:\n%s", out)
	return streamResult{}
}

// TestStreamClientProcess is the client side of BenchmarkTenThousandStreams;
// it runs only in the child process.
func TestStreamClientProcess(t *testing.T) {
	spec := os.Getenv("SIM_STREAM_CLIENT")
	if spec == "" {
		t.Skip("helper process for BenchmarkTenThousandStreams")
	}
	var addr string
	var streams, outTokens int
	parts := strings.Split(spec, ",")
	if len(parts) != 3 {
		t.Fatalf("SIM_STREAM_CLIENT=%q", spec)
	}
	addr = parts[0]
	streams, _ = strconv.Atoi(parts[1])
	outTokens, _ = strconv.Atoi(parts[2])
	raiseNoFile(t, uint64(streams)+1000)

	var served, failed, short atomic.Int64
	var firstErr atomic.Value
	ctx, stop := context.WithTimeout(context.Background(), 5*time.Minute)
	defer stop()
	dialSem := make(chan struct{}, 128) // bounded dial concurrency keeps the accept backlog short
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range streams {
		body := fmt.Appendf(nil, `{"prompt": "stream %d asks the simulator for some tokens", "max_tokens": %d, "stream": true, "stream_options": {"include_usage": true}}`, i, outTokens)
		wg.Go(func() {
			n, err := rawStream(ctx, addr, body, dialSem)
			switch {
			case err != nil:
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			case n != outTokens:
				short.Add(1)
			default:
				served.Add(1)
			}
		})
	}
	wg.Wait()
	r := streamResult{Served: int(served.Load()), Failed: int(failed.Load()), Short: int(short.Load()), Elapsed: time.Since(t0)}
	r.FirstErr, _ = firstErr.Load().(string)
	js, _ := json.Marshal(r)
	fmt.Printf("RESULT %s\n", js)
}

// BenchmarkSim1024Streams is the simulator's real-time check: one simulated
// H200 (Qwen2.5-1.5B, vLLM's defaults, so all 1,024 streams run in every
// step) serving 1,024 concurrent streaming completions of 256 tokens from a
// child process over loopback. It reports the engine loop's step lateness
// (actual minus modelled step start) at p50 and p99, and the ratio of
// modelled to wall-clock time over the busy steps: 1.00 means the
// simulator kept up with real time. Each iteration is one full run; the
// target is lateness p99 < 1 ms with GOMAXPROCS 2:
//
//	taskset -c 0,1 go test -run '^$' -bench Sim1024Streams -benchtime 1x ./internal/sim/
func BenchmarkSim1024Streams(b *testing.B) {
	const streams, outTokens = 1024, 256
	raiseNoFile(b, streams+1000)
	c := DefaultConfig()
	c.Port = 0
	c.StateDir = b.TempDir()
	c.StartupScale = 0
	c.FirstRequestDelay = 0
	c.DisableLogStats = true
	c.DisableAccessLog = true
	e, err := New(c, io.Discard, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-e.Ready()

	for b.Loop() {
		e.ResetStepJitter()
		res := runStreamClient(b, e.Addr(), streams, outTokens)
		j := e.StepJitter()
		b.ReportMetric(float64(j.P50.Microseconds()), "late-p50-µs")
		b.ReportMetric(float64(j.P99.Microseconds()), "late-p99-µs")
		b.ReportMetric(float64(j.Max.Microseconds()), "late-max-µs")
		b.ReportMetric(j.RealTimeRatio(), "sim/wall")
		b.ReportMetric(float64(j.Steps), "steps")
		b.ReportMetric(float64(res.Served), "served")
		b.Logf("%d/%d streams served in %v; %d steps (%d > 1 ms late), lateness p50 %v p99 %v max %v; simulated %v in %v wall (%.3f); GOMAXPROCS %d",
			res.Served, streams, res.Elapsed.Round(time.Millisecond), j.Steps, j.Late, j.P50, j.P99, j.Max,
			j.Simulated.Round(time.Millisecond), j.Wall.Round(time.Millisecond), j.RealTimeRatio(), runtime.GOMAXPROCS(0))
		if res.Served != streams {
			b.Errorf("served %d of %d streams (first error: %s)", res.Served, streams, res.FirstErr)
		}
	}
}

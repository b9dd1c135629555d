package oai

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
	"github.com/ttftlab/ttftlab/internal/ssebench"
)

// BenchmarkParseChunk measures the per-chunk cost of the SSE line handler:
// one `data:` line of a typical vLLM chunk (VLLM-FACTS §3 shapes, continuous
// usage), scanned and folded into the Result. One op is one chunk.
func BenchmarkParseChunk(b *testing.B) {
	for _, bc := range []struct{ name, json string }{
		{"chat", vllmChat},
		{"completion", vllmCompl},
		{"chat-role", vllmChatRole},
		{"final-usage", vllmUsage},
	} {
		// "+streamed" counts the chunk's tokens into an interval counter, as
		// every agent request does; the plain case is the client alone.
		for _, counted := range []bool{false, true} {
			name := bc.name
			if counted {
				name += "+streamed"
			}
			b.Run(name, func(b *testing.B) {
				line := []byte("data: " + bc.json + "\n")
				r := Result{Send: time.Now(), CachedTokens: -1, Marks: make([]Mark, 0, 1024)}
				s := stream{r: &r, maxLine: defaultMaxLine}
				var streamed atomic.Uint64
				if counted {
					s.streamed = &streamed
				}
				var lr lineReader
				s.preview = lr.preview[:0]
				s.c.preview = &s.preview
				now := time.Now()
				b.ReportAllocs()
				b.SetBytes(int64(len(line)))
				for b.Loop() {
					if len(r.Marks) == cap(r.Marks) {
						r.Marks = r.Marks[:0]
					}
					if s.line(now, trimEOL(line)) {
						b.Fatal("stream ended")
					}
				}
				if r.Err != nil {
					b.Fatal(r.Err)
				}
			})
		}
	}
}

// BenchmarkStream measures one whole streamed request of 1000 tokens from a
// local SSE server that writes as fast as it can, including recording TTFT,
// E2E and one ITL value per token (as the agent's accounting does). It
// reports the client-side cost per token.
func BenchmarkStream(b *testing.B) {
	const tokens = 1000
	var body strings.Builder
	body.WriteString("data: " + oaitest.ChatRole(0) + "\n\n")
	for i := 1; i <= tokens; i++ {
		body.WriteString("data: " + oaitest.ChatContent(" tok", i) + "\n\n")
	}
	body.WriteString("data: " + oaitest.FinalUsage(7, tokens) + "\n\ndata: [DONE]\n\n")
	payload := body.String()
	f := oaitest.NewServer(b, func(w http.ResponseWriter, r *http.Request) {
		oaitest.StartSSE(w).Raw(payload)
	})
	c := newClient(b, Config{MaxConns: 1})
	defer c.Close()
	ttft, e2e, itl := hdr.New(), hdr.New(), hdr.New()
	req := chatReq(f.URL)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		r := c.Do(context.Background(), req)
		if r.Err != nil || r.OutputTokens != tokens {
			b.Fatalf("err %v, tokens %d", r.Err, r.OutputTokens)
		}
		ttft.Record(r.TTFT())
		e2e.Record(r.E2E())
		for i := 1; i < len(r.Marks); i++ {
			gap := r.Marks[i].At - r.Marks[i-1].At
			for range max(r.Marks[i].Tokens, 1) {
				itl.Record(gap / time.Duration(max(r.Marks[i].Tokens, 1)))
			}
		}
		r.Release()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tokens), "ns/token")
	if itl.Count() == 0 {
		b.Fatal("no ITL recorded")
	}
}

// helperEnv marks the child process that serves ssebench for the
// benchmarks below; see TestSSEBenchHelper. helperCertEnv and helperKeyEnv
// carry a PEM certificate and key for a TLS server, and helperHTTP2Env
// asks for the HTTP/2 mode.
const (
	helperEnv      = "TTFTLAB_SSEBENCH_HELPER"
	helperCertEnv  = "TTFTLAB_SSEBENCH_CERT"
	helperKeyEnv   = "TTFTLAB_SSEBENCH_KEY"
	helperHTTP2Env = "TTFTLAB_SSEBENCH_HTTP2"
)

// Helper server modes.
const (
	helperPlain = "plain" // HTTP/1.1 over TCP
	helperTLS   = "tls"   // HTTP/1.1 over TLS
	helperH2    = "h2"    // HTTP/2 over TLS (net/http's server)
)

// TestSSEBenchHelper is not a test: run as a child process with helperEnv
// set, it serves internal/ssebench, prints the URL and serves until its
// stdin closes. Running the server in its own process keeps its memory and
// CPU out of the client's figures.
func TestSSEBenchHelper(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	cfg := ssebench.Config{RecordFirstTokens: true, HTTP2: os.Getenv(helperHTTP2Env) == "1"}
	if cert := os.Getenv(helperCertEnv); cert != "" {
		tc, err := ssebench.ServerTLS([]byte(cert), []byte(os.Getenv(helperKeyEnv)))
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		cfg.TLS = tc
	}
	s, err := ssebench.Start(cfg)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("URL", s.URL)
	_, _ = io.Copy(io.Discard, os.Stdin)
	s.Close()
	os.Exit(0)
}

// helperServer is ssebench running in a child process.
type helperServer struct {
	URL   string
	stats *http.Client
	// TLS trusts the server's certificate; nil for a plain server.
	TLS *tls.Config
}

// startHelper starts the child process, serving HTTP/1.1 over TCP, and
// stops it when b ends.
func startHelper(b *testing.B) *helperServer { return startHelperMode(b, helperPlain) }

// startHelperMode starts the child process in mode (helperPlain,
// helperTLS or helperH2) and stops it when b ends.
func startHelperMode(b *testing.B, mode string) *helperServer {
	b.Helper()
	var env []string
	var cliTLS *tls.Config
	if mode != helperPlain {
		certPEM, keyPEM, err := ssebench.SelfSigned()
		if err != nil {
			b.Fatal(err)
		}
		if cliTLS, err = ssebench.ClientRoots(certPEM); err != nil {
			b.Fatal(err)
		}
		env = append(env, helperCertEnv+"="+string(certPEM), helperKeyEnv+"="+string(keyPEM))
		if mode == helperH2 {
			env = append(env, helperHTTP2Env+"=1")
		}
	}
	args := []string{os.Args[0], "-test.run=^TestSSEBenchHelper$", "-test.count=1"}
	if p := strings.Fields(os.Getenv("TTFTLAB_SSEBENCH_PREFIX")); len(p) > 0 {
		// A diagnostic: run the server under a command such as
		// "nice -n 19" or "chrt -o 0", to see how much of a figure is
		// the two processes competing for the cores.
		args = append(p, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(append(os.Environ(), helperEnv+"=1"), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "URL "); ok {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return &helperServer{URL: u, TLS: cliTLS, stats: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, TLSClientConfig: cliTLS}}}
		}
	}
	b.Fatalf("ssebench helper did not start: %v", sc.Err())
	return nil
}

func (h *helperServer) Stats(b *testing.B) ssebench.Stats {
	b.Helper()
	resp, err := h.stats.Get(h.URL + "/bench/stats")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var st ssebench.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		b.Fatal(err)
	}
	return st
}

// FirstTokens returns (and makes the server forget) the CLOCK_MONOTONIC
// times just before and just after each first token write, by
// X-Request-Id.
func (h *helperServer) FirstTokens(b *testing.B) map[string][2]int64 {
	b.Helper()
	resp, err := h.stats.Get(h.URL + "/bench/first-tokens")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string][2]int64
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		b.Fatal(err)
	}
	return m
}

func (h *helperServer) Release(b *testing.B) {
	b.Helper()
	resp, err := h.stats.Post(h.URL+"/bench/release", "", nil)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
}

// benchReq is a chat request shaped by ssebench's X-Bench headers.
func benchReq(base string, tokens, perChunk, holdAfter int) Request {
	h := map[string]string{
		"X-Bench-Tokens":           strconv.Itoa(tokens),
		"X-Bench-Tokens-Per-Chunk": strconv.Itoa(perChunk),
	}
	if holdAfter > 0 {
		h["X-Bench-Hold-After"] = strconv.Itoa(holdAfter)
	}
	return Request{BaseURL: base, API: APIChat, Model: "m", Prompt: "hi", MaxTokens: tokens, Stream: true, Headers: h}
}

// cpuTime returns this process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// closedLoop runs n requests on workers goroutines and returns the tokens
// and chunks received. Every request must succeed.
func closedLoop(b *testing.B, c *Client, req Request, workers, n int) (tokens, chunks int64) {
	b.Helper()
	var next, tok, chk atomic.Int64
	var failed atomic.Pointer[Error]
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				r := c.Do(context.Background(), req)
				if r.Err != nil {
					failed.Store(r.Err)
					return
				}
				tok.Add(int64(r.OutputTokens))
				chk.Add(int64(r.Chunks))
				r.Release()
			}
		})
	}
	wg.Wait()
	if e := failed.Load(); e != nil {
		b.Fatalf("request failed: %v", e)
	}
	return tok.Load(), chk.Load()
}

// BenchmarkStreamThroughput streams 1000-token chat responses from ssebench
// (in a child process, writing back to back) over 200 concurrent streams,
// with 1 and with 8 tokens per chunk. One op is one stream. It reports the
// tokens and chunks received per second and this process's CPU time per
// chunk: the whole client cost of a chunk (kernel reads, HTTP chunked
// decoding, SSE splitting, JSON scanning, timing), the server excluded.
func BenchmarkStreamThroughput(b *testing.B) {
	h := startHelper(b)
	for _, bc := range []struct {
		tr       string
		perChunk int
	}{{TransportH1, 1}, {TransportH1, 8}, {TransportNetHTTP, 1}, {TransportNetHTTP, 8}} {
		perChunk := bc.perChunk
		b.Run(fmt.Sprintf("transport=%s/tokens-per-chunk=%d", strings.ReplaceAll(bc.tr, "/", "-"), perChunk), func(b *testing.B) {
			const workers, tokens = 200, 1000
			c := newClient(b, Config{MaxConns: workers, Transport: bc.tr})
			defer c.Close()
			req := benchReq(h.URL, tokens, perChunk, 0)
			closedLoop(b, c, req, workers, workers) // warm the pool
			cpu0 := cpuTime()
			b.ResetTimer()
			tok, chk := closedLoop(b, c, req, workers, b.N)
			b.StopTimer()
			cpu := cpuTime() - cpu0
			s := b.Elapsed().Seconds()
			b.ReportMetric(float64(tok)/s, "tokens/s")
			b.ReportMetric(float64(chk)/s, "chunks/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(chk), "client-cpu-ns/chunk")
		})
	}
}

// raiseNoFile raises RLIMIT_NOFILE towards n and returns the soft limit.
func raiseNoFile(n uint64) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	if lim.Cur < n {
		want := syscall.Rlimit{Cur: n, Max: max(lim.Max, n)}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
			want = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
		}
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return lim.Cur
}

// liveBytes returns the live heap and the goroutine stacks in use, after a
// full collection.
func liveBytes() (heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.StackInuse
}

// BenchmarkConcurrentStreams10k opens 10,000 streams at once against
// ssebench (in a child process) and holds each open after 64 tokens. It
// reports how many were open at the same time and the client memory per
// open stream: live heap plus goroutine stacks (the caller's goroutine, and
// with net/http the transport's read and write loops), measured after a GC,
// divided by the streams. One op is the whole 10k. Sub-benchmarks per
// client transport.
func BenchmarkConcurrentStreams10k(b *testing.B) {
	const streams, holdAfter = 10000, 64
	if lim := raiseNoFile(streams + 1000); lim < streams+100 {
		b.Skipf("RLIMIT_NOFILE is %d: need %d descriptors", lim, streams+100)
	}
	h := startHelper(b)
	for _, tr := range []string{TransportH1, TransportNetHTTP} {
		b.Run("transport="+strings.ReplaceAll(tr, "/", "-"), func(b *testing.B) { concurrentStreams(b, h, tr, streams, holdAfter) })
	}
}

// BenchmarkConcurrentStreams10kTLS is BenchmarkConcurrentStreams10k
// against an https:// target: h1 over TLS (one TLS connection per stream)
// and h2 (net/http, HTTP/2: up to 250 streams per TLS connection, the
// server's default), against the raw server behind TLS and net/http's h2
// server respectively.
func BenchmarkConcurrentStreams10kTLS(b *testing.B) {
	const streams, holdAfter = 10000, 64
	if lim := raiseNoFile(streams + 1000); lim < streams+100 {
		b.Skipf("RLIMIT_NOFILE is %d: need %d descriptors", lim, streams+100)
	}
	b.Run("transport=h1", func(b *testing.B) {
		concurrentStreams(b, startHelperMode(b, helperTLS), TransportH1, streams, holdAfter)
	})
	b.Run("transport=h2", func(b *testing.B) {
		concurrentStreams(b, startHelperMode(b, helperH2), TransportH2, streams, holdAfter)
	})
}

func concurrentStreams(b *testing.B, h *helperServer, transport string, streams, holdAfter int) {
	req := benchReq(h.URL, 2*holdAfter, 1, holdAfter)
	for i := 0; i < b.N; i++ {
		c := newClient(b, Config{MaxConns: streams, ConnectTimeout: time.Minute, Transport: transport, TLS: h.TLS})
		heap0, stack0 := liveBytes()
		base := h.Stats(b)
		start := time.Now()
		var wg sync.WaitGroup
		var failed atomic.Int64
		var firstErr atomic.Pointer[Error]
		for range streams {
			wg.Go(func() {
				r := c.Do(context.Background(), req)
				if r.Err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, r.Err)
				}
				r.Release()
			})
		}
		var st ssebench.Stats
		for {
			st = h.Stats(b)
			if st.Held >= int64(streams) || firstErr.Load() != nil || time.Since(start) > 2*time.Minute {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		openAll := time.Since(start)
		heap1, stack1 := liveBytes()
		goroutines := runtime.NumGoroutine()
		h.Release(b)
		wg.Wait()
		c.Close()
		if e := firstErr.Load(); e != nil {
			b.Fatalf("%d streams failed; first: %v", failed.Load(), e)
		}
		held := float64(st.Held)
		b.ReportMetric(held, "open-streams")
		b.ReportMetric(float64(st.Conns-base.Conns), "conns")
		b.ReportMetric(float64(heap1-heap0+stack1-stack0)/held, "B/stream")
		b.ReportMetric(float64(heap1-heap0)/held, "heap-B/stream")
		b.ReportMetric(float64(stack1-stack0)/held, "stack-B/stream")
		b.ReportMetric(float64(goroutines)/held, "goroutines/stream")
		b.ReportMetric(openAll.Seconds(), "s-to-open-all")
	}
}

// BenchmarkMeasurementOverhead1k measures what the agent adds to TTFT: for
// every request, the agent's FirstToken minus the time ssebench (in a child
// process, so that its goroutines, timers and GC do not share the client's
// runtime) read just before writing the first token's bytes. Both stamps
// are CLOCK_MONOTONIC: the server reads it directly (ssebench.Monotonic),
// and the client's FirstToken is converted with an offset measured once
// (ssebench.MonoOffset; Go's monotonic clock is CLOCK_MONOTONIC, checked by
// TestMonotonicIsGoClock). The figure therefore covers the server's write
// syscall, loopback delivery, the client's wakeup and scheduling, the read,
// HTTP and SSE framing and the chunk scan.
//
// The load: 1,000 closed-loop streams, each request's first token 50 to
// 200 ms after the request (uniform), then 31 more tokens 20 ms apart (a
// busy engine's decode pace): about 1,300 new requests/s and 45,000
// chunks/s. It reports percentiles in µs, warm-up excluded. One op is the
// whole run. Sub-benchmarks per client transport.
func BenchmarkMeasurementOverhead1k(b *testing.B) {
	h := startHelper(b)
	for _, tr := range []string{TransportH1, TransportNetHTTP} {
		b.Run("transport="+strings.ReplaceAll(tr, "/", "-"), func(b *testing.B) {
			measureOverhead(b, h, tr, 32, 20*time.Millisecond, overheadRun(), 2*time.Second)
		})
	}
}

// BenchmarkMeasurementOverhead1kTLS is BenchmarkMeasurementOverhead1k
// against an https:// target: the same raw HTTP/1.1 server behind TLS 1.3
// (a self-signed ECDSA certificate the client trusts), so the figure adds
// the server's encryption and the client's decryption of each record. The
// server's stamps bracket its TLS write (encryption included). Keep-alive
// connections: handshakes happen in the warm-up only.
func BenchmarkMeasurementOverhead1kTLS(b *testing.B) {
	h := startHelperMode(b, helperTLS)
	for _, tr := range []string{TransportH1, TransportNetHTTP} {
		b.Run("transport="+strings.ReplaceAll(tr, "/", "-"), func(b *testing.B) {
			measureOverhead(b, h, tr, 32, 20*time.Millisecond, overheadRun(), 2*time.Second)
		})
	}
}

// BenchmarkMeasurementOverhead1kH2 is BenchmarkMeasurementOverhead1k
// against an HTTP/2 target: net/http's server over TLS (h2 by ALPN, at
// most 250 streams per connection, its default), each event written and
// flushed as its own DATA frame, and the client's h2 transport (net/http,
// HTTP/2). The server's stamps bracket the Write and Flush of the first
// token's event, which hand the frame to the server connection's writer.
func BenchmarkMeasurementOverhead1kH2(b *testing.B) {
	h := startHelperMode(b, helperH2)
	b.Run("transport=h2", func(b *testing.B) {
		measureOverhead(b, h, TransportH2, 32, 20*time.Millisecond, overheadRun(), 2*time.Second)
	})
}

// overheadRun is the measured run of BenchmarkMeasurementOverhead1k:
// $TTFTLAB_OVERHEAD_RUN (a Go duration), else 10 s.
func overheadRun() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("TTFTLAB_OVERHEAD_RUN")); err == nil && d > 0 {
		return d
	}
	return 10 * time.Second
}

func measureOverhead(b *testing.B, h *helperServer, transport string, tokens int, itl, run, warm time.Duration) {
	// $TTFTLAB_OVERHEAD_STREAMS overrides the 1,000 streams, to find the
	// floor of an idle machine (for example 10).
	workers := 1000
	if n, err := strconv.Atoi(os.Getenv("TTFTLAB_OVERHEAD_STREAMS")); err == nil && n > 0 {
		workers = n
	}
	const ttftMin, ttftMax = 50 * time.Millisecond, 200 * time.Millisecond
	if lim := raiseNoFile(uint64(2*workers + 500)); lim < uint64(workers+100) {
		b.Skipf("RLIMIT_NOFILE is %d: need %d descriptors", lim, workers+100)
	}
	life := (ttftMin+ttftMax)/2 + time.Duration(tokens-1)*itl
	type stamp struct {
		id   string
		mono int64
	}
	for i := 0; i < b.N; i++ {
		h.FirstTokens(b) // forget earlier runs'
		c := newClient(b, Config{MaxConns: workers, Transport: transport, TLS: h.TLS})
		ref, refMono := ssebench.MonoOffset()
		var all []stamp
		var amu sync.Mutex
		var failed atomic.Pointer[Error]
		var id atomic.Int64
		start := time.Now()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 1))
				// Stagger the first requests over one stream's life so the
				// first tokens do not all arrive at once.
				time.Sleep(time.Duration(w) * life / time.Duration(workers))
				var mine []stamp
				for time.Since(start) < run {
					key := strconv.FormatInt(id.Add(1), 10)
					ttft := ttftMin + time.Duration(rng.Int64N(int64(ttftMax-ttftMin)))
					req := Request{BaseURL: h.URL, API: APIChat, Model: "m", Prompt: "hi", MaxTokens: tokens, Stream: true,
						Headers: map[string]string{
							"X-Request-Id":   key,
							"X-Bench-Tokens": strconv.Itoa(tokens),
							"X-Bench-TTFT":   ttft.String(),
							"X-Bench-Delay":  itl.String(),
						}}
					r := c.Do(context.Background(), req)
					if r.Err != nil {
						failed.Store(r.Err)
						return
					}
					if r.Send.Sub(start) >= warm {
						mine = append(mine, stamp{key, refMono + int64(r.FirstToken.Sub(ref))})
					}
					r.Release()
				}
				amu.Lock()
				all = append(all, mine...)
				amu.Unlock()
			})
		}
		wg.Wait()
		c.Close()
		if e := failed.Load(); e != nil {
			b.Fatalf("request failed: %v", e)
		}
		writes := h.FirstTokens(b)
		// overhead is from just before the server's write (the target's
		// definition); afterWrite from just after it returned, which
		// leaves out the write syscall and any time the server's thread
		// was descheduled around it; write is the syscall itself.
		var overhead, afterWrite, write []time.Duration
		for _, s := range all {
			if at, ok := writes[s.id]; ok {
				overhead = append(overhead, time.Duration(s.mono-at[0]))
				afterWrite = append(afterWrite, time.Duration(s.mono-at[1]))
				write = append(write, time.Duration(at[1]-at[0]))
			}
		}
		if len(overhead) == 0 || len(overhead) < len(all)*99/100 {
			b.Fatalf("%d samples, %d with a server stamp", len(all), len(overhead))
		}
		report := func(ds []time.Duration, name string, all bool) {
			slices.Sort(ds)
			q := func(p float64) float64 {
				return float64(ds[min(int(p*float64(len(ds))), len(ds)-1)].Nanoseconds()) / 1e3
			}
			b.ReportMetric(q(0.50), "p50-"+name)
			b.ReportMetric(q(0.99), "p99-"+name)
			if all {
				b.ReportMetric(q(0.999), "p99.9-"+name)
				b.ReportMetric(q(1), "max-"+name)
			}
		}
		report(overhead, "overhead-µs", true)
		report(afterWrite, "after-write-µs", true)
		report(write, "server-write-µs", false)
		b.ReportMetric(float64(len(overhead)), "samples")
	}
}

// pythonWithAiohttp returns a Python interpreter that can import aiohttp:
// $TTFTLAB_PYTHON, else Debian's /usr/bin/python3, else python3 on PATH.
func pythonWithAiohttp() (string, error) {
	cands := []string{os.Getenv("TTFTLAB_PYTHON"), "/usr/bin/python3", "python3"}
	var last error
	for _, py := range cands {
		if py == "" {
			continue
		}
		if out, err := exec.Command(py, "-c", "import aiohttp").CombinedOutput(); err != nil {
			last = fmt.Errorf("%s: %v: %s", py, err, strings.TrimSpace(string(out)))
			continue
		}
		return py, nil
	}
	return "", last
}

// BenchmarkPythonReference runs bench/sse_client.py (aiohttp, reading the
// stream as vLLM's benchmark client does) and then this package's client
// against the same ssebench child process, at equal concurrency (100
// streams, 1000 tokens each, one token per chunk, 400 requests). It
// reports both clients' tokens/s and CPU time per chunk and the Go/Python
// ratios. It is skipped when no Python with aiohttp is found
// (apt-get install -y python3-aiohttp, or set TTFTLAB_PYTHON).
func BenchmarkPythonReference(b *testing.B) {
	py, err := pythonWithAiohttp()
	if err != nil {
		b.Skipf("no Python with aiohttp: %v", err)
	}
	const workers, tokens, requests = 100, 1000, 400
	h := startHelper(b)
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(py, "../bench/sse_client.py", "--url", h.URL, "--concurrency", strconv.Itoa(workers),
			"--requests", strconv.Itoa(requests), "--tokens", strconv.Itoa(tokens), "--tokens-per-chunk", "1")
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("python client: %v", err)
		}
		var pyRes struct {
			Requests int     `json:"requests"`
			Chunks   int64   `json:"chunks"`
			Tokens   int64   `json:"tokens"`
			Wall     float64 `json:"wall_s"`
			CPU      float64 `json:"cpu_s"`
		}
		if err := json.Unmarshal(out, &pyRes); err != nil || pyRes.Tokens != tokens*requests {
			b.Fatalf("python client output %q: %v", out, err)
		}

		c := newClient(b, Config{MaxConns: workers})
		req := benchReq(h.URL, tokens, 1, 0)
		closedLoop(b, c, req, workers, workers) // warm the pool, as aiohttp warms during its run
		cpu0, t0 := cpuTime(), time.Now()
		tok, chk := closedLoop(b, c, req, workers, requests)
		wall, cpu := time.Since(t0).Seconds(), (cpuTime() - cpu0).Seconds()
		c.Close()

		pyTokS, goTokS := float64(pyRes.Tokens)/pyRes.Wall, float64(tok)/wall
		pyNS, goNS := pyRes.CPU*1e9/float64(pyRes.Chunks), cpu*1e9/float64(chk)
		b.ReportMetric(pyTokS, "py-tokens/s")
		b.ReportMetric(goTokS, "go-tokens/s")
		b.ReportMetric(goTokS/pyTokS, "go/py-tokens/s")
		b.ReportMetric(pyNS, "py-cpu-ns/chunk")
		b.ReportMetric(goNS, "go-cpu-ns/chunk")
		b.ReportMetric(pyNS/goNS, "py/go-cpu/chunk")
	}
}

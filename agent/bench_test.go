package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
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
		b.Run(bc.name, func(b *testing.B) {
			line := []byte("data: " + bc.json + "\n")
			r := Result{Send: time.Now(), CachedTokens: -1, Marks: make([]Mark, 0, 1024)}
			s := stream{r: &r, maxLine: defaultMaxLine}
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

// BenchmarkStream measures one whole streamed request of 1000 tokens from a
// local SSE server that writes as fast as it can, including recording the
// metrics. It reports the client-side cost per token.
func BenchmarkStream(b *testing.B) {
	const tokens = 1000
	var body strings.Builder
	body.WriteString("data: " + chatRole(0) + "\n\n")
	for i := 1; i <= tokens; i++ {
		body.WriteString("data: " + chatContent(" tok", i) + "\n\n")
	}
	body.WriteString("data: " + finalUsage(7, tokens) + "\n\ndata: [DONE]\n\n")
	payload := body.String()
	f := newFakeServer(b, func(w http.ResponseWriter, r *http.Request) {
		startSSE(w).raw(payload)
	})
	c := NewClient(ClientConfig{MaxConns: 1})
	defer c.Close()
	set := newSet()
	req := chatReq(f.URL)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		r := c.Do(context.Background(), req)
		if r.Err != nil || r.OutputTokens != tokens {
			b.Fatalf("err %v, tokens %d", r.Err, r.OutputTokens)
		}
		recordMetrics(set, &r)
		r.Release()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tokens), "ns/token")
	_ = set.Get(hdr.ITL).Count()
}

// helperEnv marks the child process that serves ssebench for the
// benchmarks below; see TestSSEBenchHelper.
const helperEnv = "TTFTLAB_SSEBENCH_HELPER"

// TestSSEBenchHelper is not a test: run as a child process with helperEnv
// set, it serves internal/ssebench, prints the URL and serves until its
// stdin closes. Running the server in its own process keeps its memory and
// CPU out of the client's figures.
func TestSSEBenchHelper(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	s, err := ssebench.Start(ssebench.Config{})
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
}

// startHelper starts the child process and stops it when b ends.
func startHelper(b *testing.B) *helperServer {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSSEBenchHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
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
			return &helperServer{URL: u, stats: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}}
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
	for _, perChunk := range []int{1, 8} {
		b.Run(fmt.Sprintf("tokens-per-chunk=%d", perChunk), func(b *testing.B) {
			const workers, tokens = 200, 1000
			c := NewClient(ClientConfig{MaxConns: workers})
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
// open stream: live heap plus goroutine stacks (the caller's goroutine and
// the transport's read and write loops), measured after a GC, divided by
// the streams. One op is the whole 10k.
func BenchmarkConcurrentStreams10k(b *testing.B) {
	const streams, holdAfter = 10000, 64
	if lim := raiseNoFile(streams + 1000); lim < streams+100 {
		b.Skipf("RLIMIT_NOFILE is %d: need %d descriptors", lim, streams+100)
	}
	h := startHelper(b)
	req := benchReq(h.URL, 2*holdAfter, 1, holdAfter)
	for i := 0; i < b.N; i++ {
		c := NewClient(ClientConfig{MaxConns: streams, ConnectTimeout: time.Minute})
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
			if st.Held >= streams || firstErr.Load() != nil || time.Since(start) > 2*time.Minute {
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

// BenchmarkMeasurementOverhead1k runs 1,000 concurrent chat streams
// against an in-process ssebench (so both clocks are the same monotonic
// clock). For every request it takes the agent's FirstToken minus the
// server's time just before it wrote the first token chunk, and reports
// the percentiles in µs, warm-up excluded. One op is the whole run. Two
// load shapes:
//   - itl=50ms: 20 ms to the first token, then 40 tokens 50 ms apart (a
//     busy engine's pace at this batch size): about 20,000 chunks/s and
//     500 new requests/s;
//   - itl=20ms: 20 ms to the first token, then 10 tokens 20 ms apart: about
//     50,000 chunks/s and 4,500 new requests/s, which with the server in
//     the same process saturates two cores.
func BenchmarkMeasurementOverhead1k(b *testing.B) {
	for _, bc := range []struct {
		name      string
		tokens    int
		itl       time.Duration
		run, warm time.Duration
	}{
		{"itl=50ms", 40, 50 * time.Millisecond, 6 * time.Second, 2500 * time.Millisecond},
		{"itl=20ms", 10, 20 * time.Millisecond, 3 * time.Second, time.Second},
	} {
		b.Run(bc.name, func(b *testing.B) { measureOverhead(b, bc.tokens, bc.itl, bc.run, bc.warm) })
	}
}

func measureOverhead(b *testing.B, tokens int, itl, run, warm time.Duration) {
	const workers = 1000
	const ttft = 20 * time.Millisecond
	var mu sync.Mutex
	writes := map[string]time.Time{}
	srv, err := ssebench.Start(ssebench.Config{
		Tokens: tokens, TTFT: ttft, Delay: itl,
		OnFirstToken: func(id string, at time.Time) {
			mu.Lock()
			writes[id] = at
			mu.Unlock()
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	life := ttft + time.Duration(tokens)*itl
	for i := 0; i < b.N; i++ {
		c := NewClient(ClientConfig{MaxConns: workers})
		var overhead []time.Duration
		var omu sync.Mutex
		var failed atomic.Pointer[Error]
		var id atomic.Int64
		start := time.Now()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				// Stagger the first requests over one stream's life so the
				// first tokens do not all arrive at once.
				time.Sleep(time.Duration(w) * life / workers)
				var mine []time.Duration
				for time.Since(start) < run {
					key := strconv.FormatInt(id.Add(1), 10)
					req := Request{BaseURL: srv.URL, API: APIChat, Model: "m", Prompt: "hi", MaxTokens: tokens, Stream: true,
						Headers: map[string]string{"X-Request-Id": key}}
					r := c.Do(context.Background(), req)
					if r.Err != nil {
						failed.Store(r.Err)
						return
					}
					mu.Lock()
					at, ok := writes[key]
					delete(writes, key)
					mu.Unlock()
					if ok && r.Send.Sub(start) >= warm {
						mine = append(mine, r.FirstToken.Sub(at))
					}
					r.Release()
				}
				omu.Lock()
				overhead = append(overhead, mine...)
				omu.Unlock()
			})
		}
		wg.Wait()
		c.Close()
		if e := failed.Load(); e != nil {
			b.Fatalf("request failed: %v", e)
		}
		if len(overhead) == 0 {
			b.Fatal("no samples")
		}
		slices.Sort(overhead)
		q := func(p float64) float64 {
			return float64(overhead[min(int(p*float64(len(overhead))), len(overhead)-1)].Nanoseconds()) / 1e3
		}
		b.ReportMetric(q(0.50), "p50-overhead-µs")
		b.ReportMetric(q(0.99), "p99-overhead-µs")
		b.ReportMetric(q(0.999), "p99.9-overhead-µs")
		b.ReportMetric(float64(overhead[len(overhead)-1].Nanoseconds())/1e3, "max-overhead-µs")
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

		c := NewClient(ClientConfig{MaxConns: workers})
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

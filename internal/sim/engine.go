// Package sim is a simulated vLLM engine: a real HTTP server that speaks
// vLLM 0.11's OpenAI API, /health, /version and /metrics and prints vLLM's
// log lines, with every latency taken from a roofline performance model of a
// named model on a named GPU (SIM-NOTES §5) and slept in real time.
//
// An Engine plays vLLM's startup phases (the port refuses connections until
// they are done), computes the KV capacity with vLLM's formula, and then runs
// a continuous-batching scheduler with paged KV blocks, chunked prefill,
// prefix caching and preemption.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Engine is one simulated vLLM server. Create it with New and call Run once.
// Its methods are safe for concurrent use.
type Engine struct {
	cfg    resolved
	log    *vlog
	logger *slog.Logger
	perf   *PerfModel
	tok    tokenizer
	met    *metrics

	bound chan struct{} // closed once the port is bound
	ready chan struct{} // closed once the server accepts connections
	addr  atomic.Pointer[net.TCPAddr]

	// Set before ready is closed.
	plan    KVPlan
	sched   *scheduler
	created int64

	started atomic.Bool
	idBase  uint64
	idSeq   atomic.Uint64
}

// New validates cfg and returns an engine that writes vLLM-format log lines
// to logw and its own diagnostics to logger.
func New(cfg Config, logw io.Writer, logger *slog.Logger) (*Engine, error) {
	r, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Engine{
		cfg:    r,
		log:    &vlog{w: logw, pid: os.Getpid(), now: time.Now},
		logger: logger,
		perf:   NewPerfModel(r.model, r.gpu, r.Perf, r.EnforceEager).WithSlowdown(r.Slowdown),
		tok:    newTokenizer(r.model.Vocab, r.Seed),
		met:    newMetrics(r.ServedModelName, r.MaxModelLen, time.Now()),
		bound:  make(chan struct{}),
		ready:  make(chan struct{}),
		idBase: rand.Uint64(),
	}, nil
}

// Bound returns a channel closed once the port is bound. From then on Addr
// is valid, and connections are refused until Ready.
func (e *Engine) Bound() <-chan struct{} { return e.bound }

// Ready returns a channel closed once startup is done and the server
// accepts connections (the moment /health starts answering 200).
func (e *Engine) Ready() <-chan struct{} { return e.ready }

// Addr returns the bound host:port. It is valid once Bound is closed.
func (e *Engine) Addr() string {
	if a := e.addr.Load(); a != nil {
		return a.String()
	}
	return ""
}

// URL returns http://host:port. It is valid once Bound is closed.
func (e *Engine) URL() string { return "http://" + e.Addr() }

// KVPlan returns the KV-cache layout computed at startup. It is valid once
// Ready is closed.
func (e *Engine) KVPlan() KVPlan { return e.plan }

// Run binds the port, plays the startup phases, then serves until ctx is
// done and shuts down gracefully: in-flight requests get Config.ShutdownGrace
// to finish, then are aborted. It returns nil after a clean shutdown, ctx's
// error when cancelled during startup, and a *StartupError when the engine
// cannot start (vLLM's error text is in the log).
func (e *Engine) Run(ctx context.Context) error {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("sim: Run called twice")
	}
	sock, err := bindSocket(e.cfg.Host, e.cfg.Port)
	if err != nil {
		e.log.raw(procAPI, "OSError: "+err.Error())
		return &StartupError{Err: err}
	}
	defer sock.close()
	e.addr.Store(sock.addr)
	close(e.bound)

	plan, err := e.startup(ctx)
	if err != nil {
		return err
	}
	e.plan = plan
	e.met.setCacheInfo(e.cfg, plan.NumBlocks)
	e.sched = newScheduler(schedulerConfig{
		perf:                e.perf,
		numBlocks:           plan.NumBlocks,
		prefixCaching:       e.cfg.EnablePrefixCaching,
		noopReset:           e.cfg.TestNoopPrefixReset,
		seed:                e.cfg.Seed,
		maxNumSeqs:          e.cfg.MaxNumSeqs,
		maxNumBatchedTokens: e.cfg.MaxNumBatchedTokens,
		noChunkedPrefill:    !e.cfg.EnableChunkedPrefill,
		lazyInit:            e.cfg.FirstRequestDelay,
		tok:                 e.tok,
		met:                 e.met,
	})
	e.created = time.Now().Unix()

	l := e.log
	l.info(procAPI, "api_server.py", 1912, "Starting vLLM API server 0 on http://%s", sock.addr)
	l.info(procAPI, "launcher.py", 34, "Available routes are:")
	for _, rt := range routes {
		l.info(procAPI, "launcher.py", 42, "Route: %s, Methods: %s", rt.path, rt.methods)
	}
	ln, err := sock.listen()
	if err != nil {
		return &StartupError{Err: err}
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		e.addr.Store(a)
	}

	// The scheduler and stats goroutines outlive the HTTP server so that
	// in-flight requests can finish during the shutdown grace period.
	var wg sync.WaitGroup
	defer wg.Wait()
	loopCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	wg.Go(func() { e.sched.run(loopCtx) })
	if !e.cfg.DisableLogStats && e.cfg.StatsInterval > 0 {
		wg.Go(func() { e.statsLoop(loopCtx) })
	}

	readTimeout := e.cfg.ReadTimeout
	if readTimeout <= 0 {
		readTimeout = DefaultReadTimeout
	}
	srv := &http.Server{
		Handler: e.Handler(),
		// Both bound reading the request, so a half-sent one cannot hold a
		// connection; decodeBody lifts the deadline once the body is in.
		ReadHeaderTimeout: readTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(e.logger.Handler(), slog.LevelDebug),
	}
	serveErr := make(chan error, 1) // the one Serve result; nobody may be waiting
	wg.Go(func() { serveErr <- srv.Serve(ln) })

	pid := strconv.Itoa(os.Getpid())
	l.raw(procAPI, "INFO:     Started server process ["+pid+"]")
	l.raw(procAPI, "INFO:     Waiting for application startup.")
	l.raw(procAPI, "INFO:     Application startup complete.")
	l.raw(procAPI, "INFO:     Uvicorn running on "+e.URL()+" (Press CTRL+C to quit)")
	close(e.ready)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("serve: %w", err)
	}
	l.raw(procAPI, "INFO:     Shutting down")
	graceCtx, cancel := context.WithTimeout(context.Background(), e.cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(graceCtx); err != nil {
		stopLoops() // abort what is still running, then drop the connections
		srv.Close()
	}
	stopLoops()
	l.raw(procAPI, "INFO:     Waiting for application shutdown.")
	l.raw(procAPI, "INFO:     Application shutdown complete.")
	l.raw(procAPI, "INFO:     Finished server process ["+pid+"]")
	return runErr
}

// statsLoop prints vLLM's periodic stats line while the engine is not idle.
func (e *Engine) statsLoop(ctx context.Context) {
	t := time.NewTicker(e.cfg.StatsInterval)
	defer t.Stop()
	last := time.Now()
	prevBusy := false
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s := e.met.takeInterval()
			dt := now.Sub(last).Seconds()
			last = now
			busy := s.prompt > 0 || s.gen > 0 || s.running > 0 || s.waiting > 0
			if busy || prevBusy {
				e.log.info(procAPI, "loggers.py", 123,
					"Engine 000: Avg prompt throughput: %.1f tokens/s, Avg generation throughput: %.1f tokens/s, Running: %d reqs, Waiting: %d reqs, GPU KV cache usage: %.1f%%, Prefix cache hit rate: %.1f%%",
					s.prompt/dt, s.gen/dt, s.running, s.waiting, s.kvUsage*100, s.hitRate*100)
			}
			prevBusy = busy
		}
	}
}

package gpunode

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a fake engine: when fakeModeEnv is set,
// TestMain runs fakeEngine instead of the tests. The mode comes from the
// profile's command, "fake:MODE", through fakeLauncher.
const (
	fakeModeEnv      = "GPUNODE_FAKE_ENGINE"
	fakeReadyFileEnv = "GPUNODE_FAKE_READY_FILE"
	fakeDelayEnv     = "GPUNODE_FAKE_DELAY_MS"
	// fakeLifetime bounds every fake process, so that a broken test can
	// never leave one running for long.
	fakeLifetime = 60 * time.Second
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeModeEnv); mode == "supervisor" {
		os.Exit(miniSupervisor())
	} else if mode != "" {
		os.Exit(fakeEngine(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeLauncher runs the test binary as the fake engine named by argv[0]
// ("fake:MODE"), adding extraEnv.
func fakeLauncher(extraEnv ...string) Launcher {
	return func(_ context.Context, argv []string, env []string) *exec.Cmd {
		mode := strings.TrimPrefix(argv[0], "fake:")
		cmd := exec.Command(os.Args[0], argv[1:]...)
		// A race-enabled binary sleeps 1 s at exit unless told not to.
		cmd.Env = append(append(env, fakeModeEnv+"="+mode, "GORACE=atexit_sleep_ms=0"), extraEnv...)
		return cmd
	}
}

const (
	cyanAPI = "\x1b[1;36m(APIServer pid=%d)\x1b[0;0m "
	cyanEng = "\x1b[1;36m(EngineCore_DP0 pid=%d)\x1b[0;0m "
)

func fakeEngine(mode string, args []string) int {
	time.AfterFunc(fakeLifetime, func() { os.Exit(3) })
	var port, model, served string
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--port":
			i++
			port = args[i]
		case "--served-model-name":
			i++
			served = args[i]
		case "--host", "--max-model-len", "--gpu-memory-utilization", "--max-num-seqs", "--max-num-batched-tokens":
			i++
		default:
			if !strings.HasPrefix(args[i], "-") && model == "" {
				model = args[i]
			}
		}
	}
	pid := os.Getpid()
	api := fmt.Sprintf(cyanAPI, pid)
	eng := fmt.Sprintf(cyanEng, pid)
	now := func() string { return time.Now().Format("01-02 15:04:05") }
	fmt.Printf(api+"INFO %s [api_server.py:1839] vLLM API server version 0.11.0-fake\n", now())
	fmt.Printf(eng+"INFO %s [gpu_model_runner.py:2602] Starting to load model %s...\n", now(), model)
	fmt.Printf(eng+"INFO %s [default_loader.py:267] Loading weights took 0.01 seconds\n", now())
	fmt.Printf(eng+"INFO %s [gpu_model_runner.py:2653] Model loading took 2.8871 GiB and 0.020000 seconds\n", now())

	switch mode {
	case "sleeper":
		// A child of the engine that ignores SIGTERM, like a stuck worker.
		signal.Ignore(syscall.SIGTERM)
		time.Sleep(fakeLifetime)
		return 0
	case "oom":
		// vLLM dumps its whole config on one line; make it longer than a
		// captured line may be.
		fmt.Printf(api+"INFO %s [utils.py:233] non-default args: {%s}\n", now(), strings.Repeat("'k': 'v', ", 10_000))
		fmt.Fprintf(os.Stderr, eng+"ERROR %s [core.py:708] EngineCore failed to start.\n", now())
		fmt.Fprintf(os.Stderr, eng+"ERROR %s [core.py:708] Traceback (most recent call last):\n", now())
		fmt.Fprintf(os.Stderr, eng+"ERROR %s [core.py:708] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.81 GiB of which 1.06 GiB is free.\n", now())
		fmt.Fprint(os.Stderr, api+"RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}\n")
		return 1
	case "never":
		time.Sleep(fakeLifetime)
		return 0
	case "ignoreterm":
		signal.Ignore(syscall.SIGTERM)
	case "child", "childpd":
		child := exec.Command(os.Args[0])
		child.Env = append(os.Environ(), fakeModeEnv+"=sleeper", "GORACE=atexit_sleep_ms=0")
		if mode == "childpd" {
			// Like vLLM's own workers, the child dies with its parent.
			child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		}
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "start child:", err)
			return 2
		}
		fmt.Printf("CHILD_PID=%d\n", child.Process.Pid)
	case "ready":
	default:
		fmt.Fprintln(os.Stderr, "unknown fake mode", mode)
		return 2
	}

	fmt.Printf(eng+"INFO %s [kv_cache_utils.py:1087] GPU KV cache size: 4,503,936 tokens\n", now())
	fmt.Printf(eng+"INFO %s [kv_cache_utils.py:1091] Maximum concurrency for 32,768 tokens per request: 137.45x\n", now())
	fmt.Printf(eng+"INFO %s [core.py:210] init engine (profile, create kv cache, warmup model) took 0.05 seconds\n", now())
	delay := 150 * time.Millisecond
	if ms, err := strconv.Atoi(os.Getenv(fakeDelayEnv)); err == nil {
		delay = time.Duration(ms) * time.Millisecond
	}
	time.Sleep(delay)
	fmt.Printf(api+"INFO %s [api_server.py:1912] Starting vLLM API server 0 on http://127.0.0.1:%s\n", now(), port)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"version":"0.11.0-fake"}`)
	})
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"object": "list",
			"data":   []map[string]any{{"id": served, "object": "model", "owned_by": "vllm", "root": model}},
		})
	})
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintf(os.Stderr, api+"OSError: [Errno 98] Address already in use: %v\n", err)
		return 1
	}
	// Ready: the listener is up and the handlers are set; Serve starts now.
	readyAt := time.Now()
	if f := os.Getenv(fakeReadyFileEnv); f != "" {
		if err := os.WriteFile(f, []byte(strconv.FormatInt(readyAt.UnixNano(), 10)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "write ready file:", err)
			return 2
		}
	}
	fmt.Print(api + "INFO:     Application startup complete.\n")
	go func() { _ = http.Serve(l, mux) }()
	if mode == "ignoreterm" {
		select {}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	fmt.Print(api + "INFO:     Shutting down\n")
	return 0
}

// readReadyFile returns the time the fake wrote to path.
func readReadyFile(t *testing.T, path string) time.Time {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read the fake's ready file: %v", err)
	}
	ns, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		t.Fatalf("parse the fake's ready file %q: %v", b, err)
	}
	return time.Unix(0, ns)
}

// fakeProfiles are one vllm-kind profile per fake mode.
func fakeProfiles(modes ...string) map[string]Profile {
	out := map[string]Profile{}
	for _, m := range modes {
		out[m] = Profile{
			Name:     m,
			Kind:     KindVLLM,
			Command:  []string{"fake:" + m},
			Defaults: Knobs{Model: "test/model", ServedModelName: "served-" + m},
		}
	}
	return out
}

// waitGone waits until kill(pid, 0) reports ESRCH; pid may be -pgid.
func waitGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Kill(pid, 0)
		if err == syscall.ESRCH {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (kill(%d, 0) = %v) still exists 5 s after stop", what, pid, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// childPID finds the "CHILD_PID=N" line the child mode prints.
func childPID(t *testing.T, tail []string) int {
	t.Helper()
	for _, l := range tail {
		if v, ok := strings.CutPrefix(l, "CHILD_PID="); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("bad child pid line %q", l)
			}
			return n
		}
	}
	t.Fatalf("no CHILD_PID line in the log tail %q", tail)
	return 0
}

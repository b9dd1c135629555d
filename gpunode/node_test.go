package gpunode

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/internal/vllmlog"
)

// newTestNode returns a node whose profiles are the fake modes given.
func newTestNode(t *testing.T, mutate func(*Config), modes ...string) *Node {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Profiles = fakeProfiles(modes...)
	cfg.Launcher = fakeLauncher()
	cfg.ReadyTimeout = 20 * time.Second
	cfg.StopGrace = 5 * time.Second
	cfg.SampleInterval = 20 * time.Millisecond
	cfg.NVML = noGPU()
	if mutate != nil {
		mutate(&cfg)
	}
	n, err := New(cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestStartEngineReadyAndStop(t *testing.T) {
	readyFile := filepath.Join(t.TempDir(), "ready")
	logDir := t.TempDir()
	n := newTestNode(t, func(c *Config) {
		c.Launcher = fakeLauncher(fakeReadyFileEnv + "=" + readyFile)
		c.LogDir = logDir
	}, "ready")
	ctx := t.Context()

	info, err := n.StartEngine(ctx, StartSpec{Profile: "ready", Knobs: Knobs{MaxModelLen: 4096}})
	if err != nil {
		t.Fatalf("StartEngine: %v", err)
	}
	fakeReady := readReadyFile(t, readyFile)
	lag := info.Ready.Sub(fakeReady)
	t.Logf("ready after %v; detected %v after the fake was ready", info.ReadyDuration, lag)
	if lag < 0 || lag > 50*time.Millisecond {
		t.Errorf("readiness detected %v after the fake was ready, want within 50 ms", lag)
	}
	if info.PID <= 0 || info.Port <= 0 {
		t.Errorf("PID %d, Port %d; want both positive", info.PID, info.Port)
	}
	if want := "http://127.0.0.1:"; !strings.HasPrefix(info.BaseURL, want) {
		t.Errorf("BaseURL = %q, want prefix %q", info.BaseURL, want)
	}
	if info.ServedModelName != "served-ready" || info.Model != "test/model" {
		t.Errorf("served %q model %q, want served-ready and test/model", info.ServedModelName, info.Model)
	}
	if info.Version != "0.11.0-fake" {
		t.Errorf("Version = %q, want 0.11.0-fake", info.Version)
	}
	if !slices.Contains(info.Argv, "--max-model-len") {
		t.Errorf("Argv %q lacks --max-model-len", info.Argv)
	}
	if info.ReadyDuration <= 0 || info.ReadyDuration != info.Ready.Sub(info.Spawn) {
		t.Errorf("ReadyDuration = %v, want Ready - Spawn = %v", info.ReadyDuration, info.Ready.Sub(info.Spawn))
	}
	var names []string
	for _, p := range info.Phases {
		names = append(names, p.Name)
		if p.End < p.Start {
			t.Errorf("phase %s ends (%v) before it starts (%v)", p.Name, p.End, p.Start)
		}
	}
	for _, want := range []string{vllmlog.PhaseBootstrap, vllmlog.PhaseLoadWeights, vllmlog.PhaseLoadModel, vllmlog.PhaseMemoryKV, vllmlog.PhaseInitEngine, vllmlog.PhasePortOpen, vllmlog.PhaseHealthOK, vllmlog.PhaseReady} {
		if !slices.Contains(names, want) {
			t.Errorf("phases %q lack %q", names, want)
		}
	}
	if last := info.Phases[len(info.Phases)-1]; last.Name != vllmlog.PhaseReady || last.End != info.ReadyDuration {
		t.Errorf("last phase = %+v, want ready ending at %v", last, info.ReadyDuration)
	}
	if n.enginePID() != info.PID {
		t.Errorf("enginePID() = %d, want %d", n.enginePID(), info.PID)
	}

	res, err := n.StopEngine(ctx, 0)
	if err != nil {
		t.Fatalf("StopEngine: %v", err)
	}
	if !res.WasRunning || res.ExitStatus != "exit status 0" {
		t.Errorf("StopEngine = %+v, want was running, exit status 0", res)
	}
	if err := syscall.Kill(-info.PID, 0); err != syscall.ESRCH {
		t.Errorf("kill(-pgid, 0) after stop = %v, want ESRCH", err)
	}
	res, err = n.StopEngine(ctx, 0)
	if err != nil || res.WasRunning {
		t.Errorf("second StopEngine = %+v, %v; want not running, nil", res, err)
	}

	logs, _ := filepath.Glob(filepath.Join(logDir, "engine-ready-*.log"))
	if len(logs) != 1 {
		t.Fatalf("log files %q, want one", logs)
	}
	b, _ := os.ReadFile(logs[0])
	if !strings.Contains(string(b), "Application startup complete.") || !strings.Contains(string(b), "Shutting down") {
		t.Errorf("engine log lacks startup or shutdown lines:\n%s", b)
	}
}

func TestStartEngineExitReportsCause(t *testing.T) {
	n := newTestNode(t, nil, "oom")
	start := time.Now()
	_, err := n.StartEngine(t.Context(), StartSpec{Profile: "oom"})
	var ee *ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("StartEngine error = %v, want *ExitError", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("exit took %v to notice, want it at once", took)
	}
	if ee.ExitStatus != "exit status 1" {
		t.Errorf("ExitStatus = %q, want exit status 1", ee.ExitStatus)
	}
	if ee.Cause == nil || ee.Cause.Kind != vllmlog.FailCUDAOOM {
		t.Errorf("Cause = %+v, want %s", ee.Cause, vllmlog.FailCUDAOOM)
	}
	if !slices.ContainsFunc(ee.LogTail, func(l string) bool { return strings.Contains(l, "CUDA out of memory") }) {
		t.Errorf("LogTail lacks the OOM line: %q", ee.LogTail)
	}
	if len(err.Error()) > 16<<10 {
		t.Errorf("error message is %d bytes, want it to fit a gRPC status (16 KiB)", len(err.Error()))
	}
	for _, l := range ee.LogTail {
		if len(l) > maxLineBytes {
			t.Errorf("captured a %d-byte line, want at most %d", len(l), maxLineBytes)
		}
	}
	for _, want := range []string{"exit status 1", "CUDA out of memory", "Engine core initialization failed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if pid := n.enginePID(); pid != 0 {
		t.Errorf("enginePID() = %d after a failed start, want 0", pid)
	}
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	n := newTestNode(t, nil, "ignoreterm")
	info, err := n.StartEngine(t.Context(), StartSpec{Profile: "ignoreterm"})
	if err != nil {
		t.Fatalf("StartEngine: %v", err)
	}
	const grace = 300 * time.Millisecond
	start := time.Now()
	res, err := n.StopEngine(t.Context(), grace)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("StopEngine: %v", err)
	}
	if res.ExitStatus != "signal: killed" {
		t.Errorf("ExitStatus = %q, want signal: killed", res.ExitStatus)
	}
	if took < grace || took > grace+3*time.Second {
		t.Errorf("stop took %v, want a little over the %v grace", took, grace)
	}
	if err := syscall.Kill(-info.PID, 0); err != syscall.ESRCH {
		t.Errorf("kill(-pgid, 0) after stop = %v, want ESRCH", err)
	}
}

func TestStopKillsTheWholeGroup(t *testing.T) {
	n := newTestNode(t, nil, "child")
	info, err := n.StartEngine(t.Context(), StartSpec{Profile: "child"})
	if err != nil {
		t.Fatalf("StartEngine: %v", err)
	}
	child := childPID(t, info.LogTail)
	if err := syscall.Kill(child, 0); err != nil {
		t.Fatalf("child %d not running before stop: %v", child, err)
	}
	// The leader exits on SIGTERM; its child ignores it and must be killed.
	res, err := n.StopEngine(t.Context(), 2*time.Second)
	if err != nil {
		t.Fatalf("StopEngine: %v", err)
	}
	t.Logf("stop: %+v", res)
	waitGone(t, child, "the engine's child")
	if err := syscall.Kill(-info.PID, 0); err != syscall.ESRCH {
		t.Errorf("kill(-pgid, 0) after stop = %v, want ESRCH", err)
	}
}

func TestRestartGivesNewPID(t *testing.T) {
	n := newTestNode(t, nil, "ready")
	first, err := n.StartEngine(t.Context(), StartSpec{Profile: "ready"})
	if err != nil {
		t.Fatalf("first StartEngine: %v", err)
	}
	second, err := n.StartEngine(t.Context(), StartSpec{Profile: "ready", ColdMode: ColdWarmRestart})
	if err != nil {
		t.Fatalf("second StartEngine: %v", err)
	}
	if first.PID == second.PID {
		t.Errorf("restart kept pid %d, want a new one", first.PID)
	}
	if err := syscall.Kill(-first.PID, 0); err != syscall.ESRCH {
		t.Errorf("first engine's group after restart: kill = %v, want ESRCH", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := syscall.Kill(-second.PID, 0); err != syscall.ESRCH {
		t.Errorf("second engine's group after Close: kill = %v, want ESRCH", err)
	}
	if _, err := n.StartEngine(t.Context(), StartSpec{Profile: "ready"}); !errors.Is(err, ErrClosed) {
		t.Errorf("StartEngine after Close = %v, want ErrClosed", err)
	}
}

func TestPortInUseIsRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	n := newTestNode(t, func(c *Config) {
		p := c.Profiles["ready"]
		p.Port = port
		c.Profiles["ready"] = p
	}, "ready")
	_, err = n.StartEngine(t.Context(), StartSpec{Profile: "ready"})
	var pe *PortInUseError
	if !errors.As(err, &pe) {
		t.Fatalf("StartEngine = %v, want *PortInUseError", err)
	}
	want := "port " + strconv.Itoa(port) + " is already in use by another process; stop it or choose another port"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestReadyTimeoutStopsEngine(t *testing.T) {
	n := newTestNode(t, nil, "never")
	_, err := n.StartEngine(t.Context(), StartSpec{Profile: "never", ReadyTimeout: 300 * time.Millisecond})
	var te *ReadyTimeoutError
	if !errors.As(err, &te) {
		t.Fatalf("StartEngine = %v, want *ReadyTimeoutError", err)
	}
	if te.Stage != stageSpawned {
		t.Errorf("Stage = %q, want %q", te.Stage, stageSpawned)
	}
	if len(te.LogTail) == 0 {
		t.Errorf("no log tail in the timeout error")
	}
	if n.enginePID() != 0 {
		t.Errorf("engine still registered after a timeout")
	}
}

func TestStartEngineCancelledStopsEngine(t *testing.T) {
	n := newTestNode(t, nil, "never")
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := n.StartEngine(ctx, StartSpec{Profile: "never"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("StartEngine = %v, want context.DeadlineExceeded", err)
	}
	var te *ReadyTimeoutError
	if errors.As(err, &te) {
		t.Errorf("a caller's deadline was reported as the ready timeout")
	}
}

func TestStartEngineRejectsBadSpecs(t *testing.T) {
	n := newTestNode(t, nil, "ready")
	tests := []struct {
		name string
		spec StartSpec
		is   error
		want string
	}{
		{"unknown profile", StartSpec{Profile: "nope"}, ErrUnknownProfile, `unknown profile "nope"; this node knows ready`},
		{"cold disk without weights", StartSpec{Profile: "ready", ColdMode: ColdDisk}, ErrFailedPrecondition, `cold-disk: no weight files for "test/model"`},
		{"drop caches without cold disk", StartSpec{Profile: "ready", DropCaches: true}, ErrInvalidArgument, `drop_caches is for cold_mode "cold-disk" only`},
		{"cold bogus", StartSpec{Profile: "ready", ColdMode: "freezing"}, ErrInvalidArgument, `cold_mode "freezing" is unknown`},
		{"negative timeout", StartSpec{Profile: "ready", ReadyTimeout: -1}, ErrInvalidArgument, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := n.StartEngine(t.Context(), tt.spec)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("StartEngine = %v, want %v containing %q", err, tt.is, tt.want)
			}
		})
	}
	t.Run("bad knob", func(t *testing.T) {
		_, err := n.StartEngine(t.Context(), StartSpec{Profile: "ready", Knobs: Knobs{MaxNumSeqs: -3}})
		var ke *KnobError
		if !errors.As(err, &ke) || ke.Field != "max_num_seqs" {
			t.Errorf("StartEngine = %v, want a KnobError for max_num_seqs", err)
		}
	})
}

func TestSamplerTracksEngine(t *testing.T) {
	n := newTestNode(t, nil, "ready")
	ch, cancel := n.Subscribe()
	defer cancel()
	first := <-ch
	if first.EngineCPUPercent != -1 {
		t.Errorf("EngineCPUPercent with no engine = %v, want -1", first.EngineCPUPercent)
	}
	if first.MemAvailableBytes == 0 {
		t.Errorf("MemAvailableBytes = 0, want the host's")
	}
	if first.NVMLError == "" {
		t.Errorf("NVMLError empty with NVML unavailable")
	}
	if _, err := n.StartEngine(t.Context(), StartSpec{Profile: "ready"}); err != nil {
		t.Fatalf("StartEngine: %v", err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case s := <-ch:
			if s.EngineRSSBytes > 0 && s.EngineCPUPercent >= 0 {
				return
			}
		case <-deadline:
			t.Fatal("no sample with engine RSS within 5 s of ready")
		}
	}
}

func TestInfo(t *testing.T) {
	n := newTestNode(t, nil, "ready", "oom")
	info, err := n.Info(t.Context())
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if info.Hostname == "" || info.Kernel == "" || info.OS == "" || info.CPUCount < 1 || info.MemTotalBytes == 0 {
		t.Errorf("Info lacks host facts: %+v", info)
	}
	if !slices.Equal(info.Profiles, []string{"oom", "ready"}) {
		t.Errorf("Profiles = %q, want [oom ready]", info.Profiles)
	}
}

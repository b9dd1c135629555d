package vllmlog

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Line
	}{
		{
			name: "v0.11 coloured APIServer prefix",
			in:   "\x1b[1;36m(APIServer pid=15)\x1b[0;0m INFO 01-23 15:50:06 [kv_cache_utils.py:1087] GPU KV cache size: 840,160 tokens",
			want: Line{Process: "APIServer", PID: 15, Level: "INFO", Time: "01-23 15:50:06", File: "kv_cache_utils.py", LineNo: 1087, Message: "GPU KV cache size: 840,160 tokens"},
		},
		{
			name: "pasted log with escape lost",
			in:   "[1;36m(EngineCore_DP0 pid=210)[0;0m INFO 01-23 15:50:06 [core.py:210] init engine (profile, create kv cache, warmup model) took 42.05 seconds",
			// Without the ESC byte the bracket codes stay, but the header is still found.
			want: Line{Process: "EngineCore_DP0", PID: 210, Level: "INFO", Time: "01-23 15:50:06", File: "core.py", LineNo: 210, Message: "init engine (profile, create kv cache, warmup model) took 42.05 seconds"},
		},
		{
			name: "old unbracketed format",
			in:   "INFO 10-18 09:59:56 gpu_executor.py:126] Maximum concurrency for 32768 tokens per request: 9.77x",
			want: Line{Level: "INFO", Time: "10-18 09:59:56", File: "gpu_executor.py", LineNo: 126, Message: "Maximum concurrency for 32768 tokens per request: 9.77x"},
		},
		{
			name: "uvicorn under a prefix",
			in:   "(APIServer pid=15) INFO:     Application startup complete.",
			want: Line{Process: "APIServer", PID: 15, Level: "INFO", Message: "Application startup complete."},
		},
		{
			name: "V0 worker prefix",
			in:   "(VllmWorkerProcess pid=3011) INFO 10-18 09:59:50 model_runner.py:1067] Loading model weights took 2.8875 GB",
			want: Line{Process: "VllmWorkerProcess", PID: 3011, Level: "INFO", Time: "10-18 09:59:50", File: "model_runner.py", LineNo: 1067, Message: "Loading model weights took 2.8875 GB"},
		},
		{
			name: "traceback without header",
			in:   "(EngineCore_DP0 pid=210) torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
			want: Line{Process: "EngineCore_DP0", PID: 210, Message: "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."},
		},
		{
			name: "journald in front",
			in:   "Feb 22 06:35:27 host env[2827]: (APIServer pid=7) INFO 02-22 06:35:27 [api_server.py:1839] vLLM API server version 0.11.0",
			want: Line{Process: "APIServer", PID: 7, Level: "INFO", Time: "02-22 06:35:27", File: "api_server.py", LineNo: 1839, Message: "vLLM API server version 0.11.0"},
		},
		{
			name: "debug relpath",
			in:   "DEBUG 03-01 10:00:00 [model_executor/model_loader/default_loader.py:267] Loading weights took 0.69 seconds",
			want: Line{Level: "DEBUG", Time: "03-01 10:00:00", File: "model_executor/model_loader/default_loader.py", LineNo: 267, Message: "Loading weights took 0.69 seconds"},
		},
		{
			name: "message that mentions pid is left alone",
			in:   "some text (x pid=1) more",
			want: Line{Message: "some text (x pid=1) more"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseLine(tt.in)
			got.Raw = ""
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseLine(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

type timedLine struct {
	at   float64 // seconds since spawn
	line string
}

func feed(t *testing.T, lines []timedLine) Result {
	t.Helper()
	spawn := time.Now()
	p := NewParser(spawn)
	for _, l := range lines {
		p.Line(spawn.Add(time.Duration(l.at*float64(time.Second))), l.line)
	}
	return p.Result()
}

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

const (
	api = "\x1b[1;36m(APIServer pid=15)\x1b[0;0m "
	eng = "\x1b[1;36m(EngineCore_DP0 pid=210)\x1b[0;0m "
)

// v011Log is a vLLM 0.11 start of Qwen2.5-1.5B with compilation, as printed
// to a pipe (the cyan prefix is written even when not on a TTY).
var v011Log = []timedLine{
	{0.9, api + "INFO 01-23 15:49:40 [api_server.py:1839] vLLM API server version 0.11.0"},
	{1.0, api + "INFO 01-23 15:49:40 [utils.py:233] non-default args: {'model': 'Qwen/Qwen2.5-1.5B-Instruct', 'max_model_len': 32768}"},
	{5.0, eng + "INFO 01-23 15:49:45 [core.py:654] Waiting for init message from front-end."},
	{6.0, eng + "INFO 01-23 15:49:46 [gpu_model_runner.py:2602] Starting to load model Qwen/Qwen2.5-1.5B-Instruct..."},
	{6.1, eng + "INFO 01-23 15:49:46 [gpu_model_runner.py:2634] Loading model from scratch..."},
	{6.5, "Loading safetensors checkpoint shards:   0% Completed | 0/1 [00:00<?, ?it/s]\rLoading safetensors checkpoint shards: 100% Completed | 1/1 [00:00<00:00,  1.45it/s]"},
	{7.0, eng + "INFO 01-23 15:49:47 [default_loader.py:267] Loading weights took 0.69 seconds"},
	{7.5, eng + "INFO 01-23 15:49:47 [gpu_model_runner.py:2653] Model loading took 2.8871 GiB and 1.234567 seconds"},
	{8.0, eng + "INFO 01-23 15:49:48 [backends.py:548] Using cache directory: /root/.cache/vllm/torch_compile_cache/abc/rank_0_0/backbone for vLLM's torch.compile"},
	{15.5, eng + "INFO 01-23 15:49:55 [backends.py:559] Dynamo bytecode transform time: 7.51 s"},
	{16.0, eng + "INFO 01-23 15:49:56 [backends.py:197] Cache the graph for dynamic shape for later use"},
	{36.6, eng + "INFO 01-23 15:50:16 [backends.py:218] Compiling a graph for dynamic shape takes 20.61 s"},
	{37.0, eng + "INFO 01-23 15:50:17 [monitor.py:34] torch.compile takes 28.12 s in total"},
	{38.0, eng + "INFO 01-23 15:50:18 [gpu_worker.py:298] Available KV cache memory: 120.27 GiB"},
	{38.2, eng + "INFO 01-23 15:50:18 [kv_cache_utils.py:1087] GPU KV cache size: 4,503,936 tokens"},
	{38.3, eng + "INFO 01-23 15:50:18 [kv_cache_utils.py:1091] Maximum concurrency for 32,768 tokens per request: 137.45x"},
	{42.0, eng + "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|██████████| 67/67 [00:03<00:00, 19.2it/s]"},
	{43.3, eng + "INFO 01-23 15:50:23 [gpu_model_runner.py:3480] Graph capturing finished in 5 secs, took 0.67 GiB"},
	{43.6, eng + "INFO 01-23 15:50:23 [core.py:210] init engine (profile, create kv cache, warmup model) took 36.05 seconds"},
	{44.0, api + "INFO 01-23 15:50:24 [api_server.py:1634] Supported_tasks: ['generate']"},
	{44.1, api + "INFO 01-23 15:50:24 [api_server.py:1912] Starting vLLM API server 0 on http://0.0.0.0:8000"},
	{44.2, api + "INFO:     Started server process [15]"},
	{44.3, api + "INFO:     Waiting for application startup."},
	{44.5, api + "INFO:     Application startup complete."},
}

func TestParserV011(t *testing.T) {
	r := feed(t, v011Log)
	want := Result{
		Version:              "0.11.0",
		Model:                "Qwen/Qwen2.5-1.5B-Instruct",
		LoadWeightsS:         new(0.69),
		ModelLoadGiB:         new(2.8871),
		ModelLoadS:           new(1.234567),
		DynamoTransform:      new(7.51),
		CompileGraphS:        new(20.61),
		TorchCompileTotalS:   new(28.12),
		AvailableKVGiB:       new(120.27),
		KVCacheTokens:        new(int64(4503936)),
		MaxConcurrency:       new(137.45),
		MaxConcurrencyTokens: new(int64(32768)),
		GraphCaptureS:        new(5.0),
		GraphCaptureGiB:      new(0.67),
		InitEngineS:          new(36.05),
		BlockSize:            16,
		FirstToReadyS:        new(44.0),
		APIServerListening:   true,
		AppStartupComplete:   true,
		Lines:                len(v011Log),
		EngineLines:          len(v011Log) - 1, // all but the un-prefixed tqdm line
		Phases: []Phase{
			{Name: PhaseBootstrap, Start: 0, End: secs(6), Duration: secs(6), Source: SourceLog},
			{Name: PhaseLoadWeights, Start: secs(6), End: secs(7), Duration: secs(0.69), Reported: true, Source: SourceLog},
			{Name: PhaseLoadModel, Start: secs(6), End: secs(7.5), Duration: secs(1.234567), Reported: true, Source: SourceLog, Detail: "2.8871 GiB"},
			{Name: PhaseCompile, Start: secs(7.5), End: secs(37), Duration: secs(28.12), Reported: true, Source: SourceLog},
			{Name: PhaseInitEngine, Start: secs(7.5), End: secs(43.6), Duration: secs(36.05), Reported: true, Source: SourceLog},
			{Name: PhaseMemoryKV, Start: secs(37), End: secs(38.3), Duration: secs(38.3) - secs(37), Source: SourceLog, Detail: "4503936 tokens"},
			{Name: PhaseGraphCapture, Start: secs(38.3), End: secs(43.3), Duration: secs(5), Reported: true, Source: SourceLog, Detail: "0.67 GiB"},
			{Name: PhaseAPIServerStart, Start: secs(43.6), End: secs(44.5), Duration: secs(44.5) - secs(43.6), Source: SourceLog},
		},
	}
	if diff := cmp.Diff(want, r, cmp.Comparer(approxDur)); diff != "" {
		t.Errorf("Result mismatch (-want +got):\n%s", diff)
	}
	if _, ok := r.RootCause(); ok {
		t.Errorf("RootCause of a clean start = true, want false")
	}
}

// approxDur treats durations within 1 µs as equal: float seconds do not
// round-trip exactly.
func approxDur(a, b time.Duration) bool {
	d := a - b
	return d > -time.Microsecond && d < time.Microsecond
}

func TestParserNewFormats(t *testing.T) {
	// ~0.15+: logo banner, "GiB memory", compile cache hit, new totals line,
	// "(EngineCore pid=N)" and "Starting vLLM server on".
	lines := []timedLine{
		{0.5, "(APIServer pid=1) INFO 01-23 15:50:01 [utils.py:325]  ▄▄ ▄█ █     █     █ ▀▄▀ █  version 0.15.1"},
		{2, "(EngineCore pid=88) INFO 01-23 15:50:03 [gpu_model_runner.py:3900] Starting to load model /opt/models/qwen..."},
		{3, "(EngineCore pid=88) INFO 01-23 15:50:04 [default_loader.py:291] Loading weights took 0.51 seconds"},
		{3.2, "(EngineCore pid=88) INFO 01-23 15:50:04 [gpu_model_runner.py:3990] Model loading took 2.89 GiB memory and 1.150123 seconds"},
		{4, "(EngineCore pid=88) INFO 01-23 15:50:05 [backends.py:640] Dynamo bytecode transform time: 3.70 s"},
		{7, "(EngineCore pid=88) INFO 01-23 15:50:08 [backends.py:260] Directly load the compiled graph(s) for compile range (1, 8192) from the cache, took 2.813 s"},
		{7.5, "(EngineCore pid=88) INFO 01-23 15:50:08 [monitor.py:40] torch.compile and initial profiling run took 7.20 s in total"},
		{8, "(EngineCore pid=88) INFO 01-23 15:50:09 [gpu_worker.py:350] Available KV cache memory: 120.3 GiB"},
		{8.1, "(EngineCore pid=88) INFO 01-23 15:50:09 [kv_cache_utils.py:1300] GPU KV cache size: 4,505,376 tokens"},
		{12, "(EngineCore pid=88) INFO 01-23 15:50:13 [gpu_model_runner.py:4800] Graph capturing finished in 4 secs, took -0.03 GiB"},
		{12.2, "(EngineCore pid=88) INFO 01-23 15:50:13 [core.py:250] init engine (profile, create kv cache, warmup model) took 9.01 seconds"},
		{13, "(APIServer pid=1) INFO 01-23 15:50:14 [api_server.py:2000] Starting vLLM server on http://0.0.0.0:8000"},
		{13.2, "(APIServer pid=1) INFO:     Application startup complete."},
	}
	r := feed(t, lines)
	if r.Version != "0.15.1" {
		t.Errorf("Version = %q, want 0.15.1", r.Version)
	}
	if r.Model != "/opt/models/qwen" {
		t.Errorf("Model = %q, want /opt/models/qwen", r.Model)
	}
	checkF(t, "ModelLoadGiB", r.ModelLoadGiB, 2.89)
	checkF(t, "ModelLoadS", r.ModelLoadS, 1.150123)
	checkF(t, "CompileCacheS", r.CompileCacheS, 2.813)
	checkF(t, "TorchCompileTotalS", r.TorchCompileTotalS, 7.20)
	checkF(t, "AvailableKVGiB", r.AvailableKVGiB, 120.3)
	checkF(t, "GraphCaptureGiB", r.GraphCaptureGiB, -0.03)
	if r.CompileGraphS != nil {
		t.Errorf("CompileGraphS = %v, want nil on a cache hit", *r.CompileGraphS)
	}
	names := phaseNames(r.Phases)
	wantNames := []string{PhaseBootstrap, PhaseLoadWeights, PhaseLoadModel, PhaseCompile, PhaseInitEngine, PhaseMemoryKV, PhaseGraphCapture, PhaseAPIServerStart}
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Errorf("phases (-want +got):\n%s", diff)
	}
	for _, ph := range r.Phases {
		if ph.Name == PhaseCompile && ph.Detail != "compile cache hit" {
			t.Errorf("compile detail = %q, want compile cache hit", ph.Detail)
		}
	}
}

func TestParserV0Format(t *testing.T) {
	lines := []timedLine{
		{1, "INFO 10-18 09:59:40 api_server.py:528] vLLM API server version 0.6.3"},
		{3, "INFO 10-18 09:59:45 model_runner.py:1056] Starting to load model Qwen/Qwen2.5-1.5B-Instruct..."},
		{8, "INFO 10-18 09:59:50 model_runner.py:1067] Loading model weights took 2.8875 GB"},
		{12, "INFO 10-18 09:59:56 gpu_executor.py:122] # GPU blocks: 20000, # CPU blocks: 9362"},
		{12.1, "INFO 10-18 09:59:56 gpu_executor.py:126] Maximum concurrency for 32768 tokens per request: 9.77x"},
		{26, "INFO 10-18 10:00:10 model_runner.py:1523] Graph capturing finished in 14 secs."},
		{27, "INFO:     Application startup complete."},
	}
	r := feed(t, lines)
	if r.Version != "0.6.3" {
		t.Errorf("Version = %q, want 0.6.3", r.Version)
	}
	checkF(t, "ModelLoadGiB", r.ModelLoadGiB, 2.8875)
	checkF(t, "MaxConcurrency", r.MaxConcurrency, 9.77)
	checkF(t, "GraphCaptureS", r.GraphCaptureS, 14)
	if r.GraphCaptureGiB != nil {
		t.Errorf("GraphCaptureGiB = %v, want nil", *r.GraphCaptureGiB)
	}
	if r.MaxConcurrencyTokens == nil || *r.MaxConcurrencyTokens != 32768 {
		t.Errorf("MaxConcurrencyTokens = %v, want 32768", r.MaxConcurrencyTokens)
	}
	want := []string{PhaseBootstrap, PhaseLoadModel, PhaseMemoryKV, PhaseGraphCapture}
	if diff := cmp.Diff(want, phaseNames(r.Phases)); diff != "" {
		t.Errorf("phases (-want +got):\n%s", diff)
	}
}

func TestParserFailures(t *testing.T) {
	tests := []struct {
		name string
		log  string
		want string // root cause kind
	}{
		{
			name: "CUDA OOM wrapped by engine core failure",
			log: eng + "ERROR 01-23 15:50:00 [core.py:708] EngineCore failed to start.\n" +
				eng + "ERROR 01-23 15:50:00 [core.py:708] Traceback (most recent call last):\n" +
				eng + "ERROR 01-23 15:50:00 [core.py:708] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.81 GiB of which 1.06 GiB is free.\n" +
				api + "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
			want: FailCUDAOOM,
		},
		{
			name: "KV too small V1",
			log:  eng + "ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is needed, which is larger than the available KV cache memory (10.11 GiB). Based on the available memory, the estimated maximum model length is 82816. Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
			want: FailKVCacheTooSmall,
		},
		{
			name: "KV too small V0",
			log:  "ValueError: The model's max seq len (32768) is larger than the maximum number of tokens that can be stored in KV cache (20000). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
			want: FailKVCacheTooSmall,
		},
		{
			name: "no KV memory",
			log:  "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.",
			want: FailNoKVMemory,
		},
		{
			name: "free memory",
			log:  eng + "ValueError: Free memory on device (10.5/139.81 GiB) on startup is less than desired GPU memory utilization (0.9, 125.83 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
			want: FailInsufficientFreeMem,
		},
		{
			name: "port",
			log:  api + "OSError: [Errno 98] Address already in use",
			want: FailAddressInUse,
		},
		{
			name: "uvicorn port",
			log:  "ERROR:    [Errno 98] error while attempting to bind on address ('0.0.0.0', 8000): address already in use",
			want: FailAddressInUse,
		},
		{
			name: "model not found",
			log:  api + "OSError: Qwen/Nope is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'",
			want: FailModelNotFound,
		},
		{
			name: "repo not found",
			log:  "huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. (Request ID: Root=1-abc)\nRepository Not Found for url: https://huggingface.co/api/models/x/y.",
			want: FailModelNotFound,
		},
		{
			name: "only the wrapper",
			log:  api + "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
			want: FailEngineCoreInitFailed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var lines []timedLine
			for i, l := range strings.Split(tt.log, "\n") {
				lines = append(lines, timedLine{float64(i), l})
			}
			r := feed(t, lines)
			f, ok := r.RootCause()
			if !ok || f.Kind != tt.want {
				t.Errorf("RootCause() = %+v, %v; want kind %q", f, ok, tt.want)
			}
			if ok && strings.Contains(f.Line, "\x1b") {
				t.Errorf("failure line %q still has ANSI codes", f.Line)
			}
		})
	}
}

func TestParserConcurrentUse(t *testing.T) {
	spawn := time.Now()
	p := NewParser(spawn)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, l := range v011Log {
			p.Line(time.Now(), l.line)
		}
	}()
	for range 10 {
		_ = p.Result()
	}
	<-done
	if got := p.Result().Lines; got != len(v011Log) {
		t.Errorf("Lines = %d, want %d", got, len(v011Log))
	}
}

func checkF(t *testing.T, name string, got *float64, want float64) {
	t.Helper()
	if got == nil {
		t.Errorf("%s = nil, want %v", name, want)
		return
	}
	if *got != want {
		t.Errorf("%s = %v, want %v", name, *got, want)
	}
}

func phaseNames(ps []Phase) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

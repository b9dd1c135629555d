package gpunode

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLoadExampleProfiles(t *testing.T) {
	profs, err := LoadFile(filepath.Join("testdata", "profiles.example.yaml"), "/usr/local/bin/ttftlab")
	if err != nil {
		t.Fatalf("LoadFile: %v", err)
	}
	if got := slices.Sorted(func(yield func(string) bool) {
		for k := range profs {
			if !yield(k) {
				return
			}
		}
	}); !slices.Equal(got, []string{"qwen-api-server", "qwen-serve", "sim", "slm-script"}) {
		t.Fatalf("profiles %q", got)
	}
	tests := []struct {
		profile string
		knobs   Knobs
		argv    []string
		env     []string // must be present
		noEnv   []string // variable names that must be absent
	}{
		{
			profile: "qwen-serve",
			argv: []string{"vllm", "serve", "Qwen/Qwen2.5-1.5B-Instruct", "--host", "127.0.0.1", "--port", "8000",
				"--served-model-name", "qwen", "--max-model-len", "8192", "--gpu-memory-utilization", "0.9",
				"--enable-prefix-caching", "--dtype", "bfloat16", "--kv-cache-dtype", "auto", "--tensor-parallel-size", "1"},
			env: []string{"CUDA_VISIBLE_DEVICES=0", "HF_HOME=/data/hf", "PYTHONUNBUFFERED=1", "VLLM_CACHE_ROOT=/data/vllm-cache"},
		},
		{
			profile: "qwen-api-server",
			knobs:   Knobs{MaxModelLen: 4096},
			argv: []string{"/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "Qwen/Qwen2.5-1.5B-Instruct",
				"--host", "127.0.0.1", "--port", "8123", "--served-model-name", "Qwen/Qwen2.5-1.5B-Instruct",
				"--max-model-len", "4096", "--enforce-eager"},
		},
		{
			profile: "slm-script",
			knobs:   Knobs{MaxModelLen: 2048, EnforceEager: new(true)},
			argv:    []string{"bash", "days/day-007-vllm-runtime-probes/serve_slm_vllm.sh"},
			env:     []string{"MODEL=Qwen/Qwen2.5-1.5B-Instruct", "PORT=8123", "HOST=127.0.0.1", "MAX_MODEL_LEN=2048", "ENFORCE_EAGER=1", "SERVED_MODEL_NAME=Qwen/Qwen2.5-1.5B-Instruct"},
			noEnv:   []string{"GPU_MEMORY_UTILIZATION", "MAX_NUM_SEQS"},
		},
		{
			profile: "sim",
			argv: []string{"/usr/local/bin/ttftlab", "sim", "--model", "Qwen/Qwen2.5-1.5B-Instruct", "--host", "127.0.0.1", "--port", "8123",
				"--served-model-name", "Qwen/Qwen2.5-1.5B-Instruct", "--enforce-eager", "--gpu", "h200", "--state-dir", "/var/lib/ttftlab/sim"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.profile, func(t *testing.T) {
			p := profs[tt.profile]
			if err := p.CheckRequest(tt.knobs); err != nil {
				t.Fatalf("CheckRequest: %v", err)
			}
			k := p.Defaults.Override(tt.knobs)
			port := 8123
			if p.Port != 0 {
				port = p.Port
			}
			argv, err := p.Argv(k, port)
			if err != nil {
				t.Fatalf("Argv: %v", err)
			}
			if diff := cmp.Diff(tt.argv, argv); diff != "" {
				t.Errorf("argv (-want +got):\n%s", diff)
			}
			env := p.EnvFor(k, port)
			for _, want := range tt.env {
				if !slices.Contains(env, want) {
					t.Errorf("env %q lacks %q", env, want)
				}
			}
			for _, name := range tt.noEnv {
				if slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, name+"=") }) {
					t.Errorf("env %q has %s, whose knob is unset", env, name)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join("..", "days", "day-007-vllm-runtime-probes", "serve_slm_vllm.sh")); err != nil {
		t.Errorf("the example's launcher script: %v", err)
	}
}

func TestParseFileRefuses(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"unknown key", "profiles:\n  - name: a\n    kind: vllm\n    gpu_count: 2\n", `p.yaml:4:5: unknown field "gpu_count"`},
		{"unknown knob key", "profiles:\n  - name: a\n    kind: vllm\n    defaults:\n      model: m\n      extra_args: [--foo]\n", `p.yaml:6:7: unknown field "extra_args"`},
		{"wrong type", "profiles:\n  - name: a\n    kind: vllm\n    port: eighty\n", "p.yaml:4:11: cannot unmarshal string"},
		{"duplicate key", "profiles:\n  - name: a\n    name: b\n", "p.yaml:3:5:"},
		{"empty", "\n", "p.yaml: empty"},
		{"no profiles", "profiles: []\n", "p.yaml: no profiles"},
		{"bad kind", "profiles:\n  - name: a\n    kind: docker\n    command: [x]\n", `profile "a": kind "docker" is unknown`},
		{"bad dtype", "profiles:\n  - {name: a, kind: vllm, dtype: fp4}\n", `dtype "fp4" is not one vLLM accepts; use one of auto, half, float16, bfloat16, float, float32`},
		{"bad kv dtype", "profiles:\n  - {name: a, kind: vllm, kv_cache_dtype: int4}\n", `kv_cache_dtype "int4" is not one vLLM accepts`},
		{"bad launcher", "profiles:\n  - {name: a, kind: vllm, launcher: docker}\n", `launcher "docker" is unknown; use "serve" or "api_server"`},
		{"launcher on sim", "profiles:\n  - {name: a, kind: sim, launcher: serve}\n", `launcher is for kind "vllm" only`},
		{"tp out of range", "profiles:\n  - {name: a, kind: vllm, tensor_parallel_size: 100}\n", "tensor_parallel_size 100 is out of range"},
		{"tp more than GPUs", "profiles:\n  - {name: a, kind: vllm, tensor_parallel_size: 2, env: {CUDA_VISIBLE_DEVICES: \"0\"}}\n", `tensor_parallel_size 2 needs 2 GPUs but CUDA_VISIBLE_DEVICES="0" names 1`},
		{"dtype on command", "profiles:\n  - {name: a, kind: command, command: [x], dtype: half}\n", "are for kind \"vllm\" only"},
		{"bad allowed knob", "profiles:\n  - {name: a, kind: vllm, allowed_knobs: [argv]}\n", `allowed_knobs names "argv", which is not a knob`},
		{"bad default", "profiles:\n  - {name: a, kind: vllm, defaults: {gpu_memory_utilization: 2}}\n", "gpu_memory_utilization 2 is invalid"},
		{"twice", "profiles:\n  - {name: a, kind: sim}\n  - {name: a, kind: sim}\n", `profile "a" is defined twice`},
		{"no name", "profiles:\n  - {kind: sim}\n", "profiles[0]: name is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseFile("p.yaml", []byte(tt.yaml))
			if err == nil {
				_, err = f.ToProfiles("ttftlab")
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestDisallowedRequestsRefused is the acceptance check: a request for a
// profile the node does not have, a knob the profile does not allow, or a
// model outside its list is refused with a message that names it and the
// fix — before anything is spawned.
func TestDisallowedRequestsRefused(t *testing.T) {
	profs, err := LoadFile(filepath.Join("testdata", "profiles.example.yaml"), "ttftlab")
	if err != nil {
		t.Fatal(err)
	}
	n := newTestNode(t, func(c *Config) { c.Profiles = profs })
	tests := []struct {
		name string
		spec StartSpec
		is   error
		want string
	}{
		{"unknown profile", StartSpec{Profile: "rm-rf"}, ErrUnknownProfile, `unknown profile "rm-rf"; this node knows qwen-api-server, qwen-serve, sim, slm-script`},
		{"knob not allowed", StartSpec{Profile: "qwen-api-server", Knobs: Knobs{GPUMemoryUtilization: 0.5}}, nil,
			`gpu_memory_utilization (set) is invalid: profile "qwen-api-server" does not let a request set it (allowed_knobs: max_model_len, max_num_seqs)`},
		{"model not allowed", StartSpec{Profile: "qwen-serve", Knobs: Knobs{Model: "evil/model"}}, nil,
			`model "evil/model" is invalid: profile "qwen-serve" allows only Qwen/Qwen2.5-1.5B-Instruct, microsoft/Phi-3-mini-4k-instruct`},
		{"knob the script does not take", StartSpec{Profile: "slm-script", Knobs: Knobs{MaxNumBatchedTokens: 4096}}, nil,
			`max_num_batched_tokens (set) is invalid: profile "slm-script" runs a generic command that does not take this knob (no env value uses {max_num_batched_tokens})`},
		{"out of range", StartSpec{Profile: "qwen-serve", Knobs: Knobs{MaxNumSeqs: 1 << 20}}, nil, "max_num_seqs 1048576 is invalid: must be between 1 and 65536"},
		{"flag smuggled as model", StartSpec{Profile: "qwen-serve", Knobs: Knobs{Model: "--trust-remote-code"}}, nil, "must not start with '-'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := n.StartEngine(t.Context(), tt.spec)
			var ke *KnobError
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("StartEngine = %v, want an error containing %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if tt.is == nil && !errors.As(err, &ke) {
				t.Errorf("error %v is not a *KnobError", err)
			}
		})
	}
	if pid := n.enginePID(); pid != 0 {
		t.Errorf("an engine runs (pid %d) after refused requests", pid)
	}
}

package gpunode

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestArgv(t *testing.T) {
	builtin := BuiltinProfiles("/usr/local/bin/ttftlab")
	tests := []struct {
		name    string
		profile Profile
		knobs   Knobs
		want    []string
	}{
		{
			name:    "vllm defaults",
			profile: builtin["vllm"],
			want:    []string{"vllm", "serve", "Qwen/Qwen2.5-1.5B-Instruct", "--host", "127.0.0.1", "--port", "8123", "--served-model-name", "Qwen/Qwen2.5-1.5B-Instruct"},
		},
		{
			name:    "vllm every knob",
			profile: builtin["vllm"],
			knobs: Knobs{
				Model:                "microsoft/Phi-3-mini-4k-instruct",
				ServedModelName:      "phi3",
				MaxModelLen:          4096,
				GPUMemoryUtilization: 0.85,
				MaxNumSeqs:           256,
				MaxNumBatchedTokens:  8192,
				EnforceEager:         new(true),
				EnablePrefixCaching:  new(false),
				EnableChunkedPrefill: new(true),
				GPU:                  "h100", // sim only: not passed to vLLM
			},
			want: []string{"vllm", "serve", "microsoft/Phi-3-mini-4k-instruct",
				"--host", "127.0.0.1", "--port", "8123", "--served-model-name", "phi3",
				"--max-model-len", "4096", "--max-num-batched-tokens", "8192", "--max-num-seqs", "256",
				"--enable-chunked-prefill", "--gpu-memory-utilization", "0.85", "--no-enable-prefix-caching",
				"--enforce-eager"},
		},
		{
			name:    "vllm enforce eager false is omitted",
			profile: builtin["vllm"],
			knobs:   Knobs{EnforceEager: new(false), EnablePrefixCaching: new(true), EnableChunkedPrefill: new(false)},
			want: []string{"vllm", "serve", "Qwen/Qwen2.5-1.5B-Instruct", "--host", "127.0.0.1", "--port", "8123",
				"--served-model-name", "Qwen/Qwen2.5-1.5B-Instruct", "--no-enable-chunked-prefill", "--enable-prefix-caching"},
		},
		{
			name:    "sim defaults",
			profile: builtin["sim"],
			want: []string{"/usr/local/bin/ttftlab", "sim", "--model", "Qwen/Qwen2.5-1.5B-Instruct",
				"--host", "127.0.0.1", "--port", "8123", "--served-model-name", "Qwen/Qwen2.5-1.5B-Instruct",
				"--enforce-eager", "--gpu", "h200"},
		},
		{
			name:    "sim knobs",
			profile: builtin["sim"],
			knobs:   Knobs{ServedModelName: "qwen", MaxNumSeqs: 64, EnforceEager: new(false), GPU: "h100"},
			want: []string{"/usr/local/bin/ttftlab", "sim", "--model", "Qwen/Qwen2.5-1.5B-Instruct",
				"--host", "127.0.0.1", "--port", "8123", "--served-model-name", "qwen",
				"--max-num-seqs", "64", "--gpu", "h100"},
		},
		{
			name: "command placeholders",
			profile: Profile{Name: "other", Kind: KindCommand, Host: "0.0.0.0",
				Command:  []string{"my-server", "--listen={host}:{port}", "--model", "{model}", "--alias", "{served_model_name}"},
				Defaults: Knobs{Model: "m"}},
			want: []string{"my-server", "--listen=0.0.0.0:8123", "--model", "m", "--alias", "m"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := tt.profile.Defaults.Override(tt.knobs)
			got, err := tt.profile.Argv(k, 8123)
			if err != nil {
				t.Fatalf("Argv: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Argv mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestArgvRefuses(t *testing.T) {
	vllm := BuiltinProfiles("ttftlab")["vllm"]
	cmdProf := Profile{Name: "other", Kind: KindCommand, Command: []string{"srv", "{port}"}, Defaults: Knobs{Model: "m"}}
	tests := []struct {
		name    string
		profile Profile
		knobs   Knobs
		port    int
		want    string
	}{
		{"bad port", vllm, Knobs{}, 0, "port 0 is out of range"},
		{"no model", Profile{Name: "x", Kind: KindVLLM, Command: []string{"vllm", "serve"}}, Knobs{}, 8000, "model \"\" is invalid"},
		{"flag injection", vllm, Knobs{Model: "--trust-remote-code"}, 8000, "must not start with '-'"},
		{"knob on a command profile", cmdProf, Knobs{MaxNumSeqs: 8}, 8000, "max_num_seqs (set) is invalid"},
		{"bad kind", Profile{Name: "x", Kind: "docker", Command: []string{"x"}}, Knobs{Model: "m"}, 8000, `kind "docker" is unknown`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.profile.Argv(tt.profile.Defaults.Override(tt.knobs), tt.port)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Argv error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestKnobsValidate(t *testing.T) {
	valid := Knobs{Model: "Qwen/Qwen2.5-1.5B-Instruct"}
	tests := []struct {
		name  string
		knobs Knobs
		field string // "" means valid
		want  string
	}{
		{"minimal", valid, "", ""},
		{"all set at limits", Knobs{Model: "/models/qwen", ServedModelName: "q", MaxModelLen: 10_000_000, GPUMemoryUtilization: 1, MaxNumSeqs: 65536, MaxNumBatchedTokens: 10_000_000}, "", ""},
		{"all set low", Knobs{Model: "m", MaxModelLen: 1, GPUMemoryUtilization: 0.01, MaxNumSeqs: 1, MaxNumBatchedTokens: 1}, "", ""},
		{"no model", Knobs{}, "model", `model "" is invalid: set a model name`},
		{"model with space", Knobs{Model: "Qwen 2"}, "model", `model "Qwen 2" is invalid: character ' ' at byte 5 is not allowed (names must not contain whitespace`},
		{"shell injection", Knobs{Model: "x;id>pwned;echo"}, "model", `model "x;id>pwned;echo" is invalid: character ';' at byte 2 is not allowed: a model must be a Hugging Face repository id`},
		{"command substitution", Knobs{Model: "Qwen/$(id)"}, "model", "character '$' at byte 6 is not allowed"},
		{"backtick", Knobs{Model: "a`id`"}, "model", "character '`' at byte 2"},
		{"dot dot", Knobs{Model: "org/a..b"}, "model", "'..' at byte 6 is not allowed"},
		{"leading dot", Knobs{Model: "org/.hidden"}, "model", "must not start with '.' (part \".hidden\", byte 5)"},
		{"three parts", Knobs{Model: "a/b/c"}, "model", "has 3 '/'-separated parts"},
		{"relative path", Knobs{Model: "./models/q"}, "model", "has 3 '/'-separated parts"},
		{"empty part", Knobs{Model: "org/"}, "model", "has an empty part at byte 5"},
		{"part too long", Knobs{Model: "org/" + strings.Repeat("a", 97)}, "model", "is 97 characters, more than 96"},
		{"part at the limit", Knobs{Model: strings.Repeat("o", 96) + "/" + strings.Repeat("a", 96)}, "", ""},
		{"non-ASCII", Knobs{Model: "Qwén"}, "model", "character 'é' at byte 3"},
		{"path with dot dot", Knobs{Model: "/models/../etc/shadow"}, "model", "has a '..' segment"},
		{"path with space", Knobs{Model: "/models/my model"}, "model", "character ' ' at byte 11 is not allowed in a path"},
		{"path with semicolon", Knobs{Model: "/m;reboot"}, "model", "character ';' at byte 3 is not allowed in a path"},
		{"path with NUL", Knobs{Model: "/m\x00x"}, "model", "byte 0x00 at byte 3"},
		{"path ok", Knobs{Model: "/data/hf/models--Qwen/snapshots/abc123/Qwen2.5-1.5B+v2@main"}, "", ""},
		{"served injection", Knobs{Model: "m", ServedModelName: "q|nc"}, "served_model_name", "character '|' at byte 2"},
		{"gpu with semicolon", Knobs{Model: "m", GPU: "h200;id"}, "gpu", "character ';' at byte 5 is not allowed"},
		{"model with newline", Knobs{Model: "a\nb"}, "model", "must not contain whitespace"},
		{"model leading dash", Knobs{Model: "-x"}, "model", `model "-x" is invalid: must not start with '-'`},
		{"served leading dash", Knobs{Model: "m", ServedModelName: "--api-key"}, "served_model_name", "must not start with '-'"},
		{"served with tab", Knobs{Model: "m", ServedModelName: "a\tb"}, "served_model_name", "whitespace"},
		{"max_model_len negative", Knobs{Model: "m", MaxModelLen: -1}, "max_model_len", "max_model_len -1 is invalid: must be between 1 and 10000000"},
		{"max_model_len too big", Knobs{Model: "m", MaxModelLen: 10_000_001}, "max_model_len", "must be between 1 and 10000000"},
		{"utilization above 1", Knobs{Model: "m", GPUMemoryUtilization: 1.01}, "gpu_memory_utilization", "gpu_memory_utilization 1.01 is invalid: must be in (0, 1]"},
		{"utilization negative", Knobs{Model: "m", GPUMemoryUtilization: -0.5}, "gpu_memory_utilization", "must be in (0, 1]"},
		{"max_num_seqs too big", Knobs{Model: "m", MaxNumSeqs: 65537}, "max_num_seqs", "max_num_seqs 65537 is invalid: must be between 1 and 65536"},
		{"max_num_batched_tokens zero is default", Knobs{Model: "m", MaxNumBatchedTokens: 0}, "", ""},
		{"max_num_batched_tokens negative", Knobs{Model: "m", MaxNumBatchedTokens: -8}, "max_num_batched_tokens", "must be between 1 and 10000000"},
		{"gpu name", Knobs{Model: "m", GPU: "-h200"}, "gpu", "must not start with '-'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.knobs.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ke *KnobError
			if !errors.As(err, &ke) || ke.Field != tt.field {
				t.Fatalf("Validate() = %v, want a KnobError for %s", err, tt.field)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestOverrideKeepsDefaults(t *testing.T) {
	def := Knobs{Model: "m", GPU: "h200", EnforceEager: new(true), MaxNumSeqs: 8}
	got := def.Override(Knobs{MaxNumSeqs: 16, EnablePrefixCaching: new(false)})
	want := Knobs{Model: "m", GPU: "h200", EnforceEager: new(true), MaxNumSeqs: 16, EnablePrefixCaching: new(false)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Override (-want +got):\n%s", diff)
	}
	if got.Served() != "m" {
		t.Errorf("Served() = %q, want the model name", got.Served())
	}
}

func TestCheckPortFree(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	var pe *PortInUseError
	if err := checkPortFree("127.0.0.1", port); !errors.As(err, &pe) {
		t.Errorf("checkPortFree on a listening port = %v, want *PortInUseError", err)
	}
	// A wildcard listen address must also see the loopback listener.
	if err := checkPortFree("0.0.0.0", port); !errors.As(err, &pe) {
		t.Errorf("checkPortFree(0.0.0.0) on a listening port = %v, want *PortInUseError", err)
	}
	l.Close()
	if err := checkPortFree("127.0.0.1", port); err != nil {
		t.Errorf("checkPortFree on a closed port = %v, want nil", err)
	}
	free, err := FreePort("127.0.0.1")
	if err != nil || free <= 0 {
		t.Errorf("FreePort = %d, %v", free, err)
	}
}

package gpunode

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidateRefusesPlaceholdersInShellScripts(t *testing.T) {
	tests := []struct {
		name    string
		command []string
		want    string // "" means accepted
	}{
		{"sh -c", []string{"sh", "-c", "vllm serve {model} --port {port}"}, `command runs sh -c with {model} in argument 2`},
		{"absolute sh", []string{"/bin/sh", "-c", "exec vllm serve {model}"}, "runs sh -c"},
		{"bash -lc", []string{"bash", "-lc", "vllm serve {model}"}, "runs bash -c"},
		{"dash -ec", []string{"/usr/bin/dash", "-e", "-c", "x {served_model_name}"}, "runs dash -c"},
		{"zsh positional", []string{"zsh", "-c", `vllm serve "$1"`, "zsh", "{model}"}, "with {model} in argument 4"},
		{"env sh -c", []string{"env", "sh", "-c", "vllm serve {model}"}, "runs sh -c"},
		{"env with assignments", []string{"/usr/bin/env", "-i", "A=1", "bash", "-c", "vllm serve {model}"}, "runs bash -c"},
		{"busybox sh -c", []string{"busybox", "sh", "-c", "vllm serve {model}"}, "runs busybox -c"},
		{"the fix is named", []string{"sh", "-c", "{model}"}, `run the engine directly with each placeholder as its own element`},
		{"direct command", []string{"vllm", "serve", "{model}", "--port", "{port}"}, ""},
		{"script file with $1", []string{"sh", "/opt/serve.sh", "{model}"}, ""},
		{"the user's launcher", []string{"bash", "days/day-007-vllm-runtime-probes/serve_slm_vllm.sh"}, ""},
		{"shell script without placeholders", []string{"sh", "-c", "exec vllm serve Qwen/Qwen2.5-1.5B-Instruct"}, ""},
		{"a -c flag of a non-shell", []string{"python3", "-c", "print('{model}')"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Profile{Name: "p", Kind: KindCommand, Command: tt.command, Defaults: Knobs{Model: "m"}}
			err := p.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want it accepted", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want it refused saying %q", err, tt.want)
			}
		})
	}
}

func TestShellInjectionModelNeverReachesArgv(t *testing.T) {
	// The reproduction: a model name with shell syntax through a
	// command profile. Both the profile and the name are refused now.
	p := Profile{Name: "p", Kind: KindCommand, Command: []string{"vllm", "serve", "{model}"}, Defaults: Knobs{Model: "m"}}
	if _, err := p.Argv(p.Defaults.Override(Knobs{Model: "x;id>pwned;echo"}), 8000); err == nil || !strings.Contains(err.Error(), "character ';' at byte 2") {
		t.Fatalf("Argv = %v, want the model refused naming ';' at byte 2", err)
	}
}

func TestProfileFileRefusesAliasBombsFast(t *testing.T) {
	// A billion-laughs file: each level doubles nine times over.
	var b strings.Builder
	b.WriteString("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n")
	for c := 'b'; c <= 'i'; c++ {
		p := string(c - 1)
		b.WriteString(string(c) + ": &" + string(c) + " [*" + p + ",*" + p + ",*" + p + ",*" + p + ",*" + p + ",*" + p + ",*" + p + ",*" + p + ",*" + p + "]\n")
	}
	b.WriteString("profiles: *i\n")
	bomb := b.String()
	if len(bomb) > 450 {
		t.Fatalf("the bomb is %d bytes; keep it near 400", len(bomb))
	}
	tests := []struct {
		name string
		data string
		want string
	}{
		{"billion laughs", bomb, "test.yaml:1:4: YAML anchors, aliases and merge keys"},
		{"merge key", "base: &b {kind: vllm}\nprofiles:\n  - <<: *b\n    name: x\n", "not accepted in a profile file"},
		{"too large", "profiles: []\n" + strings.Repeat("# padding\n", MaxConfigBytes/10+1), "more than the 1048576 a profile file may have"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := ParseFile("test.yaml", []byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseFile = %v, want it refused saying %q", err, tt.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("refusing took %v", d)
			}
		})
	}
	t.Run("quoted ampersand and star are text", func(t *testing.T) {
		_, err := ParseFile("ok.yaml", []byte("profiles:\n  - name: \"a&b*\"\n    kind: sim\n    env: {X: 'R&D *'}\n"))
		if err != nil && strings.Contains(err.Error(), "anchors") {
			t.Fatalf("quoted text refused as an alias: %v", err)
		}
	})
	t.Run("LoadFile reads no more than the cap", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "big.yaml")
		if err := os.WriteFile(path, []byte(strings.Repeat("#", 8<<20)), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadFile(path, "ttftlab"); err == nil || !strings.Contains(err.Error(), "more than the 1048576") {
			t.Fatalf("LoadFile = %v, want the size refused", err)
		}
	})
}

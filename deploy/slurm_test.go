package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeSlurm writes srun, scontrol and getent stand-ins into a directory to
// put first on PATH: a job of nodes n1 and n2 where only n2 has a GPU, both
// at 127.0.0.1, and an srun that records each step's node in steps.log and
// runs the step here.
func fakeSlurm(t *testing.T, dir string) {
	t.Helper()
	files := map[string]string{
		"scontrol": `#!/usr/bin/env bash
case "$1 $2" in
"show hostnames") printf 'n1\nn2\n' ;;
"show node") if [[ "$3" == n2 ]]; then echo "   Gres=gpu:h200:1(S:0)"; else echo "   Gres=(null)"; fi ;;
*) echo "fake scontrol: $*" >&2; exit 1 ;;
esac
`,
		"getent": `#!/usr/bin/env bash
[[ "$1" == ahostsv4 ]] || exit 2
echo "127.0.0.1       STREAM $2"
`,
		"srun": `#!/usr/bin/env bash
node=
while [[ "$1" == --* ]]; do
	case "$1" in --nodelist=*) node="${1#--nodelist=}" ;; esac
	shift
done
echo "$node $2" >>"$FAKE_SLURM_LOG"
echo "$*" >>"$FAKE_SLURM_LOG.argv"
exec "$@"
`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// freePorts returns a base port p with p, p+1 and p+2 free on loopback for
// both TCP and UDP (the script's three roles use them).
func freePorts(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if base > 65000 {
			continue
		}
		ok := true
		for i := range 3 {
			tl, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+i))
			if err != nil {
				ok = false
				break
			}
			ul, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", base+i))
			tl.Close()
			if err != nil {
				ok = false
				break
			}
			ul.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("found no three free ports in a row")
	return 0
}

// TestSlurmScriptRunsASweep runs deploy/slurm/ttftlab.sbatch against fake
// Slurm commands on this host: the coordinator and an agent on n1, a gpunode
// with the simulated engine on n2 (the node whose Gres lists a GPU), and a
// short sweep whose results must land in the submit directory.
func TestSlurmScriptRunsASweep(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-daemon cluster")
	}
	tests := []struct {
		name string
		tls  bool
	}{
		{name: "token and plaintext"},
		{name: "mutual TLS", tls: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var env []string
			if tt.tls {
				dir := filepath.Join(t.TempDir(), "tls")
				if out, err := exec.Command(ttftlabBin, "certs", "--dir", dir).CombinedOutput(); err != nil {
					t.Fatalf("ttftlab certs: %v\n%s", err, out)
				}
				env = append(env, "TTFTLAB_TLS_DIR="+dir)
			}
			argv := runSlurmSweep(t, env)
			if strings.Contains(argv, "--tls-dir") != tt.tls || strings.Contains(argv, "--insecure") == tt.tls {
				t.Errorf("daemons ran with:\n%s\nwant --tls-dir %v, --insecure %v", argv, tt.tls, !tt.tls)
			}
		})
	}
}

// runSlurmSweep runs the script and returns the command lines of its steps.
func runSlurmSweep(t *testing.T, extraEnv []string) string {
	submit, bin := t.TempDir(), t.TempDir()
	fakeSlurm(t, bin)
	grpcBase, gossipBase := freePorts(t), freePorts(t)
	enginePort := freePorts(t)
	profiles := filepath.Join(submit, "profiles.yaml")
	if err := os.WriteFile(profiles, []byte(fmt.Sprintf("profiles:\n  - name: sim\n    kind: sim\n    host: __HOST__\n    port: %d\n    defaults: {model: Qwen/Qwen2.5-1.5B-Instruct, gpu: h200, enforce_eager: true}\n", enginePort)), 0o600); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("slurm/ttftlab.sbatch")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute) // generous liveness bound on a shared 2-core host
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = submit
	cmd.Env = append(os.Environ(),
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"SLURM_JOB_ID=42", "SLURM_JOB_NODELIST=n[1-2]", "SLURM_SUBMIT_DIR="+submit,
		"FAKE_SLURM_LOG="+filepath.Join(submit, "steps.log"),
		"TTFTLAB="+ttftlabBin, "TTFTLAB_PROFILES="+profiles, "TTFTLAB_PROFILE=sim",
		"TTFTLAB_SWEEP_ARGS=--levels 1 --level-duration 1s --warmup 0s --quiet",
		"TTFTLAB_JOIN_TIMEOUT=20",
		fmt.Sprintf("TTFTLAB_GRPC_PORT=%d", grpcBase), fmt.Sprintf("TTFTLAB_GOSSIP_PORT=%d", gossipBase),
	)
	cmd.Env = append(cmd.Env, extraEnv...)
	out, err := cmd.CombinedOutput()
	job := filepath.Join(submit, "ttftlab-42")
	if err != nil {
		logs, _ := filepath.Glob(filepath.Join(job, "logs", "*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			t.Logf("%s:\n%s", l, b)
		}
		t.Fatalf("ttftlab.sbatch: %v\n%s", err, out)
	}

	steps, err := os.ReadFile(filepath.Join(submit, "steps.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"n1 coordinator", "n2 gpunode", "n1 agent"} {
		if !strings.Contains(string(steps), want+"\n") {
			t.Errorf("no step %q; steps:\n%s", want, steps)
		}
	}
	if strings.Contains(string(steps), "n2 agent") || strings.Contains(string(steps), "n1 gpunode") {
		t.Errorf("a role ran on the wrong node; steps:\n%s", steps)
	}
	data, err := os.ReadFile(filepath.Join(job, "results", "sweep-42", "results.json"))
	if err != nil {
		t.Fatalf("the sweep's results are not in the submit directory: %v\n%s", err, out)
	}
	var res struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if res.Status == "failed" || res.Status == "" {
		t.Errorf("sweep status %q, want a successful run:\n%s", res.Status, data)
	}
	for _, f := range []string{"gossip.key", "token"} {
		st, err := os.Stat(filepath.Join(job, f))
		if err != nil {
			t.Errorf("%s: %v", f, err)
		} else if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v, want a file only its owner reads", f, st.Mode())
		}
	}
	argv, err := os.ReadFile(filepath.Join(submit, "steps.log.argv"))
	if err != nil {
		t.Fatal(err)
	}
	return string(argv)
}

func TestSlurmScriptRefusesBadSettings(t *testing.T) {
	bin := t.TempDir()
	fakeSlurm(t, bin)
	base := append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"SLURM_JOB_ID=7", "SLURM_JOB_NODELIST=n[1-2]", "TTFTLAB="+ttftlabBin, "TTFTLAB_PROFILES=slurm/profiles.yaml")
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{name: "outside a job", env: []string{"SLURM_JOB_ID="}, want: "not inside a Slurm job"},
		{name: "missing binary", env: []string{"TTFTLAB=/nonexistent/ttftlab"}, want: "TTFTLAB=/nonexistent/ttftlab is not an executable"},
		{name: "gpu node not in the job", env: []string{"TTFTLAB_GPU_NODES=n9"}, want: "TTFTLAB_GPU_NODES names n9, which is not in this job's nodes"},
		{name: "bad port", env: []string{"TTFTLAB_GRPC_PORT=70000"}, want: "TTFTLAB_GRPC_PORT=70000: want a port"},
		{name: "tls dir without certificates", env: []string{"TTFTLAB_TLS_DIR=/nonexistent"}, want: "TTFTLAB_TLS_DIR=/nonexistent holds no node.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			submit := t.TempDir()
			cmd := exec.CommandContext(t.Context(), "bash", "slurm/ttftlab.sbatch")
			cmd.Env = append(append(append([]string(nil), base...), "SLURM_SUBMIT_DIR="+submit), tt.env...)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tt.want) {
				t.Fatalf("ttftlab.sbatch = %v:\n%s\nwant a failure naming %q", err, out, tt.want)
			}
		})
	}
}

package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestChartRunsAsACluster runs the chart's rendered containers as local
// processes, each "pod" on its own loopback address (coordinator 127.0.0.1,
// agent 127.0.0.2, gpunode 127.0.0.3): their args with $(POD_IP) expanded,
// the join name pointed at the coordinator, the init container's command
// writing the profiles, the Secret's files and the ConfigMap's profiles on
// disk. A sweep run as NOTES.txt says must then finish and leave its results
// under the coordinator's --out: the flags, the secrets and the profiles fit
// together, not only each on its own.
func TestChartRunsAsACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-daemon cluster")
	}
	grpcPort, gossipPort := freePorts(t), freePorts(t)
	objs := mustRender(t, "--set", fmt.Sprintf("ports.grpc=%d", grpcPort), "--set", fmt.Sprintf("ports.gossip=%d", gossipPort))
	root := t.TempDir()
	paths := strings.NewReplacer(
		"/etc/ttftlab/secrets", filepath.Join(root, "secrets"),
		"/etc/ttftlab/profiles", filepath.Join(root, "profiles"),
		"/run/ttftlab", filepath.Join(root, "run"),
		"/var/lib/ttftlab/results", filepath.Join(root, "results"),
		"/cache/", filepath.Join(root, "cache")+"/",
	)
	for _, d := range []string{"secrets", "profiles", "run", "results", "cache"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	secret := find[*corev1.Secret](t, objs, "Secret", "-secrets")
	for k, v := range secret.Data {
		if err := os.WriteFile(filepath.Join(root, "secrets", k), v, 0o400); err != nil {
			t.Fatal(err)
		}
	}
	cm := find[*corev1.ConfigMap](t, objs, "ConfigMap", "-profiles")
	if err := os.WriteFile(filepath.Join(root, "profiles", "profiles.yaml"), []byte(paths.Replace(cm.Data["profiles.yaml"])), 0o600); err != nil {
		t.Fatal(err)
	}

	sts := find[*corev1.Service](t, objs, "Service", "-gossip")
	join := fmt.Sprintf("%s-coordinator-0.%s.%s.svc.cluster.local:%d", strings.TrimSuffix(sts.Name, "-gossip"), sts.Name, namespace, gossipPort)
	podIP := map[string]string{"coordinator": "127.0.0.1", "agent": "127.0.0.2", "gpunode": "127.0.0.3"}
	expand := func(role, s string) string {
		s = strings.ReplaceAll(s, "$(POD_IP)", podIP[role])
		// 0.0.0.0 is every address of the pod's own network namespace;
		// here the pod has one loopback address to itself.
		s = strings.ReplaceAll(s, "=0.0.0.0:", "="+podIP[role]+":")
		s = strings.ReplaceAll(s, "$(POD_NAME)", role+"-0")
		s = strings.ReplaceAll(s, join, fmt.Sprintf("127.0.0.1:%d", gossipPort))
		return paths.Replace(s)
	}

	// The gpunode's init container, as the kubelet would run it.
	ds := find[*appsv1.DaemonSet](t, objs, "DaemonSet", "-gpunode")
	var ic corev1.Container
	for _, c := range ds.Spec.Template.Spec.InitContainers {
		if c.Name == "profiles" {
			ic = c
		}
	}
	if len(ic.Command) == 0 {
		t.Fatal("the gpunode has no profiles init container")
	}
	init := exec.CommandContext(t.Context(), ic.Command[0], expandAll("gpunode", ic.Command[1:], expand)...)
	init.Env = append(os.Environ(), "POD_IP="+podIP["gpunode"])
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("init container %v: %v\n%s", init.Args, err, out)
	}

	ctx, cancel := context.WithCancel(t.Context())
	var waits []chan error
	defer func() {
		cancel()
		for _, w := range waits {
			<-w
		}
	}()
	logs := map[string]*syncBuffer{}
	cs := ttftlabContainers(objs)
	// The coordinator first: the others' wait-for-coordinator init
	// containers (TestChartWiring) hold them until its gossip port answers.
	order := []string{"StatefulSet/ttftlab-coordinator/coordinator", "Deployment/ttftlab-agent/agent", "DaemonSet/ttftlab-gpunode/gpunode"}
	for _, where := range order {
		pc, ok := cs[where]
		if !ok {
			t.Fatalf("no container %s", where)
		}
		role := pc.c.Args[0]
		cmd := exec.CommandContext(ctx, ttftlabBin, expandAll(role, pc.c.Args, expand)...)
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		w := make(chan error, 1)
		go func() { w <- cmd.Wait() }()
		waits = append(waits, w)
		logs[role] = out
		if role == "coordinator" {
			waitServing(t, out, w)
		}
	}
	dumpLogs := func() {
		for role, l := range logs {
			t.Logf("%s log:\n%s", role, l.String())
		}
	}

	sweepCtx, sweepCancel := context.WithTimeout(ctx, 2*time.Minute) // generous liveness bound on a shared 2-core host
	defer sweepCancel()
	sweep := exec.CommandContext(sweepCtx, ttftlabBin, "sweep", "--coordinator", fmt.Sprintf("localhost:%d", grpcPort),
		"--token-file", filepath.Join(root, "secrets", "token"), "--profile", "sim", "--run-id", "k8s",
		"--levels", "1", "--level-duration", "1s", "--warmup", "0s", "--quiet")
	out, err := sweep.CombinedOutput()
	if err != nil {
		dumpLogs()
		t.Fatalf("ttftlab sweep against the chart's cluster: %v\n%s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(root, "results", "k8s", "results.json"))
	if err != nil {
		dumpLogs()
		t.Fatalf("the sweep's results are not under the coordinator's --out: %v", err)
	}
	var res struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if res.Status == "" || res.Status == "failed" {
		t.Errorf("sweep status %q, want a successful run", res.Status)
	}
	if !strings.Contains(logs["agent"].String(), "msg=serving") || !strings.Contains(logs["gpunode"].String(), "grpc=127.0.0.3:") {
		dumpLogs()
		t.Errorf("the agent and the gpunode did not serve at their pod addresses")
	}
}

func expandAll(role string, args []string, expand func(role, s string) string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = expand(role, a)
	}
	return out
}

// waitServing waits until a daemon logs that it serves; it fails the test
// when the daemon exits first or takes over 60 s (a liveness bound).
func waitServing(t *testing.T, out *syncBuffer, exited chan error) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(out.String(), "msg=serving") {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("exited before serving (%v):\n%s", err, out.String())
		case <-deadline:
			t.Fatalf("not serving after 60 s:\n%s", out.String())
		case <-tick.C:
		}
	}
}

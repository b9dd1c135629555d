package deploy

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// manifestsValues are the values deploy/manifests/ttftlab.yaml is rendered
// with (`make manifests`).
const manifestsValues = "manifests/values.yaml"

func TestChartRendersStrictly(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want map[string]int // objects per kind
	}{
		{name: "defaults", want: map[string]int{"Secret": 1, "ConfigMap": 1, "Service": 2, "StatefulSet": 1, "Deployment": 1, "DaemonSet": 1}},
		{name: "existing secret", args: []string{"--set", "security.existingSecret=mine"},
			want: map[string]int{"ConfigMap": 1, "Service": 2, "StatefulSet": 1, "Deployment": 1, "DaemonSet": 1}},
		{name: "mutual TLS", args: []string{"--set", "security.tls.enabled=true"},
			want: map[string]int{"Secret": 1, "ConfigMap": 1, "Service": 2, "StatefulSet": 1, "Deployment": 1, "DaemonSet": 1}},
		{name: "service monitors", args: []string{"--set", "serviceMonitor.enabled=true"},
			want: map[string]int{"Secret": 1, "ConfigMap": 1, "Service": 4, "StatefulSet": 1, "Deployment": 1, "DaemonSet": 1, "ServiceMonitor": 3}},
		{name: "no gpunode", args: []string{"--set", "gpunode.enabled=false", "--set", "serviceMonitor.enabled=true"},
			want: map[string]int{"Secret": 1, "Service": 3, "StatefulSet": 1, "Deployment": 1, "ServiceMonitor": 2}},
		{name: "plain manifests values", args: []string{"-f", manifestsValues},
			want: map[string]int{"ConfigMap": 1, "Service": 2, "StatefulSet": 1, "Deployment": 1, "DaemonSet": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := mustRender(t, tt.args...)
			got := map[string]int{}
			for _, o := range objs {
				got[o.Kind]++
				if m, ok := o.Obj.(interface{ GetNamespace() string }); ok && m.GetNamespace() != namespace {
					t.Errorf("%s %s: namespace %q, want %q", o.Kind, o.Name, m.GetNamespace(), namespace)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("rendered %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDecodeAllIsStrict(t *testing.T) {
	const good = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    spec:\n      containers: [{name: c, image: i}]\n"
	if _, err := decodeAll([]byte(good)); err != nil {
		t.Fatalf("the well-formed Deployment was refused: %v", err)
	}
	tests := []struct {
		name, doc, want string
	}{
		{name: "unknown field", doc: strings.Replace(good, "image: i", "image: i, comand: [x]", 1), want: "comand"},
		{name: "field at the wrong level", doc: strings.Replace(good, "  selector:", "  replica: 2\n  selector:", 1), want: "replica"},
		{name: "duplicate key", doc: strings.Replace(good, "metadata: {name: a}", "metadata: {name: a, name: b}", 1), want: "name"},
		{name: "wrong type", doc: strings.Replace(good, "  selector:", "  replicas: two\n  selector:", 1), want: "replicas"},
		{name: "unknown kind", doc: "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n", want: "Pod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeAll([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("decodeAll = %v, want an error naming %q", err, tt.want)
			}
		})
	}
}

func TestChartRefusesBadValues(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "short gossip key", args: []string{"--set", "security.gossipKey=" + base64.StdEncoding.EncodeToString([]byte("ten bytes!"))}, want: "security.gossipKey must be the base64 of 16, 24 or 32 bytes; it decodes to 10"},
		{name: "short token", args: []string{"--set", "security.token=abc"}, want: "security.token has 3 characters: use at least 16"},
		{name: "no profiles", args: []string{"--set", "gpunode.profiles=null"}, want: "gpunode.profiles is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := helmTemplate(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("helm template = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestChartSecretValues checks the Secret the chart makes: given values are
// kept, and missing ones are random and valid for ttftlab.
func TestChartSecretValues(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 24))
	tests := []struct {
		name           string
		args           []string
		wantKey, wantT string
	}{
		{name: "generated"},
		{name: "given", args: []string{"--set", "security.gossipKey=" + key, "--set", "security.token=0123456789abcdef0123"}, wantKey: key, wantT: "0123456789abcdef0123"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := find[*corev1.Secret](t, mustRender(t, tt.args...), "Secret", "-secrets")
			gk, tok := string(s.Data["gossip.key"]), string(s.Data["token"])
			raw, err := base64.StdEncoding.DecodeString(gk)
			if err != nil || (len(raw) != 16 && len(raw) != 24 && len(raw) != 32) {
				t.Errorf("gossip.key %q is not the base64 of 16, 24 or 32 bytes (%d, %v)", gk, len(raw), err)
			}
			if len(tok) < 16 {
				t.Errorf("token %q is shorter than the 16 characters ttftlab requires", tok)
			}
			if tt.wantKey != "" && (gk != tt.wantKey || tok != tt.wantT) {
				t.Errorf("secret = (%q, %q), want the given (%q, %q)", gk, tok, tt.wantKey, tt.wantT)
			}
		})
	}
}

// ttftlabContainers returns the containers of every workload that run
// ttftlab, by "Kind/name/container".
func ttftlabContainers(objs []object) map[string]struct {
	pod corev1.PodSpec
	c   corev1.Container
} {
	out := map[string]struct {
		pod corev1.PodSpec
		c   corev1.Container
	}{}
	for _, o := range objs {
		var spec corev1.PodSpec
		switch w := o.Obj.(type) {
		case *appsv1.StatefulSet:
			spec = w.Spec.Template.Spec
		case *appsv1.Deployment:
			spec = w.Spec.Template.Spec
		case *appsv1.DaemonSet:
			spec = w.Spec.Template.Spec
		default:
			continue
		}
		for _, c := range spec.Containers {
			if len(c.Command) == 1 && path.Base(c.Command[0]) == "ttftlab" {
				out[o.Kind+"/"+o.Name+"/"+c.Name] = struct {
					pod corev1.PodSpec
					c   corev1.Container
				}{spec, c}
			}
		}
	}
	return out
}

func TestChartFlagsExist(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{name: "defaults"},
		{name: "mutual TLS and allowed targets", args: []string{"--set", "security.tls.enabled=true", "--set", "agent.allowTargets={vllm.example}", "--set", "gpunode.args={--log-dir=/cache/logs}"}},
		{name: "service monitors", args: []string{"--set", "serviceMonitor.enabled=true"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if hasArg(tt.args, "serviceMonitor.enabled=true") && !flagsOf(t, "coordinator")["metrics-addr"] {
				t.Skip("ttftlab has no --metrics-addr yet (built separately); this case checks the chart's metrics flags once it has")
			}
			cs := ttftlabContainers(mustRender(t, tt.args...))
			if len(cs) != 3 {
				t.Fatalf("found %d ttftlab containers, want 3 (coordinator, agent, gpunode)", len(cs))
			}
			for where, pc := range cs {
				checkCommandLine(t, where, pc.c.Args)
			}
		})
	}
}

// TestChartWiring checks that the objects fit together: the gossip join
// name, the results volume, the secrets, GPU scheduling and the profiles.
func TestChartWiring(t *testing.T) {
	objs := mustRender(t)
	sts := find[*appsv1.StatefulSet](t, objs, "StatefulSet", "-coordinator")
	gossip := find[*corev1.Service](t, objs, "Service", "-gossip")
	grpcSvc := find[*corev1.Service](t, objs, "Service", "-coordinator")
	ds := find[*appsv1.DaemonSet](t, objs, "DaemonSet", "-gpunode")
	cm := find[*corev1.ConfigMap](t, objs, "ConfigMap", "-profiles")
	cs := ttftlabContainers(objs)

	t.Run("gossip service", func(t *testing.T) {
		if sts.Spec.ServiceName != gossip.Name || gossip.Spec.ClusterIP != corev1.ClusterIPNone || !gossip.Spec.PublishNotReadyAddresses {
			t.Errorf("statefulset serviceName %q, gossip service %q clusterIP %q publishNotReady %v: want a headless service that publishes not-ready pods",
				sts.Spec.ServiceName, gossip.Name, gossip.Spec.ClusterIP, gossip.Spec.PublishNotReadyAddresses)
		}
		protos := map[corev1.Protocol]int32{}
		for _, p := range gossip.Spec.Ports {
			protos[p.Protocol] = p.Port
		}
		if protos[corev1.ProtocolTCP] != 7946 || protos[corev1.ProtocolUDP] != 7946 {
			t.Errorf("gossip ports %v, want 7946 over TCP and UDP", protos)
		}
		if !labelsMatch(gossip.Spec.Selector, sts.Spec.Template.Labels) || !labelsMatch(grpcSvc.Spec.Selector, sts.Spec.Template.Labels) {
			t.Errorf("services select %v and %v; the coordinator's pods are labelled %v", gossip.Spec.Selector, grpcSvc.Spec.Selector, sts.Spec.Template.Labels)
		}
	})

	t.Run("join address", func(t *testing.T) {
		want := fmt.Sprintf("%s-0.%s.%s.svc.cluster.local:7946", sts.Name, sts.Spec.ServiceName, namespace)
		n := 0
		for where, pc := range cs {
			if pc.c.Args[0] == "coordinator" {
				continue
			}
			n++
			if got := argValue(pc.c.Args, "join"); got != want {
				t.Errorf("%s: --join=%q, want the coordinator's stable gossip name %q", where, got, want)
			}
			// ttftlab exits when its first join fails: an init container
			// must hold the pod until the coordinator's gossip port answers.
			var waited string
			for _, ic := range pc.pod.InitContainers {
				if ic.Name == "wait-for-coordinator" && len(ic.Command) == 5 {
					waited = ic.Command[3] + ":" + ic.Command[4]
				}
			}
			if waited != want {
				t.Errorf("%s: waits for %q before starting, want the join address %q", where, waited, want)
			}
		}
		if n != 2 {
			t.Errorf("checked %d joining containers, want 2", n)
		}
	})

	t.Run("results on the volume", func(t *testing.T) {
		c := sts.Spec.Template.Spec.Containers[0]
		out := argValue(c.Args, "out")
		if len(sts.Spec.VolumeClaimTemplates) != 1 {
			t.Fatalf("%d volume claim templates, want 1", len(sts.Spec.VolumeClaimTemplates))
		}
		claim := sts.Spec.VolumeClaimTemplates[0].Name
		if !mountedFrom(c, out, claim) {
			t.Errorf("--out=%q is not on the %q claim's mount (%v)", out, claim, c.VolumeMounts)
		}
	})

	t.Run("secrets", func(t *testing.T) {
		for where, pc := range cs {
			for _, flag := range []string{"gossip-key-file", "token-file"} {
				f := argValue(pc.c.Args, flag)
				if f == "" || !secretFile(pc.pod, pc.c, f) {
					t.Errorf("%s: --%s=%q is not a file of a mounted Secret", where, flag, f)
				}
			}
			if hasArg(pc.c.Args, "--insecure") == (argValue(pc.c.Args, "tls-dir") != "") {
				t.Errorf("%s: want exactly one of --insecure and --tls-dir, args %v", where, pc.c.Args)
			}
			if pc.pod.AutomountServiceAccountToken == nil || *pc.pod.AutomountServiceAccountToken {
				t.Errorf("%s: mounts a service account token it does not need", where)
			}
		}
	})

	t.Run("gpu scheduling", func(t *testing.T) {
		spec := ds.Spec.Template.Spec
		if spec.RuntimeClassName == nil || *spec.RuntimeClassName != "nvidia" {
			t.Errorf("runtimeClassName %v, want nvidia", spec.RuntimeClassName)
		}
		if spec.NodeSelector["nvidia.com/gpu.present"] != "true" {
			t.Errorf("nodeSelector %v, want nvidia.com/gpu.present=true", spec.NodeSelector)
		}
		c := spec.Containers[0]
		if q := c.Resources.Limits["nvidia.com/gpu"]; q.Value() != 1 {
			t.Errorf("nvidia.com/gpu limit %v, want 1", q.String())
		}
		if q := c.Resources.Requests["nvidia.com/gpu"]; q.Value() != 1 {
			t.Errorf("nvidia.com/gpu request %v, want 1", q.String())
		}
	})

	t.Run("profiles", func(t *testing.T) {
		spec := ds.Spec.Template.Spec
		cfg := argValue(spec.Containers[0].Args, "config")
		writes := false
		for _, ic := range spec.InitContainers {
			writes = writes || strings.Contains(strings.Join(ic.Command, " "), "> "+cfg)
		}
		if !writes {
			t.Fatalf("no init container writes --config=%s", cfg)
		}
		if cm.Name != spec.Volumes[0].ConfigMap.Name {
			t.Errorf("the profiles volume reads ConfigMap %q, the chart makes %q", spec.Volumes[0].ConfigMap.Name, cm.Name)
		}
		if !strings.Contains(cm.Data["profiles.yaml"], "host: __POD_IP__") {
			t.Errorf("profiles.yaml does not bind engines to __POD_IP__, so agents in other pods could not reach them:\n%s", cm.Data["profiles.yaml"])
		}
		checkProfilesLoad(t, strings.ReplaceAll(cm.Data["profiles.yaml"], "__POD_IP__", "127.0.0.1"))
	})
}

// checkProfilesLoad starts `ttftlab gpunode --config` on a loopback copy of
// profiles and waits until it serves: a profile file it cannot load ends it
// with the error before it serves.
func checkProfilesLoad(t *testing.T, profiles string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(f, []byte(profiles), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second) // generous: a liveness deadline, not a speed target
	defer cancel()
	cmd := exec.CommandContext(ctx, ttftlabBin, "gpunode", "--config", f, "--grpc-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			t.Fatalf("ttftlab gpunode --config exited before serving (%v):\n%s", err, out.String())
		case <-ctx.Done():
			<-done
			t.Fatalf("ttftlab gpunode --config did not serve within 60 s:\n%s", out.String())
		case <-tick.C:
			if strings.Contains(out.String(), "msg=serving") {
				cancel()
				<-done
				return
			}
		}
	}
}

func TestManifestsUpToDate(t *testing.T) {
	want, err := helmTemplate(t, "-f", manifestsValues)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("manifests/ttftlab.yaml")
	if err != nil {
		t.Fatalf("read the plain manifests: %v: run `make manifests`", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("deploy/manifests/ttftlab.yaml is stale: run `make manifests` and commit it")
	}
}

func labelsMatch(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// mountedFrom reports whether dir is at or under a mount of volume name.
func mountedFrom(c corev1.Container, dir, name string) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == name && (dir == m.MountPath || strings.HasPrefix(dir, m.MountPath+"/")) {
			return true
		}
	}
	return false
}

// secretFile reports whether file is an item of a Secret volume mounted in c.
func secretFile(pod corev1.PodSpec, c corev1.Container, file string) bool {
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			for _, it := range v.Secret.Items {
				if path.Join(m.MountPath, it.Path) == file {
					return true
				}
			}
		}
	}
	return false
}

// TestChartNotesCommands checks the ttftlab commands NOTES.txt tells the
// user to run against the flags ttftlab has.
func TestChartNotesCommands(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
	}{
		{name: "defaults"},
		{name: "mutual TLS", args: []string{"--set", "security.tls.enabled=true"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, helmBin(t), append([]string{"install", releaseName, chartDir, "--namespace", namespace, "--dry-run=client"}, tt.args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("helm install --dry-run=client: %v\n%s", err, out)
			}
			_, notes, ok := strings.Cut(string(out), "\nNOTES:\n")
			if !ok {
				t.Fatalf("no NOTES in:\n%s", out)
			}
			notes = strings.ReplaceAll(notes, "\\\n", " ")
			n := 0
			for _, line := range strings.Split(notes, "\n") {
				_, cmdline, ok := strings.Cut(line, " -- /ttftlab ")
				if !ok {
					continue
				}
				n++
				argv := strings.Fields(cmdline)
				checkCommandLine(t, "NOTES.txt", argv)
				if hasArg(tt.args, "security.tls.enabled=true") && !strings.Contains(cmdline, "--tls-dir") {
					t.Errorf("NOTES.txt command %q lacks --tls-dir with TLS on", cmdline)
				}
			}
			if n != 3 {
				t.Errorf("found %d ttftlab commands in NOTES.txt, want 3 (members, baseline, sweep):\n%s", n, notes)
			}
		})
	}
}

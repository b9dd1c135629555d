package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// composeFile is the part of the Compose specification deploy/compose.yaml
// uses; decoding into it strictly refuses anything else, so a misspelled key
// fails here rather than being ignored by docker compose.
type composeFile struct {
	Name     string                    `json:"name"`
	XTTFTLAB composeService            `json:"x-ttftlab"`
	Services map[string]composeService `json:"services"`
	Secrets  map[string]struct {
		Environment string `json:"environment,omitempty"`
		File        string `json:"file,omitempty"`
	} `json:"secrets"`
	Volumes map[string]*struct{} `json:"volumes"`
}

type composeService struct {
	Image string `json:"image"`
	Build *struct {
		Context    string `json:"context"`
		Dockerfile string `json:"dockerfile"`
		Target     string `json:"target"`
	} `json:"build,omitempty"`
	Restart   string `json:"restart,omitempty"`
	Hostname  string `json:"hostname,omitempty"`
	DependsOn map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on,omitempty"`
	Healthcheck *struct {
		Test        []string `json:"test"`
		Interval    string   `json:"interval"`
		Timeout     string   `json:"timeout"`
		Retries     int      `json:"retries"`
		StartPeriod string   `json:"start_period"`
	} `json:"healthcheck,omitempty"`
	Command []string `json:"command,omitempty"`
	Ports   []string `json:"ports,omitempty"`
	Volumes []string `json:"volumes,omitempty"`
	Secrets []string `json:"secrets,omitempty"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}
	return c
}

func TestComposeFile(t *testing.T) {
	c := loadCompose(t)
	want := []string{"agent-1", "agent-2", "coordinator", "gpunode"}
	var got []string
	for name := range c.Services {
		got = append(got, name)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}
	coordGossip := "coordinator:" + portOf(argValue(c.Services["coordinator"].Command, "gossip-addr"))

	for _, name := range want {
		s := c.Services[name]
		t.Run(name, func(t *testing.T) {
			role := strings.TrimRight(name, "-12")
			if len(s.Command) == 0 || s.Command[0] != role {
				t.Fatalf("command %v, want `ttftlab %s ...`", s.Command, role)
			}
			checkCommandLine(t, "compose service "+name, s.Command)
			if s.Build == nil || s.Build.Target != "ttftlab" || s.Image == "" {
				t.Errorf("build %+v image %q: want the Dockerfile's FROM scratch target ttftlab", s.Build, s.Image)
			} else if df, err := os.ReadFile(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("build context %q and dockerfile %q name no file: %v", s.Build.Context, s.Build.Dockerfile, err)
			} else if !strings.Contains(string(df), "\nFROM scratch AS "+s.Build.Target+"\n") {
				t.Errorf("%s has no stage `FROM scratch AS %s`", s.Build.Dockerfile, s.Build.Target)
			}
			if name != "coordinator" && argValue(s.Command, "join") != coordGossip {
				t.Errorf("--join=%q, want the coordinator's gossip address %q", argValue(s.Command, "join"), coordGossip)
			}
			if name != "coordinator" && !strings.HasPrefix(argValue(s.Command, "grpc-addr"), s.Hostname+":") {
				t.Errorf("--grpc-addr=%q does not listen on the service's own name %q: the coordinator dials the address a member announces", argValue(s.Command, "grpc-addr"), s.Hostname)
			}
			for _, flag := range []string{"gossip-key-file", "token-file"} {
				f := argValue(s.Command, flag)
				sec, ok := strings.CutPrefix(f, "/run/secrets/")
				if !ok || !slices.Contains(s.Secrets, sec) || c.Secrets[sec].Environment == "" {
					t.Errorf("--%s=%q is not a Compose secret of this service (%v) read from the environment", flag, f, s.Secrets)
				}
			}
			if name != "coordinator" && s.DependsOn["coordinator"].Condition != "service_healthy" {
				t.Errorf("depends_on %+v: want the coordinator service_healthy, since a member whose first --join fails exits", s.DependsOn)
			}
			if strings.HasPrefix(name, "agent") && argValue(s.Command, "allow-target") != "gpunode" {
				t.Errorf("--allow-target=%q, want gpunode: the agents load the sim at http://gpunode:PORT", argValue(s.Command, "allow-target"))
			}
		})
	}

	t.Run("coordinator healthcheck", func(t *testing.T) {
		hc := c.Services["coordinator"].Healthcheck
		if hc == nil || len(hc.Test) < 3 || hc.Test[0] != "CMD" || hc.Test[1] != "/ttftlab" {
			t.Fatalf("healthcheck %+v: want [CMD, /ttftlab, members, ...] (the image has no shell)", hc)
		}
		checkCommandLine(t, "coordinator healthcheck", hc.Test[2:])
		grpc := argValue(c.Services["coordinator"].Command, "grpc-addr")
		if got := hc.Test[slices.Index(hc.Test, "--coordinator")+1]; portOf(got) != portOf(grpc) {
			t.Errorf("healthcheck dials %s, the coordinator listens on %s", got, grpc)
		}
	})

	t.Run("results volume", func(t *testing.T) {
		s := c.Services["coordinator"]
		if out := argValue(s.Command, "out"); !slices.Contains(s.Volumes, "results:"+out) {
			t.Errorf("--out=%q is not on the results volume (%v)", out, s.Volumes)
		}
	})

	t.Run("gpunode profiles", func(t *testing.T) {
		s := c.Services["gpunode"]
		cfg := argValue(s.Command, "config")
		var host string
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && parts[1] == cfg {
				host = parts[0]
			}
		}
		if host == "" {
			t.Fatalf("--config=%q is not a mounted file (%v)", cfg, s.Volumes)
		}
		data, err := os.ReadFile(host) // relative to deploy/, as Compose reads it
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "host: "+s.Hostname) {
			t.Errorf("%s does not bind the engine to %q, so the agents could not reach it", host, s.Hostname)
		}
		checkProfilesLoad(t, strings.ReplaceAll(string(data), "host: "+s.Hostname, "host: 127.0.0.1"))
	})
}

func portOf(addr string) string {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return ""
	}
	return addr[i+1:]
}

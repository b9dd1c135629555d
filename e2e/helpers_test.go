//go:build linux

// Package e2e holds multi-process cluster tests: every daemon is a separate
// ttftlab process on loopback, started from the binary that TTFTLAB_BIN
// names (make test-e2e builds it and sets it). Without TTFTLAB_BIN every
// test skips at once, so plain `go test ./...` stays fast.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/e2e/e2eutil"
)

// simModel is the sim's default model.
const simModel = "Qwen/Qwen2.5-1.5B-Instruct"

// simStartupScale keeps the simulated engine's startup under a second.
const simStartupScale = "0.02"

// ttftlabBin returns the binary under test, or skips the test.
func ttftlabBin(t *testing.T) string {
	t.Helper()
	return e2eutil.Bin(t, "run `make test-e2e` (or build bin/ttftlab and set TTFTLAB_BIN to it)")
}

// waitUntil polls cond every 20 ms until it returns true or timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	e2eutil.WaitUntil(t, timeout, 20*time.Millisecond, what, cond)
}

// proc is one ttftlab process, in its own process group.
type proc = e2eutil.Proc

// start runs `bin args...` as name, its stderr and stdout in files in dir.
func start(t *testing.T, bin, dir, name string, args ...string) *proc {
	t.Helper()
	return e2eutil.Start(t, dir, name, false, append([]string{bin}, args...)...)
}

// servingRE matches the line every daemon logs once its gRPC server and
// gossip node are up.
var servingRE = regexp.MustCompile(`msg=serving name=(\S+) grpc=(\S+) gossip=(\S+)`)

// daemon is a coordinator, gpunode or agent process.
type daemon struct {
	*proc
	role         string
	grpc, gossip string
}

// cluster is a set of ttftlab processes on loopback sharing one gossip key.
type cluster struct {
	t       *testing.T
	bin     string
	dir     string
	keyFile string
	coord   *daemon
	daemons map[string]*daemon
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	bin := ttftlabBin(t)
	dir := t.TempDir()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, bin: bin, dir: dir, keyFile: keyFile, daemons: map[string]*daemon{}}
}

// startDaemon starts `ttftlab ROLE` named name and waits for its serving
// line. Everything but the coordinator joins the coordinator's gossip.
func (c *cluster) startDaemon(role, name string, extra ...string) *daemon {
	c.t.Helper()
	args := []string{role, "--name", name, "--grpc-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--gossip-key-file", c.keyFile}
	if role != "coordinator" {
		if c.coord == nil {
			c.t.Fatalf("start the coordinator before %s", name)
		}
		args = append(args, "--join", c.coord.gossip)
	}
	args = append(args, extra...)
	p := start(c.t, c.bin, c.dir, name, args...)
	m := p.WaitLog(servingRE, 15*time.Second)
	if m[1] != name {
		c.t.Fatalf("%s logged serving name=%s", name, m[1])
	}
	d := &daemon{proc: p, role: role, grpc: m[2], gossip: m[3]}
	c.daemons[name] = d
	return d
}

// e2eAgentSilence is the coordinator's --agent-silence in these tests: a
// loaded 2-core CI host once stalled an agent process past the 1.5 s
// default, losing it with nothing wrong. The test of a frozen agent passes
// the default back (startCoordinator("--agent-silence", "1.5s")).
const e2eAgentSilence = "5s"

func (c *cluster) startCoordinator(extra ...string) *daemon {
	c.t.Helper()
	// The coordinator's own --out: a run whose request names no out_dir
	// lands here. The CLI always sends its --out, so tests pass that.
	args := []string{"--out", filepath.Join(c.dir, "coordinator-results")}
	if !slices.Contains(extra, "--agent-silence") {
		args = append(args, "--agent-silence", e2eAgentSilence)
	}
	c.coord = c.startDaemon("coordinator", "coord", append(args, extra...)...)
	return c.coord
}

func (c *cluster) startAgent(name string) *daemon {
	c.t.Helper()
	return c.startDaemon("agent", name)
}

// startGPUNode starts a gpunode whose only profile, "sim", re-executes the
// binary under test as the simulated engine with a short startup.
func (c *cluster) startGPUNode(name string) *daemon {
	c.t.Helper()
	prof := filepath.Join(c.dir, "profiles.yaml")
	yaml := fmt.Sprintf(`profiles:
  - name: sim
    kind: sim
    command: [%q, sim, --startup-scale, %q, --sim-first-request-delay, "0"]
    state_dir: %q
    defaults: {model: %s, gpu: h200, enforce_eager: true}
`, c.bin, simStartupScale, filepath.Join(c.dir, "sim-state"), simModel)
	if err := os.WriteFile(prof, []byte(yaml), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return c.startDaemon("gpunode", name, "--config", prof, "--log-dir", filepath.Join(c.dir, "engine-logs"))
}

// cli runs a short ttftlab command to its end and returns its stdout and
// stderr.
func (c *cluster) cli(timeout time.Duration, args ...string) (stdout, stderr string, err error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Dir = c.dir
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s: timed out after %s (%v)", args[0], timeout, err)
	}
	return o.String(), e.String(), err
}

// member is one row of `ttftlab members`.
type member struct{ name, role, grpc, state string }

func (c *cluster) members() ([]member, error) {
	out, stderr, err := c.cli(10*time.Second, "members", "--coordinator", c.coord.grpc)
	if err != nil {
		return nil, fmt.Errorf("members: %v: %s", err, stderr)
	}
	var ms []member
	sc := bufio.NewScanner(strings.NewReader(out))
	for i := 0; sc.Scan(); i++ {
		f := strings.Fields(sc.Text())
		if i == 0 {
			if len(f) < 4 || f[0] != "NAME" || f[1] != "ROLE" {
				return nil, fmt.Errorf("members: unexpected header %q", sc.Text())
			}
			continue
		}
		if len(f) < 4 {
			return nil, fmt.Errorf("members: short row %q", sc.Text())
		}
		ms = append(ms, member{name: f[0], role: f[1], grpc: f[2], state: f[3]})
	}
	return ms, nil
}

// waitAllAlive waits until the coordinator lists every started daemon, alive,
// with the role and gRPC address it was started with, and nothing else.
func (c *cluster) waitAllAlive() []member {
	c.t.Helper()
	var ms []member
	waitUntil(c.t, 15*time.Second, fmt.Sprintf("%d alive members", len(c.daemons)), func() (bool, error) {
		var err error
		if ms, err = c.members(); err != nil {
			return false, err
		}
		if len(ms) != len(c.daemons) {
			return false, fmt.Errorf("%d members: %v", len(ms), ms)
		}
		for _, m := range ms {
			d, ok := c.daemons[m.name]
			if !ok || m.role != d.role || m.grpc != d.grpc || m.state != "alive" {
				return false, fmt.Errorf("member %+v does not match a started daemon", m)
			}
		}
		return true, nil
	})
	return ms
}

// resultsRE finds the run directory the sweep and baseline commands print.
var resultsRE = regexp.MustCompile(`(?m)^results: (.+) \(on the coordinator's disk\)$`)

// sweepArgs are a sweep's flags against this cluster's coordinator.
func (c *cluster) sweepArgs(out, runID string, extra ...string) []string {
	return append([]string{"sweep", "--coordinator", c.coord.grpc, "--warmup", "0",
		"--input-len", "64", "--output-len", "16", "--out", out, "--run-id", runID, "--quiet"}, extra...)
}

// sweepResults is the part of a sweep's results.json the tests check.
type sweepResults struct {
	Kind   string `json:"kind"`
	RunID  string `json:"run_id"`
	Status string `json:"status"`
	Error  string `json:"error"`
	Engine *struct {
		Argv []string `json:"argv"`
	} `json:"engine"`
	Levels []struct {
		Level    int      `json:"level"`
		Value    float64  `json:"value"`
		Agents   []string `json:"agents"`
		Requests uint64   `json:"requests"`
		Errors   uint64   `json:"errors"`
		Metrics  map[string]struct {
			Count int64 `json:"count"`
		} `json:"metrics_ms"`
		Coverage map[string]struct {
			Intervals int    `json:"intervals"`
			Final     bool   `json:"final"`
			Lost      bool   `json:"lost"`
			Error     string `json:"error"`
		} `json:"coverage"`
		Degraded bool `json:"degraded"`
	} `json:"levels"`
}

var readJSON = e2eutil.ReadJSON

// u64 is a protojson uint64: a JSON string, or a number.
type u64 = e2eutil.U64

// agentRequests sums, per level and agent, requests_ok over the non-warm-up
// interval reports in events.jsonl, as the agents sent them.
func agentRequests(t *testing.T, eventsPath string) map[int]map[string]uint64 {
	t.Helper()
	f, err := os.Open(eventsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[int]map[string]uint64{}
	dec := json.NewDecoder(f)
	for {
		var ev struct {
			Kind string          `json:"kind"`
			Data json.RawMessage `json:"data"`
		}
		if err := dec.Decode(&ev); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", eventsPath, err)
		}
		if ev.Kind != "sweep_interval" {
			continue
		}
		var si struct {
			Level  int `json:"level"`
			Report struct {
				AgentID    string `json:"agent_id"`
				RequestsOK u64    `json:"requests_ok"`
				Warmup     bool   `json:"warmup"`
			} `json:"report"`
		}
		if err := json.Unmarshal(ev.Data, &si); err != nil {
			t.Fatalf("%s: sweep_interval: %v", eventsPath, err)
		}
		if si.Report.Warmup {
			continue
		}
		if out[si.Level] == nil {
			out[si.Level] = map[string]uint64{}
		}
		out[si.Level][si.Report.AgentID] += uint64(si.Report.RequestsOK)
	}
	return out
}

// uvicornRE is the sim's "listening" line, which carries the real port.
var uvicornRE = regexp.MustCompile(`Uvicorn running on (http://\S+)`)

// startSim runs `ttftlab sim` on a free loopback port and returns it with
// its base URL once it answers /health.
func startSim(t *testing.T, bin, dir string, extra ...string) (*proc, string) {
	t.Helper()
	args := append([]string{"sim", "--port", "0", "--startup-scale", simStartupScale, "--sim-first-request-delay", "0",
		"--state-dir", filepath.Join(dir, "sim-state"), "--disable-log-stats", "--disable-uvicorn-access-log"}, extra...)
	p := start(t, bin, dir, "sim", args...)
	url := p.WaitLog(uvicornRE, 20*time.Second)[1]
	waitUntil(t, 10*time.Second, "sim /health", func() (bool, error) {
		resp, err := http.Get(url + "/health")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("status %s", resp.Status)
	})
	return p, url
}

// engineGauge sums a Prometheus gauge over its label sets at url/metrics.
func engineGauge(url, name string) (float64, error) {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // a longer name with this prefix
		}
		f := strings.Fields(rest[strings.LastIndex(rest, "}")+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %v", name, line, err)
		}
		sum += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("no %s in /metrics", name)
	}
	return sum, nil
}

// engineLoad is running + waiting requests on the engine at url.
func engineLoad(url string) (float64, error) {
	r, err := engineGauge(url, "vllm:num_requests_running")
	if err != nil {
		return 0, err
	}
	w, err := engineGauge(url, "vllm:num_requests_waiting")
	if err != nil {
		return 0, err
	}
	return r + w, nil
}

// runEndRE matches the line an agent logs when its run ends, finished or
// aborted.
var runEndRE = regexp.MustCompile(`msg="run (finished|aborted)"`)

// noOrphanLoad checks that the engine at url, idle after what happened at
// since, has no load left: the agents end their runs (no worker starts a
// request after that), and the engine stays idle for 2 s. A request an
// agent wrote just before it cancelled can still reach the engine after it
// went idle; the engine drops it as soon as it sees the closed connection.
// Orphan load is load that stays: a reading above 0 must clear within a
// second.
func noOrphanLoad(t *testing.T, url string, since time.Time, what string, agents ...*daemon) {
	t.Helper()
	for _, a := range agents {
		a.WaitLog(runEndRE, 4*time.Second)
	}
	var busySince time.Time
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		n, err := engineLoad(url)
		if err != nil {
			t.Fatalf("engine metrics %s after %s: %v", time.Since(since).Round(time.Millisecond), what, err)
		}
		switch {
		case n == 0:
			busySince = time.Time{}
		case busySince.IsZero():
			busySince = time.Now()
			t.Logf("%g straggling request(s) on the engine %s after %s", n, time.Since(since).Round(time.Millisecond), what)
		case time.Since(busySince) > time.Second:
			t.Fatalf("orphan load %s after %s: %g requests running or waiting for %s", time.Since(since).Round(time.Millisecond), what, n, time.Since(busySince).Round(time.Millisecond))
		}
	}
}

// procAlive reports whether pid is a live process: it exists and is not a
// zombie waiting for a reaper.
func procAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...; comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// childrenOf lists the live processes whose parent is ppid, with their argv.
func childrenOf(ppid int) map[int][]string {
	out := map[int][]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // state ppid ...
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if pp, _ := strconv.Atoi(f[1]); pp != ppid {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out[pid] = strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	}
	return out
}

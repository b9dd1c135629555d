//go:build linux

package netns

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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/e2e/e2eutil"
)

// Ports every daemon uses: each host has its own namespace, so they never
// collide.
const (
	grpcPort   = 7000
	gossipPort = 7946
	enginePort = 8001
)

// simModel is the sim's default model.
const simModel = "Qwen/Qwen2.5-1.5B-Instruct"

// TestMain removes what a crashed earlier run left before any test runs.
func TestMain(m *testing.M) {
	if skipReason() == "" {
		for _, err := range sweepStale() {
			fmt.Fprintf(os.Stderr, "sweeping stale ttftlab namespaces: %v\n", err)
		}
	}
	os.Exit(m.Run())
}

// ttftlabBin returns the binary under test, or skips the test.
func ttftlabBin(t *testing.T) string {
	t.Helper()
	return e2eutil.Bin(t, "run `make test-netns`, which builds bin/ttftlab and sets it")
}

// waitUntil polls cond every 50 ms until it returns true or timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	e2eutil.WaitUntil(t, timeout, 50*time.Millisecond, what, cond)
}

// proc is one ttftlab process run with `ip netns exec`, which execs the
// binary in place: the pid is ttftlab's own.
type proc = e2eutil.Proc

// start runs `ip netns exec NS bin args...` in its own process group, with
// its output in dir/name.log.
func start(t *testing.T, ns, bin, dir, name string, args ...string) *proc {
	t.Helper()
	return e2eutil.Start(t, dir, name, true, append([]string{"ip", "netns", "exec", ns, bin}, args...)...)
}

// servingRE matches the line every daemon logs once it serves.
var servingRE = regexp.MustCompile(`msg=serving name=(\S+) grpc=(\S+) gossip=(\S+)`)

// daemon is a coordinator, gpunode or agent process in its namespace.
type daemon struct {
	*proc
	role string
	host *host
}

// cluster is ttftlab daemons, one per namespace of a topology, sharing a
// gossip key and a bearer token. gRPC is plaintext (--insecure) on the
// test's private bridge, as on the Compose network.
type cluster struct {
	t       *testing.T
	topo    *topology
	bin     string
	dir     string
	keyFile string
	tokFile string
	coord   *daemon
	daemons map[string]*daemon
}

func newCluster(t *testing.T, topo *topology) *cluster {
	t.Helper()
	c := &cluster{t: t, topo: topo, bin: ttftlabBin(t), dir: t.TempDir(), daemons: map[string]*daemon{}}
	secret := func(name string) string {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(c.dir, name)
		if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(b)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c.keyFile, c.tokFile = secret("gossip.key"), secret("token")
	return c
}

// startDaemon starts `ttftlab ROLE` on the host of that name and waits
// for its serving line. Everything but the coordinator joins the
// coordinator's gossip address across the bridge.
func (c *cluster) startDaemon(role, name string, extra ...string) *daemon {
	c.t.Helper()
	h := c.topo.host(name)
	args := []string{role, "--name", name, "--grpc-addr", h.addr(grpcPort), "--gossip-addr", h.addr(gossipPort),
		"--gossip-key-file", c.keyFile, "--token-file", c.tokFile, "--insecure"}
	if role != "coordinator" {
		if c.coord == nil {
			c.t.Fatalf("start the coordinator before %s", name)
		}
		args = append(args, "--join", c.coord.host.addr(gossipPort))
	}
	// Debug logging, for the post-mortem of a failed test.
	args = append(append(args, extra...), "-v")
	p := start(c.t, h.ns, c.bin, c.dir, name, args...)
	m := p.WaitLog(servingRE, 20*time.Second)
	if m[1] != name || m[2] != h.addr(grpcPort) {
		c.t.Fatalf("%s logged serving name=%s grpc=%s; want %s on %s", name, m[1], m[2], name, h.addr(grpcPort))
	}
	d := &daemon{proc: p, role: role, host: h}
	c.daemons[name] = d
	return d
}

func (c *cluster) startCoordinator(name string) *daemon {
	c.t.Helper()
	c.coord = c.startDaemon("coordinator", name, "--out", filepath.Join(c.dir, "results"))
	return c.coord
}

func (c *cluster) startAgent(name string) *daemon {
	c.t.Helper()
	return c.startDaemon("agent", name)
}

// startGPUNode starts a gpunode whose only profile, "sim", runs the binary
// under test as the simulated engine with a short startup, listening on the
// gpunode's own address so that agents reach it over the bridge.
func (c *cluster) startGPUNode(name string) *daemon {
	c.t.Helper()
	h := c.topo.host(name)
	prof := filepath.Join(c.dir, name+"-profiles.yaml")
	yaml := fmt.Sprintf(`profiles:
  - name: sim
    kind: sim
    command: [%q, sim, --startup-scale, "0.02", --sim-first-request-delay, "0"]
    host: %s
    port: %d
    state_dir: %q
    defaults: {model: %s, gpu: h200, enforce_eager: true}
`, c.bin, h.ip, enginePort, filepath.Join(c.dir, name+"-sim-state"), simModel)
	if err := os.WriteFile(prof, []byte(yaml), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return c.startDaemon("gpunode", name, "--config", prof, "--log-dir", filepath.Join(c.dir, name+"-engine-logs"))
}

// clientArgs are the flags a CLI command dials the coordinator with.
func (c *cluster) clientArgs() []string {
	return []string{"--coordinator", c.coord.host.addr(grpcPort), "--token-file", c.tokFile, "--insecure"}
}

// cli runs a ttftlab command to its end in the coordinator's namespace and
// returns its stdout and stderr.
func (c *cluster) cli(timeout time.Duration, args ...string) (stdout, stderr string, err error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.coord.host.ns, c.bin}, args...)...)
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

// startCLI starts a long ttftlab command (a sweep, a baseline) in the
// coordinator's namespace.
func (c *cluster) startCLI(name string, args ...string) *proc {
	c.t.Helper()
	return start(c.t, c.coord.host.ns, c.bin, c.dir, name, args...)
}

// members returns `ttftlab members` as name → state.
func (c *cluster) members() (map[string]string, error) {
	out, stderr, err := c.cli(10*time.Second, append([]string{"members"}, c.clientArgs()...)...)
	if err != nil {
		return nil, fmt.Errorf("members: %v: %s", err, stderr)
	}
	ms := map[string]string{}
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
		ms[f[0]] = f[3]
	}
	return ms, nil
}

// waitAlive waits until the coordinator lists every named daemon alive.
func (c *cluster) waitAlive(timeout time.Duration, names ...string) {
	c.t.Helper()
	waitUntil(c.t, timeout, fmt.Sprintf("%v alive in `ttftlab members`", names), func() (bool, error) {
		ms, err := c.members()
		if err != nil {
			return false, err
		}
		for _, n := range names {
			if ms[n] != "alive" {
				return false, fmt.Errorf("%s is %q in %v", n, ms[n], ms)
			}
		}
		return true, nil
	})
}

// waitAllAlive waits until every started daemon is listed alive.
func (c *cluster) waitAllAlive() {
	c.t.Helper()
	var names []string
	for n := range c.daemons {
		names = append(names, n)
	}
	c.waitAlive(30*time.Second, names...)
}

// sweepArgs are a short sweep's flags against this cluster's coordinator.
func (c *cluster) sweepArgs(runID string, extra ...string) []string {
	args := append([]string{"sweep"}, c.clientArgs()...)
	args = append(args, "--warmup", "0", "--input-len", "64", "--output-len", "16",
		"--out", "sweeps", "--run-id", runID, "--quiet")
	return append(args, extra...)
}

// runDir is where the coordinator writes a run's results.
func (c *cluster) runDir(kind, runID string) string {
	return filepath.Join(c.dir, "results", kind, runID)
}

// intervalLine matches the sweep's progress line for an agent's interval:
// "[  1.94s]   agent1 #0: 7 ok, 0 failed, 1 in flight".
func intervalLine(agent string, seq int) *regexp.Regexp {
	return regexp.MustCompile(fmt.Sprintf(`(?m)\]\s+%s #%d: (\d+) ok, (\d+) failed, (\d+) in flight`, regexp.QuoteMeta(agent), seq))
}

// summary is a merged figure set: a sweep level's, or a baseline's.
type summary struct {
	Requests    uint64 `json:"requests"`
	Successes   uint64 `json:"successes"`
	Errors      uint64 `json:"errors"`
	Interrupted uint64 `json:"interrupted"`
	Metrics     map[string]*struct {
		Count int64   `json:"count"`
		P50   float64 `json:"p50"`
	} `json:"metrics_ms"`
}

// sweepResults is the part of a sweep's results.json the tests check.
type sweepResults struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Levels []struct {
		summary
		Level     int      `json:"level"`
		Value     float64  `json:"value"`
		Agents    []string `json:"agents"`
		Degraded  bool     `json:"degraded"`
		Shortfall string   `json:"shortfall"`
		Coverage  map[string]struct {
			Intervals int    `json:"intervals"`
			Final     bool   `json:"final"`
			Lost      bool   `json:"lost"`
			Error     string `json:"error"`
		} `json:"coverage"`
	} `json:"levels"`
}

var readJSON = e2eutil.ReadJSON

// u64 is a protojson uint64: a JSON string, or a number.
type u64 = e2eutil.U64

// report is the part of an agent's interval report the tests count.
type report struct {
	AgentID     string `json:"agent_id"`
	Seq         u64    `json:"seq"`
	Start       u64    `json:"start_unix_nano"`
	End         u64    `json:"end_unix_nano"`
	OK          u64    `json:"requests_ok"`
	Failed      u64    `json:"requests_failed"`
	Interrupted u64    `json:"requests_interrupted"`
	Warmup      bool   `json:"warmup"`
}

// received sums what the agents sent, as the coordinator recorded it in
// events.jsonl, per level (a baseline is level 0) and agent. Warm-up
// reports are left out, and a report seen twice counts once, as in the
// merge.
type received map[int]map[string]*report

// total sums one level over its agents.
func (r received) total(level int) report {
	var s report
	for _, a := range r[level] {
		s.OK += a.OK
		s.Failed += a.Failed
		s.Interrupted += a.Interrupted
	}
	return s
}

// event is one line of events.jsonl.
type event struct {
	T    int64           `json:"t"`
	Kind string          `json:"kind"`
	Data json.RawMessage `json:"data"`
}

func readEvents(t *testing.T, path string) []event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []event
	dec := json.NewDecoder(f)
	for {
		var ev event
		if err := dec.Decode(&ev); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, ev)
	}
}

// agentReports reads the interval reports (sweep_interval for sweeps,
// interval for baselines) out of events.
func agentReports(t *testing.T, evs []event) received {
	t.Helper()
	out := received{}
	seen := map[string]bool{}
	for _, ev := range evs {
		var level int
		var r report
		switch ev.Kind {
		case "sweep_interval":
			var si struct {
				Level  int    `json:"level"`
				Report report `json:"report"`
			}
			if err := json.Unmarshal(ev.Data, &si); err != nil {
				t.Fatalf("sweep_interval %s: %v", ev.Data, err)
			}
			level, r = si.Level, si.Report
		case "interval":
			if err := json.Unmarshal(ev.Data, &r); err != nil {
				t.Fatalf("interval %s: %v", ev.Data, err)
			}
		default:
			continue
		}
		// A duplicate is the same agent, sequence number and interval, as
		// in the merge: one agent numbers each baseline probe's reports
		// from 0.
		key := fmt.Sprintf("%d/%s/%d/%d/%d", level, r.AgentID, r.Seq, r.Start, r.End)
		if r.Warmup || seen[key] {
			continue
		}
		seen[key] = true
		if out[level] == nil {
			out[level] = map[string]*report{}
		}
		a := out[level][r.AgentID]
		if a == nil {
			a = &report{AgentID: r.AgentID}
			out[level][r.AgentID] = a
		}
		a.OK += r.OK
		a.Failed += r.Failed
		a.Interrupted += r.Interrupted
	}
	return out
}

// checkMerged asserts that a merged figure set is exactly the sum of what
// the agents' reports in events.jsonl carried: nothing received was lost
// and nothing was counted twice.
func checkMerged(t *testing.T, what string, got summary, sent report) {
	t.Helper()
	if got.Successes != uint64(sent.OK) || got.Errors != uint64(sent.Failed) || got.Interrupted != uint64(sent.Interrupted) {
		t.Errorf("%s: merged %d ok, %d errors, %d interrupted; the agents' reports in events.jsonl carry %d, %d, %d",
			what, got.Successes, got.Errors, got.Interrupted, sent.OK, sent.Failed, sent.Interrupted)
	}
	var ttft int64
	if m := got.Metrics["ttft"]; m != nil {
		ttft = m.Count
	}
	if ttft != int64(sent.OK) {
		t.Errorf("%s: merged TTFT histogram holds %d requests, the agents reported %d successes", what, ttft, sent.OK)
	}
}

// engineURL is the base URL of the sim the gpunode on h runs.
func engineURL(h *host) string { return fmt.Sprintf("http://%s", h.addr(enginePort)) }

// engineGauge sums a Prometheus gauge over its label sets at url/metrics,
// scraped from inside the namespace from.
func engineGauge(from *host, url, name string) (float64, error) {
	client := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: from.dialer(), DisableKeepAlives: true}}
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
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
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

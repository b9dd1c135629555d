package coordinator

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

func newTestDashboard(t *testing.T, token string) (*Dashboard, string) {
	t.Helper()
	out := t.TempDir()
	d, err := NewDashboard(DashboardConfig{OutDir: out, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, out
}

func report(t *testing.T, agent string, seq uint64, ttft ...time.Duration) *pb.IntervalReport {
	t.Helper()
	now := time.Now().UnixNano()
	rep := &pb.IntervalReport{AgentId: agent, Seq: seq, StartUnixNano: now - 1e9, EndUnixNano: now, RequestsOk: uint64(len(ttft)), RequestsFailed: 1, OutputTokensStreamed: 500}
	for _, m := range []string{hdr.TTFT, hdr.E2E} {
		h := hdr.New()
		for _, d := range ttft {
			h.Record(d)
		}
		b, err := h.Encode()
		if err != nil {
			t.Fatal(err)
		}
		rep.Histograms = append(rep.Histograms, &pb.EncodedHistogram{Metric: m, V2: b})
	}
	return rep
}

func TestDashboardSnapshotFollowsASweep(t *testing.T) {
	d, _ := newTestDashboard(t, "")
	d.RunEvent("s1", results.EventSweepStart, results.SweepStart{RunID: "s1", Levels: []float64{1, 8}})
	d.RunEvent("s1", results.EventLevelStart, results.LevelStart{Level: 0, Value: 1, Agents: []string{"a", "b"}})
	d.RunEvent("s1", results.EventSweepInterval, results.SweepInterval{Level: 0, Report: report(t, "a", 1, 10*time.Millisecond, 20*time.Millisecond)})
	d.RunEvent("s1", results.EventLevelStart, results.LevelStart{Level: 1, Value: 8, Agents: []string{"a", "b"}})
	d.RunEvent("s1", results.EventSweepInterval, results.SweepInterval{Level: 0, Report: report(t, "b", 9, time.Second)}) // late, for level 1: left out
	d.RunEvent("s1", results.EventSweepInterval, results.SweepInterval{Level: 1, Report: report(t, "a", 2, 40*time.Millisecond)})
	d.RunEvent("s1", results.EventAgentLost, results.AgentLost{Level: 1, Agent: "b", Error: "stream broke"})
	d.RunSample("s1", &pb.HostSample{EngineCpuPercent: 80, Gpus: []*pb.GPUSample{{MemoryUsedBytes: 70 << 30, MemoryTotalBytes: 140 << 30, GpuUtilPercent: 93, PowerMw: 650000}}})
	snap := d.Snapshot()
	if len(snap) != 1 {
		t.Fatalf("%d runs, want 1", len(snap))
	}
	r := snap[0]
	if r.Kind != "sweep" || r.Level != 2 || r.Levels != 2 || r.LevelValue != 8 || r.Status != "running" {
		t.Errorf("run %+v: want a running sweep at level 2 of 2 (c=8)", r)
	}
	if r.TTFTP50 == nil || *r.TTFTP50 < 39 || *r.TTFTP50 > 41 || r.Successes != 1 || r.Errors != 1 {
		t.Errorf("level 2 TTFT p50 %v, %d ok, %d errors: want only level 2's report (40 ms, 1 ok, 1 error)", r.TTFTP50, r.Successes, r.Errors)
	}
	if a := r.Agents["a"]; a == nil || a.Intervals != 1 {
		t.Errorf("agent a coverage %+v, want 1 interval in level 2", a)
	}
	if b := r.Agents["b"]; b == nil || b.Lost != "stream broke" {
		t.Errorf("agent b %+v, want lost", b)
	}
	if len(r.GPUs) != 1 || r.GPUs[0].UtilPct != 93 || r.GPUs[0].PowerW == nil || *r.GPUs[0].PowerW != 650 || r.EngineCPU == nil || *r.EngineCPU != 80 {
		t.Errorf("gauges %+v cpu %v", r.GPUs, r.EngineCPU)
	}
	d.RunEvent("s1", results.EventRunEnd, results.RunEnd{Status: results.StatusFailed, Error: "boom"})
	if r := d.Snapshot()[0]; r.Status != results.StatusFailed || r.Error != "boom" {
		t.Errorf("after run_end: %+v", r)
	}
	// No data yet is null, not 0.
	d.RunEvent("s2", results.EventSweepStart, results.SweepStart{RunID: "s2"})
	b, _ := json.Marshal(d.Snapshot())
	if !strings.Contains(string(b), `"ttft_p50_ms":null`) || !strings.Contains(string(b), `"output_tokens_per_s":null`) {
		t.Errorf("a run without data must have null statistics: %s", b)
	}
}

func TestDashboardDropsASlowClient(t *testing.T) {
	d, _ := newTestDashboard(t, "")
	d.RunEvent("r", results.EventRunStart, results.RunStart{RunID: "r"})
	c, err := d.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < dashboardBuffer; i++ {
		d.broadcast()
	}
	select {
	case <-c.gone:
		t.Fatal("dropped with a buffer not yet full")
	default:
	}
	d.broadcast() // one more than the buffer holds
	select {
	case <-c.gone:
	default:
		t.Fatal("a client that reads nothing is not dropped once its buffer is full")
	}
	d.unsubscribe(c) // after a drop: no double close
}

func TestDashboardRefusesTooManyClients(t *testing.T) {
	d, _ := newTestDashboard(t, "")
	for i := 0; i < dashboardClients; i++ {
		if _, err := d.subscribe(); err != nil {
			t.Fatalf("client %d refused: %v", i+1, err)
		}
	}
	if _, err := d.subscribe(); err == nil || !strings.Contains(err.Error(), "most allowed") {
		t.Errorf("client %d: err %v, want refused", dashboardClients+1, err)
	}
}

func TestDashboardAuth(t *testing.T) {
	d, _ := newTestDashboard(t, "s3cret")
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	tests := []struct {
		name   string
		path   string
		header string
		cookie string
		want   int
	}{
		{name: "no token", path: "/", want: http.StatusUnauthorized},
		{name: "wrong bearer", path: "/", header: "Bearer nope", want: http.StatusUnauthorized},
		{name: "bearer", path: "/", header: "Bearer s3cret", want: http.StatusOK},
		{name: "cookie", path: "/runs/", cookie: "s3cret", want: http.StatusOK},
		{name: "wrong cookie", path: "/runs/", cookie: "x", want: http.StatusUnauthorized},
		{name: "query sets the cookie and redirects", path: "/?token=s3cret", want: http.StatusSeeOther},
		{name: "wrong query", path: "/?token=nope", want: http.StatusUnauthorized},
		{name: "events need it too", path: "/events", want: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+tt.path, nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			if tt.cookie != "" {
				req.AddCookie(&http.Cookie{Name: tokenCookie, Value: tt.cookie})
			}
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("GET %s: %s, want %d", tt.path, resp.Status, tt.want)
			}
			if tt.want == http.StatusSeeOther {
				if loc := resp.Header.Get("Location"); strings.Contains(loc, "token") {
					t.Errorf("redirect to %q keeps the token in the URL", loc)
				}
				if c := resp.Cookies(); len(c) != 1 || !c[0].HttpOnly || c[0].Value != "s3cret" {
					t.Errorf("cookies %v, want one HttpOnly token cookie", c)
				}
			}
		})
	}
}

func TestDashboardServesOnlyReportsUnderOut(t *testing.T) {
	d, out := newTestDashboard(t, "")
	run := filepath.Join(out, "run-1")
	if err := os.MkdirAll(run, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(run, results.HTMLReport), []byte("<!DOCTYPE html><p>report of run-1"), 0o644)
	os.WriteFile(filepath.Join(run, "notes.sh"), []byte("#!/bin/sh"), 0o644)
	secret := filepath.Join(t.TempDir(), "secret.json")
	os.WriteFile(secret, []byte(`{"secret":1}`), 0o644)
	if err := os.Symlink(secret, filepath.Join(run, "escape.json")); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	tests := []struct {
		name, path string
		want       int
		body       string
	}{
		{name: "listing", path: "/runs/", want: http.StatusOK, body: `href="/runs/run-1/report.html"`},
		{name: "report", path: "/runs/run-1/report.html", want: http.StatusOK, body: "report of run-1"},
		{name: "dot-dot", path: "/runs/../../etc/passwd", want: http.StatusNotFound},
		{name: "encoded dot-dot", path: "/runs/run-1/%2e%2e/%2e%2e/secret.json", want: http.StatusBadRequest},
		{name: "symlink out of the results", path: "/runs/run-1/escape.json", want: http.StatusNotFound},
		{name: "not a report file", path: "/runs/run-1/notes.sh", want: http.StatusNotFound},
		{name: "missing", path: "/runs/run-2/report.html", want: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want && !(tt.want == http.StatusNotFound && resp.StatusCode == http.StatusBadRequest) {
				t.Errorf("GET %s: %s, want %d", tt.path, resp.Status, tt.want)
			}
			if strings.Contains(string(b), `{"secret":1}`) {
				t.Errorf("GET %s leaked a file outside the results directory", tt.path)
			}
			if tt.body != "" && !strings.Contains(string(b), tt.body) {
				t.Errorf("GET %s lacks %q: %s", tt.path, tt.body, b)
			}
		})
	}
}

func TestDashboardEventsStreamUpdates(t *testing.T) {
	d, _ := newTestDashboard(t, "")
	d.RunEvent("r1", results.EventRunStart, results.RunStart{RunID: "r1"})
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	var datas int
	deadline := time.After(5 * time.Second)
	got := make(chan string)
	go func() {
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				got <- sc.Text()
			}
		}
		close(got)
	}()
	for datas < 2 { // the first at once, the next within a tick
		select {
		case line, ok := <-got:
			if !ok {
				t.Fatal("stream ended")
			}
			if !strings.Contains(line, `"run_id":"r1"`) {
				t.Errorf("update %s lacks the run", line)
			}
			datas++
		case <-deadline:
			t.Fatalf("%d updates in 5 s, want 2 (one per second)", datas)
		}
	}
	d.Close() // ends the stream
	resp.Body.Close()
}

func TestCheckDashboardAddr(t *testing.T) {
	tests := []struct {
		name        string
		addr        string
		token, mtls bool
		wantErr     string
	}{
		{name: "loopback without auth", addr: "127.0.0.1:8080"},
		{name: "localhost", addr: "localhost:0"},
		{name: "ipv6 loopback", addr: "[::1]:8080"},
		{name: "any address without auth", addr: "0.0.0.0:8080", wantErr: "not a loopback address"},
		{name: "any address with a token", addr: "0.0.0.0:8080", token: true},
		{name: "any address with mTLS", addr: ":8080", mtls: true},
		{name: "empty host without auth", addr: ":8080", wantErr: "--token-file"},
		{name: "not host:port", addr: "8080", wantErr: "not host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckDashboardAddr(tt.addr, tt.token, tt.mtls)
			if (err != nil) != (tt.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("CheckDashboardAddr(%q) = %v, want %q", tt.addr, err, tt.wantErr)
			}
		})
	}
}

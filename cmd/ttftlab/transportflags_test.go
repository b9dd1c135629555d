package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ttftlab/ttftlab/coordinator/results"
)

// newFakeOpenAIH2 is newFakeOpenAITLS offering HTTP/2 by ALPN; protos
// returns the protocol major of every request it served.
func newFakeOpenAIH2(t *testing.T) (f *fakeOpenAI, protos func() []int) {
	t.Helper()
	f = &fakeOpenAI{}
	var mu sync.Mutex
	var seen []int
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.ProtoMajor)
		mu.Unlock()
		f.serve(w, r)
	}))
	f.EnableHTTP2 = true
	f.Config.ErrorLog = log.New(io.Discard, "", 0)
	f.StartTLS()
	t.Cleanup(f.Close)
	return f, func() []int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// TestLoadHTTPTransport runs load and probe against an https:// server
// that offers HTTP/2: --http-transport h2 reaches it over HTTP/2 (the
// model lookup too), h1 (the default) and net-http over HTTP/1.1; the
// summary records the transport and the first-token clock.
func TestLoadHTTPTransport(t *testing.T) {
	f, protos := newFakeOpenAIH2(t)
	ca := writeCA(t, f)
	tests := []struct {
		args      []string
		wantProto int
		wantTr    string
		wantClock string
	}{
		{args: nil, wantProto: 1, wantTr: "h1", wantClock: "kernel_rx"},
		{args: []string{"--http-transport", "h1", "--first-token-clock", "read-return"}, wantProto: 1, wantTr: "h1", wantClock: "read_return"},
		{args: []string{"--http-transport", "net-http"}, wantProto: 1, wantTr: "net/http", wantClock: "read_return"},
		{args: []string{"--http-transport", "h2"}, wantProto: 2, wantTr: "h2", wantClock: "read_return"},
	}
	for _, tt := range tests {
		name := strings.Join(tt.args, " ")
		t.Run("load/"+name, func(t *testing.T) {
			before := len(protos())
			var stdout bytes.Buffer
			args := append([]string{"load", "--url", f.URL, "--ca-file", ca, "--requests", "3", "--concurrency", "1", "--max-tokens", "3", "--json"}, tt.args...)
			err := run(t.Context(), args, &stdout, io.Discard)
			var sum results.LoadSummary
			if jerr := json.Unmarshal(stdout.Bytes(), &sum); err != nil || jerr != nil {
				t.Fatalf("load: %v; stdout %q: %v", err, stdout.String(), jerr)
			}
			seen := protos()[before:]
			// 3 requests and the /v1/models lookup.
			if sum.Successes != 3 || len(seen) != 4 || slices.ContainsFunc(seen, func(p int) bool { return p != tt.wantProto }) {
				t.Errorf("%d successes, server saw protocol majors %v; want 3 successes and 4 requests over HTTP/%d", sum.Successes, seen, tt.wantProto)
			}
			if sum.Transport != tt.wantTr || sum.FirstTokenClock != tt.wantClock {
				t.Errorf("summary records %q, %q; want %q, %q", sum.Transport, sum.FirstTokenClock, tt.wantTr, tt.wantClock)
			}
		})
		t.Run("probe/"+name, func(t *testing.T) {
			before := len(protos())
			var stdout bytes.Buffer
			args := append([]string{"probe", "--url", f.URL, "--ca-file", ca, "--model", "fake-model", "--max-tokens", "3"}, tt.args...)
			if err := run(t.Context(), args, &stdout, io.Discard); err != nil {
				t.Fatalf("probe: %v", err)
			}
			var out probeOutput
			if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
				t.Fatalf("probe output %q: %v", stdout.String(), err)
			}
			seen := protos()[before:]
			if !slices.Equal(seen, []int{tt.wantProto}) || out.Transport != tt.wantTr || out.FirstTokenClock == "" {
				t.Errorf("server saw %v, probe says transport %q, clock %q; want one HTTP/%d request, transport %q and a clock", seen, out.Transport, out.FirstTokenClock, tt.wantProto, tt.wantTr)
			}
		})
	}
}

// TestLoadTableShowsClient: the text report says which transport and
// clock TTFT was taken with.
func TestLoadTableShowsClient(t *testing.T) {
	f, _ := newFakeOpenAIH2(t)
	var stdout bytes.Buffer
	args := []string{"load", "--url", f.URL, "--insecure-skip-verify", "--requests", "2", "--max-tokens", "3", "--http-transport", "h2"}
	if err := run(t.Context(), args, &stdout, io.Discard); err != nil {
		t.Fatalf("load: %v", err)
	}
	if want := "h2 transport, read_return first-token clock"; !strings.Contains(stdout.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, stdout.String())
	}
}

// TestClientFlagErrors: bad --http-transport and --first-token-clock
// values are refused by every command that takes them, naming the value
// and the choices, before any request.
func TestClientFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--http-transport", "http2"}, `--http-transport "http2" is unknown: use h1 (the default), net-http or h2`},
		{[]string{"--http-transport", ""}, `--http-transport "" is unknown`},
		{[]string{"--first-token-clock", "wall"}, `--first-token-clock "wall" is unknown: use kernel (the kernel's receive time, h1's default) or read-return`},
		{[]string{"--http-transport", "h2", "--first-token-clock", "kernel"}, "--first-token-clock kernel needs --http-transport h1: h2 stamps reads when they return"},
	}
	for _, tt := range tests {
		for _, cmd := range [][]string{
			{"load", "--url", "https://127.0.0.1:1", "--model", "m"},
			{"probe", "--url", "https://127.0.0.1:1", "--model", "m"},
			{"sweep", "--base-url", "https://127.0.0.1:1", "--model", "m", "--levels", "1"},
		} {
			t.Run(cmd[0]+"/"+strings.Join(tt.args, " "), func(t *testing.T) {
				err := run(t.Context(), append(slices.Clone(cmd), tt.args...), io.Discard, io.Discard)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("err = %v, want it to say %q", err, tt.want)
				}
			})
		}
	}
}

// TestClientFlagsInHelp: load, probe and sweep list both flags in --help.
func TestClientFlagsInHelp(t *testing.T) {
	for _, cmd := range []string{"load", "probe", "sweep"} {
		var out bytes.Buffer
		if err := run(t.Context(), []string{cmd, "--help"}, &out, &out); err != nil && !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%s --help: %v", cmd, err)
		}
		for _, flag := range []string{"-http-transport", "-first-token-clock", "net-http", "read-return"} {
			if !strings.Contains(out.String(), flag) {
				t.Errorf("ttftlab %s --help does not mention %s:\n%s", cmd, flag, out.String())
			}
		}
	}
}

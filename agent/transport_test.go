package agent

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ttftlab/ttftlab/internal/oai"
	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
	"github.com/ttftlab/ttftlab/internal/specerr"
)

// TestEffectiveClient: the settings a run records fill in the defaults,
// and net/http and h2 always stamp when reads return.
func TestEffectiveClient(t *testing.T) {
	tests := []struct{ transport, clock, wantTr, wantClock string }{
		{"", "", oai.TransportH1, oai.ClockKernelRx},
		{oai.TransportH1, oai.ClockReadReturn, oai.TransportH1, oai.ClockReadReturn},
		{oai.TransportH2, "", oai.TransportH2, oai.ClockReadReturn},
		{oai.TransportNetHTTP, "", oai.TransportNetHTTP, oai.ClockReadReturn},
		{oai.TransportH2, oai.ClockKernelRx, oai.TransportH2, oai.ClockReadReturn},
	}
	for _, tt := range tests {
		tr, clock := Target{Transport: tt.transport, FirstTokenClock: tt.clock}.EffectiveClient()
		if tr != tt.wantTr || clock != tt.wantClock {
			t.Errorf("EffectiveClient(%q, %q) = %q, %q; want %q, %q", tt.transport, tt.clock, tr, clock, tt.wantTr, tt.wantClock)
		}
	}
}

// TestRunPassesClientSettings: the spec's transport and clock reach the
// Sender's oai.Config unchanged.
func TestRunPassesClientSettings(t *testing.T) {
	for _, tt := range []struct{ transport, clock string }{
		{"", ""},
		{oai.TransportH2, oai.ClockReadReturn},
		{oai.TransportH1, oai.ClockReadReturn},
		{oai.TransportNetHTTP, ""},
	} {
		cfg := DefaultConfig()
		var got oai.Config
		cfg.NewSender = func(c oai.Config) (Sender, error) {
			got = c
			return nil, errors.New("stop here")
		}
		spec := testSpec("http://127.0.0.1:1")
		spec.Target.Transport, spec.Target.FirstTokenClock = tt.transport, tt.clock
		if _, err := collect(t, t.Context(), New(cfg, nil), spec); err == nil || !strings.Contains(err.Error(), "stop here") {
			t.Fatalf("Run = %v, want the sender's error", err)
		}
		if got.Transport != tt.transport || got.RxTimestamps != tt.clock {
			t.Errorf("sender asked for transport %q, clock %q; want %q, %q", got.Transport, got.RxTimestamps, tt.transport, tt.clock)
		}
	}
}

// TestServerClientSettings runs RunProbeRequests against an https:// fake
// that offers HTTP/2: target.transport "h2" reaches the server as HTTP/2,
// "h1" and the default as HTTP/1.1, with the real client.
func TestServerClientSettings(t *testing.T) {
	srv, caPEM := newTLSFake(t)
	client := startAgentServer(t, New(DefaultConfig(), nil))
	tests := []struct {
		transport, clock string
		wantProto        int
	}{
		{"", "", 1},
		{oai.TransportH1, oai.ClockReadReturn, 1},
		{oai.TransportNetHTTP, "", 1},
		{oai.TransportH2, oai.ClockReadReturn, 2},
	}
	for _, tt := range tests {
		t.Run(tt.transport, func(t *testing.T) {
			before := len(srv.Protos())
			req := protoRequest(srv.URL)
			req.Target.CaPem, req.Target.Transport, req.Target.FirstTokenClock = caPEM, tt.transport, tt.clock
			stream, err := client.RunProbe(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			var ok uint64
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("Recv: %v", err)
				}
				ok += resp.GetReport().GetRequestsOk()
			}
			protos := srv.Protos()[before:]
			if ok != 3 || len(protos) != 3 || slices.ContainsFunc(protos, func(p int) bool { return p != tt.wantProto }) {
				t.Errorf("%d ok, server saw protocol majors %v; want 3 requests over HTTP/%d", ok, protos, tt.wantProto)
			}
		})
	}
}

// TestServerRejectsBadClientSettings: a bad transport or clock in the
// proto is InvalidArgument naming the field, before any request.
func TestServerRejectsBadClientSettings(t *testing.T) {
	f := oaitest.NewServer(t, oaitest.StreamTokens(3, time.Millisecond))
	client := startAgentServer(t, New(DefaultConfig(), nil))
	for _, tt := range []struct{ transport, clock, want string }{
		{"http2", "", `target.transport "http2" is unknown`},
		{"", "now", `target.first_token_clock "now" is unknown`},
	} {
		req := protoRequest(f.URL)
		req.Target.Transport, req.Target.FirstTokenClock = tt.transport, tt.clock
		stream, err := client.RunProbe(t.Context(), req)
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("RunProbe = %v, want InvalidArgument saying %q", err, tt.want)
		}
	}
	if n := f.Requests.Load(); n != 0 {
		t.Errorf("server saw %d requests, want none", n)
	}
}

// FuzzCheckClient feeds target.transport and target.first_token_clock,
// which cross the gRPC boundary, to Validate: it accepts exactly oai's
// values and refuses anything else naming the field and quoting the value.
func FuzzCheckClient(f *testing.F) {
	f.Add("", "")
	f.Add("h2", "read_return")
	f.Add("net/http", "x")
	f.Add("h3\n", "kernel_rx")
	f.Fuzz(func(t *testing.T, transport, clock string) {
		s := testSpec("http://127.0.0.1:8000")
		s.Target.Transport, s.Target.FirstTokenClock = transport, clock
		err := s.Validate()
		trOK := slices.Contains([]string{"", oai.TransportH1, oai.TransportNetHTTP, oai.TransportH2}, transport)
		clockOK := slices.Contains([]string{"", oai.ClockKernelRx, oai.ClockReadReturn}, clock)
		if (err == nil) != (trOK && clockOK) {
			t.Fatalf("Validate with transport %q, clock %q = %v; want an error exactly when a value is not accepted", transport, clock, err)
		}
		var fe *specerr.FieldError
		if err != nil && (!errors.Is(err, ErrInvalidSpec) || !errors.As(err, &fe) || (fe.Field != "target.transport" && fe.Field != "target.first_token_clock")) {
			t.Fatalf("Validate with transport %q, clock %q = %v; want an invalid-spec error naming the field", transport, clock, err)
		}
	})
}

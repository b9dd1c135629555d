package oai

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestKernelArrival(t *testing.T) {
	now := time.Now() // carries a monotonic reading
	wall := func(d time.Duration) time.Time {
		// A CLOCK_REALTIME reading d after now's wall time, as the kernel
		// reports it: no monotonic reading.
		return now.Round(0).Add(d)
	}
	for _, tc := range []struct {
		name   string
		kernel time.Time
		floor  time.Time
		want   time.Duration // arrival − now, on the monotonic clock
	}{
		{name: "arrived before the read", kernel: wall(-150 * time.Microsecond), want: -150 * time.Microsecond},
		{name: "arrived at the read", kernel: wall(0), want: 0},
		{name: "kernel after now clamps to now", kernel: wall(3 * time.Millisecond), want: 0},
		{name: "wall clock stepped forward clamps to floor", kernel: wall(-time.Hour), floor: now.Add(-2 * time.Millisecond), want: -2 * time.Millisecond},
		{name: "after the floor is kept", kernel: wall(-time.Millisecond), floor: now.Add(-2 * time.Millisecond), want: -time.Millisecond},
		{name: "floor after now clamps to now", kernel: wall(-time.Millisecond), floor: now.Add(time.Millisecond), want: 0},
		{name: "no floor keeps a long lag", kernel: wall(-10 * time.Second), want: -10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := kernelArrival(now, tc.kernel, tc.floor)
			if got := at.Sub(now); got != tc.want {
				t.Errorf("arrival − now = %v, want %v", got, tc.want)
			}
			if at.After(now) {
				t.Errorf("arrival %v is after now %v", at, now)
			}
			if at.Round(0) == at {
				t.Error("arrival lost its monotonic reading")
			}
		})
	}
}

func TestConfigRxTimestamps(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		wantErr     bool
	}{
		{name: "default", value: ""},
		{name: "kernel", value: ClockKernelRx},
		{name: "read return", value: ClockReadReturn},
		{name: "unknown", value: "kernel", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(Config{RxTimestamps: tc.value})
			if tc.wantErr {
				if err == nil {
					c.Close()
					t.Fatal("NewClient accepted an unknown RxTimestamps")
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.value)) || !strings.Contains(err.Error(), ClockReadReturn) {
					t.Errorf("error %q does not name the value and the fix", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		})
	}
}

// TestFallbackWithoutRawConn checks that a connection with no RawConn (a
// pipe) is stamped in user space, when its read returns.
func TestFallbackWithoutRawConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	sc := newStampConn(a, true)
	if sc.rx != nil {
		t.Fatal("a pipe got kernel receive timestamps")
	}
	go func() { _, _ = b.Write([]byte("data: x\n\n")) }()
	var buf [64]byte
	n, err := sc.Read(buf[:])
	after := time.Now()
	if err != nil || n == 0 {
		t.Fatalf("read: %d, %v", n, err)
	}
	if sc.kernel {
		t.Error("stamp claims to be the kernel's")
	}
	if sc.at.IsZero() || sc.at.After(after) || after.Sub(sc.at) > time.Second {
		t.Errorf("stamp %v not just before %v", sc.at, after)
	}
}

// TestFirstTokenClock checks which clock a request's first token gets, per
// transport and setting, over plain TCP and TLS.
func TestFirstTokenClock(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for _, s := range []string{
			`data: {"choices":[{"index":0,"text":"a"}]}` + "\n\n",
			`data: {"choices":[{"index":0,"text":"b","finish_reason":"stop"}]}` + "\n\n",
			"data: [DONE]\n\n",
		} {
			_, _ = w.Write([]byte(s))
			fl.Flush()
		}
	})
	warmRx(t)
	plain := httptest.NewServer(h)
	defer plain.Close()
	secure := httptest.NewTLSServer(h)
	defer secure.Close()
	kernel := ClockReadReturn
	if rxSupported {
		kernel = ClockKernelRx
	}
	for _, tc := range []struct {
		name      string
		srv       *httptest.Server
		transport string
		rx        string
		want      string
	}{
		{name: "h1 default", srv: plain, want: kernel},
		{name: "h1 kernel", srv: plain, rx: ClockKernelRx, want: kernel},
		{name: "h1 read return", srv: plain, rx: ClockReadReturn, want: ClockReadReturn},
		{name: "h1 TLS default", srv: secure, want: kernel},
		{name: "h1 TLS read return", srv: secure, rx: ClockReadReturn, want: ClockReadReturn},
		{name: "net/http", srv: plain, transport: TransportNetHTTP, want: ClockReadReturn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Transport: tc.transport, RxTimestamps: tc.rx}
			if tc.srv == secure {
				cfg.TLS = secure.Client().Transport.(*http.Transport).TLSClientConfig
			}
			c, err := NewClient(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// A kernel stamp can be missed while the kernel's global switch
			// for receive timestamps flips (other tests' sockets come and
			// go; see TestKernelRxLoopback): a read_return where a kernel
			// stamp is wanted is tried again, a few times at most.
			var res Result
			for try := 0; ; try++ {
				res = c.Do(context.Background(), Request{BaseURL: tc.srv.URL, API: APICompletions, Model: "m", Prompt: "p", MaxTokens: 2, Stream: true})
				if res.Err != nil {
					t.Fatalf("request failed: %v", res.Err)
				}
				if tc.want != ClockKernelRx || res.FirstTokenClock != ClockReadReturn || try == 5 {
					break
				}
				res.Release()
			}
			if res.FirstTokenClock != tc.want {
				t.Errorf("FirstTokenClock = %q, want %q", res.FirstTokenClock, tc.want)
			}
			if res.FirstToken.Before(res.Send) || res.FirstToken.After(res.Done) {
				t.Errorf("FirstToken %v outside [Send %v, Done %v]", res.FirstToken, res.Send, res.Done)
			}
		})
	}
}

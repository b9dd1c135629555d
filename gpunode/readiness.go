package gpunode

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// Readiness stages, in order.
const (
	stageSpawned  = "spawned"
	stagePortOpen = "port_open"
	stageHealthOK = "health_ok"
	stageReady    = "ready"
)

// dialTimeout bounds one TCP probe; on loopback a refused connect returns
// at once, so this only matters for a wedged listener.
const dialTimeout = 200 * time.Millisecond

// probeTimeout bounds one HTTP probe.
const probeTimeout = 2 * time.Second

// readyTimes are when each readiness stage passed.
type readyTimes struct {
	portOpen, healthOK, ready time.Time
}

// prober checks an engine's readiness over HTTP.
type prober struct {
	client *http.Client
	base   string // http://host:port
	addr   string // host:port to dial
	served string
}

func newProber(host string, port int, served string) *prober {
	addr := dialable(net.JoinHostPort(host, strconv.Itoa(port)), host, port)
	return &prober{
		client: &http.Client{
			// No proxy from the environment: the engine is local.
			Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: 5 * time.Second},
			Timeout:   probeTimeout,
		},
		base:   "http://" + addr,
		addr:   addr,
		served: served,
	}
}

func (pr *prober) close() { pr.client.CloseIdleConnections() }

// waitReady polls every interval until the engine passes every stage, the
// process exits (*ExitError), or ctx ends. On return, stage is the last
// stage passed.
func (pr *prober) waitReady(ctx context.Context, p *process, interval time.Duration) (readyTimes, string, error) {
	var rt readyTimes
	stage := stageSpawned
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if p.hasExited() {
			return rt, stage, errExited
		}
		if stage == stageSpawned {
			var d net.Dialer
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			c, err := d.DialContext(dctx, "tcp", pr.addr)
			cancel()
			if err == nil {
				c.Close()
				rt.portOpen = time.Now()
				stage = stagePortOpen
			}
		}
		if stage == stagePortOpen {
			if code, _, err := pr.get(ctx, "/health"); err == nil && code == http.StatusOK {
				rt.healthOK = time.Now()
				stage = stageHealthOK
			}
		}
		if stage == stageHealthOK {
			if ok, _ := pr.modelListed(ctx); ok {
				rt.ready = time.Now()
				return rt, stageReady, nil
			}
		}
		select {
		case <-ctx.Done():
			return rt, stage, ctx.Err()
		case <-p.exited:
			return rt, stage, errExited
		case <-t.C:
		}
	}
}

// errExited is returned by waitReady when the process exits; the caller
// turns it into an *ExitError with the status and log tail.
var errExited = fmt.Errorf("engine exited")

func (pr *prober) get(ctx context.Context, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pr.base+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := pr.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

// modelListed reports whether GET /v1/models lists the served name.
func (pr *prober) modelListed(ctx context.Context) (bool, error) {
	code, body, err := pr.get(ctx, "/v1/models")
	if err != nil {
		return false, err
	}
	if code != http.StatusOK {
		return false, fmt.Errorf("GET /v1/models: status %d", code)
	}
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return false, fmt.Errorf("GET /v1/models: %w", err)
	}
	return slices.ContainsFunc(list.Data, func(m struct {
		ID string `json:"id"`
	}) bool {
		return m.ID == pr.served
	}), nil
}

// version asks GET /version, which vLLM and the simulator serve.
func (pr *prober) version(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	code, body, err := pr.get(ctx, "/version")
	if err != nil || code != http.StatusOK {
		return ""
	}
	var v struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	return v.Version
}

// baseURL is the engine's OpenAI-compatible endpoint.
func (pr *prober) baseURL() string {
	u := url.URL{Scheme: "http", Host: pr.addr}
	return u.String()
}
